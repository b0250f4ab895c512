"""Precision amp uses each framework's own dynamic loss scaler (bench.adapters.base.PRECISION_METHODS).

The scalers run for real: a LeNet training cell with precision amp starts from a loss scale of 2^24,
at which float16 gradients overflow, so a working dynamic scaler must skip those steps and lower the
scale, and the cell must still train. amp is a GPU precision; `cpu_amp=1` (a testing aid each adapter
documents) runs the same code on this CPU host: PyTorch on the host, the others in their images.
MXNet has no float16 CPU GEMM, so its CPU run uses AMP's CPU dtype, bfloat16, whose range never
overflows at 2^24: there the check is that AMP's LossScaler is wired in and reports its scale.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.adapters.base import Adapter, Unsupported, loss_scaler_text
from runner import ROOT
from support import require

FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's real Fashion-MNIST (`make datasets`)
OVERFLOWING_SCALE = 2.0 ** 24
AMP_LENET = ["--workload", "lenet-mnist", "--dataset", "fashion-mnist", "--batch-size", "100",
             "--precision", "amp", "--device", "cpu", "--iterations", "60",
             "--option", "cpu_amp=1", "--option", "initial_loss_scale=%d" % OVERFLOWING_SCALE,
             "--option", "eval_batches=5", "--option", "lr=0.03", "--option", "momentum=0.9"]
# framework -> words its settings' loss_scaler must start with (the framework's own class)
SCALERS = {
    "pytorch": "torch.amp.GradScaler",
    "tensorflow": "keras LossScaleOptimizer",
    "keras": "keras LossScaleOptimizer",
    "mxnet": "mxnet.contrib.amp LossScaler",
    "jax": "jmp.DynamicLossScale",
}


def test_loss_scaler_text_names_the_scaler_and_its_initial_scale():
    assert loss_scaler_text("torch.amp.GradScaler", 2.0 ** 16) == \
        "torch.amp.GradScaler (dynamic, initial 2^16)"
    assert loss_scaler_text("x", 1000.0) == "x (dynamic, initial 1000)"


@pytest.mark.parametrize("value", ["0", "-8", "nan", "inf", "2^15", ""])
def test_a_bad_initial_loss_scale_is_refused_with_the_key(value):
    adapter = Adapter("cpu", 0, "fp32", {"initial_loss_scale": value})
    with pytest.raises(Unsupported, match="initial_loss_scale must be a finite number above 0"):
        adapter.option_positive_float("initial_loss_scale", 2.0 ** 15)
    assert Adapter("cpu", 0, "fp32", {}).option_positive_float("initial_loss_scale", 8) == 8.0


def _has_torch():
    return importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize("framework", ["tensorflow", "keras", "mxnet", "jax", "pytorch"])
def test_amp_on_cpu_without_the_testing_aid_is_refused_before_importing_the_framework(framework):
    from bench.adapters import adapter_class
    module = adapter_class(framework).framework_module
    if framework == "pytorch":
        require(_has_torch(), "torch (the test extra) is not installed")
        module = "never_imported"  # PyTorch's refusal needs torch to know the device
    code = ("import sys; sys.modules[%r] = None\n"
            "from bench.adapters import adapter_class\n"
            "from bench.adapters.base import Unsupported\n"
            "try:\n"
            "    adapter_class(%r)('cpu', 0, 'amp', {})\n"
            "except Unsupported as exc:\n"
            "    print('unsupported:', exc)\n" % (module, framework))
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True)
    assert proc.stdout.startswith("unsupported: precision amp") \
        or proc.stdout.startswith("unsupported: amp on CPU"), proc.stdout + proc.stderr


def check_amp_result(result, framework, log=""):
    assert result["status"] == "ok", "%s: %s\n%s" % (result["status"], result["message"], log[-3000:])
    settings = result["metrics"]["settings"]
    assert settings["precision_method"].startswith("fp32 master weights, float16 compute")
    assert settings["loss_scaler"] == loss_scaler_text(SCALERS[framework], OVERFLOWING_SCALE), settings
    final = settings["loss_scale_final"]
    if framework == "mxnet":
        # bfloat16 on the CPU: nothing overflows, the scale stays where it started
        assert settings["amp_dtype"] == "bfloat16" and final == OVERFLOWING_SCALE, settings
    else:
        # float16 gradients overflowed at 2^24: the scaler skipped those steps and halved the scale
        assert 1.0 <= final <= OVERFLOWING_SCALE / 4, settings
    # and the cell trained anyway (chance is 10 %)
    assert result["metrics"]["test_accuracy"] >= 0.4, result["log_tail"]


def test_pytorch_amp_uses_grad_scaler_which_recovers_from_overflow(tmp_path):
    require(_has_torch(), "torch (the test extra) is not installed")
    require(FASHION.is_dir(), "Fashion-MNIST is not at %s (`make datasets` installs it)" % FASHION)
    out = tmp_path / "amp.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--framework", "pytorch"] + AMP_LENET
                          + ["--data-dir", str(FASHION), "--out", str(out)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=900)
    check_amp_result(json.loads(out.read_text()), "pytorch", proc.stdout + proc.stderr)


@pytest.mark.docker
@pytest.mark.parametrize("framework", ["tensorflow", "keras", "mxnet", "jax"])
def test_amp_uses_the_framework_scaler_in_its_image(framework, docker_client, quiet_console, tmp_path):
    from runner.results import load_result
    from test_adapter_tensorflow import framework_image, run_bench
    require(FASHION.is_dir(), "Fashion-MNIST is not at %s (`make datasets` installs it)" % FASHION)
    image = framework_image(framework, docker_client, quiet_console)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = run_bench(docker_client, image.tag,
                               ["--framework", framework] + AMP_LENET + ["--out", "/results/amp.json"],
                               out_dir=out_dir, timeout=900)
    check_amp_result(load_result(out_dir / "amp.json"), framework, out + err)
    assert code == 0
