"""Run stage: every cell of a plan in its own container (or, with --backend local, a subprocess).

Pipeline per run: bases -> builds (existing tags skipped) -> cells -> results.

Per cell: create -> start -> follow logs into results/<run-id>/logs/<cell>.log -> wait (killed at the
cell's timeout) -> read the result file the cell wrote -> validate it on the host -> store it as
results/<run-id>/<cell>.json (never overwritten) -> remove the container (always). A cell that wrote
no valid result gets an error/timeout/oom/interrupted result with the last log lines, so no cell is
ever lost. Ctrl-C / SIGTERM remove this run's containers, keep finished results, record the rest as
interrupted and exit 130.

Each container sees only its own output directory (results/<run-id>/.cells/<cell>/ mounted at
/results), so a cell cannot touch another cell's result; the runner moves the validated file into
place.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runner.errors import EXIT_CELLS_FAILED, EXIT_OK, UserError
from runner.matrix import Cell, Plan
from runner.render import CONTAINER_UID, RenderedImage

INTERRUPTED_EXIT = 130
LOG_TAIL_LINES = 20
CONTAINER_RESULTS = "/results"
CONTAINER_DATA = "/data"
LOCK_NAME = ".runner.lock"
STAGING = ".cells"
LABEL_RUN = "dlbench.run-id"
LABEL_CELL = "dlbench.cell-id"
LABEL_LOCK = "dlbench.lock"
from runner.datasets import DEFAULT_CACHE as DEFAULT_DATA_DIR  # noqa: E402


# ---------------------------------------------------------------- pieces shared by both backends

@dataclass
class Execution:
    """What running one cell's process gave, before its result file is read."""
    exit_code: Optional[int] = None
    timed_out: bool = False
    oom_killed: bool = False
    error: Optional[str] = None          # the runner could not run the cell at all (message)
    seconds: float = 0.0


@dataclass
class RunContext:
    plan: Plan
    run_id: str
    run_dir: Path
    console: Console
    data_dir: Path            # holds <name> -> dataset links (what --backend local passes to bench)
    machine: str
    timeout_override: Optional[int] = None
    stop: threading.Event = field(default_factory=threading.Event)

    def timeout_of(self, cell: Cell) -> int:
        return int(self.timeout_override or cell.timeout_s)


def bench_args(cell: Cell, data_dir: str, out: str) -> list[str]:
    """The `python -m bench` arguments of a cell (everything after `-m bench`)."""
    args = ["--framework", cell.framework, "--workload", cell.workload]
    if cell.model:
        args += ["--model", cell.model]
    args += ["--batch-size", str(cell.batch_size), "--precision", cell.precision]
    for flag, value in (("--iterations", cell.iterations), ("--epochs", cell.epochs), ("--warmup", cell.warmup)):
        if value is not None:
            args += [flag, str(value)]
    args += ["--device", cell.device, "--gpus", str(cell.gpus), "--data-dir", data_dir]
    if cell.dataset:
        args += ["--dataset", cell.dataset]
    if cell.synthetic:
        args.append("--synthetic")
    options = dict(cell.options)
    if cell.eval_batches is not None:
        options.setdefault("eval_batches", cell.eval_batches)
    for key, value in options.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        args += ["--option", f"{key}={value}"]
    args += ["--out", out]
    return args


def cell_identity_env(cell: Cell) -> dict[str, str]:
    """What bench records about the cell itself (the run-wide variables come from cell_env)."""
    return {"DLBENCH_CELL_ID": cell.id, "DLBENCH_TOOLCHAIN": cell.toolchain,
            "DLBENCH_FRAMEWORK_VERSION": cell.version}


def cell_env(ctx: RunContext, cell: Cell, image_tag: Optional[str], image_id: Optional[str]) -> dict[str, str]:
    env = {"DLBENCH_RUN_ID": ctx.run_id, "DLBENCH_MACHINE": ctx.machine, "DLBENCH_PROFILE": ctx.plan.profile,
           **cell_identity_env(cell)}
    if image_tag:
        env["DLBENCH_IMAGE"] = image_tag
    if image_id:
        env["DLBENCH_IMAGE_ID"] = image_id
    return env


def cell_record(cell: Cell, run_id: str, profile: str, image: Optional[str] = None,
                image_id: Optional[str] = None) -> dict:
    """The result's `cell` object, for results the runner writes itself."""
    from bench.workloads import WORKLOADS
    entry = WORKLOADS.get(cell.workload, {})
    return {
        "id": cell.id, "run_id": run_id, "framework": cell.framework, "framework_version": cell.version,
        "toolchain": cell.toolchain, "python": cell.python, "image": image, "image_id": image_id,
        "workload": cell.workload, "model": cell.model, "dataset": cell.dataset,
        "synthetic": bool(cell.synthetic or not entry.get("datasets")),
        "batch_size": cell.batch_size, "precision": cell.precision, "device": cell.device, "gpus": cell.gpus,
        "iterations": cell.iterations, "epochs": cell.epochs, "warmup": cell.warmup, "profile": profile,
        "options": {k: v for k, v in cell.options},
    }


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


def _now() -> str:
    import datetime
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


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
    return _pid_alive(int(info.get("pid", 0)))


# ---------------------------------------------------------------- the GPU slot scheduler

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
            return []  # GPUs unknown to the host (no NVML): the engine picks `count` devices
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


def device_requests(cell: Cell, gpu_ids: Optional[list[int]]):
    """The DeviceRequest list for a GPU cell: its assigned GPUs, or a count when the host's GPUs are unknown."""
    import docker
    if cell.device != "gpu" or cell.gpus <= 0:
        return []
    if gpu_ids:
        return [docker.types.DeviceRequest(device_ids=[str(i) for i in gpu_ids], capabilities=[["gpu"]])]
    return [docker.types.DeviceRequest(count=cell.gpus, capabilities=[["gpu"]])]


def shm_size(cell: Cell) -> str:
    return f"{max(2, 8 * cell.gpus)}g" if cell.device == "gpu" else "2g"


def container_spec(ctx: RunContext, cell: Cell, image_tag: str, image_id: Optional[str], staging: Path,
                   gpu_ids: Optional[list[int]]) -> dict[str, Any]:
    """Keyword arguments for client.containers.create() of one cell."""
    import docker
    out = f"{CONTAINER_RESULTS}/{cell.id}.json"
    volumes = {str(staging): {"bind": CONTAINER_RESULTS, "mode": "rw"}}
    if cell.dataset and not cell.synthetic:
        # Only the cell's own dataset, read-only, at /data/<name>, where bench looks first.
        source = (ctx.data_dir / cell.dataset).resolve()
        volumes[str(source)] = {"bind": f"{CONTAINER_DATA}/{cell.dataset}", "mode": "ro"}
    spec: dict[str, Any] = dict(
        image=image_tag,
        command=bench_args(cell, CONTAINER_DATA, out),
        name=f"dlbench-{ctx.run_id}-{cell.id}"[:200],
        hostname=socket.gethostname()[:63],  # results name the host, not a container id
        labels={LABEL_RUN: ctx.run_id, LABEL_CELL: cell.id, LABEL_LOCK: str(ctx.run_dir / LOCK_NAME)},
        environment=cell_env(ctx, cell, image_tag, image_id),
        network_mode="none",
        volumes=volumes,
        shm_size=shm_size(cell),
        user=f"{CONTAINER_UID}:{CONTAINER_UID}",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        privileged=False,
        detach=True,
    )
    requests = device_requests(cell, gpu_ids)
    if requests:
        spec["device_requests"] = requests
        spec["ulimits"] = [docker.types.Ulimit(name="memlock", soft=-1, hard=-1),
                           docker.types.Ulimit(name="stack", soft=67108864, hard=67108864)]
    return spec


# ---------------------------------------------------------------- docker backend

class DockerExecutor:
    name = "docker"

    def __init__(self, client, ctx: RunContext):
        self.client = client
        self.ctx = ctx
        self.gpu_refused: Optional[str] = None
        self.image_ids: dict[str, str] = {}

    def image_id(self, tag: str) -> Optional[str]:
        if tag not in self.image_ids:
            try:
                self.image_ids[tag] = self.client.api.inspect_image(tag)["Id"]
            except Exception:
                return None
        return self.image_ids[tag]

    def prepare_staging(self, staging: Path) -> None:
        staging.mkdir(parents=True, exist_ok=True)
        # The container runs as uid 1000: only its own output directory is made writable for it.
        if os.geteuid() == 0:
            os.chown(staging, CONTAINER_UID, CONTAINER_UID)
            os.chmod(staging, 0o755)
        elif os.geteuid() != CONTAINER_UID:
            os.chmod(staging, 0o777)

    def execute(self, cell: Cell, image: RenderedImage, staging: Path, log_path: Path,
                gpu_ids: Optional[list[int]], timeout: int) -> Execution:
        import docker
        from requests.exceptions import RequestException
        from runner.engine import gpu_refusal

        if cell.device == "gpu" and self.gpu_refused:
            return Execution(error=self.gpu_refused)
        started = time.monotonic()
        spec = container_spec(self.ctx, cell, image.tag, self.image_id(image.tag), staging, gpu_ids)
        container = None
        follower = None
        try:
            try:
                container = self.client.containers.create(**spec)
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # a leftover of an earlier attempt under the same name
                    self._remove(spec["name"])
                    container = self.client.containers.create(**spec)
                else:
                    raise
            if self.ctx.stop.is_set():
                return Execution(error="interrupted before start")
            try:
                container.start()
            except docker.errors.APIError as exc:
                message = gpu_refusal(exc)
                if message:
                    self.gpu_refused = message
                    return Execution(error=message)
                raise
            follower = threading.Thread(target=_follow_logs, args=(container, log_path), daemon=True)
            follower.start()
            timed_out = False
            exit_code = None
            try:
                exit_code = container.wait(timeout=timeout)["StatusCode"]
            except RequestException:
                timed_out = True
            except docker.errors.NotFound:
                pass  # removed under us (interrupt)
            if timed_out:
                try:
                    container.kill()
                except docker.errors.APIError:
                    pass
            follower.join(timeout=10)
            oom = False
            try:
                state = self.client.api.inspect_container(container.id)["State"]
                oom = bool(state.get("OOMKilled"))
                if exit_code is None and not state.get("Running"):
                    exit_code = state.get("ExitCode")
            except docker.errors.NotFound:
                pass
            return Execution(exit_code=exit_code, timed_out=timed_out, oom_killed=oom,
                             seconds=time.monotonic() - started)
        except (docker.errors.DockerException, RequestException) as exc:
            if self.ctx.stop.is_set():
                return Execution(error="interrupted", seconds=time.monotonic() - started)
            text = str(getattr(exc, "explanation", None) or exc).strip()
            return Execution(error=f"the engine could not run the container: {text}",
                             seconds=time.monotonic() - started)
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except docker.errors.DockerException:
                    pass

    def _remove(self, name: str) -> None:
        import docker
        try:
            self.client.containers.get(name).remove(force=True)
        except docker.errors.DockerException:
            pass

    def stop_all(self) -> int:
        """Remove every container of this run (by its run-id label)."""
        return remove_run_containers(self.client, self.ctx.run_id)


def remove_run_containers(client, run_id: str) -> int:
    import docker
    removed = 0
    try:
        containers = client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    except docker.errors.DockerException:
        return 0
    for container in containers:
        try:
            container.remove(force=True)
            removed += 1
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException:
            pass
    return removed


def _follow_logs(container, log_path: Path) -> None:
    """Append the container's stdout+stderr to the cell log as it comes."""
    try:
        with open(log_path, "ab") as log:
            for chunk in container.logs(stream=True, follow=True):
                log.write(chunk)
                log.flush()
    except Exception as exc:  # the container vanished (interrupt) or the engine went away
        try:
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"\n[runner] log stream ended: {type(exc).__name__}: {exc}\n")
        except OSError:
            pass


# ---------------------------------------------------------------- the runner

class Runner:
    def __init__(self, ctx: RunContext, executor, rendered: dict, parallel: int, gpu_ids: list[int]):
        self.ctx = ctx
        self.executor = executor
        self.rendered = rendered
        self.parallel = max(1, parallel)
        self.slots = GpuSlots(gpu_ids)
        self.lock = threading.Lock()
        self.done: dict[str, str] = {}       # cell id -> status (this invocation)
        self.counter = 0
        self.total = 0
        self.builds: dict = {}               # tag -> BuildOutcome (docker backend)

    def image_of(self, cell: Cell) -> RenderedImage:
        return self.rendered[(cell.framework, cell.version, cell.toolchain)]

    # results ----------------------------------------------------------------

    def record(self, cell: Cell, obj: dict, seconds: Optional[float] = None) -> None:
        from runner.results import ResultError, write_result
        path = self.ctx.run_dir / f"{cell.id}.json"
        try:
            write_result(path, obj)
        except ResultError as exc:
            self.ctx.console.print(f"[red]{escape(str(exc))}[/]")
        with self.lock:
            self.done[cell.id] = obj["status"]
            self.counter += 1
            n = self.counter
        status = obj["status"]
        style = {"ok": "green", "unsupported": "yellow"}.get(status, "red")
        took = f" in {seconds:.1f}s" if seconds is not None else ""
        message = f": {obj['message']}" if obj.get("message") and status != "ok" else ""
        self.ctx.console.print(f"[{n}/{self.total}] {escape(cell.id)}: [{style}]{status}[/]{took}"
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

    # one cell ---------------------------------------------------------------

    def run_cell(self, cell: Cell, gpu_ids: Optional[list[int]]) -> None:
        from runner.results import ResultError, load_result, validate_result
        ctx = self.ctx
        image = self.image_of(cell)
        staging = ctx.run_dir / STAGING / cell.id
        log_path = ctx.run_dir / "logs" / f"{cell.id}.log"
        started_at = _now()
        image_tag = image.tag if self.executor.name == "docker" else None
        image_id = self.executor.image_id(image.tag) if self.executor.name == "docker" else None
        if staging.exists():
            shutil.rmtree(staging)
        self.executor.prepare_staging(staging)
        with open(log_path, "a", encoding="utf-8") as log:
            where = f"image {image.tag}" if image_tag else f"backend local ({self.executor.describe()})"
            log.write(f"=== dlbench run {ctx.run_id} cell {cell.id}: {where}, started {started_at}"
                      f"{', GPUs ' + ','.join(map(str, gpu_ids)) if gpu_ids else ''} ===\n")
        offset = log_path.stat().st_size
        try:
            ex = self.executor.execute(cell, image, staging, log_path, gpu_ids, ctx.timeout_of(cell))
        except Exception as exc:  # a runner bug must still leave a result
            with open(log_path, "a", encoding="utf-8") as log:
                traceback.print_exc(file=log)
            ex = Execution(error=f"runner error: {type(exc).__name__}: {exc}")
        tail = read_tail(log_path, offset)
        out = staging / f"{cell.id}.json"
        obj, problem = None, None
        if out.exists():
            try:
                obj = load_result(out)
            except ResultError as exc:
                problem = str(exc).split(": ", 1)[-1]
                keep = ctx.run_dir / "logs" / f"{cell.id}.invalid.json"
                try:
                    shutil.copyfile(out, keep)
                    problem += f" (kept as logs/{keep.name})"
                except OSError:
                    pass
        shutil.rmtree(staging, ignore_errors=True)
        if obj is not None:
            fill = {"id": cell.id, "run_id": ctx.run_id, "image": image_tag, "image_id": image_id,
                    "profile": ctx.plan.profile, "toolchain": cell.toolchain, "framework_version": cell.version}
            for key, value in fill.items():
                if obj["cell"].get(key) is None and value is not None:
                    obj["cell"][key] = value
            if not validate_result(obj):
                self.record(cell, obj, ex.seconds)
                return
            problem = "the runner's additions made it invalid"
        timeout = ctx.timeout_of(cell)
        if ex.timed_out:
            self.fail(cell, "timeout", f"timed out after {timeout}s (cell timeout_s); the container was killed",
                      tail, image_tag, image_id, started_at, ex.seconds)
        elif ex.oom_killed:
            self.fail(cell, "oom", f"out of memory at batch size {cell.batch_size}: the kernel's OOM killer "
                                   f"stopped the container (State.OOMKilled)", tail, image_tag, image_id,
                      started_at, ex.seconds)
        elif ctx.stop.is_set():
            self.fail(cell, "interrupted", "interrupted (Ctrl-C or SIGTERM): the run was stopped before this "
                                           "cell finished", tail, image_tag, image_id, started_at, ex.seconds)
        elif ex.error:
            self.fail(cell, "error", ex.error, tail, image_tag, image_id, started_at, ex.seconds)
        else:
            what = problem or "no result file"
            code = ex.exit_code
            killed = " (killed: SIGKILL)" if code == 137 else ""
            self.fail(cell, "error", f"the cell exited with code {code}{killed} and left no valid result ({what}); "
                                     f"see logs/{cell.id}.log", tail, image_tag, image_id, started_at, ex.seconds)

    # all cells --------------------------------------------------------------

    def run_all(self, cells: list[Cell], already: int, total: int) -> None:
        self.total = total
        self.counter = already
        pending = collections.deque(cells)
        qlock = threading.Lock()

        def worker():
            while not self.ctx.stop.is_set():
                with qlock:
                    if not pending:
                        return
                    cell = pending.popleft()
                if cell.device == "gpu" and self.slots.known and cell.gpus > self.slots.total:
                    self.fail(cell, "error", f"the cell needs {cell.gpus} GPUs and this host has "
                                             f"{self.slots.total}")
                    continue
                gpu_ids = self.slots.acquire(cell.gpus, self.ctx.stop) if cell.device == "gpu" else []
                if gpu_ids is None:
                    with qlock:
                        pending.appendleft(cell)
                    return
                try:
                    self.run_cell(cell, gpu_ids)
                except Exception as exc:  # never lose a cell
                    if cell.id not in self.done:
                        self.fail(cell, "error", f"runner error: {type(exc).__name__}: {exc}")
                finally:
                    self.slots.release(gpu_ids)

        threads = [threading.Thread(target=worker, name=f"cell-worker-{i}", daemon=True)
                   for i in range(min(self.parallel, max(1, len(cells))))]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)


# ---------------------------------------------------------------- the run stage

def _parallel(args, plan: Plan, gpu_count: int) -> int:
    value = getattr(args, "parallel", "auto") or "auto"
    if str(value) == "auto":
        return max(1, gpu_count) if plan.device == "gpu" else 1
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"--parallel {value}: expected a number of cells at a time, or auto") from None
    if n < 1:
        raise UserError(f"--parallel {value}: must be at least 1")
    return n


def _user_data_dir(args) -> Optional[Path]:
    given = getattr(args, "data_dir", None)
    if not given:
        return None
    path = Path(given).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"--data-dir {given}: not a directory. Point it at a directory holding the datasets "
                        f"(e.g. fashion-mnist/ with the idx files), or leave it out to use the cache "
                        f"{DEFAULT_DATA_DIR}.")
    return path


def _datasets_for(runner, todo: list[Cell], user_dir: Optional[Path], data_view: Path, console) -> list[Cell]:
    """Fetch the datasets the cells need (runner/datasets.py); cells whose dataset cannot be had get that
    error now, without a container. Links each dataset into data_view/<name>."""
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
            runner.fail(cell, "error", source.problem)
        else:
            runnable.append(cell)
    return runnable


def _prepare_run_dir(args, console: Console) -> tuple[str, Path, bool]:
    from runner.results import new_run_id
    root = Path(getattr(args, "results_dir", None) or "results").resolve()
    resume = getattr(args, "resume", None)
    run_id = getattr(args, "run_id", None)
    if resume:
        run_dir = root / resume
        if not run_dir.is_dir():
            from runner.results import run_dirs
            known = ", ".join(p.name for p in run_dirs(root)[-5:]) or "none"
            raise UserError(f"--resume {resume}: no such run under {root} (latest runs: {known}).")
        return resume, run_dir, True
    run_id = run_id or new_run_id()
    run_dir = root / run_id
    if run_dir.exists():
        raise UserError(f"run {run_id} exists already under {root}; continue it with --resume {run_id} "
                        f"or choose another --run-id.")
    return run_id, run_dir, False


def _take_lock(run_dir: Path) -> Path:
    lock = run_dir / LOCK_NAME
    if lock.exists() and lock_is_live(lock):
        info = read_lock(lock) or {}
        raise UserError(f"run {run_dir.name} is in progress (runner pid {info.get('pid')} on "
                        f"{info.get('host')}); wait for it or stop it first.")
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "started": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    return lock


def _finished_cells(run_dir: Path, cells: list[Cell]) -> set[str]:
    """Cells of a resumed run that have a valid, final result. Interrupted or unusable files are moved to
    superseded/ (kept, never overwritten) so the cell runs again."""
    from runner.results import ResultError, load_result
    done = set()
    for cell in cells:
        path = run_dir / f"{cell.id}.json"
        if not path.exists():
            continue
        try:
            obj = load_result(path)
            if obj["status"] != "interrupted":
                done.add(cell.id)
                continue
        except ResultError:
            pass
        aside = run_dir / "superseded"
        aside.mkdir(exist_ok=True)
        n = 1
        while (aside / f"{cell.id}.{n}.json").exists():
            n += 1
        path.rename(aside / f"{cell.id}.{n}.json")
    return done


def run_plan(plan: Plan, rendered: dict, args, console: Console) -> tuple[Optional[Path], int]:
    """The run stage. Returns (run directory, exit code: 0 all ok, 1 some cell not ok, 130 interrupted)."""
    from runner.engine import machine_description
    from runner.gpus import host_gpus

    backend = getattr(args, "backend", "docker") or "docker"
    client = None
    if backend == "docker":
        from runner.engine import connect
        client = connect()
    user_data_dir = _user_data_dir(args)
    run_id, run_dir, resuming = _prepare_run_dir(args, console)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    lock = _take_lock(run_dir)
    gpus = [g.index for g in host_gpus()] if plan.device == "gpu" else []
    timeout = getattr(args, "timeout", None)
    ctx = RunContext(plan=plan, run_id=run_id, run_dir=run_dir, console=console, data_dir=run_dir / "data",
                     machine=machine_description(), timeout_override=timeout)
    if backend == "docker":
        executor = DockerExecutor(client, ctx)
    else:
        from runner.local import LocalExecutor
        executor = LocalExecutor(ctx)
    runner = Runner(ctx, executor, rendered, _parallel(args, plan, len(gpus)), gpus)
    runner.total = len(plan.cells)

    previous_handlers = {}

    def on_signal(signum, frame):
        if not ctx.stop.is_set():
            ctx.stop.set()
            console.print(f"[bold yellow]{signal.Signals(signum).name}: stopping run {run_id}[/]: removing its "
                          f"containers, keeping finished results, recording the rest as interrupted")
            threading.Thread(target=executor.stop_all, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous_handlers[sig] = signal.signal(sig, on_signal)
    try:
        console.print(f"run {run_id}: {len(plan.cells)} cells, backend {backend}, results in {run_dir}")
        done = _finished_cells(run_dir, plan.cells) if resuming else set()
        if done:
            console.print(f"resume: {len(done)} cell(s) have a result already and are skipped")
        todo = [c for c in plan.cells if c.id not in done]
        runner.counter = len(done)
        if todo and not ctx.stop.is_set():
            todo = _datasets_for(runner, todo, user_data_dir, ctx.data_dir, console)
        if todo and backend == "docker" and not ctx.stop.is_set():
            todo = _bases_and_builds(runner, client, todo, args, console)
        if not ctx.stop.is_set() and todo:
            runner.run_all(todo, len(plan.cells) - len(todo), len(plan.cells))
        if ctx.stop.is_set():
            executor.stop_all()
            for cell in plan.cells:
                if cell.id not in done and cell.id not in runner.done:
                    runner.fail(cell, "interrupted", "interrupted (Ctrl-C or SIGTERM) before this cell started")
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        shutil.rmtree(run_dir / STAGING, ignore_errors=True)
        try:
            lock.unlink()
        except OSError:
            pass
    statuses = _summary(run_dir, plan, console)
    if ctx.stop.is_set():
        return run_dir, INTERRUPTED_EXIT
    return run_dir, EXIT_OK if all(s == "ok" for s in statuses.values()) else EXIT_CELLS_FAILED


def _bases_and_builds(runner: Runner, client, todo: list[Cell], args, console: Console) -> list[Cell]:
    """Bases and builds for the cells to run; cells whose base or image cannot be had get their result now.
    Returns the cells that can run."""
    from runner.build import build_images, ensure_bases
    images = {}
    for cell in todo:
        image = runner.image_of(cell)
        images[image.tag] = image
    stop = runner.ctx.stop
    problems = ensure_bases({img.choice.base_name for img in images.values()}, console=console, client=client,
                            stop=stop)
    buildable = [img for img in images.values() if img.choice.base_name not in problems]
    outcomes = build_images(buildable, rebuild=bool(getattr(args, "rebuild", False)), console=console,
                            log_dir=runner.ctx.run_dir / "build", client=client, stop=stop) if buildable else {}
    runnable = []
    if stop.is_set():
        return []  # run_plan records every cell without a result as interrupted
    for cell in todo:
        image = runner.image_of(cell)
        base_problem = problems.get(image.choice.base_name)
        if base_problem:
            # status error, not unsupported: the combination works where a registry serves the base;
            # it is this host that cannot provide it.
            runner.fail(cell, "error", base_problem, image=image.tag)
        elif not outcomes[image.tag].ok:
            runner.fail(cell, "error", outcomes[image.tag].message, image=image.tag)
        else:
            runnable.append(cell)
    runner.builds = outcomes
    return runnable


def _summary(run_dir: Path, plan: Plan, console: Console) -> dict[str, str]:
    from runner.results import ResultError, load_result
    statuses: dict[str, str] = {}
    failures = []
    for cell in plan.cells:
        try:
            obj = load_result(run_dir / f"{cell.id}.json")
            statuses[cell.id] = obj["status"]
            if obj["status"] != "ok":
                failures.append((cell.id, obj["status"], obj.get("message", "")))
        except ResultError as exc:
            statuses[cell.id] = "missing"
            failures.append((cell.id, "missing", str(exc)))
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


# ---------------------------------------------------------------- clean

def clean(console: Console) -> int:
    """Remove dlbench containers no live runner owns: every stopped one, and running ones whose run's
    lock file is gone or whose runner process has died."""
    import docker
    from runner.engine import connect
    client = connect()
    removed, kept = [], []
    containers = client.containers.list(all=True, filters={"label": LABEL_RUN})
    containers += client.containers.list(all=True, filters={"label": "dlbench.probe"})
    for container in containers:
        labels = container.labels or {}
        if container.status == "running" and LABEL_RUN in labels:
            lock = labels.get(LABEL_LOCK)
            if lock and lock_is_live(Path(lock)):
                kept.append(container.name)
                continue
        try:
            container.remove(force=True)
            removed.append(container.name)
        except docker.errors.NotFound:
            pass
    for name in removed:
        console.print(f"removed container {escape(name)}")
    if kept:
        console.print(f"kept {len(kept)} running container(s) of live runs: {escape(', '.join(kept))}")
    if not removed:
        console.print("clean: no leftover dlbench containers")
    return EXIT_OK
