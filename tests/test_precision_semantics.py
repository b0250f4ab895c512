"""One meaning per precision name (bench.adapters.base.PRECISION_METHODS) in every adapter.

Each adapter either implements a precision with the project's meaning or refuses it with a reason
that says what to run instead -- checked here without any framework installed (the refusal comes
before the framework is imported), so a GPU-only method can never run under another's name."""

import subprocess
import sys

import pytest

from bench.adapters import ADAPTERS, adapter_class
from bench.adapters.base import PRECISION_METHODS
from runner import ROOT
from support import require

PRECISIONS = ("fp32", "fp16", "bf16", "amp")


def test_every_precision_name_has_one_written_meaning():
    assert set(PRECISION_METHODS) == set(PRECISIONS)
    assert "loss scaling" in PRECISION_METHODS["amp"] and "no loss scaling" in PRECISION_METHODS["fp16"]
    assert "fp32 master weights" in PRECISION_METHODS["bf16"]


@pytest.mark.parametrize("framework", sorted(ADAPTERS))
def test_adapters_implement_or_refuse_each_precision_never_both(framework):
    cls = adapter_class(framework)
    implemented, refused = set(cls.precisions), set(cls.precision_reasons)
    assert implemented <= set(PRECISIONS) and refused <= set(PRECISIONS)
    assert not implemented & refused, framework
    assert "fp32" in implemented


# (framework, precision) -> words the refusal must contain: what the framework does instead
REFUSALS = {
    ("tensorflow", "fp16"): "run it as precision amp",
    ("keras", "fp16"): "run it as precision amp",
}


@pytest.mark.parametrize("framework,precision", sorted(REFUSALS))
def test_a_refused_precision_says_why_before_importing_the_framework(framework, precision):
    module = adapter_class(framework).framework_module
    code = ("import sys; sys.modules[%r] = None\n"   # importing the framework would fail loudly
            "from bench.adapters import adapter_class\n"
            "from bench.adapters.base import Unsupported\n"
            "try:\n"
            "    adapter_class(%r)('gpu', 1, %r, {})\n"
            "except Unsupported as exc:\n"
            "    print('unsupported:', exc)\n" % (module, framework, precision))
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True)
    assert proc.stdout.startswith("unsupported: precision %s" % precision), proc.stdout + proc.stderr
    assert REFUSALS[(framework, precision)] in proc.stdout


def test_the_pytorch_adapter_records_its_method_and_scaler():
    """PyTorch implements all four; what it ran is in settings (here on the CPU: bf16 autocast)."""
    import importlib.util
    require(importlib.util.find_spec("torch") is not None, "torch (the test extra) is not installed")
    from bench.adapters.pytorch import Adapter
    settings = Adapter("cpu", 0, "bf16", {}).settings()
    assert settings["precision_method"] == PRECISION_METHODS["bf16"]
    assert settings["loss_scaler"] is None and settings["tf32"] is None
    assert settings["layout"] == "NHWC (channels_last)" and settings["graph"] == "eager"
    assert Adapter("cpu", 0, "fp32", {"channels_last": "0"}).settings()["layout"] == "NCHW"
