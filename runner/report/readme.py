"""Report stage, README: replace the text between `<!-- results:NAME -->` markers, and nothing else."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

from runner.report.frame import ReportError
from runner.report.tables import SECTION_NAMES
from runner.results import atomic_write_text

EMPTY_SECTION = "_No results yet for this section._"
MARKER_SYNTAX = "<!-- results:NAME --> ... <!-- /results:NAME -->"
_MARKER_RE = re.compile(r"^[ \t]*<!--[ \t]*(/?)results:([A-Za-z0-9_.-]+)[ \t]*-->[ \t]*$")
_FENCE_RE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")


def _marker_help(path) -> str:
    return (f"Put each generated section between a pair of lines of the form `{MARKER_SYNTAX}`, each marker "
            f"alone on its line (known NAMEs: {', '.join(SECTION_NAMES)}); the report replaces only the "
            f"text between them. {path} was not changed.")


def _find_sections(text: str, path) -> "OrderedDict[str, tuple[int, int]]":
    """name -> (offset just after the opening marker's line, offset of the closing marker's line)."""
    spans = OrderedDict()
    open_name, open_line, open_end = None, 0, 0
    fence = None
    offset = 0
    seen_lines = {}
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        start, offset = offset, offset + len(line)
        body = line.rstrip("\r\n")
        f = _FENCE_RE.match(body)
        if f:
            if fence is None:
                fence = f.group(1)[0] * len(f.group(1))
            elif f.group(1).startswith(fence):
                fence = None
            continue
        if fence is not None:
            continue
        m = _MARKER_RE.match(body)
        if not m:
            continue
        closing, name = bool(m.group(1)), m.group(2)
        if not closing:
            if open_name is not None:
                raise ReportError(f"{path}:{lineno}: marker `<!-- results:{name} -->` opens a section while "
                                  f"`results:{open_name}` (line {open_line}) is still open; sections cannot nest. "
                                  + _marker_help(path))
            if name in spans or name in seen_lines:
                raise ReportError(f"{path}:{lineno}: section `{name}` appears twice (first at line "
                                  f"{seen_lines[name]}); each section may appear once. " + _marker_help(path))
            open_name, open_line, open_end = name, lineno, offset
            seen_lines[name] = lineno
        else:
            if open_name != name:
                what = f"`results:{open_name}` (line {open_line}) is open" if open_name else "no section is open"
                raise ReportError(f"{path}:{lineno}: closing marker `<!-- /results:{name} -->` but {what}. "
                                  + _marker_help(path))
            spans[name] = (open_end, start)
            open_name = None
    if open_name is not None:
        raise ReportError(f"{path}:{open_line}: section `{open_name}` is opened but never closed with "
                          f"`<!-- /results:{open_name} -->`. " + _marker_help(path))
    return spans


def check_readme(readme_path) -> list:
    """The section names a README's markers ask for; ReportError when it has none or they are unsafe."""
    path = Path(readme_path)
    return list(_checked_sections(path, _read_readme(path), SECTION_NAMES))


def _checked_sections(path: Path, text: str, known) -> dict:
    """The README's marker spans; ReportError when there are none or one names an unknown section."""
    spans = _find_sections(text, path)
    if not spans:
        raise ReportError(f"{path} has no result markers, so there is no place to put the tables, and the "
                          "report will not guess one. " + _marker_help(path))
    unknown = [n for n in spans if n not in known]
    if unknown:
        raise ReportError(f"{path}: unknown section name(s) {', '.join(unknown)} in the result markers. "
                          + _marker_help(path))
    return spans


def _read_readme(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise ReportError(f"{path}: README not found; pass an existing file to --readme, or leave --readme out "
                          "to write only the report directory.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read the README ({e}).") from None


def regenerate_readme(readme_path, sections: dict) -> bool:
    """Replace the text between each `<!-- results:NAME -->` / `<!-- /results:NAME -->` pair with
    sections[NAME] (or a 'no results yet' line when it is empty). Text outside the markers is never
    touched; running it twice changes nothing. Returns whether the file changed.

    ReportError (file unchanged) when the file is missing, has no markers, or has unbalanced,
    nested, duplicated or unknown markers."""
    path = Path(readme_path)
    text = _read_readme(path)
    spans = _checked_sections(path, text, sections)
    newline = "\r\n" if "\r\n" in text else "\n"
    out, pos = [], 0
    for name, (begin, end) in sorted(spans.items(), key=lambda kv: kv[1][0]):
        body = (sections.get(name) or "").strip("\n") or EMPTY_SECTION
        body = body.replace("\r\n", "\n")
        if newline != "\n":
            body = body.replace("\n", newline)
        out.append(text[pos:begin])
        out.append(newline + body + newline + newline)
        pos = end
    out.append(text[pos:])
    new = "".join(out)
    if new == text:
        return False
    atomic_write_text(path, new, mode=path.stat().st_mode & 0o7777)
    return True
