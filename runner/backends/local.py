"""`--backend local`: each cell as `python -m bench` in a subprocess of this interpreter, for hosts without
Docker. Same result handling as the Docker backend (timeouts, logs, missing result -> error); no images,
no isolation: the frameworks must be importable by this interpreter, and the result records the versions
it actually ran."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar, Optional

from runner import ROOT
from runner.backends.staging import prepare_staging, read_staged_result
from runner.backends.thishost import OnThisHost
from runner.contract import Execution, bench_args, cell_env
from runner.errors import EXIT_OK
from runner.matrix import Cell

KILL_GRACE_S = 5


class LocalBackend(OnThisHost):
    name: ClassVar[str] = "local"
    uses_images: ClassVar[bool] = False

    def __init__(self, options=None, console=None, python: Optional[str] = None):
        self.options = options
        self.console = console
        # DLBENCH_LOCAL_PYTHON: another interpreter (e.g. a venv that has the frameworks).
        self.python = python or os.environ.get("DLBENCH_LOCAL_PYTHON") or sys.executable
        self.procs: dict[int, subprocess.Popen] = {}
        self.lock = threading.Lock()

    def prepare(self, ctx, cells, image_of, fail):
        return list(cells)  # nothing to build: the frameworks are this interpreter's

    def command(self, ctx, cell: Cell, staging: Path) -> list[str]:
        return [self.python, "-m", "bench"] + bench_args(cell, str(ctx.data_dir), str(staging / f"{cell.name}.json"))

    def environment(self, ctx, cell: Cell, gpu_ids) -> dict[str, str]:
        env = dict(os.environ)
        env.update(cell_env(ctx.run_id, ctx.machine, ctx.plan.profile, cell))
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if cell.device == "gpu" and gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)
        return env

    def execute(self, ctx, cell, image, staging: Path, log_path: Path, gpu_ids, timeout: int,
                cpus=None) -> Execution:
        if ctx.stop.is_set():
            return Execution(error="interrupted before start")
        prepare_staging(staging, for_container_uid=False)
        started = time.monotonic()
        with open(log_path, "ab") as log:
            try:
                # Its own session: the terminal's Ctrl-C reaches the runner, which stops the cell itself.
                proc = subprocess.Popen(self.command(ctx, cell, staging), cwd=str(ROOT),
                                        env=self.environment(ctx, cell, gpu_ids), stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                return Execution(error=f"cannot start {self.python}: {exc}")
            if cpus:
                # pinned right after the start (a preexec_fn is unsafe with the scheduler's threads): the
                # child is still starting its interpreter, long before a framework starts its threads
                try:
                    os.sched_setaffinity(proc.pid, cpus)
                except OSError:
                    pass
            with self.lock:
                self.procs[proc.pid] = proc
            timed_out = False
            try:
                while True:
                    remaining = timeout - (time.monotonic() - started)
                    if remaining <= 0:
                        timed_out = True
                        self._kill(proc, grace=0)
                        break
                    try:
                        proc.wait(timeout=min(remaining, 0.5))
                        break
                    except subprocess.TimeoutExpired:
                        if ctx.stop.is_set():
                            self._kill(proc, grace=KILL_GRACE_S)
                            break
                proc.wait()
            finally:
                with self.lock:
                    self.procs.pop(proc.pid, None)
        result, problem = read_staged_result(staging / f"{cell.name}.json")
        return Execution(exit_code=proc.returncode, timed_out=timed_out, seconds=time.monotonic() - started,
                         result=result, result_problem=problem)

    def _kill(self, proc: subprocess.Popen, grace: float) -> None:
        """SIGTERM the cell's process group (bench records itself as interrupted), SIGKILL after `grace`."""
        try:
            if grace > 0:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                    return
                except subprocess.TimeoutExpired:
                    pass
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop_all(self, ctx) -> int:
        with self.lock:
            procs = list(self.procs.values())
        for proc in procs:
            self._kill(proc, grace=KILL_GRACE_S)
        return len(procs)

    @classmethod
    def clean(cls, console) -> int:
        console.print("clean: the local backend leaves nothing behind (its cells are child processes)")
        return EXIT_OK
