"""bench/ runs inside every container, CNTK's included, whose python3 is 3.6: every bench/ file parses
with Python 3.6 grammar and vermin finds no construct (syntax or library use) newer than 3.6."""

import ast
import subprocess

import pytest

from runner import ROOT
from support import project_tool

BENCH_FILES = sorted(p for p in (ROOT / "bench").rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", BENCH_FILES, ids=[str(p.relative_to(ROOT)) for p in BENCH_FILES])
def test_bench_parses_with_python36_grammar(path):
    """No walrus, positional-only parameters, etc."""
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 6))


def test_vermin_finds_nothing_newer_than_python36():
    proc = subprocess.run([project_tool("vermin"), "-t=3.6-", "--no-tips", "--violations", str(ROOT / "bench")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vermin_check_can_fail(tmp_path):
    """The check above is live: vermin flags a 3.8 construct in a file like bench's."""
    newer = tmp_path / "newer.py"
    newer.write_text("if (n := 3) > 2:\n    print(f'{n=}')\n", encoding="utf-8")
    proc = subprocess.run([project_tool("vermin"), "-t=3.6-", "--no-tips", "--violations", str(newer)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout + proc.stderr


def test_no_dataclasses_or_future_annotations_in_bench():
    for path in BENCH_FILES:
        text = path.read_text(encoding="utf-8")
        assert "from __future__ import annotations" not in text, path
        assert "import dataclasses" not in text and "from dataclasses" not in text, path
