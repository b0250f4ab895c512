"""MXNet adapter: pure helpers on the host; every workload of the smoke
profile, the parameter counts and LeNet's Fashion-MNIST accuracy in REAL
containers (the runner CLI as a black box; the docker SDK for one-off
commands in the built image)."""

import json
import os

import pytest

from runner import ROOT
from support import require

FRAMEWORK = "mxnet"
VERSION = "1.9.1"
# ~1500 steps of batch 100 (2.5 epochs), SGD with momentum: >= 85 % on Fashion-MNIST.
ACCURACY_ITERATIONS = 1500
ACCURACY_OPTIONS = {"lr": 0.01, "momentum": 0.9}


# ------------------------------------------------------------------ host, no MXNet needed

@pytest.mark.parametrize("message,oom", [
    ("MXNetError: [06:00:00] src/storage/./pooled_storage_manager.h:197: cudaMalloc retry failed: "
     "out of memory", True),
    ("Check failed: e == cudaSuccess || e == cudaErrorCudartUnloading: CUDA: out of memory", True),
    ("src/storage/cpu_device_storage.h: Failed to allocate CPU Memory", True),
    ("std::bad_alloc", True),
    ("Check failed: dshape.ndim() == 4U (2 vs. 4) : Input data should be 4D in batch-num_filter-y-x",
     False),
])
def test_oom_messages(message, oom):
    from bench.adapters.mxnet import is_oom_message
    assert is_oom_message(message) is oom


def test_hopper_detection_and_reason():
    from bench.adapters.mxnet import HOPPER_REASON, is_hopper
    assert is_hopper(["9.0"]) and is_hopper(["8.0", "9.0"])
    assert not is_hopper(["8.0", "8.6", "7.5"]) and not is_hopper([])
    assert "compute capability 9.0" in HOPPER_REASON and "nvcr-mxnet-24.05" in HOPPER_REASON


def test_static_metadata_without_mxnet():
    from bench.adapters import adapter_class
    cls = adapter_class(FRAMEWORK)
    assert (cls.name, cls.display, cls.framework_module) == ("mxnet", "MXNet", "mxnet")
    assert cls.unsupported == {}
    assert "fp16" in cls.precisions and "bf16" not in cls.precisions


def test_hopper_base_renders_without_pip_mxnet():
    from runner.compat import load_compat, resolve
    from runner.render import render
    choice = resolve(load_compat(), FRAMEWORK, VERSION, "cuda12.4-cudnn9", base_choice="plain")
    assert choice.base_name == "nvcr-mxnet-24.05"
    text = render(choice).dockerfile
    assert "FROM nvcr.io/nvidia/mxnet:24.05-py3" in text
    assert "--system-site-packages" in text and "DLBENCH_MXNET_HOPPER_OK=1" in text
    assert "mxnet-cu117" not in text and "pip install" not in text


# ------------------------------------------------------------------ real containers

def smoke_in_containers(run_cli, tmp_path, framework):
    """Run the smoke profile for one framework; every result valid and ok."""
    from runner.results import load_result, run_dirs
    from runner.matrix import load_matrix
    root = tmp_path / "results"
    proc = run_cli("run", "--profile", "smoke", "--only", framework, "--device", "cpu",
                   "--results-dir", root, timeout=1500)
    out = proc.stdout + proc.stderr
    (run_dir,) = run_dirs(root)
    results = [load_result(p) for p in sorted(run_dir.glob("*.json"))
               if not p.name.startswith(".") and p.name not in ("run.json", "plan.json")
               and p.name.startswith(framework + "-")]
    assert results, out
    bad = ["%s: %s %s" % (r["cell"]["id"], r["status"], r.get("message") or r.get("reason")
                          or r.get("error")) for r in results if r["status"] != "ok"]
    assert not bad, "\n".join(bad) + "\n" + out[-4000:]
    assert proc.returncode == 0, out[-4000:]
    matrix, _ = load_matrix(ROOT / "matrix.yaml")
    assert {r["cell"]["workload"] for r in results} == set(matrix.workloads)
    for r in results:
        m = r["metrics"]
        if m.get("param_count") is not None and m.get("spec_param_count") is not None:
            assert m["param_count"] == m["spec_param_count"], r["cell"]["id"]
        # how it ran is recorded, in full (a failing settings() would leave only an "error" key)
        assert "error" not in m["settings"] and m["settings"]["layout"] and m["settings"]["graph"], m["settings"]
    return results


def image_for(framework, docker_client, console):
    """The CPU image of `framework` as the smoke plan renders it, built if missing."""
    from runner.build import build_images
    from conftest import plan_and_images
    _, rendered = plan_and_images(only=[framework], workload=["lenet-mnist"])
    (image,) = list(rendered.values())
    outcomes = build_images([image], rebuild=False, console=console, client=docker_client)
    failed = {tag: o.message for tag, o in outcomes.items() if not o.ok}
    assert not failed, failed
    return image


def describe_in_container(framework, docker_client, console):
    image = image_for(framework, docker_client, console)
    raw = docker_client.containers.run(image.tag, ["--framework", framework, "--describe"],
                                       remove=True, stdout=True, stderr=False,
                                       environment={"OMP_NUM_THREADS": "2"})
    return json.loads(raw.decode())


def accuracy_in_container(run_cli, tmp_path, framework, version, iterations, options):
    """One lenet-mnist cell on the real Fashion-MNIST through the runner."""
    from runner.results import load_result, run_dirs
    matrix = {
        "base": "plain", "profile": "full", "device": "cpu",
        "frameworks": {framework: {"versions": [version]}},
        "toolchains": ["cpu"],
        "workloads": {"lenet-mnist": {"batch_sizes": [100], "iterations": iterations,
                                      "eval_batches": 100, "datasets": ["fashion-mnist"],
                                      "timeout_s": 900, "options": options}},
        "profiles": {"full": {}},
    }
    path = tmp_path / "matrix.yaml"
    path.write_text(json.dumps(matrix))   # JSON is YAML
    root = tmp_path / "results"
    proc = run_cli("run", "--matrix", path, "--results-dir", root, timeout=1200)
    out = proc.stdout + proc.stderr
    (run_dir,) = run_dirs(root)
    (result_path,) = [p for p in run_dir.glob(framework + "-*.json")]
    result = load_result(result_path)
    assert result["status"] == "ok", out[-4000:]
    return result


@pytest.mark.docker
@pytest.mark.slow
def test_smoke_profile_every_workload_in_containers(docker_client, run_cli, tmp_path):
    smoke_in_containers(run_cli, tmp_path, FRAMEWORK)


@pytest.mark.docker
def test_param_counts_equal_the_spec_in_the_container(docker_client, quiet_console):
    described = describe_in_container(FRAMEWORK, docker_client, quiet_console)
    assert "note" not in described, described.get("note")
    for key, record in described["workloads"].items():
        assert "error" not in record, (key, record["error"])
        # the spec count is the PyTorch count (tests/test_bench_specs.py)
        assert record["param_count"] == record["spec_param_count"], key


@pytest.mark.docker
@pytest.mark.slow
def test_lenet_fashion_mnist_accuracy_in_a_container(docker_client, run_cli, tmp_path):
    require(os.path.isdir("/usr/share/datasets/fashion-mnist"),
            "Fashion-MNIST is not at /usr/share/datasets/fashion-mnist (`make datasets` installs it)")
    result = accuracy_in_container(run_cli, tmp_path, FRAMEWORK, VERSION, ACCURACY_ITERATIONS,
                                   ACCURACY_OPTIONS)
    assert result["metrics"]["test_accuracy"] >= 0.85, result["metrics"]["test_accuracy"]
