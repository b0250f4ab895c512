"""`--backend slurm`: each cell a Slurm job that runs the cell's container on the node it lands on.

Submit side (the runner): builds the images on this host's engine, pushes them to the registry named by
`registry:` in matrix.yaml or `--registry` and resolves each to its digest; then per cell writes a job
file (the container spec of runner/backends/docker.py, the image's digest reference, the cell's timeout)
into a directory every node sees, submits `sbatch --parsable` with the cell's GPUs as GRES, CPUs,
memory, a time limit from its timeout, and a job name and comment carrying the run and cell id, and
follows the job with `scontrol show job` until it ends. Ctrl-C cancels the run's jobs (`scancel`).

Node side (`python -m runner.backends.slurm JOBFILE`, what the batch script runs): pulls the image by
digest, runs the very same hardened container spec through the Docker SDK (ContainerRun, one code path
with the Docker backend) with the GPUs Slurm allocated, writes the cell's result into its staging
directory and an outcome file next to the job file, and removes the container when Slurm signals it.

Why not submitit: it tracks job state through `sacct`, i.e. Slurm's accounting database (slurmdbd and a
SQL server); many sites have one, but a cluster without it would never see a job that its time limit
killed. `scontrol show job` answers on every Slurm (finished jobs stay visible for MinJobAge, 300 s by
default), and the job itself is a plain batch script, not a pickled Python callable.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import ClassVar, Optional

from rich.console import Console

from runner import ROOT
from runner.backends.docker import ContainerRun, container_spec, gpu_options, prepare_images
from runner.backends.staging import prepare_staging, read_staged_result
from runner.contract import Execution
from runner.errors import EXIT_OK, UserError

# Slurm's end states (squeue/scontrol JobState), and what a cell whose job ended so becomes.
SLURM_END = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
             "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"}
START_MARGIN_S = 120          # the job's time limit covers the pull and start of its container too
COMMENT_PREFIX = "dlbench"
SLURM_HELP = ("Install Slurm's client commands (sbatch, squeue, scontrol, scancel) on this host and point "
              "them at the cluster (slurm.conf), or on a Debian/Ubuntu test host run `make cluster`, which "
              "sets up a single-node Slurm and a local image registry.")


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def job_fields(text: str) -> dict[str, str]:
    """`scontrol show job -o ID` as {field: value} (one line of KEY=VALUE; values may hold spaces only in
    the last fields, which we do not read)."""
    fields = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def slurm_nodes() -> list[str]:
    proc = _run(["sinfo", "-h", "-N", "-o", "%N"], timeout=30)
    if proc.returncode != 0:
        raise UserError(f"--backend slurm: `sinfo` failed ({proc.stderr.strip() or proc.returncode}): no Slurm "
                        f"controller answers. {SLURM_HELP}")
    return sorted({n.strip() for n in proc.stdout.split() if n.strip()})


def time_limit_min(timeout_s: int) -> int:
    return max(1, math.ceil((int(timeout_s) + START_MARGIN_S) / 60))


def memory_of(cell) -> str:
    """The job's memory request: a CPU cell's frameworks fit 8 GB at the profiles' batches; GPU cells hold
    their inputs in host memory too, so 32 GB per GPU (DLBENCH_SLURM_MEM overrides, e.g. 64G)."""
    if os.environ.get("DLBENCH_SLURM_MEM"):
        return os.environ["DLBENCH_SLURM_MEM"]
    return f"{32 * cell.gpus}G" if cell.device == "gpu" and cell.gpus else "8G"


def cpus_of(cell) -> int:
    per_gpu = int(os.environ.get("DLBENCH_SLURM_CPUS_PER_GPU", "4"))
    return max(1, per_gpu * cell.gpus) if cell.device == "gpu" and cell.gpus else \
        int(os.environ.get("DLBENCH_SLURM_CPUS", "2"))


def check_resource_env() -> None:
    """The environment's resource overrides reach sbatch and the engine: refuse a malformed one up front."""
    mem = os.environ.get("DLBENCH_SLURM_MEM")
    if mem and not re.fullmatch(r"[1-9][0-9]{0,6}[KMGT]?", mem, flags=re.I):
        raise UserError(f"DLBENCH_SLURM_MEM={mem[:40]!r}: expected a memory size such as 16G or 4096M (what each "
                        f"cell's job asks Slurm for). Fix or unset it.")
    for var in ("DLBENCH_SLURM_CPUS", "DLBENCH_SLURM_CPUS_PER_GPU"):
        value = os.environ.get(var)
        if value and not re.fullmatch(r"[1-9][0-9]{0,3}", value):
            raise UserError(f"{var}={value[:40]!r}: expected a whole number of CPUs such as 4. Fix or unset it.")


class SlurmBackend:
    name: ClassVar[str] = "slurm"
    uses_images: ClassVar[bool] = True

    def __init__(self, options, console: Console):
        from runner.engine import connect
        self.options = options
        self.console = console
        missing = [c for c in ("sbatch", "squeue", "scontrol", "scancel", "sinfo") if shutil.which(c) is None]
        if missing:
            raise UserError(f"--backend slurm: {', '.join(missing)} not found on PATH. {SLURM_HELP}")
        check_resource_env()
        self.nodes = slurm_nodes()
        self.registry = options.slurm.registry
        if not self.registry and self.nodes and any(n != socket.gethostname().split(".")[0] for n in self.nodes):
            raise UserError(
                f"--backend slurm: no image registry is configured and the cluster's nodes "
                f"({', '.join(self.nodes[:5])}{', ...' if len(self.nodes) > 5 else ''}) are not this host, so they "
                f"cannot see the images this host builds. Name a registry every node can pull from with "
                f"`registry: HOST:PORT/PREFIX` in matrix.yaml or --registry (images are pushed there and jobs pull "
                f"them by digest), or run the runner on the node whose engine the jobs use.")
        self.client = connect()        # the build host's engine: images are built here
        self.refs: dict[str, str] = {}  # image tag -> what jobs pull (digest reference, or the tag)
        self.jobs: dict[str, str] = {}  # cell id -> Slurm job id (this invocation)
        self.states: dict[str, str] = {}
        self.lock = threading.Lock()
        self._reported: Optional[tuple] = None

    # ---------------------------------------------------------------- protocol

    def machine(self) -> str:
        cluster = _run(["scontrol", "show", "config"], timeout=30).stdout
        name = re.search(r"^ClusterName\s*=\s*(\S+)", cluster, re.M)
        return (f"Slurm cluster {name.group(1) if name else '?'} ({len(self.nodes)} node(s): "
                f"{', '.join(self.nodes[:8])})")

    def gpu_ids(self, plan) -> list[int]:
        return []  # Slurm places GPU cells; the node's job reads which GPUs it got

    def default_parallel(self, plan, gpu_count: int) -> int:
        return max(1, min(len(plan.cells), 256))  # submit everything; Slurm queues what does not fit

    def prepare(self, ctx, cells, image_of, fail):
        from runner.build import push_images
        runnable = prepare_images(self.client, ctx, cells, image_of, fail, self.options.rebuild, self.console)
        tags = sorted({image_of(c).tag for c in runnable})
        if not self.registry:
            self.refs.update({t: t for t in tags})
            return runnable
        pushed = push_images(tags, self.registry, self.console, client=self.client)
        ready = []
        for cell in runnable:
            ok, what = pushed[image_of(cell).tag]
            if ok:
                self.refs[image_of(cell).tag] = what
                ready.append(cell)
            else:
                fail(cell, what, image_of(cell).tag)
        return ready

    def job_root(self, ctx) -> Path:
        shared = self.options.slurm.shared_dir
        return (Path(shared).resolve() / ctx.run_id) if shared else ctx.run_dir / ".slurm"

    def cpu_ids(self):
        return None   # Slurm places jobs and binds them to their --cpus-per-task itself

    def execute(self, ctx, cell, image, staging: Path, log_path: Path, gpu_ids, timeout: int,
                cpus=None) -> Execution:
        root = self.job_root(ctx)
        root.mkdir(parents=True, exist_ok=True)
        if self.options.slurm.shared_dir:  # the node writes where every node (and we) can read
            staging = root / "cells" / cell.name
            shutil.rmtree(staging, ignore_errors=True)
        prepare_staging(staging, for_container_uid=True)
        job_file, outcome_file = root / f"{cell.name}.job.json", root / f"{cell.name}.outcome.json"
        node_log = root / f"{cell.name}.slurm.log"
        for stale in (outcome_file, node_log):
            stale.unlink(missing_ok=True)
        ref = self.refs.get(image.tag, image.tag)
        spec = container_spec(ctx, cell, ref, None, staging, None)
        spec.pop("device_requests", None)
        spec["mem_limit"] = spec["memswap_limit"] = memory_of(cell).lower()   # what the job was granted
        spec["ulimits"] = [dict(u) for u in spec.get("ulimits", []) if u["Name"] == "nofile"]
        job = {"spec": spec, "gpus": cell.gpus if cell.device == "gpu" else 0, "timeout": int(timeout),
               "log": str(log_path), "outcome": str(outcome_file), "pull": ref != image.tag,
               "image_tag": image.tag}
        job_file.write_text(json.dumps(job, indent=1))
        script = root / f"{cell.name}.sbatch"
        script.write_text("#!/bin/sh\n# dlbench: one cell's container on the node Slurm chose\n"
                          f"cd {shlex.quote(str(ROOT))} || exit 1\n"
                          f"PYTHONPATH={shlex.quote(str(ROOT))} exec {shlex.quote(sys.executable)} "
                          f"-m runner.backends.slurm {shlex.quote(str(job_file))}\n")
        if ctx.stop.is_set():
            return Execution(error="interrupted before submission", image=image.tag)
        cmd = ["sbatch", "--parsable", f"--job-name=dlbench-{cell.name}"[:200],
               f"--comment={COMMENT_PREFIX} run={ctx.run_id} cell={cell.name} lock={ctx.lock_path}",
               f"--time={time_limit_min(timeout)}", f"--output={node_log}", f"--chdir={ROOT}",
               f"--cpus-per-task={cpus_of(cell)}", f"--mem={memory_of(cell)}"]
        if cell.device == "gpu" and cell.gpus:
            cmd.append(f"--gres=gpu:{cell.gpus}")
        if self.options.slurm.partition:
            cmd.append(f"--partition={self.options.slurm.partition}")
        if self.options.slurm.account:
            cmd.append(f"--account={self.options.slurm.account}")
        cmd.append(str(script))
        started = time.monotonic()
        proc = _run(cmd)
        if proc.returncode != 0:
            return Execution(error=f"sbatch refused the job: {proc.stderr.strip() or proc.stdout.strip()}",
                             image=image.tag)
        job_id = proc.stdout.strip().split(";")[0]
        with self.lock:
            self.jobs[cell.name] = job_id
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"[runner] Slurm job {job_id} ({' '.join(shlex.quote(c) for c in cmd[1:])})\n")
        state, fields = self._follow(ctx, cell.name, job_id)
        ex = self._outcome(outcome_file, state, fields, timeout)
        ex.seconds = time.monotonic() - started
        ex.image = image.tag
        ex.result, ex.result_problem = read_staged_result(staging / f"{cell.name}.json")
        self._append(node_log, log_path)
        if self.options.slurm.shared_dir:
            shutil.rmtree(staging, ignore_errors=True)
        return ex

    def stop_all(self, ctx) -> int:
        with self.lock:
            ids = [j for c, j in self.jobs.items() if self.states.get(c) not in SLURM_END]
        if ids:
            _run(["scancel", *ids])
        return len(ids)

    @classmethod
    def clean(cls, console: Console) -> int:
        """Cancel dlbench jobs whose runner is gone (its lock file missing or its process dead)."""
        from runner.scheduler import lock_is_live
        if shutil.which("squeue") is None:
            raise UserError(f"clean --backend slurm: squeue not found on PATH. {SLURM_HELP}")
        proc = _run(["squeue", "-h", "-o", "%i|%k"])
        cancelled = []
        for line in proc.stdout.splitlines():
            job_id, _, comment = line.partition("|")
            if not comment.startswith(COMMENT_PREFIX + " "):
                continue
            lock = re.search(r"\block=(\S+)", comment)
            if lock and lock_is_live(Path(lock.group(1))):
                continue
            _run(["scancel", job_id])
            cancelled.append(job_id)
        console.print(f"clean: cancelled {len(cancelled)} orphaned dlbench Slurm job(s)"
                      + (f": {', '.join(cancelled)}" if cancelled else ""))
        return EXIT_OK

    # ---------------------------------------------------------------- following a job

    def _follow(self, ctx, cell_id: str, job_id: str) -> tuple[str, dict]:
        """Poll the job until it ends; cancel it when the run is stopped. Returns (end state, fields)."""
        cancelled = False
        fields: dict = {}
        missing_since = None
        while True:
            proc = _run(["scontrol", "show", "job", "-o", job_id], timeout=30)
            if proc.returncode == 0 and proc.stdout.strip():
                fields = job_fields(proc.stdout)
                missing_since = None
            elif "Invalid job id" in proc.stderr:
                # purged from the controller's memory (it ended more than MinJobAge ago)
                missing_since = missing_since or time.monotonic()
                if time.monotonic() - missing_since > 5:
                    return "UNKNOWN", fields
            state = fields.get("JobState", "PENDING").split("+")[0]
            self._note_state(cell_id, state)
            if state in SLURM_END:
                return state, fields
            if ctx.stop.is_set() and not cancelled:
                _run(["scancel", job_id])
                cancelled = True
            time.sleep(self.options.slurm.poll_s)

    def _note_state(self, cell_id: str, state: str) -> None:
        """Progress: pending/running/done counts, printed when they change."""
        with self.lock:
            self.states[cell_id] = state
            counts = Counter("done" if s in SLURM_END else "running" if s in ("RUNNING", "COMPLETING")
                             else "pending" for s in self.states.values())
            key = (counts["pending"], counts["running"], counts["done"])
            if key == self._reported:
                return
            self._reported = key
        self.console.print(f"slurm: {key[0]} pending, {key[1]} running, {key[2]} done")

    @staticmethod
    def _outcome(outcome_file: Path, state: str, fields: dict, timeout: int) -> Execution:
        data: dict = {}
        try:
            data = json.loads(outcome_file.read_text())
        except (OSError, ValueError):
            pass
        ex = Execution(exit_code=data.get("exit_code"), timed_out=bool(data.get("timed_out")),
                       oom_killed=bool(data.get("oom_killed")), error=data.get("error"))
        ex.image_id = data.get("image_id")
        reason = fields.get("Reason", "None")
        if state == "TIMEOUT":
            ex.status = "timeout"
            ex.error = (f"Slurm killed job {fields.get('JobId', '?')} at its time limit "
                        f"({fields.get('TimeLimit', '?')}; the cell's timeout is {timeout}s plus "
                        f"{START_MARGIN_S}s to start its container)")
        elif state in ("NODE_FAIL", "BOOT_FAIL", "PREEMPTED"):
            # not the cell's doing: interrupted, so --resume submits it again
            ex.status = "interrupted"
            why = "was preempted" if state == "PREEMPTED" else f"ended {state}: its node {fields.get('NodeList', '?')} failed"
            ex.error = f"Slurm job {fields.get('JobId', '?')} {why}; continue the run with --resume to run the cell again"
        elif state == "OUT_OF_MEMORY":
            ex.oom_killed = True
        elif state == "CANCELLED" and not ex.error:
            ex.status = "interrupted"
            ex.error = (f"Slurm job {fields.get('JobId', '?')} was cancelled (scancel) before the cell finished"
                        f"{'' if reason in ('None', '') else ' (' + reason + ')'}")
        elif state == "UNKNOWN" and not data:
            ex.error = "the Slurm job ended and left no outcome (its record is gone from the controller)"
        elif not data and not ex.error:
            ex.error = (f"Slurm job {fields.get('JobId', '?')} ended {state} without running the cell "
                        f"(exit {fields.get('ExitCode', '?')}, reason {reason}); see its output in the cell log")
        return ex

    @staticmethod
    def _append(node_log: Path, log_path: Path) -> None:
        try:
            text = node_log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        if text.strip():
            with open(log_path, "a", encoding="utf-8") as log:
                log.write("[runner] the job's own output:\n" + text[-16384:])


# ---------------------------------------------------------------- node side

def node_main(job_file: str) -> int:
    """Run one cell's container on this node, as the batch script says; always leave an outcome file."""
    import docker

    from runner.gpus import machine_description
    job = json.loads(Path(job_file).read_text())
    spec, outcome_path, log_path = job["spec"], Path(job["outcome"]), Path(job["log"])
    stop = threading.Event()
    client = docker.from_env(timeout=600)
    outcome: dict = {}

    def on_term(signum, frame):  # Slurm's time limit or scancel: the container must not outlive the job
        stop.set()
        try:
            client.containers.get(spec["name"]).remove(force=True)
        except docker.errors.DockerException:
            pass

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        image_ref = spec["image"]
        if job.get("pull"):
            image = client.images.pull(image_ref)     # by digest: the bytes that were built and pushed
        else:
            image = client.images.get(image_ref)
        outcome["image_id"] = image.id
        spec["environment"].update(DLBENCH_MACHINE=machine_description(), DLBENCH_IMAGE=job["image_tag"],
                                   DLBENCH_IMAGE_ID=image.id)
        spec["hostname"] = socket.gethostname()[:63]
        spec["ulimits"] = [docker.types.Ulimit(name=u["Name"], soft=u["Soft"], hard=u["Hard"])
                           for u in spec.get("ulimits", [])]
        if job["gpus"]:
            visible = os.environ.get("SLURM_JOB_GPUS") or os.environ.get("CUDA_VISIBLE_DEVICES") or ""
            ids = [g for g in visible.split(",") if g.strip()]
            outcome["gpus"] = ids
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"[node {socket.gethostname()}] Slurm allocated GPU(s) {','.join(ids) or '?'}\n")
            gpu = gpu_options(job["gpus"], ids or None)
            spec["ulimits"] += gpu.pop("ulimits")
            spec.update(gpu)
        ex = ContainerRun(client, stop).run(spec, log_path, int(job["timeout"]))
        outcome.update(exit_code=ex.exit_code, timed_out=ex.timed_out, oom_killed=ex.oom_killed, error=ex.error,
                       seconds=ex.seconds)
    except Exception as exc:  # whatever happens here must reach the runner as the cell's outcome
        outcome["error"] = f"on node {socket.gethostname()}: {type(exc).__name__}: {exc}"
    tmp = outcome_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome))
    os.replace(tmp, outcome_path)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m runner.backends.slurm JOBFILE (what a dlbench Slurm job runs)")
    sys.exit(node_main(sys.argv[1]))
