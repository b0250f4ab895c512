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
from typing import Optional

from runner import ROOT
from runner.matrix import Cell
from runner.render import RenderedImage
from runner.run import Execution, RunContext, bench_args, cell_env

KILL_GRACE_S = 5


class LocalExecutor:
    name = "local"

    def __init__(self, ctx: RunContext, python: Optional[str] = None):
        self.ctx = ctx
        # DLBENCH_LOCAL_PYTHON: another interpreter (e.g. a venv that has the frameworks).
        self.python = python or os.environ.get("DLBENCH_LOCAL_PYTHON") or sys.executable
        self.procs: dict[int, subprocess.Popen] = {}
        self.lock = threading.Lock()

    def describe(self) -> str:
        return self.python

    def image_id(self, tag: str) -> Optional[str]:
        return None

    def prepare_staging(self, staging: Path) -> None:
        staging.mkdir(parents=True, exist_ok=True)

    def command(self, cell: Cell, staging: Path) -> list[str]:
        return [self.python, "-m", "bench"] + bench_args(cell, str(self.ctx.data_dir),
                                                         str(staging / f"{cell.id}.json"))

    def execute(self, cell: Cell, image: RenderedImage, staging: Path, log_path: Path,
                gpu_ids: Optional[list[int]], timeout: int) -> Execution:
        env = dict(os.environ)
        env.update(cell_env(self.ctx, cell, None, None))
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if cell.device == "gpu" and gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)
        started = time.monotonic()
        if self.ctx.stop.is_set():
            return Execution(error="interrupted before start")
        with open(log_path, "ab") as log:
            try:
                # Its own session: the terminal's Ctrl-C reaches the runner, which stops the cell itself.
                proc = subprocess.Popen(self.command(cell, staging), cwd=str(ROOT), env=env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                return Execution(error=f"cannot start {self.python}: {exc}")
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
                        if self.ctx.stop.is_set():
                            self._kill(proc, grace=KILL_GRACE_S)
                            break
                proc.wait()
            finally:
                with self.lock:
                    self.procs.pop(proc.pid, None)
        code = proc.returncode
        return Execution(exit_code=code, timed_out=timed_out, seconds=time.monotonic() - started)

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

    def stop_all(self) -> int:
        with self.lock:
            procs = list(self.procs.values())
        for proc in procs:
            self._kill(proc, grace=KILL_GRACE_S)
        return len(procs)
