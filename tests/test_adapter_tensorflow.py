"""The TensorFlow adapter (bench/adapters/tensorflow.py).

Host checks need no TensorFlow: the module imports without it and its 'SAME'-equivalence rule agrees with brute force.

The rest runs inside a real TensorFlow container (CPU) built by the runner
(marked `docker`; skipped with the reason when no engine answers):
  * every workload of the smoke profile through `python -m runner run`, each
    result status ok and schema-valid;
  * LeNet on the real Fashion-MNIST to >= 85 % test accuracy (one container,
    bench CLI, 600 SGD-momentum steps);
  * `python -m bench --describe`: the built model's trainable parameter count
    equals bench.specs.param_count for every spec.
The helpers here are shared with tests/test_adapter_keras.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import plan_and_images, runner_cli
from runner import ROOT
from support import require

FRAMEWORK = "tensorflow"
LENET_ARGS = ["--workload", "lenet-mnist", "--dataset", "fashion-mnist", "--batch-size", "100",
              "--iterations", "600", "--option", "lr=0.03", "--option", "momentum=0.9",
              "--option", "eval_batches=100", "--option", "log_every=100"]


# ---------------------------------------------------------------- host, no framework

def test_module_imports_without_the_framework():
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
            "from bench.adapters import adapter_class\n"
            "for name in ('tensorflow', 'keras'):\n"
            "    cls = adapter_class(name)\n"
            "    assert cls.name == name and cls.unsupported == {}, cls\n"
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_static_metadata():
    from bench.adapters.tensorflow import Adapter
    assert Adapter.display == "TensorFlow" and Adapter.framework_module == "tensorflow"
    assert set(Adapter.precisions) == {"fp32", "bf16", "amp"}
    assert "amp" in Adapter.precision_reasons["fp16"]
    assert Adapter.max_gpus == 8


def _brute_same(size, kernel, stride, pad):
    """TF's SAME rule (pad_before = total // 2) against the explicit pad."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return ((size + 2 * pad - kernel) // stride + 1, total // 2, total - total // 2) == (out, pad, pad)


def test_same_padding_equivalence_rule():
    from bench.adapters import keras as keras_adapter
    from bench.adapters import tensorflow as tf_adapter
    for size in range(1, 40):
        for kernel in (1, 2, 3, 5, 7):
            for stride in (1, 2, 3):
                for pad in range(0, 4):
                    if size + 2 * pad < kernel:
                        continue
                    want = _brute_same(size, kernel, stride, pad)
                    assert tf_adapter.same_equivalent(size, kernel, stride, pad) == want
                    assert keras_adapter.same_equivalent(size, kernel, stride, pad) == want
    # the cases that matter: 3x3/s1/p1 is SAME; 3x3/s2/p1 on an even size is not (TF pads 0/1)
    assert tf_adapter.same_equivalent(56, 3, 1, 1)
    assert not tf_adapter.same_equivalent(56, 3, 2, 1)


# ---------------------------------------------------------------- containers

def framework_image(framework, docker_client, quiet_console):
    """The smoke-profile CPU image of `framework` (built once; an existing tag is reused)."""
    from runner.build import build_images
    plan, rendered = plan_and_images(only=[framework], workload=["lenet-mnist"])
    images = [r for r in rendered.values() if r.choice.framework == framework]
    assert len(images) == 1, [r.tag for r in rendered.values()]
    outcomes = build_images(images, rebuild=False, console=quiet_console, client=docker_client)
    failed = {tag: o.message for tag, o in outcomes.items() if not o.ok}
    assert not failed, failed
    return images[0]


def run_bench(client, tag, args, out_dir=None, timeout=600):
    """`python -m bench ARGS` in a fresh container of `tag`; (exit code, stdout, stderr)."""
    fashion = "/usr/share/datasets/fashion-mnist"  # Debian's real Fashion-MNIST, where bench also looks
    volumes = {fashion: {"bind": fashion, "mode": "ro"}} if os.path.isdir(fashion) else {}
    if out_dir is not None:
        os.chmod(out_dir, 0o777)
        volumes[str(out_dir)] = {"bind": "/results", "mode": "rw"}
    container = client.containers.run(tag, command=list(args), volumes=volumes, network_mode="none",
                                      detach=True, labels={"dlbench.test": "adapter"})
    try:
        status = container.wait(timeout=timeout)
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
        return status.get("StatusCode"), out, err
    finally:
        container.remove(force=True)


def smoke_run_all(framework, root, extra=()):
    """`python -m runner run --profile smoke --only FRAMEWORK --device cpu`: {file name: result}."""
    from runner.results import load_result, run_dirs
    proc = runner_cli("run", "--profile", "smoke", "--device", "cpu", "--only", framework,
                      "--results-dir", root, *extra, timeout=1800)
    dirs = run_dirs(root)
    assert len(dirs) == 1, proc.stdout + proc.stderr
    results = {p.name: load_result(p) for p in sorted(dirs[0].glob("*.json"))}  # schema-checked
    return proc, results


def check_smoke(proc, results, framework):
    from bench.workloads import WORKLOADS
    out = proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout, out
    assert results, out
    bad = {name: "%s: %s" % (r["status"], r["message"]) for name, r in results.items()
           if r["status"] != "ok"}
    assert not bad, bad
    assert proc.returncode == 0, out
    workloads = {r["cell"]["workload"] for r in results.values()}
    assert workloads == set(WORKLOADS), set(WORKLOADS) - workloads
    for r in results.values():
        assert r["cell"]["framework"] == framework
        m = r["metrics"]
        assert m["param_count"] == m["spec_param_count"], r["cell"]
        # how it ran is recorded, in full (a failing settings() would leave only an "error" key)
        assert "error" not in m["settings"] and m["settings"]["layout"] and m["settings"]["graph"], m["settings"]
        assert m["settings"]["precision_method"] == "fp32 weights and math"
    gru = [r for r in results.values() if r["cell"]["workload"] == "gru-imdb"]
    assert gru and all(r["metrics"]["cudnn_rnn"] is False for r in gru)  # CPU: no cuDNN


def describe_counts(client, tag, framework, extra=()):
    code, out, err = run_bench(client, tag, ["--framework", framework, "--describe"] + list(extra),
                               timeout=900)
    assert code == 0, err[-3000:]
    doc = json.loads(out[out.index("{"):])
    assert "note" not in doc, doc.get("note")
    return doc["workloads"]


def check_describe(workloads):
    from bench import specs
    assert len(workloads) >= 14
    for key, rec in workloads.items():
        assert "error" not in rec, (key, rec.get("error"))
        assert rec["spec_param_count"] == specs.param_count(specs.get_spec(rec["model"]))
        assert rec["param_count"] == rec["spec_param_count"], (key, rec)
    named = {rec["model"]: rec["param_count"] for rec in workloads.values()}
    assert named["resnet50"] == 25557032 and named["vgg16"] == 138357544


@pytest.fixture(scope="module")
def tf_image(docker_client, quiet_console):
    return framework_image(FRAMEWORK, docker_client, quiet_console)


@pytest.mark.docker
def test_smoke_profile_every_workload_ok(tf_image, tmp_path):
    start = time.monotonic()
    proc, results = smoke_run_all(FRAMEWORK, tmp_path / "results")
    check_smoke(proc, results, FRAMEWORK)
    # the smoke profile's VGG16 variants: XLA off and on (bench records option values as given)
    vgg = [r["cell"]["options"] for r in results.values() if r["cell"]["workload"] == "vgg16-step"]
    assert sorted(str(o.get("xla")).lower() for o in vgg) == ["false", "true"], vgg
    print("tensorflow smoke: %d cells in %.0f s" % (len(results), time.monotonic() - start))


@pytest.mark.docker
def test_describe_param_counts_equal_the_spec(tf_image, docker_client):
    check_describe(describe_counts(docker_client, tf_image.tag, FRAMEWORK))


@pytest.mark.docker
def test_lenet_fashion_mnist_accuracy(tf_image, docker_client, tmp_path):
    from runner.results import load_result
    require(Path("/usr/share/datasets/fashion-mnist").is_dir(),
            "Fashion-MNIST is not at /usr/share/datasets/fashion-mnist (`make datasets` installs it)")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = run_bench(docker_client, tf_image.tag,
                               ["--framework", FRAMEWORK] + LENET_ARGS + ["--out", "/results/lenet.json"],
                               out_dir=out_dir, timeout=900)
    result = load_result(out_dir / "lenet.json")
    assert result["status"] == "ok", result["message"] + "\n" + err[-2000:]
    assert code == 0
    m = result["metrics"]
    assert m["test_accuracy"] >= 0.85, "\n".join(result["log_tail"])
    assert m["param_count"] == 3274634
    assert len(m["predictions"]) == 10
    assert sum(p["label"] == p["predicted"] for p in m["predictions"]) >= 7
