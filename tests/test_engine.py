"""The Docker backend's pure parts (no engine needed): the dead-engine message, build args, the build
context, the container spec (security settings, mounts, GPU device requests), the GPU slot scheduler."""

from __future__ import annotations

import dataclasses
import io
import os
import socket
import tarfile
import threading
import time

import docker
import pytest

from runner.build import build_args, build_context
from runner.engine import ENGINE_HELP, gpu_refusal
from runner.errors import UserError
from runner.backends.docker import container_spec, device_requests
from runner.contract import bench_args
from runner.scheduler import GpuSlots, RunContext
from conftest import plan_and_images, runner_cli

SELECT = ["--profile", "smoke", "--device", "cpu", "--only", "pytorch", "--workload", "lenet-mnist"]


@pytest.fixture(scope="module")
def torch_cell():
    plan, rendered = plan_and_images(only=["pytorch"], workload=["lenet-mnist"])
    (cell,) = plan.cells
    return plan, rendered, cell


@pytest.fixture
def closed_socket(tmp_path):
    """A unix socket path nobody listens on."""
    path = tmp_path / "closed.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    return f"unix://{path}"


@pytest.mark.parametrize("stage", [["run"], ["base"], ["build"], [], ["clean"]])
def test_dead_engine_is_exit_2_with_the_message(stage, closed_socket, tmp_path):
    args = list(stage)
    if stage != ["clean"]:
        args += SELECT
    if stage in (["run"], []):
        args += ["--results-dir", tmp_path / "results"]
    proc = runner_cli(*args, env={"DOCKER_HOST": closed_socket}, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "No Docker engine answers" in proc.stderr
    assert "make engine" in proc.stderr and "--backend local" in proc.stderr
    assert "Traceback" not in out
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_engine_help_is_one_paragraph():
    assert "\n" not in ENGINE_HELP


def test_build_args_refuse_index_credentials():
    with pytest.raises(UserError) as err:
        build_args({"PIP_INDEX_URL": "https://alice:s3cret@pypi.example.org/simple"})
    assert "credentials" in err.value.message and "proxy" in err.value.message
    assert "s3cret" not in err.value.message
    with pytest.raises(UserError):
        build_args({"PIP_EXTRA_INDEX_URL": "https://pypi.org/simple https://token@mirror.example/simple"})


def test_build_args_pass_index_and_proxies():
    env = {"PIP_INDEX_URL": "https://mirror.example/simple", "PIP_TRUSTED_HOST": "mirror.example",
           "HTTPS_PROXY": "http://u:p@proxy:3128", "no_proxy": "localhost", "UNRELATED": "x"}
    assert build_args(env) == {"PIP_INDEX_URL": "https://mirror.example/simple", "PIP_TRUSTED_HOST": "mirror.example",
                               "HTTPS_PROXY": "http://u:p@proxy:3128", "no_proxy": "localhost"}


def test_build_context_is_deterministic(torch_cell):
    plan, rendered, cell = torch_cell
    image = next(iter(rendered.values()))
    first, second = build_context(image).getvalue(), build_context(image).getvalue()
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert "Dockerfile" in names and "bench/cli.py" in names
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        assert tar.extractfile("Dockerfile").read().decode() == image.dockerfile


def test_bench_args(torch_cell):
    plan, rendered, cell = torch_cell
    args = bench_args(cell, "/data", f"/results/{cell.id}.json")
    assert args[:4] == ["--framework", "pytorch", "--workload", "lenet-mnist"]
    joined = " ".join(args)
    assert "--batch-size 100" in joined and "--precision fp32" in joined and "--iterations 20" in joined
    assert "--device cpu --gpus 0 --data-dir /data --dataset fashion-mnist" in joined
    assert '--options-json {"eval_batches":2}' in joined
    assert args[-2:] == ["--out", f"/results/{cell.id}.json"]
    from bench.cli import build_parser, parse_options
    parsed = build_parser().parse_args(args)  # bench accepts exactly what the runner sends
    assert parsed.dataset == "fashion-mnist" and parsed.batch_size == 100
    assert parse_options(parsed.option, parsed.options_json) == {"eval_batches": 2}


def test_options_cross_into_bench_with_their_types(torch_cell):
    """One JSON argument: a bool stays a bool, an int an int, a string a string (no guessing back)."""
    from bench.cli import build_parser, parse_options
    plan, rendered, cell = torch_cell
    typed = dataclasses.replace(cell, options=(("xla", True), ("eval_batches", 3), ("data_format", "NCHW"),
                                               ("lr", 0.5), ("tag", "true")))
    parsed = build_parser().parse_args(bench_args(typed, "/data", "/results/x.json"))
    assert parse_options(parsed.option, parsed.options_json) == {
        "xla": True, "eval_batches": 3, "data_format": "NCHW", "lr": 0.5, "tag": "true"}


@pytest.mark.parametrize("text,why", [("[1]", "JSON object"), ('{"a": NaN}', "NaN"), ('{"a": [1]}', "string, number"),
                                      ('{"a": null}', "string, number"), ("{", "JSON object")])
def test_bad_options_json_is_refused(text, why):
    from bench.contract import decode_options
    with pytest.raises(ValueError, match=why):
        decode_options(text)


def test_cell_record_is_one_shape_on_both_sides(torch_cell):
    from bench.contract import CELL_KEYS, cell_record as bench_record
    from runner.contract import cell_record
    plan, rendered, cell = torch_cell
    record = cell_record(cell, "run-1", "smoke")
    assert tuple(record) == tuple(k for k in CELL_KEYS if k != "repeat") and record["id"] == cell.id and record["options"] == dict(cell.options)
    with pytest.raises(TypeError, match="unknown field"):
        bench_record(framework="pytorch", colour="blue")


def _ctx(plan, tmp_path):
    return RunContext(plan=plan, run_id="20260101-000000-abcd", run_dir=tmp_path / "run", console=None,
                      data_dir=tmp_path / "data", machine="test machine")


def test_container_spec_is_locked_down(torch_cell, tmp_path):
    plan, rendered, cell = torch_cell
    image = next(iter(rendered.values()))
    staging = tmp_path / "run" / ".cells" / cell.id
    spec = container_spec(_ctx(plan, tmp_path), cell, image.tag, "sha256:abc", staging, [])
    assert spec["network_mode"] == "none"
    assert spec["cap_drop"] == ["ALL"] and spec["security_opt"] == ["no-new-privileges"]
    assert spec["privileged"] is False and spec["user"] == "1000:1000"
    assert spec["volumes"][str(staging)] == {"bind": "/results", "mode": "rw"}
    # Only the cell's own dataset, read-only, where bench looks for it.
    assert cell.dataset == "fashion-mnist"
    data_mounts = {k: v for k, v in spec["volumes"].items() if k != str(staging)}
    assert data_mounts == {str((tmp_path / "data" / "fashion-mnist").resolve()):
                           {"bind": "/data/fashion-mnist", "mode": "ro"}}
    assert all(v["mode"] == "ro" for k, v in spec["volumes"].items() if k != str(staging))
    assert spec["labels"]["dlbench.run-id"] == "20260101-000000-abcd" and spec["labels"]["dlbench.cell-id"] == cell.id
    assert spec["environment"]["DLBENCH_CELL_ID"] == cell.id and spec["environment"]["DLBENCH_IMAGE"] == image.tag
    assert spec["environment"]["DLBENCH_IMAGE_ID"] == "sha256:abc"
    assert spec["environment"]["DLBENCH_MACHINE"] == "test machine"
    assert spec["shm_size"] == "2g" and "device_requests" not in spec
    assert spec["command"][-1] == f"/results/{cell.id}.json"
    # read-only image, scratch in tmpfs, bounded processes, memory and open files
    assert spec["read_only"] is True and set(spec["tmpfs"]) == {"/tmp", "/home/bench"}
    assert spec["pids_limit"] == 4096 and spec["mem_limit"] == spec["memswap_limit"]
    (nofile,) = [dict(u) for u in spec["ulimits"]]
    assert nofile["Name"] == "nofile" and 1024 <= nofile["Soft"] == nofile["Hard"] <= 16384


def test_memory_limit_follows_the_workload_then_the_host(torch_cell, tmp_path, monkeypatch):
    plan, rendered, cell = torch_cell
    image = next(iter(rendered.values()))
    sized = dataclasses.replace(cell, memory_gb=1.5)
    assert container_spec(_ctx(plan, tmp_path), sized, image.tag, None, tmp_path, [])["mem_limit"] == "1536m"
    monkeypatch.setenv("DLBENCH_CELL_MEMORY_GB", "3")
    assert container_spec(_ctx(plan, tmp_path), cell, image.tag, None, tmp_path, [])["mem_limit"] == "3072m"
    monkeypatch.delenv("DLBENCH_CELL_MEMORY_GB")
    host_mb = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) >> 20
    limit = int(container_spec(_ctx(plan, tmp_path), cell, image.tag, None, tmp_path, [])["mem_limit"][:-1])
    assert 0.85 * host_mb < limit < host_mb


def test_device_requests_for_one_and_two_gpus(torch_cell, tmp_path):
    plan, rendered, cell = torch_cell
    one = dataclasses.replace(cell, device="gpu", gpus=1)
    two = dataclasses.replace(cell, device="gpu", gpus=2)
    assert device_requests(one, [3]) == [{"Driver": "", "Count": 0, "DeviceIDs": ["3"],
                                          "Capabilities": [["gpu"]], "Options": {}}]
    assert device_requests(two, [0, 1]) == [docker.types.DeviceRequest(device_ids=["0", "1"],
                                                                       capabilities=[["gpu"]])]
    # GPUs the host cannot enumerate: the engine picks `count` of them.
    assert device_requests(two, []) == [docker.types.DeviceRequest(count=2, capabilities=[["gpu"]])]
    assert device_requests(cell, []) == []
    image = next(iter(rendered.values()))
    spec = container_spec(_ctx(plan, tmp_path), two, image.tag, None, tmp_path / "s", [0, 1])
    assert spec["device_requests"][0]["DeviceIDs"] == ["0", "1"]
    assert spec["shm_size"] == "16g" and "--gpus 2" in " ".join(spec["command"])


def test_gpu_refusal_message():
    exc = docker.errors.APIError("500 Server Error", explanation='could not select device driver "" with '
                                                                'capabilities: [[gpu]]')
    message = gpu_refusal(exc)
    assert "nvidia-container-toolkit" in message
    assert "nvidia-ctk runtime configure --runtime=docker" in message and "restart" in message
    assert gpu_refusal(docker.errors.APIError("500", explanation="no space left on device")) is None


def test_gpu_slots_share_gpus_between_cells():
    slots = GpuSlots([0, 1])
    stop = threading.Event()
    held, log, lock = [], [], threading.Lock()

    def cell(n, seconds):
        ids = slots.acquire(n, stop)
        with lock:
            held.append(ids)
            log.append(("start", n, tuple(ids), time.monotonic()))
        time.sleep(seconds)
        with lock:
            log.append(("end", n, tuple(ids), time.monotonic()))
        slots.release(ids)

    threads = [threading.Thread(target=cell, args=(1, 0.3)), threading.Thread(target=cell, args=(1, 0.3))]
    for t in threads:
        t.start()
    time.sleep(0.05)
    late = threading.Thread(target=cell, args=(2, 0.05))
    late.start()
    for t in threads + [late]:
        t.join(5)
    singles = [e for e in log if e[0] == "start" and e[1] == 1]
    assert sorted(i for e in singles for i in e[2]) == [0, 1]           # the two 1-GPU cells ran side by side
    two_start = next(e for e in log if e[0] == "start" and e[1] == 2)
    assert two_start[2] == (0, 1)
    assert all(two_start[3] >= e[3] for e in log if e[0] == "end" and e[1] == 1)  # and the 2-GPU one waited
    stop.set()
    assert GpuSlots([0]).acquire(2, stop) is None                       # a stop releases waiters


def test_the_profiles_sampling_rule_reaches_bench():
    """matrix.yaml's profile calibration becomes bench's flags, which bench parses back to the same values."""
    from bench.cli import build_parser
    for profile, expect in (("cpu", {"target_ci": 0.05, "time_budget": 10.0, "warmup_budget": 10.0,
                                     "max_warmup": 50, "min_samples": 6}),
                            ("smoke", {"time_budget": 0.0, "warmup_budget": 0.0}),
                            ("full", {"target_ci": 0.02, "time_budget": 120.0, "max_steps": 10000})):
        plan, _ = plan_and_images(only=["pytorch"], workload=["vgg16-step"], profile=profile,
                                  device="gpu" if profile == "full" else "cpu")
        parsed = build_parser().parse_args(bench_args(plan.cells[0], "/data", "/results/x.json"))
        assert {k: getattr(parsed, k) for k in expect} == expect, profile
