"""runner.results: schema validation, loading, atomic writing, error results, run directories."""

import copy
import json
import re
from pathlib import Path

import pytest

from runner.results import (
    SCHEMA_PATH, ResultError, error_result, latest_run, load_result, load_run, new_run_id, run_dirs,
    validate_result, write_result,
)

FIXTURES = Path(__file__).parent / "fixtures" / "results"
GPU_RUN = FIXTURES / "20261122-061500-ab12"
BROKEN = GPU_RUN / "pytorch-2.15.0-cuda12.8-cudnn9-py3.11-vgg19-mnist-fashion-mnist-b64-fp32-gpu1.json"


def _good() -> dict:
    path = GPU_RUN / "pytorch-2.15.0-cuda12.8-cudnn9-py3.11-vgg16-step-b16-fp32-gpu1.json"
    return json.loads(path.read_text())


def test_schema_path_points_at_the_contract():
    assert SCHEMA_PATH.name == "result-v1.json" and SCHEMA_PATH.is_file()


def test_every_fixture_but_the_broken_one_is_valid():
    files = sorted(FIXTURES.glob("*/*.json"))
    assert len(files) > 50
    for path in files:
        if path == BROKEN:
            continue
        assert validate_result(json.loads(path.read_text())) == [], path


@pytest.mark.parametrize("breakage, where", [
    (lambda r: r.pop("status"), "(top level)"),
    (lambda r: r.update(status="crashed"), "status"),
    (lambda r: r["metrics"].update(test_accuracy=98.5), "metrics.test_accuracy"),  # percent, not fraction
    (lambda r: r["cell"].update(batch_size=0), "cell.batch_size"),
    (lambda r: r["cell"].update(precision="fp64"), "cell.precision"),
    (lambda r: r.update(extra_field=1), "(top level)"),
    (lambda r: r["metrics"]["step_time_s"].pop("jitter"), "metrics.step_time_s"),
    (lambda r: r.update(schema_version=2), "schema_version"),
    (lambda r: r["metrics"].update(samples_per_s=-1.0), "metrics.samples_per_s"),
    (lambda r: r["metrics"].update(samples_per_s=0.0), "metrics.samples_per_s"),
    (lambda r: r["metrics"].update(train_time_s=-3.0), "metrics.train_time_s"),
    (lambda r: r["metrics"].update(step_times_s=[0.1, -0.1]), "metrics.step_times_s[1]"),
    (lambda r: r["metrics"].update(headline={"metric": "step_time_s"}), "metrics.headline"),
    (lambda r: r["metrics"].update(warmup_stop="bored"), "metrics.warmup_stop"),
])
def test_validate_result_rejects_broken_results(breakage, where):
    obj = _good()
    breakage(obj)
    errors = validate_result(obj)
    assert errors
    assert any(e.startswith(where + ": ") for e in errors), errors


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_load_result_refuses_nan_and_infinity(tmp_path, token):
    # Python's json reads these by default; JSON has no such numbers, and a rate that is one is no result
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_good(), indent=2).replace('"timed_wall_s": ', '"timed_wall_s": ' + token + ", \"x\": "))
    with pytest.raises(ResultError, match=f"not valid JSON .*{token.lstrip('-')}"):
        load_result(path)


def test_validate_result_rejects_non_objects():
    assert validate_result([]) and validate_result(None) and validate_result("x")


def test_load_result_reasons(tmp_path):
    with pytest.raises(ResultError, match="missing"):
        load_result(tmp_path / "nope.json")
    with pytest.raises(ResultError, match="not valid JSON") as e:
        load_result(BROKEN)
    assert "\n" not in str(e.value)
    bad = _good()
    bad["status"] = "weird"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ResultError, match=r"bad\.json: does not match result-v1\.json: status"):
        load_result(tmp_path / "bad.json")
    assert load_result(GPU_RUN / "pytorch-2.15.0-cuda12.8-cudnn9-py3.11-vgg16-step-b16-fp32-gpu1.json")["status"] == "ok"


def test_write_result_is_atomic_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "run" / "cell.json"
    obj = _good()
    write_result(path, obj)
    assert load_result(path) == obj
    before = path.read_bytes()
    other = copy.deepcopy(obj)
    other["message"] = "different"
    with pytest.raises(ResultError, match="already exists"):
        write_result(path, other)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["cell.json"]  # no temp file left behind


@pytest.mark.parametrize("status", ["error", "timeout", "interrupted"])
def test_error_result_is_schema_valid(status):
    cell = _good()["cell"]
    cell["not_a_cell_field"] = "dropped"
    obj = error_result(cell, status, "container exited with code 137", log_tail=["line 1", "line 2"])
    assert validate_result(obj) == []
    assert obj["status"] == status and obj["metrics"] == {} and obj["log_tail"] == ["line 1", "line 2"]
    assert "not_a_cell_field" not in obj["cell"]
    assert obj["started_at"] and obj["finished_at"]


def test_error_result_refuses_ok():
    with pytest.raises(ValueError):
        error_result(_good()["cell"], "ok", "")


def test_run_dirs_and_latest_run(tmp_path):
    assert run_dirs(tmp_path / "missing") == [] and latest_run(tmp_path) is None
    for name in ("20261122-070000-cd34", "20261121-090000-b0b0", "20261122-061500-ab12", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in run_dirs(tmp_path)] == ["20261121-090000-b0b0", "20261122-061500-ab12",
                                                    "20261122-070000-cd34"]
    assert latest_run(tmp_path).name == "20261122-070000-cd34"


def test_load_run_turns_unusable_files_into_error_results():
    results = load_run(GPU_RUN)
    assert len(results) == len(list(GPU_RUN.glob("*.json")))
    assert all(validate_result(r) == [] for r in results)
    broken = [r for r in results if r["cell"]["id"] == BROKEN.stem]
    assert len(broken) == 1
    r = broken[0]
    assert r["status"] == "error" and BROKEN.name in r["message"] and "not valid JSON" in r["message"]
    # the cell is read back from its id, so the failure shows in the vgg19-mnist table
    assert r["cell"]["workload"] == "vgg19-mnist" and r["cell"]["dataset"] == "fashion-mnist"
    assert r["cell"]["run_id"] == GPU_RUN.name
    assert all(x["cell"]["run_id"] == GPU_RUN.name for x in results)


def test_load_run_salvages_valid_cell_fields_of_an_invalid_file(tmp_path):
    obj = _good()
    obj["metrics"]["test_accuracy"] = 99.1
    (tmp_path / "odd-name.json").write_text(json.dumps(obj))
    (r,) = load_run(tmp_path)
    assert r["status"] == "error" and "odd-name.json" in r["message"]
    assert r["cell"]["workload"] == "vgg16-step" and r["cell"]["framework"] == "pytorch"
    assert r["environment"]["machine"] == "gpu-box"


def test_new_run_id_format():
    a = new_run_id()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", a)
