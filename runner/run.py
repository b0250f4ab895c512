"""The run stage: every cell of a plan through one backend (runner/backends/), each cell's outcome one
result file under results/<run-id>/.

Pipeline per run: backend (connects first, so a dead engine writes nothing) -> run directory and its
lock -> datasets -> backend.prepare (images) -> the scheduler works off the cells -> summary.
Ctrl-C / SIGTERM stop the backend's cells, keep finished results, record the rest as interrupted and
exit 130. `--resume RUN_ID` re-runs only the cells without a final result."""

from __future__ import annotations

import collections
import shutil
import signal
import threading
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runner import backends
from runner.datasets import DEFAULT_CACHE as DEFAULT_DATA_DIR
from runner.errors import EXIT_CELLS_FAILED, EXIT_OK, UserError
from runner.matrix import Cell, Plan, processes
from runner.options import RunOptions
from runner.scheduler import STAGING, RunContext, Scheduler, take_lock

INTERRUPTED_EXIT = 130


def parallel_of(options: RunOptions, backend, plan: Plan, gpu_count: int) -> int:
    value = options.parallel
    if str(value) == "auto":
        return backend.default_parallel(plan, gpu_count)
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"--parallel {value}: expected a number of cells at a time, or auto") from None
    if n < 1:
        raise UserError(f"--parallel {value}: must be at least 1")
    return n


def user_data_dir(options: RunOptions) -> Optional[Path]:
    if not options.data_dir:
        return None
    path = Path(options.data_dir).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"--data-dir {options.data_dir}: not a directory. Point it at a directory holding the "
                        f"datasets (e.g. fashion-mnist/ with the idx files), or leave it out to use the cache "
                        f"{DEFAULT_DATA_DIR}.")
    return path


def datasets_for(scheduler: Scheduler, todo: list[Cell], user_dir: Optional[Path], data_view: Path,
                 console) -> list[Cell]:
    """Fetch the datasets the cells need (runner/datasets.py); cells whose dataset cannot be had get that
    error now, without running. Links each dataset into data_view/<name>."""
    from runner.datasets import datasets_of, ensure_datasets
    sources = ensure_datasets(datasets_of(todo), data_dir=user_dir, console=console)
    data_view.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if source.path is not None:
            link = data_view / name
            if not link.is_symlink():
                link.symlink_to(source.path.resolve(), target_is_directory=True)
    runnable = []
    for cell in todo:
        source = sources.get(cell.dataset) if cell.dataset and not cell.synthetic else None
        if source is not None and source.problem:
            scheduler.fail(cell, "error", source.problem)
        else:
            runnable.append(cell)
    return runnable


def prepare_run_dir(options: RunOptions) -> tuple[str, Path, bool]:
    from runner.results import new_run_id, run_dirs
    root = Path(options.results_dir or "results").resolve()
    if options.resume:
        run_dir = root / options.resume
        if not run_dir.is_dir():
            known = ", ".join(p.name for p in run_dirs(root)[-5:]) or "none"
            raise UserError(f"--resume {options.resume}: no such run under {root} (latest runs: {known}).")
        return options.resume, run_dir, True
    run_id = options.run_id or new_run_id()
    run_dir = root / run_id
    if run_dir.exists():
        raise UserError(f"run {run_id} exists already under {root}; continue it with --resume {run_id} "
                        f"or choose another --run-id.")
    return run_id, run_dir, False


def finished_cells(run_dir: Path, cells: list[Cell]) -> dict[str, str]:
    """Cells of a resumed run that have a valid, final result, with its status. Interrupted or unusable files
    are moved to superseded/ (kept, never overwritten) so the cell runs again."""
    from runner.results import ResultError, load_result
    done = {}
    for cell in cells:
        path = run_dir / f"{cell.name}.json"
        if not path.exists():
            continue
        try:
            obj = load_result(path)
            if obj["status"] != "interrupted":
                done[cell.name] = obj["status"]
                continue
        except ResultError:
            pass
        aside = run_dir / "superseded"
        aside.mkdir(exist_ok=True)
        n = 1
        while (aside / f"{cell.name}.{n}.json").exists():
            n += 1
        path.rename(aside / f"{cell.name}.{n}.json")
    return done


def run_plan(plan: Plan, rendered: dict, options: RunOptions, console: Console) -> tuple[Optional[Path], int]:
    """The run stage. Returns (run directory, exit code: 0 all ok, 1 some cell not ok, 130 interrupted)."""
    backend = backends.get(options.backend)(options, console)
    data_dir = user_data_dir(options)
    run_id, run_dir, resuming = prepare_run_dir(options)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    lock = take_lock(run_dir)
    gpus = backend.gpu_ids(plan)
    ctx = RunContext(plan=plan, run_id=run_id, run_dir=run_dir, console=console, data_dir=run_dir / "data",
                     machine=backend.machine(), timeout_override=options.timeout)

    def image_of(cell: Cell):
        return rendered[(cell.framework, cell.version, cell.toolchain)]

    cpus = None if options.share_cpus else backend.cpu_ids()
    scheduler = Scheduler(ctx, backend, image_of, parallel_of(options, backend, plan, len(gpus)), gpus, cpus)
    tasks = processes(plan.cells)   # each cell once, or once per repeat
    scheduler.total = len(tasks)
    previous_handlers = {}

    def on_signal(signum, frame):
        if not ctx.stop.is_set():
            ctx.stop.set()
            console.print(f"[bold yellow]{signal.Signals(signum).name}: stopping run {run_id}[/]: stopping its "
                          f"cells, keeping finished results, recording the rest as interrupted")
            threading.Thread(target=backend.stop_all, args=(ctx,), daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous_handlers[sig] = signal.signal(sig, on_signal)
    done: dict[str, str] = {}
    try:
        runs = f" in {len(tasks)} processes (repeats)" if len(tasks) != len(plan.cells) else ""
        console.print(f"run {run_id}: {len(plan.cells)} cells{runs}, backend {backend.name}, results in {run_dir}")
        if resuming and backend.stop_all(ctx):
            # an engine lost mid-run keeps the containers it had (even finished cells'); we hold the lock,
            # so whatever of this run is still there belongs to the earlier attempt
            console.print(f"resume: removed what the earlier attempt of run {run_id} left behind")
        done = finished_cells(run_dir, tasks) if resuming else {}
        if done:
            console.print(f"resume: {len(done)} cell(s) have a result already and are skipped")
        todo = [c for c in tasks if c.name not in done]
        scheduler.counter = len(done)
        if todo and not ctx.stop.is_set():
            todo = datasets_for(scheduler, todo, data_dir, ctx.data_dir, console)
        if todo and not ctx.stop.is_set():
            todo = backend.prepare(ctx, todo, image_of, scheduler.fail_before_start)
        if todo and not ctx.stop.is_set():
            # a sweep that ran out of memory before --resume stays stopped there
            scheduler.oom_at.update(sweep_oom(tasks, done))
            scheduler.run_all(todo, len(tasks) - len(todo), len(tasks))
        if ctx.stop.is_set():
            backend.stop_all(ctx)
            for cell in tasks:
                if cell.name not in done and cell.name not in scheduler.done:
                    scheduler.fail(cell, "interrupted", "interrupted (Ctrl-C or SIGTERM) before this cell started")
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        shutil.rmtree(run_dir / STAGING, ignore_errors=True)
        lock.unlink(missing_ok=True)
    statuses = summary(run_dir, tasks, console)
    if ctx.stop.is_set():
        return run_dir, INTERRUPTED_EXIT
    # a sweep is meant to end in out-of-memory: that, and the batches it then leaves out, are not failures
    expected = {c.name for c in tasks if c.sweep and statuses.get(c.name) in ("oom", "unsupported")}
    return run_dir, EXIT_OK if all(s == "ok" or name in expected for name, s in statuses.items()) \
        else EXIT_CELLS_FAILED


def sweep_oom(cells: list[Cell], statuses: dict[str, str]) -> dict[tuple, int]:
    """Per batch sweep, the smallest batch with an out-of-memory result among `statuses`."""
    out: dict[tuple, int] = {}
    for cell in cells:
        if cell.sweep and statuses.get(cell.name) == "oom":
            out[cell.sweep_key] = min(out.get(cell.sweep_key, cell.batch_size), cell.batch_size)
    return out


def summary(run_dir: Path, tasks: list[Cell], console: Console) -> dict[str, str]:
    from runner.results import ResultError, load_result
    statuses: dict[str, str] = {}
    failures = []
    for cell in tasks:
        try:
            obj = load_result(run_dir / f"{cell.name}.json")
            statuses[cell.name] = obj["status"]
            if obj["status"] != "ok":
                failures.append((cell.name, obj["status"], obj.get("message", "")))
        except ResultError as exc:
            statuses[cell.name] = "missing"
            failures.append((cell.name, "missing", str(exc)))
    counts = collections.Counter(statuses.values())
    console.print(f"run {run_dir.name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
                  f"; results in {run_dir}")
    if failures:
        table = Table(title="cells that did not finish ok", show_lines=False)
        for col in ("cell", "status", "message"):
            table.add_column(col, overflow="fold")
        for cid, status, message in failures:
            table.add_row(escape(cid), status, escape(message))
        console.print(table)
    return statuses
