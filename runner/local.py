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
from runner.run import Execution, RunContext, bench_args, cell_env, cell_identity_env

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


def shell_script(plan, run_id: str) -> str:
    """The plan as a POSIX shell script of `python -m bench` commands, one per cell.

    For a host that has a framework but neither Docker nor the runner's own dependencies (a lent GPU
    machine with no package index, say): copy the checkout there, run the script from its root, bring
    `results/<run-id>/` back and `python -m runner report --results results/<run-id>` makes the tables.
    Re-running skips cells whose result exists.  The variables at the top can be overridden.
    """
    import shlex
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        f"# dlbench run {run_id}: {len(plan.cells)} cells of {plan.matrix_path.name} (profile {plan.profile}, "
        f"device {plan.device})",
        "# written by `python -m runner plan --commands`; run from the checkout's root. Needs bench/, numpy",
        "# and each framework importable by $PYTHON; datasets under $DATA_DIR/<name>/",
        "# (the layout of ~/.cache/dlbench/datasets).",
        "set -u",
        'PYTHON="${PYTHON:-python3}"',
        f'RUN_DIR="${{RUN_DIR:-results/{run_id}}}"',
        'DATA_DIR="${DATA_DIR:-data}"',
        f"export DLBENCH_RUN_ID={q(run_id)} DLBENCH_PROFILE={q(plan.profile)}",
        'export DLBENCH_MACHINE="${DLBENCH_MACHINE:-$(hostname)}" PYTHONUNBUFFERED=1',
        'mkdir -p "$RUN_DIR/logs"',
        # coreutils' timeout where there is one: a hung cell must not stop the rest
        'if command -v timeout >/dev/null 2>&1; then LIMIT="timeout --kill-after=10"; else LIMIT=""; fi',
        "failed=0",
    ]
    for cell in plan.cells:
        env = cell_identity_env(cell)   # the run-wide variables are exported once, above
        out = f'"$RUN_DIR"/{q(cell.id + ".json")}'
        args = " ".join(q(a) for a in bench_args(cell, "@DATA@", "@OUT@"))
        args = args.replace("@DATA@", '"$DATA_DIR"').replace("@OUT@", out)
        assign = " ".join(f"{k}={q(v)}" for k, v in env.items())
        limit = f"${{LIMIT:+$LIMIT {cell.timeout_s}}}"
        lines += [
            f'if [ ! -f {out} ]; then',
            f'  echo "[{cell.id}]"',
            f'  {assign} {limit} "$PYTHON" -m bench {args} > "$RUN_DIR"/logs/{q(cell.id + ".log")} 2>&1'
            f' || {{ echo "  exit $? (see $RUN_DIR/logs/{cell.id}.log)"; failed=$((failed + 1)); }}',
            "fi",
        ]
    lines += [
        'echo "done: $failed cell(s) exited non-zero; tables: python -m runner report --results $RUN_DIR"',
        '[ "$failed" -eq 0 ]',
    ]
    return "\n".join(lines) + "\n"
