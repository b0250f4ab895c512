"""runner.report.regenerate_readme: only the text between markers changes, and only when it is safe."""

import os

import pytest

from runner.report import EMPTY_SECTION, SECTION_NAMES, ReportError, regenerate_readme

SECTIONS = {name: "" for name in SECTION_NAMES}
SECTIONS.update({
    "cifar10-cnn": "Measured on **m** (run `r`).\n\n| DL Library | Test Accuracy (%) |\n|:--|--:|\n| A | 1.0 |",
    "hardware": "**m**, as reported by run `r`:",
})

README = """# My benchmark

Some hand-written prose that must survive byte for byte.   
Trailing spaces above, a tab\there.

## Hardware
<!-- results:hardware -->
stale hardware text
<!-- /results:hardware -->

## CIFAR-10

  <!-- results:cifar10-cnn -->
<!-- /results:cifar10-cnn -->

Between sections.

```markdown
<!-- results:gru-imdb -->
this is documentation of the marker syntax, inside a fence: never touched
<!-- /results:gru-imdb -->
```

## GRU
<!-- results:gru-imdb -->
old gru table
<!-- /results:gru-imdb -->
The end, no newline at the end of the file."""


def _outside(text):
    """The text outside the (unfenced) marker pairs, as a list of pieces."""
    pieces, rest = [], text
    for name in ("hardware", "cifar10-cnn"):
        a, b = rest.split(f"<!-- results:{name} -->", 1)
        pieces.append(a)
        rest = b.split(f"<!-- /results:{name} -->", 1)[1]
    a, b = rest.rsplit("<!-- results:gru-imdb -->", 1)
    pieces.append(a)
    pieces.append(b.split("<!-- /results:gru-imdb -->", 1)[1])
    return pieces


def test_regenerates_between_markers_only_and_is_idempotent(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(README)
    assert regenerate_readme(path, SECTIONS) is True
    first = path.read_bytes()
    text = first.decode()
    assert _outside(text) == _outside(README)
    assert "stale hardware text" not in text and "old gru table" not in text
    assert "<!-- results:hardware -->\n\n**m**, as reported by run `r`:\n\n<!-- /results:hardware -->" in text
    assert "| A | 1.0 |" in text
    # an empty section keeps its markers and says so
    assert f"<!-- results:gru-imdb -->\n\n{EMPTY_SECTION}\n\n<!-- /results:gru-imdb -->" in text
    # the fenced example is untouched
    assert "this is documentation of the marker syntax, inside a fence: never touched" in text
    mtime = os.stat(path).st_mtime_ns
    assert regenerate_readme(path, SECTIONS) is False
    assert path.read_bytes() == first and os.stat(path).st_mtime_ns == mtime


def test_crlf_readme_stays_crlf(tmp_path):
    path = tmp_path / "README.md"
    path.write_bytes(README.replace("\n", "\r\n").encode())
    regenerate_readme(path, SECTIONS)
    data = path.read_bytes()
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert regenerate_readme(path, SECTIONS) is False


@pytest.mark.parametrize("text, match", [
    ("# Nothing to see\n\nJust prose.\n", "no result markers"),
    ("Inline `<!-- results:hardware -->` and `<!-- /results:hardware -->` are not markers.\n", "no result markers"),
    ("```\n<!-- results:hardware -->\n<!-- /results:hardware -->\n```\n", "no result markers"),
    ("<!-- results:hardware -->\nnever closed\n", "never closed"),
    ("x\n<!-- /results:hardware -->\n", "no section is open"),
    ("<!-- results:hardware -->\n<!-- /results:gru-imdb -->\n", "is open"),
    ("<!-- results:hardware -->\n<!-- results:gru-imdb -->\n<!-- /results:gru-imdb -->\n<!-- /results:hardware -->\n",
     "cannot nest"),
    ("<!-- results:hardware -->\n<!-- /results:hardware -->\n<!-- results:hardware -->\n<!-- /results:hardware -->\n",
     "appears twice"),
    ("<!-- results:no-such-section -->\n<!-- /results:no-such-section -->\n", "unknown section"),
])
def test_unsafe_readmes_are_refused_and_left_alone(tmp_path, text, match):
    path = tmp_path / "README.md"
    path.write_text(text)
    before = path.read_bytes()
    with pytest.raises(ReportError, match=match) as e:
        regenerate_readme(path, SECTIONS)
    assert path.read_bytes() == before
    msg = str(e.value)
    assert str(path) in msg and "<!-- results:NAME -->" in msg and "\n" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def test_missing_readme(tmp_path):
    with pytest.raises(ReportError, match="README not found"):
        regenerate_readme(tmp_path / "README.md", SECTIONS)
