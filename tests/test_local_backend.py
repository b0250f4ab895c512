"""`--backend local`: cells as `python -m bench` subprocesses of this interpreter (hosts without Docker),
with the same result handling as containers: logs, timeouts, a missing result becomes an error."""

from __future__ import annotations

import os
import stat

import pytest

from conftest import runner_cli
from runner.results import load_result, run_dirs

SMOKE = ["--backend", "local", "--profile", "smoke", "--device", "cpu", "--only", "pytorch", "--workload",
         "lenet-mnist"]


def _only(root):
    (run_dir,) = run_dirs(root)
    (path,) = run_dir.glob("*.json")
    return run_dir, load_result(path)


@pytest.fixture
def no_engine(tmp_path):
    """The local backend must not need an engine: point DOCKER_HOST at nothing."""
    return {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}


def test_local_pytorch_smoke_cell(tmp_path, no_engine):
    root = tmp_path / "results"
    proc = runner_cli("run", *SMOKE, "--results-dir", root, env=no_engine, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir, result = _only(root)
    assert result["status"] == "ok", result["message"]
    assert result["cell"]["id"].startswith("pytorch-") and result["cell"]["run_id"] == run_dir.name
    assert result["cell"].get("image") is None                    # no container image ran it
    assert result["metrics"]["samples_per_s"] > 0 and 0 <= result["metrics"]["test_accuracy"] <= 1
    log = (run_dir / "logs" / f"{result['cell']['id']}.log").read_text()
    assert "backend local" in log and "status: ok" in log
    assert not (run_dir / ".cells").exists()


def test_local_timeout(tmp_path, no_engine):
    root = tmp_path / "results"
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\necho starting\nexec sleep 60\n")
    slow.chmod(slow.stat().st_mode | stat.S_IXUSR)
    proc = runner_cli("run", *SMOKE, "--timeout", "2", "--results-dir", root,
                      env={**no_engine, "DLBENCH_LOCAL_PYTHON": str(slow)}, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    _, result = _only(root)
    assert result["status"] == "timeout" and "timed out after 2s" in result["message"]
    assert "starting" in result["log_tail"]


def test_local_missing_result_is_an_error_with_the_log_tail(tmp_path, no_engine):
    root = tmp_path / "results"
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\nfor i in $(seq 1 30); do echo line $i; done\necho 'it broke' >&2\nexit 3\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    proc = runner_cli("run", *SMOKE, "--results-dir", root,
                      env={**no_engine, "DLBENCH_LOCAL_PYTHON": str(broken)}, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    _, result = _only(root)
    assert result["status"] == "error"
    assert "exited with code 3" in result["message"] and "no result file" in result["message"]
    assert len(result["log_tail"]) == 20 and result["log_tail"][-1] == "it broke"


def test_local_invalid_result_is_kept_and_reported(tmp_path, no_engine):
    root = tmp_path / "results"
    liar = tmp_path / "liar-python"
    # writes a result that does not match the schema to the --out path (the last argument)
    liar.write_text('#!/bin/sh\nfor last; do :; done\necho \'{"status": "ok"}\' > "$last"\nexit 0\n')
    liar.chmod(liar.stat().st_mode | stat.S_IXUSR)
    proc = runner_cli("run", *SMOKE, "--results-dir", root,
                      env={**no_engine, "DLBENCH_LOCAL_PYTHON": str(liar)}, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run_dir, result = _only(root)
    assert result["status"] == "error" and "does not match" in result["message"]
    assert os.path.exists(run_dir / "logs" / f"{result['cell']['id']}.invalid.json")


def test_plan_commands_script_runs_without_the_runner_and_reports(tmp_path, no_engine):
    """`plan --commands`: a shell script of bench commands for a host without Docker or the runner's
    dependencies; its results are a run directory the report stage reads."""
    import torch
    import subprocess
    import sys
    from runner import ROOT
    proc = runner_cli("plan", "--commands", "--profile", "smoke", "--device", "cpu", "--only", "pytorch",
                      "--workload", "alexnet-fwd,vgg16-step", "--run-id", "script-run", env=no_engine, timeout=120)
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / "cells.sh"
    script.write_text(proc.stdout)
    run_dir = tmp_path / "results" / "script-run"
    # a bare interpreter environment: no runner on the path, only bench from the checkout's root
    env = {"PATH": os.environ["PATH"], "PYTHON": sys.executable, "RUN_DIR": str(run_dir),
           "DATA_DIR": str(tmp_path / "data"), "DLBENCH_MACHINE": "script test host"}
    first = subprocess.run(["sh", str(script)], cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True, timeout=900)
    assert first.returncode == 0, first.stdout
    results = {p.stem: load_result(p) for p in run_dir.glob("*.json")}
    assert len(results) == 2 and first.stdout.count("[pytorch-") == 2
    for cell_id, result in results.items():
        assert result["status"] == "ok", result["message"]
        assert result["cell"]["id"] == cell_id and result["cell"]["run_id"] == "script-run"
        assert result["environment"]["machine"] == "script test host"
        assert (run_dir / "logs" / f"{cell_id}.log").is_file()
    # a second pass skips the cells that have a result
    again = subprocess.run(["sh", str(script)], cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert again.returncode == 0 and "[pytorch-" not in again.stdout
    # the tables name the version that ran (this venv's torch), not the matrix's 2.15.0
    out = tmp_path / "reports"
    report = runner_cli("report", "--results", str(run_dir), "--out", str(out), env=no_engine, timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    tables = "\n".join(p.read_text() for p in out.glob("*.md"))
    assert f"PyTorch {torch.__version__}" in tables and "script test host" in tables
