"""Reading hostile result files in `report`: a clear per-file error, never a traceback or a read of
something that is not a result file."""

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import runner_cli
from runner.results import MAX_RESULT_BYTES, ResultError, load_result, load_run

FIXTURES = Path(__file__).parent / "fixtures" / "results"
GOOD = FIXTURES / "20261122-070000-cd34" / "pytorch-2.15.0-cpu-py3.11-cnn-synthetic-alexnet-b16-fp32-cpu.json"


def _nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def run_dir_with(tmp_path, name, writer):
    run = tmp_path / "20261123-000000-beef"
    run.mkdir()
    shutil.copy(GOOD, run / GOOD.name)
    writer(run / name)
    return run


@pytest.mark.parametrize("kind, writer, needle", [
    ("deep-list", lambda p: p.write_text("[" * 100000 + "]" * 100000), "nested"),
    ("deep-dict", lambda p: p.write_text('{"a":' * 5000 + "1" + "}" * 5000), "nested"),
    ("moderately-deep", lambda p: p.write_text(json.dumps({"cell": _nested(100)})), "nested"),
    ("huge-int", lambda p: p.write_text('{"schema_version": ' + "9" * 10000 + "}"), "not valid JSON"),
    ("not-utf8", lambda p: p.write_bytes(b'{"status": "\xff"}'), "not UTF-8"),
    ("symlink", lambda p: p.symlink_to("/etc/hostname"), "symbolic link"),
    ("directory", lambda p: p.mkdir(), "not a regular file"),
    ("fifo", lambda p: os.mkfifo(p), "not a regular file"),
    ("too-big", lambda p: p.write_text(" " * (MAX_RESULT_BYTES + 1)), "too big"),
])
def test_hostile_result_file_is_a_clear_per_file_error(tmp_path, kind, writer, needle):
    run = run_dir_with(tmp_path, f"{kind}.json", writer)
    with pytest.raises(ResultError) as err:
        load_result(run / f"{kind}.json")
    assert needle in err.value.message and f"{kind}.json" in err.value.message
    assert "\n" not in err.value.message
    # the run still loads: the bad file becomes an error row that names it, the good one is kept
    results = {r["cell"]["id"]: r for r in load_run(run)}
    assert results[kind]["status"] == "error" and f"{kind}.json" in results[kind]["message"]
    assert results[GOOD.stem]["status"] == "ok"


def test_a_symlinked_result_is_not_followed(tmp_path):
    secret = tmp_path / "secret.json"
    good = json.loads(GOOD.read_text())
    secret.write_text(json.dumps(good))
    run = run_dir_with(tmp_path, "linked.json", lambda p: p.symlink_to(secret))
    with pytest.raises(ResultError, match="symbolic link"):
        load_result(run / "linked.json")


def test_report_on_a_run_with_a_deeply_nested_file_exits_cleanly(tmp_path):
    run = run_dir_with(tmp_path, "deep.json", lambda p: p.write_text("[" * 200000 + "]" * 200000))
    proc = runner_cli("report", "--results", run, "--out", tmp_path / "rep", timeout=600)
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "deep.json" in (tmp_path / "rep" / "results.csv").read_text()
