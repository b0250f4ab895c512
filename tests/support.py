"""What the tests need from the machine, found the same way in every test.

`make test` installs the test extra into the project's virtualenv and starts what the tests need
(engine, datasets) before pytest runs, and sets DLBENCH_TESTS_STRICT=1: under it a missing
prerequisite is a failure, never a skip, so a check cannot silently stop running on a fresh machine.
A bare `pytest` outside `make test` still skips, with the reason.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

STRICT = os.environ.get("DLBENCH_TESTS_STRICT") == "1"


def project_tool(name: str) -> str:
    """The path of a console script the project's test extra installs.

    The venv's bin/ beside this interpreter comes first: `make test` runs `.venv/bin/python -m pytest`
    without activating the venv, so its scripts are not on PATH. A missing tool is a failure: it is
    listed in pyproject.toml's test extra, so its absence is a broken set-up, not a reason to skip."""
    beside = Path(sys.executable).parent / name  # not resolved: the venv's python is a symlink
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"{name} is neither beside {sys.executable} nor on PATH; it is in pyproject.toml's test "
                f"extra: `make test` installs it (or `pip install -e '.[test]'`)", pytrace=False)


def require(condition: bool, reason: str) -> None:
    """Skip with the reason when a prerequisite is missing, or fail under `make test` (which provides it)."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"{reason} — `make test` provides this, so its absence is a failure here", pytrace=False)
    pytest.skip(reason)


def wait_until(predicate, timeout_s: float, what: str, every_s: float = 0.2):
    """predicate()'s first truthy value within timeout_s; AssertionError naming `what` otherwise."""
    import time
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


def json_paths(node, prefix=()):
    """Every path (tuple of keys/indices) into a JSON-like document, the root's () first."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from json_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from json_paths(v, prefix + (i,))


# The smallest valid matrix: one framework, one toolchain, one workload.
MINIMAL_MATRIX = """\
frameworks:
  pytorch: {versions: ["2.15.0"]}
toolchains: [cpu]
workloads:
  vgg16-step: {batch_sizes: [16]}
"""
