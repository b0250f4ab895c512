"""Property-based fuzzing of the result-file reader that `report` uses (runner.results).

Any JSON document, any mutation of a real result file and any bytes end in a loaded, schema-valid
result or a ResultError naming the file — never another exception — and load_run always turns the
file into a row (an error row that names the file when it is unusable).
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.results import ResultError, load_result, load_run
from support import json_paths

FUZZ = settings(max_examples=200, deadline=5000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FIXTURES = Path(__file__).parent / "fixtures" / "results"
REAL_FILE = FIXTURES / "20261122-061500-ab12" / "pytorch-2.15.0-cuda12.8-cudnn9-py3.11-vgg16-step-b16-fp32-gpu1.json"
REAL = json.loads(REAL_FILE.read_text())
NAME = "pytorch-2.15.0-cpu-py3.11-vgg16-step-b16-fp32-cpu.json"

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 80, max_value=2 ** 80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["ok", "error", "timeout", "pytorch", "cpu", "fp32", "images_per_s"]))
values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)), max_leaves=30)


def check(payload) -> None:
    run = Path(tempfile.mkdtemp(prefix="dlbench-fuzz-run-"))
    try:
        path = run / NAME
        if isinstance(payload, bytes):
            path.write_bytes(payload)
        else:
            path.write_text(payload, encoding="utf-8", errors="surrogatepass")
        try:
            obj = load_result(path)
            assert isinstance(obj, dict) and obj["status"] in ("ok", "error", "timeout", "interrupted", "oom",
                                                               "unsupported")
        except ResultError as exc:
            assert NAME in exc.message and "\n" not in exc.message, exc.message
        rows = load_run(run)
        assert len(rows) == 1 and isinstance(rows[0]["cell"], dict)
        if rows[0]["status"] == "error" and "unusable result file" in rows[0].get("message", ""):
            assert NAME in rows[0]["message"]
    finally:
        shutil.rmtree(run, ignore_errors=True)


@FUZZ
@given(values)
def test_arbitrary_json(doc):
    check(json.dumps(doc, allow_nan=True))


REAL_PATHS = [p for p in json_paths(REAL) if p]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(REAL_PATHS), st.booleans(), values), min_size=1, max_size=3))
def test_mutated_real_result(mutations):
    doc = copy.deepcopy(REAL)
    for path, delete, value in mutations:
        parent = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            if delete:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    check(json.dumps(doc, allow_nan=True))


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data):
    check(data)


@FUZZ
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["[]", "{}"]))
def test_nesting(depth, brackets):
    opener, closer = brackets
    inner = '"a":' if opener == "{" else ""
    check((opener + inner) * depth + "1" * (opener == "{") + closer * depth if opener == "{" else
          opener * depth + closer * depth)


def test_the_real_file_loads():
    assert load_result(REAL_FILE)["status"] == "ok"
    check(REAL_FILE.read_text())
