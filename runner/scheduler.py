"""The run's state machine, apart from how a cell is executed: a queue of cells worked off by `parallel`
threads, GPUs handed out from a slot pool, every outcome turned into exactly one result file.

Per cell: staging dir -> backend.execute -> the result bytes it hands back are parsed and validated on
the host -> stored as <run>/<cell>.json (never overwritten). A cell that left no valid result gets an
error/timeout/oom/interrupted result with the last log lines, so no cell is ever lost."""

from __future__ import annotations

import collections
import datetime
import json
import os
import shutil
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console
from rich.markup import escape

from runner.contract import Execution, cell_record, read_tail
from runner.errors import UserError
from runner.matrix import Cell, Plan
from runner.render import RenderedImage

STAGING = ".cells"
LOCK_NAME = ".runner.lock"


@dataclass
class RunContext:
    plan: Plan
    run_id: str
    run_dir: Path
    console: Console
    data_dir: Path            # holds <name> -> dataset links (the datasets a backend gives its cells)
    machine: str
    timeout_override: Optional[int] = None
    stop: threading.Event = field(default_factory=threading.Event)

    def timeout_of(self, cell: Cell) -> int:
        return int(self.timeout_override or cell.timeout_s)

    @property
    def lock_path(self) -> Path:
        return self.run_dir / LOCK_NAME


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the run lock

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(lock: Path) -> Optional[dict]:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return None


def lock_is_live(lock: Path) -> bool:
    info = read_lock(lock)
    if not info:
        return False
    if info.get("host") != socket.gethostname():
        return True  # another machine's runner: we cannot tell, so assume it lives
    try:
        return _pid_alive(int(info.get("pid", 0)))
    except (TypeError, ValueError):
        return False


def take_lock(run_dir: Path) -> Path:
    """One runner per run directory: a live runner's lock refuses the second; a dead one's is taken over.
    O_EXCL makes two runners starting at once unable to both win."""
    lock = run_dir / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if lock_is_live(lock):
                info = read_lock(lock) or {}
                raise UserError(f"run {run_dir.name} is in progress (runner pid {info.get('pid')} on "
                                f"{info.get('host')}); wait for it or stop it first.") from None
            lock.unlink(missing_ok=True)  # its runner died: take over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "started": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        return lock
    raise UserError(f"run {run_dir.name}: could not take its lock {lock}; another runner is starting on it.")


# ---------------------------------------------------------------- the GPU slot pool

class GpuSlots:
    """Hands out host GPU indices: a cell needing n GPUs waits until n are free."""

    def __init__(self, gpu_ids: list[int]):
        self.known = bool(gpu_ids)
        self.free = list(gpu_ids)
        self.total = len(gpu_ids)
        self.cond = threading.Condition()

    def acquire(self, n: int, stop: threading.Event) -> Optional[list[int]]:
        if n <= 0:
            return []
        if not self.known:
            return []  # GPUs unknown here: the backend (engine, scheduler) picks `n` devices
        with self.cond:
            while len(self.free) < n:
                if stop.is_set():
                    return None
                self.cond.wait(0.5)
            taken, self.free = self.free[:n], self.free[n:]
            return taken

    def release(self, ids: list[int]) -> None:
        if not ids or not self.known:
            return
        with self.cond:
            self.free = sorted(self.free + list(ids))
            self.cond.notify_all()


class CpuSets:
    """Disjoint cpusets for GPU cells running side by side: GPU k's share is the k-th slice of
    len(cpus) // len(gpus) cores, so neighbours do not fight over the cores that feed their GPUs."""

    def __init__(self, cpu_ids: list[int], gpu_ids: list[int]):
        self.cpus = list(cpu_ids)
        self.gpus = list(gpu_ids)
        self.share = len(self.cpus) // len(self.gpus) if self.gpus else 0

    def for_gpus(self, ids: list[int]) -> Optional[list[int]]:
        """The cpuset of a cell on these GPUs; None (no pinning) where the host has no share to give."""
        if not self.share or not ids or any(g not in self.gpus for g in ids):
            return None
        out: list[int] = []
        for g in sorted(ids):
            k = self.gpus.index(g)
            out += self.cpus[k * self.share:(k + 1) * self.share]
        return out


class CpuCellGate:
    """CPU cells run alone: one waits until no other cell runs and then holds the others off (a cell
    sharing the cores would be measuring its neighbour too); GPU cells run side by side. Waiting CPU cells
    go first, so a stream of GPU cells cannot starve them."""

    def __init__(self):
        self.cond = threading.Condition()
        self.running = 0
        self.alone = False
        self.waiting_alone = 0

    def enter(self, alone: bool, stop: threading.Event) -> bool:
        with self.cond:
            if alone:
                self.waiting_alone += 1
            try:
                while (self.alone or self.running) if alone else (self.alone or self.waiting_alone):
                    if stop.is_set():
                        return False
                    self.cond.wait(0.5)
            finally:
                if alone:
                    self.waiting_alone -= 1
            if alone:
                self.alone = True
            else:
                self.running += 1
            return True

    def leave(self, alone: bool) -> None:
        with self.cond:
            if alone:
                self.alone = False
            else:
                self.running -= 1
            self.cond.notify_all()


# ---------------------------------------------------------------- the scheduler

class Scheduler:
    def __init__(self, ctx: RunContext, backend, image_of: Callable[[Cell], RenderedImage], parallel: int,
                 gpu_ids: list[int], cpu_ids: Optional[list[int]] = None):
        """cpu_ids: the CPUs to split among GPU cells that run side by side, with CPU cells running alone;
        None: cells share every CPU (--share-cpus, or a backend that cannot pin)."""
        self.ctx = ctx
        self.backend = backend
        self.image_of = image_of
        self.parallel = max(1, parallel)
        self.slots = GpuSlots(gpu_ids)
        self.isolate = cpu_ids is not None and self.parallel > 1
        self.cpusets = CpuSets(cpu_ids or [], gpu_ids)
        self.gate = CpuCellGate()
        self.lock = threading.Lock()
        self.done: dict[str, str] = {}       # cell id -> status (this invocation)
        self.oom_at: dict[tuple, int] = {}   # batch sweep (Cell.sweep_key) -> the batch that ran out of memory
        self.counter = 0
        self.total = 0

    # results ----------------------------------------------------------------

    def record(self, cell: Cell, obj: dict, seconds: Optional[float] = None) -> None:
        from runner.results import ResultError, write_result
        path = self.ctx.run_dir / f"{cell.name}.json"
        written = True
        try:
            write_result(path, obj)
        except ResultError as exc:
            written = False
            self.ctx.console.print(f"[red]{escape(str(exc))}[/]")
        except OSError as exc:  # e.g. the results filesystem is full: nothing half-written, and say so
            written = False
            self.ctx.console.print(
                f"[bold red]cannot write the result of {escape(cell.name)} to {escape(str(path))}: "
                f"{escape(exc.strerror or str(exc))}[/]. Its outcome was {obj['status']}; no partial file was left. "
                f"Free space (or fix the directory) and run `python -m runner run --resume {self.ctx.run_id}` "
                f"to run it again.")
        with self.lock:
            self.done[cell.name] = obj["status"] if written else "unwritten"
            self.counter += 1
            n = self.counter
        status = obj["status"]
        style = {"ok": "green", "unsupported": "yellow"}.get(status, "red")
        took = f" in {seconds:.1f}s" if seconds is not None else ""
        message = f": {obj['message']}" if obj.get("message") and status != "ok" else ""
        self.ctx.console.print(f"[{n}/{self.total}] {escape(cell.name)}: [{style}]{status}[/]{took}"
                               f"{escape(message)}")

    def fail(self, cell: Cell, status: str, message: str, log_tail=(), image: Optional[str] = None,
             image_id: Optional[str] = None, started_at: Optional[str] = None, seconds=None) -> None:
        from runner.results import error_result
        real = status
        if status in ("oom",):
            status = "error"
        obj = error_result(cell_record(cell, self.ctx.run_id, self.ctx.plan.profile, image, image_id), status,
                           message, log_tail, started_at=started_at)
        if real == "oom":
            obj["status"] = "oom"
            obj["metrics"] = {"oom_batch_size": cell.batch_size}
        self.record(cell, obj, seconds)

    def fail_before_start(self, cell: Cell, message: str, image: Optional[str] = None) -> None:
        """For backend.prepare(): a cell that cannot run at all (status error)."""
        self.fail(cell, "error", message, image=image)

    # one cell ---------------------------------------------------------------

    def run_cell(self, cell: Cell, gpu_ids: list[int], cpus: Optional[list[int]] = None) -> None:
        ctx = self.ctx
        image = self.image_of(cell)
        staging = ctx.run_dir / STAGING / cell.name
        log_path = ctx.run_dir / "logs" / f"{cell.name}.log"
        started_at = now_iso()
        if staging.is_symlink():      # a cell of an earlier attempt may have left anything here
            staging.unlink()
        elif staging.exists():
            shutil.rmtree(staging)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"=== dlbench run {ctx.run_id} cell {cell.name}: backend {self.backend.name}"
                      f"{', image ' + image.tag if self.backend.uses_images else ''}, started {started_at}"
                      f"{', GPUs ' + ','.join(map(str, gpu_ids)) if gpu_ids else ''}"
                      f"{', CPUs ' + ','.join(map(str, cpus)) if cpus else ''} ===\n")
        offset = log_path.stat().st_size
        try:
            ex = self.backend.execute(ctx, cell, image, staging, log_path, gpu_ids, ctx.timeout_of(cell),
                                      cpus=cpus)
        except Exception as exc:  # a runner bug must still leave a result
            with open(log_path, "a", encoding="utf-8") as log:
                traceback.print_exc(file=log)
            ex = Execution(error=f"runner error: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.conclude(cell, ex, read_tail(log_path, offset), started_at)

    def conclude(self, cell: Cell, ex: Execution, tail: list[str], started_at: str) -> None:
        """Turn what execute() handed back into the cell's one result."""
        from runner.results import ResultError, parse_result, validate_result
        ctx = self.ctx
        image_tag, image_id = ex.image, ex.image_id
        obj, problem = None, ex.result_problem
        if ex.result is not None:
            try:
                obj = parse_result(ex.result, f"{cell.name}.json")
            except ResultError as exc:
                problem = str(exc).split(": ", 1)[-1]
                keep = ctx.run_dir / "logs" / f"{cell.name}.invalid.json"
                try:
                    with open(keep, "xb") as f:
                        f.write(ex.result)
                    problem += f" (kept as logs/{keep.name})"
                except OSError:
                    pass
        if obj is not None:
            fill = {"id": cell.id, "run_id": ctx.run_id, "image": image_tag, "image_id": image_id,
                    "profile": ctx.plan.profile, "toolchain": cell.toolchain, "framework_version": cell.version}
            for key, value in fill.items():
                if obj["cell"].get(key) is None and value is not None:
                    obj["cell"][key] = value
            if obj["cell"].get("id") != cell.id:
                problem = f"it names cell {obj['cell'].get('id')!r}, not {cell.id!r}"
            elif not validate_result(obj):
                self.record(cell, obj, ex.seconds)
                return
            else:
                problem = "the runner's additions made it invalid"
        timeout = ctx.timeout_of(cell)
        common = dict(log_tail=tail, image=image_tag, image_id=image_id, started_at=started_at, seconds=ex.seconds)
        if ex.status == "timeout" or ex.timed_out:
            self.fail(cell, "timeout", ex.error or f"timed out after {timeout}s (cell timeout_s); the cell was "
                                                   f"killed", **common)
        elif ex.oom_killed:
            self.fail(cell, "oom", f"out of memory at batch size {cell.batch_size}: the kernel's OOM killer "
                                   f"stopped the container (State.OOMKilled)", **common)
        elif ctx.stop.is_set() or ex.status == "interrupted":
            self.fail(cell, "interrupted", ex.error if ex.status == "interrupted" and ex.error else
                      "interrupted (Ctrl-C or SIGTERM): the run was stopped before this cell finished", **common)
        elif ex.error:
            self.fail(cell, "error", ex.error, **common)
        else:
            what = problem or "no result file"
            code = ex.exit_code
            killed = " (killed: SIGKILL)" if code == 137 else ""
            self.fail(cell, "error", f"the cell exited with code {code}{killed} and left no valid result ({what}); "
                                     f"see logs/{cell.name}.log", **common)

    # all cells --------------------------------------------------------------

    def skip_sweep(self, cell: Cell, oom_batch: int) -> None:
        """A batch of a sweep that is not run: a smaller (or the same) batch already ran out of memory."""
        from runner.results import error_result
        obj = error_result(cell_record(cell, self.ctx.run_id, self.ctx.plan.profile), "unsupported",
                           f"not run: this batch sweep ran out of memory at batch {oom_batch} on this device, so "
                           f"batch {cell.batch_size} does not fit either. To try it anyway, run it on its own "
                           f"(`batch_sizes: [{cell.batch_size}]`) or with more memory (`memory_gb`).")
        self.record(cell, obj)

    def run_one(self, cell: Cell) -> bool:
        """Run one cell to its result; False when the run was stopped before the cell could start."""
        if cell.device == "gpu" and self.slots.known and cell.gpus > self.slots.total:
            self.fail(cell, "error", f"the cell needs {cell.gpus} GPUs and this host has {self.slots.total}")
            return True
        alone = cell.device != "gpu"
        if self.isolate and not self.gate.enter(alone, self.ctx.stop):
            return False
        try:
            gpu_ids = self.slots.acquire(cell.gpus, self.ctx.stop) if cell.device == "gpu" else []
            if gpu_ids is None:
                return False
            cpus = self.cpusets.for_gpus(gpu_ids) if self.isolate and not alone else None
            try:
                self.run_cell(cell, gpu_ids, cpus)
            except Exception as exc:  # never lose a cell
                if cell.name not in self.done:
                    self.fail(cell, "error", f"runner error: {type(exc).__name__}: {exc}")
            finally:
                self.slots.release(gpu_ids)
        finally:
            if self.isolate:
                self.gate.leave(alone)
        return True

    def run_item(self, item: list[Cell]) -> list[Cell]:
        """Run a work item's cells in order (one cell, or a batch sweep smallest batch first, which ends at its
        first out-of-memory); returns the cells left when the run stopped."""
        for i, cell in enumerate(item):
            oom_batch = self.oom_at.get(cell.sweep_key) if cell.sweep else None
            if oom_batch is not None and cell.batch_size >= oom_batch:
                self.skip_sweep(cell, oom_batch)
                continue
            if self.ctx.stop.is_set() or not self.run_one(cell):
                return item[i:]
            if cell.sweep and self.done.get(cell.name) == "oom":
                self.oom_at[cell.sweep_key] = min(self.oom_at.get(cell.sweep_key, cell.batch_size), cell.batch_size)
        return []

    def run_all(self, cells: list[Cell], already: int, total: int) -> None:
        self.total = total
        self.counter = already
        pending = collections.deque(work_items(cells))
        qlock = threading.Lock()

        def worker():
            while not self.ctx.stop.is_set():
                with qlock:
                    if not pending:
                        return
                    item = pending.popleft()
                left = self.run_item(item)
                if left:
                    with qlock:
                        pending.appendleft(left)
                    return

        threads = [threading.Thread(target=worker, name=f"cell-worker-{i}", daemon=True)
                   for i in range(min(self.parallel, max(1, len(cells))))]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)


def work_items(cells: list[Cell]) -> list[list[Cell]]:
    """What the workers take from the queue: each cell on its own, except the cells of one batch sweep,
    which are one item, smallest batch first (the first out-of-memory ends it)."""
    items: list[list[Cell]] = []
    sweeps: dict[tuple, list[Cell]] = {}
    for cell in cells:
        if not cell.sweep:
            items.append([cell])
            continue
        if cell.sweep_key not in sweeps:
            sweeps[cell.sweep_key] = []
            items.append(sweeps[cell.sweep_key])
        sweeps[cell.sweep_key].append(cell)
    for group in sweeps.values():
        group.sort(key=lambda c: (c.batch_size, c.repeat))
    return items
