"""The Keras 3 adapter (bench/adapters/keras.py).

Host checks need no Keras.  The container checks (marked `docker`) build the
Keras image of the matrix (Keras 3 on its TensorFlow backend, CPU) and run:
  * every workload of the smoke profile through `python -m runner run`, each
    result status ok and schema-valid, the backend named in the log;
  * `python -m bench --framework keras --describe`: trainable parameter counts
    equal bench.specs.param_count for every spec.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from runner import ROOT
from test_adapter_tensorflow import (check_describe, check_smoke, describe_counts, framework_image,
                                     smoke_run_all)

FRAMEWORK = "keras"


def test_static_metadata():
    from bench.adapters.keras import BACKENDS, Adapter
    assert Adapter.name == "keras" and Adapter.display == "Keras"
    assert Adapter.framework_module == "keras"
    assert set(Adapter.precisions) == {"fp32", "bf16", "amp"}
    assert "amp" in Adapter.precision_reasons["fp16"]
    assert BACKENDS == ("tensorflow", "jax", "torch")


def test_bad_backend_is_unsupported_before_any_import():
    code = ("import sys; sys.modules['keras'] = None\n"
            "from bench.adapters.keras import Adapter\n"
            "from bench.adapters.base import Unsupported\n"
            "try:\n"
            "    Adapter('cpu', 0, 'fp32', {'backend': 'theano'})\n"
            "except Unsupported as exc:\n"
            "    print('unsupported:', exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True)
    assert "unsupported: Keras backend 'theano'" in proc.stdout, proc.stdout + proc.stderr


def test_amp_on_cpu_is_unsupported_with_a_reason():
    code = ("import sys; sys.modules['keras'] = None\n"
            "from bench.adapters.keras import Adapter\n"
            "from bench.adapters.base import Unsupported\n"
            "try:\n"
            "    Adapter('cpu', 0, 'amp', {})\n"
            "except Unsupported as exc:\n"
            "    print('unsupported:', exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True)
    assert "unsupported: precision amp (mixed_float16) needs a GPU" in proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def keras_image(docker_client, quiet_console):
    return framework_image(FRAMEWORK, docker_client, quiet_console)


@pytest.mark.docker
def test_smoke_profile_every_workload_ok(keras_image, tmp_path):
    start = time.monotonic()
    proc, results = smoke_run_all(FRAMEWORK, tmp_path / "results")
    check_smoke(proc, results, FRAMEWORK)
    for r in results.values():
        assert any("backend tensorflow" in line for line in r["log_tail"]), r["log_tail"][:4]
        assert r["environment"]["framework_version"] == "3.15.1"
    print("keras smoke: %d cells in %.0f s" % (len(results), time.monotonic() - start))


@pytest.mark.docker
def test_describe_param_counts_equal_the_spec(keras_image, docker_client):
    check_describe(describe_counts(docker_client, keras_image.tag, FRAMEWORK))
