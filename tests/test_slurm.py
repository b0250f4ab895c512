"""`--backend slurm` on a real single-node Slurm (slurmctld + slurmd + munge) and a real local registry,
both started by `make cluster` (scripts/cluster.sh): images built here, pushed, pulled by digest by the
job on the node, the same container spec as the Docker backend, results and tables as from Docker.
Also: GRES requests as Slurm records them, Ctrl-C cancelling the run's jobs, a job Slurm kills at its
time limit, resume, and the refusal to run without a registry when the nodes cannot see this engine."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest
from rich.console import Console

from conftest import containers_with_label, plan_and_images, runner_cli
from support import require, wait_until

REGISTRY = os.environ.get("DLBENCH_REGISTRY_ADDR", "127.0.0.1:5000")
SELECT = ["--profile", "smoke", "--device", "cpu"]

pytestmark = [pytest.mark.docker, pytest.mark.slurm]


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and any(s in proc.stdout for s in ("idle", "mixed", "allocated"))


@pytest.fixture(scope="module")
def cluster():
    require(_slurm_answers(), "no Slurm controller answers (`make cluster` starts a single-node one)")
    try:
        urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=5).close()
        registry_up = True
    except OSError:
        registry_up = False
    require(registry_up, f"no image registry answers at {REGISTRY} (`make cluster` starts one)")
    return REGISTRY


def _scontrol_raw(job_id: str) -> str:
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _scontrol(job_id: str) -> dict:
    from runner.backends.slurm import job_fields
    return job_fields(_scontrol_raw(job_id))


def _job_ids(log: Path) -> list[str]:
    return [line.split()[3] for line in log.read_text().splitlines() if line.startswith("[runner] Slurm job ")]


def _quiet():
    return Console(file=open(os.devnull, "w"))


def _dlbench_jobs() -> list[str]:
    proc = subprocess.run(["squeue", "-h", "-o", "%i|%k"], capture_output=True, text=True, timeout=30)
    return [line.split("|")[0] for line in proc.stdout.splitlines() if "|dlbench " in line]


def test_smoke_cells_of_two_frameworks_run_as_slurm_jobs(cluster, smoke_images, docker_client, tmp_path):
    from runner.results import load_result
    registry = f"{cluster}/dlbench-test"
    root = tmp_path / "results"
    proc = runner_cli("run", "--backend", "slurm", *SELECT, "--only", "pytorch,tensorflow",
                      "--workload", "lenet-mnist,alexnet-fwd", "--registry", registry, "--results-dir", root,
                      "--run-id", "slurm-e2e", timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "push: dlbench/pytorch:" in out and "slurm: " in out and " done" in out
    run_dir = root / "slurm-e2e"
    results = [load_result(p) for p in run_dir.glob("*.json")]
    assert {r["cell"]["framework"] for r in results} == {"pytorch", "tensorflow"} and len(results) == 4
    for result in results:
        assert result["status"] == "ok", result.get("message")
        cell = result["cell"]
        log = run_dir / "logs" / f"{cell['id']}.log"
        (job_id,) = _job_ids(log)
        fields = _scontrol(job_id)
        assert fields["JobState"] == "COMPLETED"
        assert f"Comment=dlbench run=slurm-e2e cell={cell['id']} " in _scontrol_raw(job_id)
        assert fields["JobName"] == f"dlbench-{cell['id']}"
        # the job pulled the pushed image by digest: the very image built here ran
        built = smoke_images[cell["framework"]]
        assert cell["image"] == built.tag
        assert cell["image_id"] == docker_client.images.get(built.tag).id
        assert "sha256:" in (run_dir / ".slurm" / f"{cell['id']}.job.json").read_text()
    catalog = json.load(urllib.request.urlopen(f"http://{cluster}/v2/_catalog", timeout=10))
    assert {"dlbench-test/dlbench/pytorch", "dlbench-test/dlbench/tensorflow"} <= set(catalog["repositories"])
    # the same tables as the Docker backend's
    report = runner_cli("report", "--results", run_dir, "--out", tmp_path / "reports", timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    tables = "\n".join(p.read_text() for p in (tmp_path / "reports").glob("*.md"))
    assert "PyTorch" in tables and "TensorFlow" in tables and "AlexNet" in tables


def _gpu(cell, gpus):
    return dataclasses.replace(cell, device="gpu", gpus=gpus)


def test_gpu_cells_ask_slurm_for_gres(cluster, torch_image, tmp_path, monkeypatch):
    """This host has no GPU: Slurm (2 GPUs declared as GRES) allocates them, the node's engine then refuses
    the device request, and the cell's result says so. The request itself is asserted on the job."""
    from runner.options import RunOptions, SlurmOptions
    from runner.results import load_result
    from runner.run import run_plan
    monkeypatch.setenv("DLBENCH_SLURM_CPUS_PER_GPU", "1")
    monkeypatch.setenv("DLBENCH_SLURM_MEM", "1G")
    plan, rendered = plan_and_images(only=["pytorch"], workload=["alexnet-fwd"])
    gpu_plan = dataclasses.replace(plan, cells=[_gpu(plan.cells[0], 2)])
    options = RunOptions(backend="slurm", results_dir=tmp_path / "results", run_id="slurm-gres",
                         slurm=SlurmOptions(poll_s=0.5))
    run_dir, code = run_plan(gpu_plan, rendered, options, _quiet())
    assert code == 1
    (result,) = [load_result(p) for p in run_dir.glob("*.json")]
    cell_id = result["cell"]["id"]
    assert result["status"] == "error" and "nvidia-container-toolkit" in result["message"], result["message"]
    (job_id,) = _job_ids(run_dir / "logs" / f"{cell_id}.log")
    raw = _scontrol_raw(job_id)
    assert "TresPerNode=gres:gpu:2" in raw, raw
    log = (run_dir / "logs" / f"{cell_id}.log").read_text()
    assert "Slurm allocated GPU(s) 0,1" in log, log   # allocated on the node, not only asked for
    assert f"run=slurm-gres cell={cell_id}" in raw


def _sleeping_spec(monkeypatch):
    """Cells whose container sleeps (as a hung benchmark would), through the real spec otherwise."""
    import runner.backends.slurm as slurm
    original = slurm.container_spec

    def sleeping(*args, **kwargs):
        spec = original(*args, **kwargs)
        spec.update(entrypoint=["sleep", "600"], command=[])
        return spec

    monkeypatch.setattr(slurm, "container_spec", sleeping)
    return original


def test_ctrl_c_cancels_the_jobs_and_resume_finishes(cluster, torch_image, docker_client, tmp_path, monkeypatch):
    from runner.options import RunOptions, SlurmOptions
    from runner.results import load_result
    from runner.run import run_plan
    import runner.backends.slurm as slurm
    original = _sleeping_spec(monkeypatch)
    plan, rendered = plan_and_images(only=["pytorch"], workload=["alexnet-fwd", "alexnet-fwdbwd"])
    options = RunOptions(backend="slurm", results_dir=tmp_path / "results", run_id="slurm-int",
                         slurm=SlurmOptions(poll_s=0.5))
    label = "dlbench.run-id=slurm-int"

    def interrupt_when_running():
        wait_until(lambda: containers_with_label(docker_client, label), 300, "a cell's container")
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_running, daemon=True).start()
    run_dir, code = run_plan(plan, rendered, options, _quiet())
    assert code == 130
    results = {p.stem: load_result(p) for p in run_dir.glob("*.json")}
    assert len(results) == len(plan.cells) and {r["status"] for r in results.values()} == {"interrupted"}
    wait_until(lambda: not _dlbench_jobs(), 60, "the run's jobs to leave the queue")
    wait_until(lambda: not containers_with_label(docker_client, label), 60, "the containers to go")
    for cell in plan.cells:
        for job_id in _job_ids(run_dir / "logs" / f"{cell.id}.log"):
            assert _scontrol(job_id)["JobState"] == "CANCELLED"

    monkeypatch.setattr(slurm, "container_spec", original)   # the real benchmark this time
    resumed = dataclasses.replace(options, run_id=None, resume="slurm-int")
    run_dir2, code = run_plan(plan, rendered, resumed, _quiet())
    assert run_dir2 == run_dir and code == 0
    assert {load_result(p)["status"] for p in run_dir.glob("*.json")} == {"ok"}
    assert len(list((run_dir / "superseded").glob("*.json"))) == len(plan.cells)


def test_a_job_slurm_kills_at_its_time_limit_is_a_timeout_result(cluster, torch_image, docker_client, tmp_path,
                                                                 monkeypatch):
    from runner.options import RunOptions, SlurmOptions
    from runner.results import load_result
    from runner.run import run_plan
    import runner.backends.slurm as slurm
    _sleeping_spec(monkeypatch)
    monkeypatch.setattr(slurm, "time_limit_min", lambda timeout_s: 1)   # Slurm's, not the container's, limit
    plan, rendered = plan_and_images(only=["pytorch"], workload=["alexnet-fwd"])
    options = RunOptions(backend="slurm", results_dir=tmp_path / "results", run_id="slurm-limit", timeout=900,
                         slurm=SlurmOptions(poll_s=1))
    run_dir, code = run_plan(plan, rendered, options, _quiet())
    assert code == 1
    (result,) = [load_result(p) for p in run_dir.glob("*.json")]
    assert result["status"] == "timeout", result["message"]
    assert "Slurm killed job" in result["message"] and "time limit" in result["message"]
    (job_id,) = _job_ids(run_dir / "logs" / f"{result['cell']['id']}.log")
    assert _scontrol(job_id)["JobState"] == "TIMEOUT"
    wait_until(lambda: not containers_with_label(docker_client, "dlbench.run-id=slurm-limit"), 60,
                "the node to remove the container")


def test_no_registry_and_foreign_nodes_is_refused(cluster, monkeypatch, tmp_path):
    import runner.backends.slurm as slurm
    from runner.errors import UserError
    from runner.options import RunOptions
    monkeypatch.setattr(slurm, "slurm_nodes", lambda: ["gpu-node-01", "gpu-node-02"])
    with pytest.raises(UserError) as err:
        slurm.SlurmBackend(RunOptions(backend="slurm", results_dir=tmp_path), _quiet())
    message = str(err.value)
    assert "no image registry is configured" in message and "registry: HOST:PORT/PREFIX" in message
    assert "gpu-node-01" in message and "\n" not in message


@pytest.mark.parametrize("var,value", [("DLBENCH_SLURM_MEM", "8G; rm -rf /"), ("DLBENCH_SLURM_CPUS_PER_GPU", "-1")])
def test_malformed_resource_overrides_are_refused(cluster, monkeypatch, tmp_path, var, value):
    import runner.backends.slurm as slurm
    from runner.errors import UserError
    from runner.options import RunOptions
    monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match=var):
        slurm.SlurmBackend(RunOptions(backend="slurm", results_dir=tmp_path), _quiet())
