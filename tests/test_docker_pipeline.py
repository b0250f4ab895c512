"""End to end on a real engine: bootstrap the base, build the pytorch/tensorflow/mxnet smoke images,
run a smoke cell of each in a container, regenerate a README table from the results; a warm re-run
builds nothing; a base no registry serves (CNTK's ubuntu:18.04) gives its cells that reason."""

from __future__ import annotations

import json
import time

import pytest

from conftest import SMOKE_FRAMEWORKS, containers_with_label, runner_cli
from runner.results import load_result, run_dirs

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SMOKE = ["--profile", "smoke", "--device", "cpu", "--workload", "lenet-mnist"]
README = """# test README

<!-- results:lenet-mnist -->
<!-- /results:lenet-mnist -->

<!-- results:failures -->
<!-- /results:failures -->
"""


@pytest.fixture(scope="module")
def smoke_run(smoke_images, docker_client, tmp_path_factory):
    """One `python -m runner run` of the lenet-mnist smoke cell of each framework (images prebuilt)."""
    root = tmp_path_factory.mktemp("smoke") / "results"
    proc = runner_cli("run", *SMOKE, "--only", ",".join(SMOKE_FRAMEWORKS), "--results-dir", root, timeout=1800)
    (run_dir,) = run_dirs(root)
    return proc, root, run_dir


def _result(run_dir, framework):
    (path,) = [p for p in run_dir.glob(f"{framework}-*.json")]
    return load_result(path)


def test_smoke_run_exits_0(smoke_run, docker_client):
    proc, root, run_dir = smoke_run
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert "3 image(s) cached, 0 to build" in proc.stdout
    assert not containers_with_label(docker_client, f"dlbench.run-id={run_dir.name}")
    assert not (run_dir / ".runner.lock").exists() and not (run_dir / ".cells").exists()


@pytest.mark.parametrize("framework", SMOKE_FRAMEWORKS)
def test_smoke_cell_result(smoke_run, smoke_images, framework):
    proc, root, run_dir = smoke_run
    result = _result(run_dir, framework)                       # schema-valid, or load_result raises
    assert result["status"] == "ok", result["message"] + "\n" + "\n".join(result.get("log_tail", []))
    cell = result["cell"]
    assert cell["framework"] == framework and cell["workload"] == "lenet-mnist"
    assert cell["run_id"] == run_dir.name and cell["image"] == smoke_images[framework].tag
    assert cell["image_id"].startswith("sha256:") and cell["profile"] == "smoke"
    metrics = result["metrics"]
    assert metrics["samples_per_s"] > 0 and metrics["train_time_s"] > 0
    assert 0 <= metrics["test_accuracy"] <= 1
    assert result["environment"]["machine"]
    log = (run_dir / "logs" / f"{cell['id']}.log").read_text()
    assert "status: ok" in log


@pytest.mark.parametrize("framework", SMOKE_FRAMEWORKS)
def test_smoke_results_regenerate_the_readme_table(smoke_run, tmp_path, framework):
    from runner.compat import load_compat
    from runner.report import make_report
    proc, root, run_dir = smoke_run
    readme = tmp_path / "README.md"
    readme.write_text(README)
    # a smoke run reaches a README only when asked (it measures nothing)
    make_report([run_dir], tmp_path / "reports", readme=readme, log=lambda *a: None)
    assert "<!-- results:lenet-mnist -->\n<!-- /results:lenet-mnist -->" in readme.read_text()
    make_report([run_dir], tmp_path / "reports", readme=readme, log=lambda *a: None, include_smoke=True)
    text = readme.read_text()
    section = text.split("<!-- results:lenet-mnist -->")[1].split("<!-- /results:lenet-mnist -->")[0]
    display = load_compat().frameworks[framework].display
    version = _result(run_dir, framework)["cell"]["framework_version"]
    # the section lists one entry (a table row or a block) per framework that has a result
    entries = [line for line in section.splitlines() if f"{display} {version}" in line]
    assert entries, section
    assert "_No results yet" not in section


def test_warm_rerun_builds_nothing(smoke_run, docker_client):
    proc, root, first = smoke_run
    started = time.monotonic()
    again = runner_cli("run", *SMOKE, "--only", ",".join(SMOKE_FRAMEWORKS), "--results-dir", root, "--resume",
                       first.name, timeout=600)
    elapsed = time.monotonic() - started
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 cell(s) have a result already and are skipped" in again.stdout
    assert elapsed < 30
    assert len(run_dirs(root)) == 1


def test_warm_new_run_skips_every_build(smoke_images, quiet_console, docker_client):
    from runner.build import build_images
    outcomes = build_images(list(smoke_images.values()), rebuild=False, console=quiet_console, client=docker_client)
    assert all(o.ok and o.skipped for o in outcomes.values())
    assert sum(o.skipped for o in outcomes.values()) == len(SMOKE_FRAMEWORKS)


def test_build_log_kept_beside_the_run(smoke_images, tmp_path, docker_client, quiet_console):
    """A build from `run` writes its log to results/<run-id>/build/ (forced here with rebuild on the small
    mxnet image; the layer cache makes it quick)."""
    from runner.build import build_images, sanitise
    image = smoke_images["mxnet"]
    outcomes = build_images([image], rebuild=True, console=quiet_console, log_dir=tmp_path / "build",
                            client=docker_client)
    outcome = outcomes[image.tag]
    assert outcome.ok and not outcome.skipped
    assert outcome.log_path == tmp_path / "build" / f"{sanitise(image.tag)}.log"
    text = outcome.log_path.read_text()
    assert "Step 1/" in text and "Successfully tagged" in text


def test_unavailable_base_gives_its_cells_the_reason(debian_base, tmp_path, docker_client):
    """CNTK needs ubuntu:18.04, which no registry serves here and debootstrap cannot make."""
    from runner.engine import image_exists
    if image_exists(docker_client, "ubuntu:18.04"):
        pytest.skip("this engine has ubuntu:18.04; the unavailable-base path cannot be shown here")
    root = tmp_path / "results"
    proc = runner_cli("run", *SMOKE, "--only", "cntk", "--results-dir", root, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    (run_dir,) = run_dirs(root)
    (path,) = run_dir.glob("cntk-*.json")
    result = load_result(path)
    assert result["status"] == "error"
    assert "base ubuntu18.04 (ubuntu:18.04): cannot be pulled" in result["message"]
    assert "cannot be bootstrapped from this host's mirror" in result["message"]
    assert "ubuntu18.04" in out and "cannot be pulled" in out
    assert json.loads(path.read_text())["cell"]["framework"] == "cntk"
