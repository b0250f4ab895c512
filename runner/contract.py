"""The host side of the cell contract: how a cell becomes a `python -m bench` command line, its
environment and, when bench leaves no result, the `cell` record the runner writes for it.

Every backend uses these, so a cell means the same thing in a container, a subprocess, a shell script
or a Slurm job."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench import contract
from bench.contract import OPTIONS_FLAG, encode_options
from runner.matrix import CALIBRATION_FLAGS, Cell

LOG_TAIL_LINES = 20


@dataclass
class Execution:
    """What running one cell gave: how its process ended, the bytes of the result file it wrote (None when
    it wrote none), and the identity of the image it ran in (None outside containers)."""
    exit_code: Optional[int] = None
    timed_out: bool = False
    oom_killed: bool = False
    error: Optional[str] = None          # the backend could not run the cell at all (message)
    seconds: float = 0.0
    result: Optional[bytes] = None
    result_problem: Optional[str] = None  # the result file was there but unusable (not a regular file, too big)
    image: Optional[str] = None
    image_id: Optional[str] = None
    status: Optional[str] = None          # a status the backend determined itself (e.g. Slurm's "timeout")


def bench_args(cell: Cell, data_dir: str, out: str) -> list[str]:
    """The `python -m bench` arguments of a cell (everything after `-m bench`)."""
    args = ["--framework", cell.framework, "--workload", cell.workload]
    if cell.model:
        args += ["--model", cell.model]
    args += ["--batch-size", str(cell.batch_size), "--precision", cell.precision]
    for flag, value in (("--iterations", cell.iterations), ("--epochs", cell.epochs), ("--warmup", cell.warmup)):
        if value is not None:
            args += [flag, str(value)]
    for key, value in cell.calibration:   # the profile's sampling rule (bench/measure.py)
        args += [CALIBRATION_FLAGS[key], str(value)]
    args += ["--device", cell.device, "--gpus", str(cell.gpus), "--data-dir", data_dir]
    if cell.dataset:
        args += ["--dataset", cell.dataset]
    if cell.synthetic:
        args.append("--synthetic")
    options = dict(cell.options)
    if cell.eval_batches is not None:
        options.setdefault("eval_batches", cell.eval_batches)
    if options:
        args += [OPTIONS_FLAG, encode_options(options)]   # one JSON object: true stays a bool, 2 an int
    args += ["--out", out]
    return args


def cell_identity_env(cell: Cell) -> dict[str, str]:
    """What bench records about the cell itself (the run-wide variables come from cell_env)."""
    env = {"DLBENCH_CELL_ID": cell.id, "DLBENCH_TOOLCHAIN": cell.toolchain,
           "DLBENCH_FRAMEWORK_VERSION": cell.version}
    if cell.repeat:
        env["DLBENCH_REPEAT"] = str(cell.repeat)   # which of the cell's processes this is
    return env


def cell_env(run_id: str, machine: str, profile: str, cell: Cell, image_tag: Optional[str] = None,
             image_id: Optional[str] = None) -> dict[str, str]:
    env = {"DLBENCH_RUN_ID": run_id, "DLBENCH_MACHINE": machine, "DLBENCH_PROFILE": profile,
           **cell_identity_env(cell)}
    if image_tag:
        env["DLBENCH_IMAGE"] = image_tag
    if image_id:
        env["DLBENCH_IMAGE_ID"] = image_id
    return env


def cell_record(cell: Cell, run_id: str, profile: str, image: Optional[str] = None,
                image_id: Optional[str] = None) -> dict:
    """The result's `cell` object, for results the runner writes itself (bench.contract builds both sides')."""
    return contract.cell_record(
        id=cell.id, run_id=run_id, framework=cell.framework, framework_version=cell.version,
        toolchain=cell.toolchain, python=cell.python, image=image, image_id=image_id, workload=cell.workload,
        model=cell.model, dataset=cell.dataset, synthetic=cell.synthetic, batch_size=cell.batch_size,
        precision=cell.precision, device=cell.device, gpus=cell.gpus, iterations=cell.iterations,
        epochs=cell.epochs, warmup=cell.warmup, profile=profile, options=dict(cell.options),
        repeat=cell.repeat or None)


def read_tail(path: Path, start: int = 0, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last `lines` lines of a log file from byte offset `start` on."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(start, end - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    return [line for line in text.splitlines() if line.strip()][-lines:]
