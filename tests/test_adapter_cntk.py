"""CNTK adapter: what can be checked without CNTK (which needs Python 3.6 on
Ubuntu 18.04 and cannot be installed on this host).

  * (bench/'s Python 3.6 compatibility, which CNTK's container needs, is
    checked for every file in tests/test_bench_python36.py);
  * the adapter module imports without cntk, with its static metadata;
  * the pure mapping of CNTK's errors to statuses;
  * the rendered CNTK Dockerfiles (Ubuntu 18.04, Python 3.6, Open MPI 1.10
    from source, cntk / cntk-gpu 2.7.post2);
  * the plan for CNTK cells.  That `python -m runner run --only cntk` reports
    "base ubuntu18.04 (ubuntu:18.04): cannot be pulled" for them is tested in
    tests/test_docker_pipeline.py.
"""

import subprocess
import sys

import pytest

from runner import ROOT


def test_module_imports_without_cntk():
    code = ("import sys; sys.modules['cntk'] = None\n"
            "from bench.adapters import adapter_class\n"
            "cls = adapter_class('cntk')\n"
            "assert cls.name == 'cntk' and cls.display == 'CNTK' and cls.framework_module == 'cntk'\n"
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_two_gpus_and_fp16_are_unsupported_before_cntk_is_needed():
    from bench.adapters.base import Unsupported
    from bench.adapters.cntk import Adapter
    with pytest.raises(Unsupported, match="MPI"):
        Adapter("gpu", 2, "fp32")
    with pytest.raises(Unsupported, match="fp32 only"):
        Adapter("gpu", 1, "fp16")


class CudaError(RuntimeError):
    pass


@pytest.mark.parametrize("exc,status", [
    (RuntimeError("CUDA failure 2: out of memory ; GPU=0 ; hostname=x ; expr=cudaMalloc((void**) &deviceBufferPtr, sizeof(AllocatedElemType) * AsMultipleOf(numElements, 2))"), "oom"),
    (RuntimeError("std::bad_alloc"), "oom"),
    (MemoryError(), "oom"),
    (CudaError("cuDNN failure 4: CUDNN_STATUS_ALLOC_FAILED ; GPU=0"), "oom"),
    (RuntimeError("Convolution: groups > 1 is not supported on the CPU reference engine"), "unsupported"),
    (ValueError("Unsupported data type for operand"), "unsupported"),
    (NotImplementedError("optimized_rnnstack"), "unsupported"),
    (RuntimeError("OptimizedRNNStack: cuDNN is not available"), "unsupported"),
    (ValueError("Node 'x' (Plus operation): Input dimensions [3 x 4] and [5] are not compatible."), "error"),
    (RuntimeError("CUDA failure 700: an illegal memory access was encountered"), "error"),
])
def test_classify_error(exc, status):
    from bench.adapters.cntk import classify_error
    assert classify_error(type(exc).__name__, str(exc)) == status


def test_bn_time_constant_matches_the_spec_momentum_at_the_reference_batch():
    import math
    from bench.adapters.cntk import BN_REFERENCE_BATCH, bn_time_constant
    for m in (0.9, 0.99, 0.9997):
        tc = bn_time_constant(m)
        assert math.isclose(math.exp(-BN_REFERENCE_BATCH / tc), m, rel_tol=1e-9)
    assert bn_time_constant(0.0) == 0.0


def _render(toolchain):
    from runner.compat import load_compat, resolve
    from runner.render import render
    choice = resolve(load_compat(), "cntk", "2.7.post2", toolchain, base_choice="plain")
    assert not hasattr(choice, "reason"), choice
    return choice, render(choice).dockerfile


@pytest.mark.parametrize("toolchain,dist", [("cpu", "cntk==2.7.post2"),
                                            ("cuda10.0-cudnn7", "cntk-gpu==2.7.post2")])
def test_rendered_cntk_dockerfile(toolchain, dist):
    choice, text = _render(toolchain)
    lines = text.splitlines()
    assert choice.python == "3.6" and choice.base_name == "ubuntu18.04"
    assert "FROM ubuntu:18.04" in lines
    # Open MPI 1.10 from its release tarball, configured and installed, tools removed
    assert "open-mpi/v1.10/openmpi-1.10.7.tar.gz" in text
    assert "./configure --prefix=/usr/local/mpi" in text and "make -j" in text
    assert "LD_LIBRARY_PATH=/usr/local/mpi/lib" in text
    # pip new enough for manylinux wheels but still for Python 3.6, then the pinned wheel
    assert 'pip install "pip<22"' in text
    assert dist in text and "numpy<1.20" in text
    assert "python3 -m venv /opt/venv" in text
    assert text.index("COPY bench/") > text.index(dist)


def test_plan_lists_cntk_cells_on_python36(run_cli):
    proc = run_cli("plan", "--only", "cntk", "--profile", "smoke", "--device", "cpu", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "cntk" in out and "3.6" in out
    assert "Traceback" not in out
