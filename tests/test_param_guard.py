"""Run-time guard: a built model whose trainable parameter count differs from its spec fails the cell
(status error, the two counts in the message) instead of publishing a number for another model.

Runs bench's real CLI with the real PyTorch adapter on the host CPU; the only change is a subclass
whose build() adds one small layer, i.e. a genuinely different model."""

import importlib.util
import json
import os
import subprocess
import sys

from runner import ROOT
from support import require

DRIFTED = """
import sys, torch
import bench.cli
from bench.adapters.pytorch import Adapter

class Drifted(Adapter):
    def build(self, spec, training=True):
        model = super(Drifted, self).build(spec, training)
        model.module.extra = torch.nn.Linear(2, 3)   # 2*3 + 3 = 9 more trainable parameters
        return model

bench.cli.adapter_class = lambda name: Drifted
sys.exit(bench.cli.main(sys.argv[1:]))
"""


def _run(tmp_path, script):
    out = tmp_path / "result.json"
    args = ["--framework", "pytorch", "--workload", "alexnet-fwd", "--batch-size", "2", "--iterations", "2",
            "--warmup", "1", "--time-budget", "0", "--warmup-budget", "0", "--out", str(out)]
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return proc, json.loads(out.read_text())


def test_a_model_that_is_not_its_spec_fails_the_cell(tmp_path):
    require(importlib.util.find_spec("torch") is not None, "torch (the test extra) is not installed")
    proc, result = _run(tmp_path, DRIFTED)
    assert result["status"] == "error", proc.stdout[-2000:] + proc.stderr[-2000:]
    m = result["metrics"]
    assert m["param_count"] == m["spec_param_count"] + 9
    assert "%d trainable parameters" % m["param_count"] in result["message"]
    assert "its spec has %d" % m["spec_param_count"] in result["message"]
    assert "samples_per_s" not in m and "headline" not in m      # nothing measured, nothing published
    assert proc.returncode != 0


def test_the_unchanged_adapter_passes_the_guard_and_records_its_settings(tmp_path):
    require(importlib.util.find_spec("torch") is not None, "torch (the test extra) is not installed")
    plain = DRIFTED.replace("bench.cli.adapter_class = lambda name: Drifted\n", "")
    proc, result = _run(tmp_path, plain)
    assert result["status"] == "ok", proc.stderr[-2000:]
    m = result["metrics"]
    assert m["param_count"] == m["spec_param_count"] and m["samples_per_s"] > 0
    assert m["settings"]["layout"] == "NHWC (channels_last)" and m["settings"]["graph"] == "eager"
    assert m["settings"]["precision_method"] == "fp32 weights and math"
