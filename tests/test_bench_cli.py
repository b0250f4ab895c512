"""The in-container CLI end to end: every workload at smoke size through
`python -m bench ... --out`, results validated against the schema host-side,
and the oom / error / unsupported paths."""

import json
import os
import resource
import subprocess
import sys

import jsonschema
import pytest

from support import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_PATH = os.path.join(ROOT, "bench", "schema", "result-v1.json")
FASHION = "/usr/share/datasets/fashion-mnist"

with open(SCHEMA_PATH) as f:
    VALIDATOR = jsonschema.Draft202012Validator(json.load(f))


def run_bench(tmp_path, args, rlimit_as=None, timeout=600):
    out = str(tmp_path / "result.json")
    preexec = None
    if rlimit_as:
        def preexec():
            resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))
    env = dict(os.environ, PYTHONPATH=ROOT, DLBENCH_CELL_ID="cell-1", DLBENCH_RUN_ID="run-1",
               DLBENCH_MACHINE="test-host", DLBENCH_IMAGE="dlbench/pytorch:test",
               DLBENCH_IMAGE_ID="sha256:abc")
    proc = subprocess.run([sys.executable, "-m", "bench", "--out", out] + list(args), cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout, preexec_fn=preexec)
    assert os.path.exists(out), proc.stderr[-3000:]
    with open(out) as f:
        result = json.load(f)
    errors = sorted(VALIDATOR.iter_errors(result), key=str)
    assert not errors, [e.message for e in errors]
    return proc, result


# smoke size: exactly --warmup and --iterations steps (no calibration)
FIXED = ["--time-budget", "0", "--warmup-budget", "0"]

SMOKE = [
    ("lenet-mnist", ["--dataset", "fashion-mnist", "--iterations", "2", "--batch-size", "8",
                     "--option", "eval_batches=2"]),
    ("lenet-mnist-synthetic", ["--synthetic", "--iterations", "2", "--batch-size", "8",
                               "--option", "eval_batches=1"]),
    ("cifar10-cnn", ["--synthetic", "--epochs", "1", "--iterations", "2", "--batch-size", "4",
                     "--option", "eval_batches=2"]),
    ("cifar10-tutorial", ["--synthetic", "--iterations", "2", "--batch-size", "4",
                          "--option", "eval_batches=2"]),
    ("cifar10-tutorial-imagenet32", ["--synthetic", "--dataset", "imagenet32", "--iterations",
                                     "2", "--batch-size", "4", "--option", "eval_batches=1"]),
    ("gru-imdb", ["--synthetic", "--epochs", "1", "--iterations", "2", "--batch-size", "4",
                  "--option", "eval_batches=2"]),
    ("resnet50-inference", ["--iterations", "2", "--warmup", "1", "--batch-size", "1", *FIXED]),
    ("vgg16-step", ["--iterations", "1", "--warmup", "0", "--batch-size", "1", *FIXED]),
    ("alexnet-fwd", ["--iterations", "3", "--warmup", "1", "--batch-size", "2", *FIXED]),
    ("alexnet-fwdbwd", ["--iterations", "2", "--warmup", "1", "--batch-size", "2", *FIXED]),
    ("cnn-synthetic-alexnet", ["--model", "alexnet", *FIXED, "--iterations", "2", "--warmup", "1",
                               "--batch-size", "2"]),
    ("cnn-synthetic-resnet50", ["--model", "resnet50", *FIXED, "--iterations", "1", "--warmup", "0",
                                "--batch-size", "1"]),
    ("cnn-synthetic-vgg16", ["--model", "vgg16", *FIXED, "--iterations", "1", "--warmup", "0",
                             "--batch-size", "1"]),
    ("cnn-synthetic-inception3", ["--model", "inception3", *FIXED, "--iterations", "1", "--warmup", "0",
                                  "--batch-size", "1"]),
    ("cnn-synthetic-nasnet", ["--model", "nasnet", *FIXED, "--iterations", "1", "--warmup", "0",
                              "--batch-size", "1"]),
    ("vgg19-mnist", ["--synthetic", "--epochs", "1", "--iterations", "2", "--batch-size", "4",
                     "--option", "eval_batches=2"]),
]


def workload_of(case):
    for name in ("cnn-synthetic", "cifar10-tutorial", "lenet-mnist"):
        if case.startswith(name):
            return name
    return case


@pytest.mark.parametrize("case,args", SMOKE, ids=[c for c, _ in SMOKE])
def test_smoke_every_workload(tmp_path, case, args):
    if case == "lenet-mnist":
        require(os.path.isdir(FASHION), "dataset-fashion-mnist not installed (`make datasets` installs it)")
    workload = workload_of(case)
    proc, result = run_bench(tmp_path, ["--framework", "pytorch", "--workload", workload] + args)
    assert result["status"] == "ok", (result["message"], proc.stderr[-3000:])
    assert proc.returncode == 0
    cell, metrics = result["cell"], result["metrics"]
    assert cell["framework"] == "pytorch" and cell["workload"] == workload
    assert cell["id"] == "cell-1" and cell["run_id"] == "run-1"
    assert cell["image_id"] == "sha256:abc" and result["environment"]["machine"] == "test-host"
    assert cell["synthetic"] == ("--synthetic" in args or workload in (
        "resnet50-inference", "vgg16-step", "alexnet-fwd", "alexnet-fwdbwd", "cnn-synthetic"))
    assert metrics["param_count"] == metrics["spec_param_count"]
    assert metrics["flops_per_sample"] > 0
    assert metrics["samples_per_s"] > 0
    assert metrics["mfu"] is None  # CPU: no peak, never a guess
    assert result["environment"]["framework_version"].startswith("2.")
    if workload in ("lenet-mnist", "cifar10-cnn", "cifar10-tutorial", "gru-imdb", "vgg19-mnist"):
        assert metrics["train_time_s"] > 0 and 0.0 <= metrics["test_accuracy"] <= 1.0
    if workload == "lenet-mnist":
        assert len(metrics["predictions"]) == 10 and metrics["inference_time_s"] > 0
    if workload == "vgg19-mnist":
        assert metrics["total_time_s"] >= metrics["train_time_s"]
        assert metrics["inference_time_s"] > 0
    if workload == "gru-imdb":
        assert metrics["cudnn_rnn"] is False  # CPU tensors never use cuDNN
    if workload in ("resnet50-inference", "vgg16-step", "alexnet-fwd", "alexnet-fwdbwd",
                    "cnn-synthetic"):
        assert metrics["step_time_s"]["n"] == int(args[args.index("--iterations") + 1])
        assert len(metrics["step_times_s"]) == metrics["step_time_s"]["n"]
        assert metrics["warmup_steps"] == int(args[args.index("--warmup") + 1])
        h = metrics["headline"]
        assert h["n"] == metrics["step_time_s"]["n"] and h["stop_reason"] == "budget_spent"
        assert h["ci_low"] <= h["value"] <= h["ci_high"]
        assert metrics["samples_per_s"] == pytest.approx(cell["batch_size"] / h["value"])
    if workload == "resnet50-inference":
        assert metrics["feature_shape"] == [1, 2048]
    if workload.startswith("alexnet"):
        assert any("duration = " in line for line in result["log_tail"])
        assert any("across 3 steps" in line or "across 2 steps" in line
                   for line in result["log_tail"])
    if workload == "cnn-synthetic":
        assert "images/sec: " in proc.stdout and "total images/sec: " in proc.stdout


def test_calibrated_timing_records_warmup_ci_and_stop_reason(tmp_path):
    proc, result = run_bench(tmp_path, ["--framework", "pytorch", "--workload", "alexnet-fwd",
                                        "--batch-size", "1", "--iterations", "8", "--warmup", "2",
                                        "--target-ci", "0.05", "--time-budget", "4",
                                        "--warmup-budget", "4"])
    assert result["status"] == "ok", proc.stderr[-3000:]
    m = result["metrics"]
    h = m["headline"]
    assert h["stop_reason"] in ("target_met", "budget_spent", "max_steps")
    assert h["n"] >= 8 and h["target_rel_half_width"] == 0.05 and h["time_budget_s"] == 4
    if h["stop_reason"] == "target_met":
        assert h["rel_half_width"] <= 0.05
    assert m["warmup_steps"] >= 2 and m["compile_s"] > 0 and m["warmup_s"] >= m["compile_s"]
    assert m["warmup_stop"] in ("steady", "max_warmup", "time_cap")
    low, high = m["samples_per_s_ci"]
    assert low <= m["samples_per_s"] <= high
    assert any("95 % CI" in line for line in result["log_tail"])


def test_a_nan_measurement_becomes_an_error_not_a_number(tmp_path, monkeypatch):
    from bench import cli
    metrics = {"samples_per_s": float("nan"), "step_times_s": [0.1, float("inf")],
               "train_time_s": -1.0}
    problems = cli.metric_problems(metrics)
    assert "metrics.samples_per_s is not a finite number" in problems
    assert "metrics.step_times_s[1] is not a finite number" in problems
    assert any("train_time_s is negative" in p for p in problems)
    assert metrics["samples_per_s"] is None and metrics["step_times_s"][1] is None
    out = tmp_path / "r.json"
    with pytest.raises(ValueError):
        cli.write_atomic(str(out), {"x": float("nan")})
    assert not out.exists()


def test_oom_is_reported_not_crashed(tmp_path):
    # a 2.5 GiB address-space cap: VGG16 at batch 64 needs 822 MB for the first
    # conv output alone, so the allocator fails within the first forward pass
    proc, result = run_bench(tmp_path, ["--framework", "pytorch", "--workload", "vgg16-step",
                                        "--batch-size", "64", "--iterations", "1",
                                        "--warmup", "0"], rlimit_as=int(2.5 * 2 ** 30))
    assert result["status"] == "oom", result["message"]
    assert result["metrics"]["oom_batch_size"] == 64
    assert proc.returncode != 0
    assert "\n" not in result["message"]


def test_missing_dataset_is_a_clear_error(tmp_path):
    proc, result = run_bench(tmp_path, ["--framework", "pytorch", "--workload", "cifar10-cnn",
                                        "--data-dir", str(tmp_path / "cache"),
                                        "--iterations", "1"])
    assert result["status"] == "error"
    assert result["message"].startswith("dataset cifar10 not available: ")
    assert "--synthetic" in result["message"]
    assert result["cell"]["synthetic"] is False
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "Traceback" not in result["message"]


def test_unsupported_precision_on_cpu(tmp_path):
    proc, result = run_bench(tmp_path, ["--framework", "pytorch", "--workload", "alexnet-fwd",
                                        "--precision", "fp16", "--iterations", "1"])
    assert result["status"] == "unsupported"
    assert "fp16" in result["message"] and "CUDA" in result["message"]
    assert proc.returncode != 0


def test_bf16_autocast_on_cpu(tmp_path):
    proc, result = run_bench(tmp_path, ["--framework", "pytorch", "--workload", "alexnet-fwdbwd",
                                        "--precision", "bf16", "--iterations", "2", "--warmup",
                                        "0", "--batch-size", "2", "--option", "channels_last=1"])
    assert result["status"] == "ok", result["message"]
    assert result["cell"]["options"] == {"channels_last": "1"}


def test_unknown_cnn_synthetic_model_is_an_error(tmp_path):
    proc, result = run_bench(tmp_path, ["--framework", "pytorch", "--workload", "cnn-synthetic",
                                        "--iterations", "1"])
    assert result["status"] == "error" and "--model" in result["message"]


def test_adapter_not_available(tmp_path, monkeypatch, capsys):
    from bench import adapters, cli
    monkeypatch.setitem(adapters.ADAPTERS, "nosuchfw", "bench.adapters.nosuchfw")
    out = str(tmp_path / "r.json")
    code = cli.main(["--framework", "nosuchfw", "--workload", "alexnet-fwd", "--out", out])
    with open(out) as f:
        result = json.load(f)
    assert code == 1 and result["status"] == "error"
    assert result["message"].startswith("adapter not available: nosuchfw")
    assert not list(VALIDATOR.iter_errors(result))


def test_list_needs_no_framework():
    # torch made unimportable: --list must still work from static metadata
    code = ("import sys; sys.modules['torch'] = None; from bench.cli import main; "
            "sys.exit(main(['--list', '--json']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["workload"] for r in rows][:2] == ["lenet-mnist", "cifar10-cnn"]
    assert all("pytorch" in r["frameworks"] for r in rows)


def test_describe_reports_spec_and_model_counts():
    proc = subprocess.run([sys.executable, "-m", "bench", "--framework", "pytorch", "--describe"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    described = json.loads(proc.stdout)["workloads"]
    assert described["vgg16-step"]["param_count"] == 138357544
    assert described["cnn-synthetic:resnet50"]["spec_param_count"] == 25557032
    for record in described.values():
        assert record["param_count"] == record["spec_param_count"]
        assert record["flops_per_sample"] > 0


def test_selftest():
    proc = subprocess.run([sys.executable, "-m", "bench", "--framework", "pytorch", "--selftest"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "CUDA: None" in proc.stdout and "selftest ok" in proc.stdout


@pytest.mark.slow
def test_lenet_reaches_85_percent_on_real_fashion_mnist(tmp_path):
    require(os.path.isdir(FASHION),
            "dataset-fashion-mnist not installed")
    proc, result = run_bench(tmp_path, [
        "--framework", "pytorch", "--workload", "lenet-mnist", "--dataset", "fashion-mnist",
        "--iterations", "1200", "--batch-size", "50", "--option", "lr=0.02",
        "--option", "momentum=0.9", "--option", "eval_batches=100", "--option", "log_every=400"])
    assert result["status"] == "ok", result["message"]
    print("lenet fashion-mnist test accuracy: %.4f in %.1f s"
          % (result["metrics"]["test_accuracy"], result["metrics"]["train_time_s"]))
    assert result["metrics"]["test_accuracy"] >= 0.85
    assert result["cell"]["synthetic"] is False
    assert all(f["verified"] for f in result["metrics"]["dataset_files"])
    correct = sum(p["label"] == p["predicted"] for p in result["metrics"]["predictions"])
    assert correct >= 7
