"""Shared fixtures. Generic on purpose: any test file may use them.

Docker fixtures talk to the real engine (no mocked client). Tests that need one are marked
`docker`; they skip, with the reason, only when no engine answers outside `make test` (which starts one first and
makes a missing engine a failure: see tests/support.py).
Images and the base are session-scoped and reused: an existing tag is never rebuilt.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from runner import DEFAULT_MATRIX, ROOT
from support import require

PYTHON = sys.executable
BASE = "debian-bookworm"
SMOKE_FRAMEWORKS = ("pytorch", "tensorflow", "mxnet")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def quiet_console() -> Console:
    """A console for library calls whose output the test does not read (wide, no colour)."""
    return Console(file=sys.stderr, width=200, highlight=False, no_color=True)


def runner_cli(*args, env=None, timeout=1800, check=False, **kwargs) -> subprocess.CompletedProcess:
    """`python -m runner ARGS` in a subprocess of this interpreter, output captured as text."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "250")
    proc = subprocess.run([PYTHON, "-m", "runner", *map(str, args)], cwd=str(ROOT), env=full_env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m runner {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def run_cli():
    return runner_cli


def make_args(**overrides) -> argparse.Namespace:
    """The Namespace the CLI would pass to make_plan/run_plan, with test defaults (smoke, cpu)."""
    values = dict(matrix=DEFAULT_MATRIX, only=None, workload=None, profile="smoke", device="cpu",
                  backend="docker", rebuild=False, resume=None, parallel="auto", results_dir=None,
                  data_dir=None, timeout=None, run_id=None)
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.fixture(scope="session")
def plan_args():
    return make_args


def plan_and_images(**overrides):
    """(plan, rendered) for the given selection, as the CLI makes them."""
    from runner.cli import make_plan, render_plan
    plan = make_plan(make_args(**overrides))
    return plan, render_plan(plan)


@pytest.fixture(scope="session")
def smoke_plan():
    return plan_and_images


@pytest.fixture(scope="session")
def docker_client():
    """The engine's client; skips the test when none answers."""
    from runner.engine import try_connect
    client = try_connect(timeout=600)
    require(client is not None, "no Docker engine answers (DOCKER_HOST or /var/run/docker.sock); `make test` "
                                "starts one with scripts/engine.sh")
    return client


@pytest.fixture(scope="session")
def debian_base(docker_client, quiet_console) -> str:
    """The debian-bookworm base image (pulled, or bootstrapped with debootstrap); reused when present."""
    from runner.build import ensure_bases
    from runner.compat import load_compat
    problems = ensure_bases({BASE}, console=quiet_console, client=docker_client)
    assert not problems, problems
    return load_compat().bases[BASE].image


@pytest.fixture(scope="session")
def smoke_images(docker_client, debian_base, quiet_console):
    """The smoke-profile CPU images of pytorch, tensorflow and mxnet, built once (existing tags reused).
    Returns {framework: RenderedImage}; a failed build fails the tests that use it, with the build's message."""
    from runner.build import build_images
    plan, rendered = plan_and_images(only=list(SMOKE_FRAMEWORKS), workload=["lenet-mnist"])
    images = {r.choice.framework: r for r in rendered.values()}
    outcomes = build_images(list(images.values()), rebuild=False, console=quiet_console, client=docker_client)
    failed = {tag: o.message for tag, o in outcomes.items() if not o.ok}
    assert not failed, failed
    return images


@pytest.fixture(scope="session")
def torch_image(smoke_images):
    return smoke_images["pytorch"]


@pytest.fixture
def results_root(tmp_path) -> Path:
    root = tmp_path / "results"
    root.mkdir()
    return root


def containers_with_label(client, label: str) -> list:
    return client.containers.list(all=True, filters={"label": label})
