"""JAX adapter: pure helpers on the host; every workload of the smoke profile,
the parameter counts and LeNet's Fashion-MNIST accuracy in REAL containers
(shared helpers in test_adapter_mxnet)."""

import os

import pytest

from support import require
from test_adapter_mxnet import accuracy_in_container, describe_in_container, smoke_in_containers

FRAMEWORK = "jax"
VERSION = "0.10.2"
ACCURACY_ITERATIONS = 1500
ACCURACY_OPTIONS = {"lr": 0.01, "momentum": 0.9}


@pytest.mark.parametrize("type_name,message,oom", [
    ("XlaRuntimeError", "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.",
     True),
    ("JaxRuntimeError", "RESOURCE_EXHAUSTED: Failed to allocate request for 2.00GiB on device ordinal 0",
     True),
    ("MemoryError", "", True),
    ("XlaRuntimeError", "INTERNAL: cuDNN error: CUDNN_STATUS_EXECUTION_FAILED", False),
    ("ValueError", "Out of memory", False),
])
def test_oom_classification(type_name, message, oom):
    from bench.adapters.jax import is_oom_error
    assert is_oom_error(type_name, message) is oom


def test_static_metadata_without_jax():
    from bench.adapters import adapter_class
    cls = adapter_class(FRAMEWORK)
    assert (cls.name, cls.display, cls.framework_module) == ("jax", "JAX", "jax")
    assert cls.unsupported == {}
    assert set(cls.precisions) == {"fp32", "bf16", "fp16", "amp"}


@pytest.mark.docker
@pytest.mark.slow
def test_smoke_profile_every_workload_in_containers(docker_client, run_cli, tmp_path):
    results = smoke_in_containers(run_cli, tmp_path, FRAMEWORK)
    gru = [r for r in results if r["cell"]["workload"] == "gru-imdb"]
    assert gru and gru[0]["metrics"].get("cudnn_rnn") is False


@pytest.mark.docker
def test_param_counts_equal_the_spec_in_the_container(docker_client, quiet_console):
    described = describe_in_container(FRAMEWORK, docker_client, quiet_console)
    assert "note" not in described, described.get("note")
    for key, record in described["workloads"].items():
        assert "error" not in record, (key, record["error"])
        assert record["param_count"] == record["spec_param_count"], key


@pytest.mark.docker
@pytest.mark.slow
def test_lenet_fashion_mnist_accuracy_in_a_container(docker_client, run_cli, tmp_path):
    require(os.path.isdir("/usr/share/datasets/fashion-mnist"),
            "Fashion-MNIST is not at /usr/share/datasets/fashion-mnist (`make datasets` installs it)")
    result = accuracy_in_container(run_cli, tmp_path, FRAMEWORK, VERSION, ACCURACY_ITERATIONS,
                                   ACCURACY_OPTIONS)
    assert result["metrics"]["test_accuracy"] >= 0.85, result["metrics"]["test_accuracy"]


@pytest.mark.docker
def test_train_step_compiles_once_in_the_container(docker_client, quiet_console):
    """The PRNG key and optimizer state go into the jitted step committed to the device, so
    call 2 (committed outputs of call 1) does not retrace: one compilation over 4 calls."""
    from test_adapter_mxnet import image_for
    image = image_for(FRAMEWORK, docker_client, quiet_console)
    raw = docker_client.containers.run(image.tag, ["--framework", FRAMEWORK, "--selftest"],
                                       remove=True, stdout=True, stderr=False,
                                       environment={"OMP_NUM_THREADS": "2"})
    out = raw.decode()
    assert "train step compilations after 4 calls: 1" in out, out
    assert "selftest ok" in out, out
