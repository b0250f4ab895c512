"""Execution backends: how a cell's `python -m bench` gets run. One module each, behind one protocol.

The run stage (runner/run.py, runner/scheduler.py) only talks to `Backend`; it never names a backend.
This registry is the one place that maps `--backend NAME` to a class, imported lazily so that the local
backend needs neither the Docker SDK nor an engine."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Optional, Protocol

if TYPE_CHECKING:
    from rich.console import Console

    from runner.contract import Execution
    from runner.matrix import Cell, Plan
    from runner.options import RunOptions
    from runner.render import RenderedImage
    from runner.scheduler import RunContext

# Called by prepare() for a cell that cannot run (its image could not be built, say): (cell, message, image).
FailCell = Callable[["Cell", str, Optional[str]], None]


class Backend(Protocol):
    name: ClassVar[str]
    # Whether cells on this backend run in the images the render stage makes (their tags get recorded).
    uses_images: ClassVar[bool]

    def __init__(self, options: "RunOptions", console: "Console") -> None:
        """Connect to whatever runs the cells; raise UserError (nothing written yet) when it cannot."""

    def machine(self) -> str:
        """One line naming the machine the cells run on (results and tables carry it)."""

    def gpu_ids(self, plan: "Plan") -> list[int]:
        """The GPU indices the scheduler hands out to cells; [] when this backend (or its scheduler)
        places GPU cells itself."""

    def cpu_ids(self) -> Optional[list[int]]:
        """The CPU ids the scheduler may pin cells to (disjoint cpusets for GPU cells running side by side,
        CPU cells alone); [] when the cells share one host but cannot be pinned; None when this backend's own
        scheduler places cells (then the run's scheduler neither pins nor serialises them)."""

    def default_parallel(self, plan: "Plan", gpu_count: int) -> int:
        """Cells at a time when --parallel is auto."""

    def prepare(self, ctx: "RunContext", cells: list["Cell"], image_of: Callable[["Cell"], "RenderedImage"],
                fail: FailCell) -> list["Cell"]:
        """Make the images (or whatever else) the cells need; report the cells that cannot run through
        `fail` and return the rest."""

    def execute(self, ctx: "RunContext", cell: "Cell", image: "RenderedImage", staging: Path, log_path: Path,
                gpu_ids: list[int], timeout: int, cpus: Optional[list[int]] = None) -> "Execution":
        """Run one cell to its end (or its timeout) and hand back how it ended and its result bytes.
        `staging` is the cell's own, empty output directory; output goes to `log_path`; `cpus`: the CPU ids
        to pin the cell to (None: no pinning)."""

    def stop_all(self, ctx: "RunContext") -> int:
        """Stop every cell of this run that is still running (Ctrl-C), and on --resume whatever an earlier
        attempt of the run left behind; returns how many."""

    @classmethod
    def clean(cls, console: "Console") -> int:
        """Remove what crashed runs of this backend left behind; returns an exit code."""


_REGISTRY: dict[str, str] = {
    "docker": "runner.backends.docker:DockerBackend",
    "local": "runner.backends.local:LocalBackend",
    "script": "runner.backends.script:ScriptBackend",
    "slurm": "runner.backends.slurm:SlurmBackend",
}
_EXTRA: dict[str, type] = {}


def names() -> list[str]:
    return list(_REGISTRY) + [n for n in _EXTRA if n not in _REGISTRY]


def register(name: str, cls: type) -> None:
    """Add a backend class under a name (tests register a fake one)."""
    _EXTRA[name] = cls


def get(name: str) -> type:
    if name in _EXTRA:
        return _EXTRA[name]
    if name not in _REGISTRY:
        from runner.errors import UserError
        raise UserError(f"--backend {name}: no such backend; choose one of {', '.join(names())}.")
    module, _, attr = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def script_for(plan, run_id: str) -> str:
    """`plan --commands`: the plan as a shell script of bench commands (the script backend's text)."""
    from runner.backends.script import shell_script
    return shell_script(plan, run_id)
