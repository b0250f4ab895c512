"""Run-stage behaviour on a real engine: timeouts, interrupts and --resume, GPU requests (this engine has
no NVIDIA runtime, so it really refuses them), `clean`, and build args that must never reach an image."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time

import docker
import pytest

from conftest import PYTHON, containers_with_label, make_args, plan_and_images, runner_cli
from runner import ROOT
from runner.results import load_result, run_dirs
from support import require, wait_until

pytestmark = pytest.mark.docker

SMOKE = ["--profile", "smoke", "--device", "cpu", "--only", "pytorch"]


def _only_result(run_dir):
    (path,) = [p for p in run_dir.glob("*.json")]
    return load_result(path)


def test_timeout_kills_the_container(torch_image, docker_client, tmp_path):
    root = tmp_path / "results"
    proc = runner_cli("run", *SMOKE, "--workload", "lenet-mnist", "--timeout", "4", "--results-dir", root,
                      timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    (run_dir,) = run_dirs(root)
    result = _only_result(run_dir)
    assert result["status"] == "timeout"
    assert "timed out after 4s" in result["message"]
    assert result["cell"]["image"] == torch_image.tag
    assert not containers_with_label(docker_client, f"dlbench.run-id={run_dir.name}")
    assert (run_dir / "logs" / f"{result['cell']['id']}.log").exists()


@pytest.mark.slow
def test_interrupt_then_resume(torch_image, docker_client, tmp_path):
    root = tmp_path / "results"
    cmd = [PYTHON, "-m", "runner", "run", *SMOKE, "--workload", "lenet-mnist,resnet50-inference,alexnet-fwd",
           "--results-dir", str(root), "--run-id", "20990101-000000-test"]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = root / "20990101-000000-test"
    label = "dlbench.run-id=20990101-000000-test"
    try:
        first = wait_until(lambda: list(run_dir.glob("*.json")), 600, "the first result")
        # the second cell's container is up: interrupt mid-run
        wait_until(lambda: [c for c in containers_with_label(docker_client, label) if c.status == "running"], 120,
                  "the second cell's container")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    assert not containers_with_label(docker_client, label)
    results = {p.name: load_result(p) for p in run_dir.glob("*.json")}
    assert len(results) == 3, out
    finished = load_result(first[0])
    assert finished["status"] == "ok"                           # finished results are kept
    interrupted = [r for r in results.values() if r["status"] == "interrupted"]
    assert len(interrupted) == 2
    assert all(r["cell"]["run_id"] == run_dir.name for r in interrupted)
    assert not (run_dir / ".runner.lock").exists()

    # --resume runs the interrupted cells again (the interrupted records move to superseded/), skips the rest
    again = runner_cli("run", *SMOKE, "--workload", "lenet-mnist,alexnet-fwd", "--results-dir", root,
                       "--resume", run_dir.name, timeout=600)
    assert "1 cell(s) have a result already and are skipped" in again.stdout, again.stdout + again.stderr
    alex = [p for p in run_dir.glob("*alexnet-fwd*.json")]
    assert len(alex) == 1 and load_result(alex[0])["status"] != "interrupted"
    assert list((run_dir / "superseded").glob("*alexnet-fwd*.json"))
    assert load_result(first[0]) == finished                     # never rewritten


def test_resume_removes_what_an_earlier_attempt_left_behind(torch_image, docker_client, tmp_path):
    """An engine lost between a cell's result and its container's removal leaves the container; the cell is
    ok, so no later attempt re-creates it under its name. --resume clears the run's leftovers."""
    root, run_id = tmp_path / "results", "20990101-000000-left"
    first = runner_cli("run", *SMOKE, "--workload", "alexnet-fwd", "--results-dir", root, "--run-id", run_id,
                       timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    result = _only_result(root / run_id)
    label = f"dlbench.run-id={run_id}"
    leftover = docker_client.containers.create(torch_image.tag, command=["true"], labels={"dlbench.run-id": run_id},
                                               name=f"dlbench-leftover-{os.getpid()}")
    try:
        assert containers_with_label(docker_client, label)
        again = runner_cli("run", *SMOKE, "--workload", "alexnet-fwd", "--results-dir", root, "--resume", run_id,
                           timeout=600)
        out = again.stdout + again.stderr
        assert again.returncode == 0, out
        assert "left behind" in out
        assert not containers_with_label(docker_client, label)
        assert _only_result(root / run_id) == result                # the finished cell is not run again
    finally:
        try:
            leftover.remove(force=True)
        except docker.errors.NotFound:
            pass


def _gpu_variant(cell, gpus):
    return dataclasses.replace(cell, device="gpu", gpus=gpus)


def test_device_requests_reach_the_engine(torch_image, docker_client, tmp_path):
    """What the runner sends for a 1-GPU and a 2-GPU cell, as the engine records it (created, not started)."""
    from runner.backends.docker import container_spec
    from runner.scheduler import RunContext
    plan, rendered = plan_and_images(only=["pytorch"], workload=["lenet-mnist"])
    (cell,) = plan.cells
    ctx = RunContext(plan=plan, run_id="20990101-000000-gpus", run_dir=tmp_path, console=None,
                     data_dir=tmp_path, machine="test")
    for gpus, ids in ((1, [0]), (2, [0, 1])):
        spec = container_spec(ctx, _gpu_variant(cell, gpus), torch_image.tag, None, tmp_path, ids)
        container = docker_client.containers.create(**spec)
        try:
            host = docker_client.api.inspect_container(container.id)["HostConfig"]
            assert host["DeviceRequests"] == [{"Driver": "", "Count": 0, "DeviceIDs": [str(i) for i in ids],
                                               "Capabilities": [["gpu"]], "Options": {}}]
            assert host["NetworkMode"] == "none" and host["CapDrop"] == ["ALL"]
            assert host["SecurityOpt"] == ["no-new-privileges"] and not host["Privileged"]
            assert host["ReadonlyRootfs"] and host["PidsLimit"] == 4096 and host["Memory"] > 0
            assert any(u["Name"] == "nofile" and u["Hard"] <= 16384 for u in host["Ulimits"])
            assert {"Name": "memlock", "Soft": -1, "Hard": -1} in host["Ulimits"]
        finally:
            container.remove(force=True)


def test_engine_without_gpu_support_gives_the_toolkit_message(torch_image, docker_client, tmp_path, quiet_console):
    from runner.engine import engine_has_nvidia_runtime, probe_gpu_support
    from runner.options import RunOptions
    from runner.run import run_plan
    if engine_has_nvidia_runtime(docker_client):
        pytest.skip("this engine has the NVIDIA runtime; it would hand out GPUs")
    message = probe_gpu_support(docker_client, torch_image.tag)       # really asks the engine
    assert message and "nvidia-container-toolkit" in message
    assert "nvidia-ctk runtime configure --runtime=docker" in message and "restart" in message
    assert 'could not select device driver "" with capabilities: [[gpu]]' in message

    plan, rendered = plan_and_images(only=["pytorch"], workload=["lenet-mnist"])
    gpu_plan = dataclasses.replace(plan, cells=[_gpu_variant(plan.cells[0], 1), _gpu_variant(plan.cells[0], 2)])
    args = make_args(results_dir=tmp_path / "results")
    run_dir, code = run_plan(gpu_plan, rendered, RunOptions.from_args(args), console=quiet_console)
    assert code == 1
    results = [load_result(p) for p in run_dir.glob("*.json")]
    assert len(results) == 2
    for result in results:
        assert result["status"] == "error"
        assert "nvidia-container-toolkit" in result["message"]
        assert "nvidia-ctk runtime configure --runtime=docker" in result["message"]
    assert not containers_with_label(docker_client, f"dlbench.run-id={run_dir.name}")
    assert not containers_with_label(docker_client, "dlbench.probe")


def test_clean_removes_leftovers(debian_base, docker_client, tmp_path):
    live_lock = tmp_path / "live.lock"
    live_lock.write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    made = {}
    for name, command, lock in (("exited", ["true"], tmp_path / "gone.lock"),
                                ("orphan", ["sleep", "300"], tmp_path / "gone.lock"),
                                ("live", ["sleep", "300"], live_lock)):
        container = docker_client.containers.run(debian_base, command, detach=True, network_mode="none",
                                                 labels={"dlbench.run-id": "20990101-000000-clean",
                                                         "dlbench.cell-id": name, "dlbench.lock": str(lock)})
        made[name] = container
    try:
        made["exited"].wait(timeout=30)
        proc = runner_cli("clean", timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        left = {c.labels["dlbench.cell-id"] for c in
                containers_with_label(docker_client, "dlbench.run-id=20990101-000000-clean")}
        assert left == {"live"}                     # a running cell of a live runner is kept
        assert "removed container" in proc.stdout and "kept 1 running" in proc.stdout
    finally:
        for container in made.values():
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass


def test_clean_images_removes_stale_tags_only(debian_base, docker_client):
    from rich.console import Console
    from runner.build import prune_images
    stale, other = "dlbench/mxnet:0.0.0-stale-prune-test", "dlbench/jax:0.0.0-prune-test"
    # a repository no real image uses, so the keep-set check below cannot remove a real image
    kept, dropped = "dlbench/prunetest:kept", "dlbench/prunetest:dropped"
    base = docker_client.images.get(debian_base)
    for ref in (stale, other, kept, dropped):
        base.tag(*ref.rsplit(":", 1))
    try:
        proc = runner_cli("clean", "--images", "--only", "mxnet", timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"removed image {stale}" in proc.stdout      # matrix.yaml renders no mxnet 0.0.0
        have = {t for image in docker_client.images.list(name="dlbench/*") for t in image.tags}
        assert stale not in have
        assert other in have                                # --only mxnet: other frameworks untouched
        assert debian_base in have                          # base images are never pruned
        with open(os.devnull, "w") as sink:
            assert prune_images({kept}, ["prunetest"], console=Console(file=sink)) == 1
        have = {t for image in docker_client.images.list(name="dlbench/prunetest") for t in image.tags
                if t.startswith("dlbench/prunetest:")}
        assert have == {kept}                               # a tag the matrix renders to stays
    finally:
        for ref in (stale, other, kept, dropped):
            try:
                docker_client.images.remove(ref)
            except docker.errors.ImageNotFound:
                pass


def test_build_never_bakes_credentials(debian_base, docker_client, tmp_path, quiet_console, monkeypatch):
    """Proxy credentials reach the build (as Docker's predefined args) but neither the image's history nor its
    config; an index URL with credentials is refused before anything is built."""
    from runner.build import build_images
    from runner.errors import UserError
    from runner.render import RenderedImage
    plan, rendered = plan_and_images(only=["mxnet"], workload=["lenet-mnist"])
    choice = next(iter(rendered.values())).choice
    dockerfile = (f"FROM {debian_base}\nARG PIP_INDEX_URL\nARG PIP_EXTRA_INDEX_URL\nARG PIP_TRUSTED_HOST\n"
                  "RUN test -n \"$HTTP_PROXY\" && test -n \"$PIP_INDEX_URL\" && echo build args arrived\n"
                  "LABEL dlbench.test=credentials\n")
    image = RenderedImage(choice=choice, tag=f"dlbench/test-credentials:{os.getpid()}", dockerfile=dockerfile,
                          context_files=(), labels=())
    secret = "s3cretPa55"
    monkeypatch.setenv("HTTP_PROXY", f"http://bob:{secret}@proxy.invalid:3128")
    monkeypatch.setenv("https_proxy", f"http://bob:{secret}@proxy.invalid:3128")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.invalid/simple")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    try:
        outcomes = build_images([image], rebuild=True, console=quiet_console, log_dir=tmp_path,
                                client=docker_client)
        assert outcomes[image.tag].ok, outcomes[image.tag].message
        assert "build args arrived" in outcomes[image.tag].log_path.read_text()
        history = json.dumps(docker_client.api.history(image.tag))
        config = json.dumps(docker_client.api.inspect_image(image.tag))
        assert secret not in history and secret not in config
        assert "proxy.invalid" not in history and "proxy.invalid" not in config

        monkeypatch.setenv("PIP_INDEX_URL", f"https://bob:{secret}@mirror.invalid/simple")
        with pytest.raises(UserError) as err:
            build_images([image], rebuild=True, console=quiet_console, log_dir=tmp_path, client=docker_client)
        assert "PIP_INDEX_URL is refused" in err.value.message and secret not in err.value.message
    finally:
        try:
            docker_client.images.remove(image.tag, force=True)
        except docker.errors.ImageNotFound:
            pass


def test_engine_script_is_a_no_op_when_an_engine_answers(docker_client):
    started = time.monotonic()
    proc = subprocess.run(["bash", "scripts/engine.sh"], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and time.monotonic() - started < 15


def test_oom_killed_container_is_status_oom(smoke_images, docker_client, tmp_path, quiet_console, monkeypatch):
    """State.OOMKilled -> status oom (the cell's memory is capped and it allocates past the cap)."""
    import runner.backends.docker as docker_backend
    import runner.run as run_mod
    from runner.options import RunOptions
    original = docker_backend.container_spec

    def hungry(ctx, cell, image_tag, image_id, staging, gpu_ids, **kwargs):
        spec = original(ctx, cell, image_tag, image_id, staging, gpu_ids, **kwargs)
        spec.update(mem_limit="64m", memswap_limit="64m",
                    entrypoint=["python", "-c", "x = [bytearray(16 << 20) for _ in range(64)]"], command=[])
        return spec

    monkeypatch.setattr(docker_backend, "container_spec", hungry)
    plan, rendered = plan_and_images(only=["mxnet"], workload=["lenet-mnist"])
    run_dir, code = run_mod.run_plan(plan, rendered, RunOptions(results_dir=tmp_path / "results"),
                                     console=quiet_console)
    assert code == 1
    result = _only_result(run_dir)
    assert result["status"] == "oom", result["message"]
    assert "OOMKilled" in result["message"] and result["metrics"]["oom_batch_size"] == plan.cells[0].batch_size
    assert not containers_with_label(docker_client, f"dlbench.run-id={run_dir.name}")


def test_a_cpuset_reaches_the_container_and_its_result(smoke_images, docker_client, tmp_path, quiet_console):
    """The scheduler's cpuset for a cell becomes the container's cpuset_cpus, and bench records the CPUs it
    actually ran on (environment.cpu_affinity) -- on this host only CPU cells run, and those run alone, so
    the backend is called with a cpuset directly."""
    from runner.backends.docker import DockerBackend
    from runner.options import RunOptions
    from runner.scheduler import RunContext
    require(len(os.sched_getaffinity(0)) >= 2, "needs 2 CPUs to pin a cell to the second one")
    plan, rendered = plan_and_images(only=["pytorch"], workload=["alexnet-fwd"], profile="smoke")
    (cell,) = plan.cells
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    ctx = RunContext(plan=plan, run_id="20990101-000000-cpus", run_dir=run_dir, console=quiet_console,
                     data_dir=run_dir / "data", machine="test-host")
    backend = DockerBackend(RunOptions(results_dir=tmp_path), quiet_console)
    second = sorted(os.sched_getaffinity(0))[1]
    image = smoke_images["pytorch"]
    ex = backend.execute(ctx, cell, image, run_dir / "staging", run_dir / "logs" / "cell.log", [], 600,
                         cpus=[second])
    result = json.loads(ex.result)
    assert result["status"] == "ok", result["message"]
    assert result["environment"]["cpu_affinity"] == str(second)
    assert result["metrics"]["settings"]["threads"] == 1      # torch sizes its pool to the cpuset


SWEEP_MATRIX = """\
frameworks:
  pytorch: {versions: ["2.15.0"]}
toolchains: [cpu]
workloads:
  cnn-synthetic:
    models: [resnet50]
    precisions: [fp32]
    sweep: {start: 4, max: 128}
    iterations: 2
    warmup: 1
    # ResNet-50 training fits at batch 4 and 8 in 1.5 GB here, and not at 16
    memory_gb: 1.5
profiles:
  smoke:
    calibration: {time_budget_s: 0, warmup_budget_s: 0}
"""


def test_a_batch_sweep_reaches_oom_in_a_real_container_and_the_report_says_where(torch_image, tmp_path):
    from runner.report.tables import batch_limit
    from runner.report import load_frame
    matrix = tmp_path / "sweep.yaml"
    matrix.write_text(SWEEP_MATRIX)
    root = tmp_path / "results"
    proc = runner_cli("run", "--matrix", matrix, "--profile", "smoke", "--device", "cpu", "--results-dir", root,
                      timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out                         # the sweep's oom is its answer, not a failure
    (run_dir,) = run_dirs(root)
    results = sorted((load_result(p) for p in run_dir.glob("*.json")), key=lambda r: r["cell"]["batch_size"])
    statuses = [r["status"] for r in results]
    assert [r["cell"]["batch_size"] for r in results] == [4, 8, 16, 32, 64, 128]
    # ok up to some batch, then one oom (the kernel's OOM killer), then not run
    assert "oom" in statuses and statuses[0] == "ok", statuses
    k = statuses.index("oom")
    assert set(statuses[:k]) == {"ok"} and set(statuses[k + 1:]) <= {"unsupported"}
    assert "OOMKilled" in results[k]["message"]
    assert all(f"ran out of memory at batch {results[k]['cell']['batch_size']}" in r["message"]
               for r in results[k + 1:])
    # ran: each of the ok batches measured its own throughput
    assert all(r["metrics"]["samples_per_s"] > 0 for r in results[:k])

    table = batch_limit(load_frame([run_dir]))
    row = next(line for line in table.splitlines() if "ResNet-50" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == str(results[k - 1]["cell"]["batch_size"])      # largest batch that fits
    assert cells[6] == str(results[k]["cell"]["batch_size"])          # out of memory at
