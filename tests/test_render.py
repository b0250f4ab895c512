"""Render stage: determinism, golden Dockerfiles per framework, parseable output, tags and labels."""

import os
import re
import subprocess
import sys

import pytest
from dockerfile_parse import DockerfileParser

from runner import DEFAULT_MATRIX, ROOT
from runner.compat import load_compat, resolve
from runner.matrix import expand, load_matrix
from runner.render import render, render_all

GOLDEN = ROOT / "tests" / "golden" / "dockerfiles"
TAG_RE = re.compile(r"^dlbench/(?P<fw>[a-z]+):(?P<ver>[\w.]+)-(?P<tc>[\w.-]+)-py(?P<py>\d+\.\d+)-(?P<hash>[0-9a-f]{12})$")

# One cell of each framework: its GPU build where it has one.
GOLDEN_CELLS = [
    ("pytorch", "2.15.0", "cuda13.0-cudnn9"),
    ("tensorflow", "2.21.0", "cuda12.5-cudnn9.3"),
    ("keras", "3.15.1", "cpu"),
    ("mxnet", "1.9.1", "cuda11.7-cudnn8"),
    ("cntk", "2.7.post2", "cuda10.0-cudnn7"),
    ("jax", "0.10.2", "cpu"),
]


def choice(fw, ver, tc, base_choice="plain", **kw):
    result = resolve(load_compat(), fw, ver, tc, base_choice=base_choice, **kw)
    assert not hasattr(result, "reason"), result
    return result


@pytest.mark.parametrize("fw,ver,tc", GOLDEN_CELLS, ids=[c[0] for c in GOLDEN_CELLS])
def test_golden_dockerfile(fw, ver, tc):
    text = render(choice(fw, ver, tc)).dockerfile
    golden = GOLDEN / f"{fw}-{ver}-{tc}.Dockerfile"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs; UPDATE_GOLDEN=1 rewrites it after review"


def test_rendering_is_deterministic_across_processes():
    code = ("from runner.compat import load_compat, resolve; from runner.render import render;"
            "c = resolve(load_compat(), 'tensorflow', '2.21.0', 'cpu', base_choice='plain');"
            "r = render(c); print(r.tag); print(r.dockerfile)")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}, check=True).stdout
            for seed in (1, 2, 3)}
    assert len(outs) == 1


def _all_images():
    matrix, lines = load_matrix(DEFAULT_MATRIX)
    images = []
    for base in ("plain", "registry"):
        m = matrix.model_copy(update={"base": base})
        plan = expand(m, path=DEFAULT_MATRIX, lines=lines, profile="full", device="gpu")
        images += render_all(plan.images)
    return images


def test_every_rendered_dockerfile_parses_and_is_layered_right():
    images = _all_images()
    assert len(images) >= 20
    for image in images:
        parser = DockerfileParser(fileobj=__import__("io").BytesIO(image.dockerfile.encode()))
        instructions = [i["instruction"] for i in parser.structure if i["instruction"] != "COMMENT"]
        assert instructions[0] == "FROM" and parser.baseimage == image.choice.base.image
        # The framework install comes before bench/, which is a thin last layer.
        runs = [n for n, i in enumerate(parser.structure) if i["instruction"] == "RUN"]
        copy_bench = [n for n, i in enumerate(parser.structure)
                      if i["instruction"] == "COPY" and "bench/" in i["value"]]
        assert len(copy_bench) == 1 and copy_bench[0] > max(runs)
        assert parser.labels["dlbench.framework"] == image.choice.framework
        assert parser.labels["dlbench.framework.version"] == image.choice.version
        assert parser.labels["dlbench.python"] == image.choice.python
        assert parser.labels["org.opencontainers.image.version"] == image.choice.version
        assert "USER" in instructions  # never runs benchmarks as root
        m = TAG_RE.match(image.tag)
        assert m, image.tag
        assert (m["fw"], m["ver"], m["tc"], m["py"]) == (
            image.choice.framework, image.choice.version, image.choice.toolchain, image.choice.python)


def test_shared_layers_are_identical_across_frameworks():
    """Base and Python layers must be byte-identical so Docker shares them between frameworks."""
    def prefix(text):
        lines = text.splitlines()
        start = next(i for i, l in enumerate(lines) if l.startswith("FROM"))
        end = next(i for i, l in enumerate(lines) if "ARG PIP_INDEX_URL" in l)
        return "\n".join(lines[start:end])
    texts = [render(choice(fw, ver, "cpu")).dockerfile
             for fw, ver in (("pytorch", "2.15.0"), ("tensorflow", "2.21.0"), ("jax", "0.10.2"))]
    prefixes = {prefix(t) for t in texts}
    assert len(prefixes) == 1


def test_tag_hash_covers_bench_and_ca_bundle(tmp_path):
    c = choice("pytorch", "2.15.0", "cpu")
    plain = render(c)
    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    with_ca = render(c, ca_bundle=bundle)
    assert plain.tag != with_ca.tag
    assert "COPY certs/ca-bundle.crt" in with_ca.dockerfile and "certs/ca-bundle.crt" not in plain.dockerfile
    assert ("certs/ca-bundle.crt", bundle) in with_ca.context_files
    assert any(rel == "bench/workloads.py" for rel, _ in plain.context_files)
    assert not any("__pycache__" in rel for rel, _ in plain.context_files)


def test_mxnet_gpu_image_pins_cuda11_wheels_and_numpy():
    text = render(choice("mxnet", "1.9.1", "cuda11.7-cudnn8")).dockerfile
    assert "mxnet-cu117==1.9.1" in text and "numpy<1.24" in text
    assert "libgfortran5" in text and "LD_LIBRARY_PATH" in text


def test_cntk_image_is_python36_on_ubuntu1804_with_openmpi_110():
    c = choice("cntk", "2.7.post2", "cuda10.0-cudnn7")
    text = render(c).dockerfile
    assert c.python == "3.6" and "FROM ubuntu:18.04" in text.splitlines()
    assert "openmpi-1.10.7" in text and "cntk-gpu==2.7.post2" in text


def test_render_cli_writes_dockerfiles(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "runner", "render", "--only", "pytorch,tensorflow", "--out",
                           str(tmp_path), "--device", "cpu"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["pytorch-2.15.0-cpu-py3.11.Dockerfile", "tensorflow-2.21.0-cpu-py3.11.Dockerfile"]
