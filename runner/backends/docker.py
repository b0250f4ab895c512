"""`--backend docker` (the default): one hardened container per cell on the local Docker engine.

Per cell: create -> start -> follow logs into the cell's log -> wait (killed at the cell's timeout) ->
hand the result file back (read without following links) -> remove the container (always).

Each container sees only its own output directory (results/<run-id>/.cells/<cell>/ mounted at
/results) and, read-only, its own dataset, so a cell cannot touch another cell's result. The Slurm
backend runs this same container spec on its nodes (`container_spec` and `ContainerRun`)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Optional

from rich.console import Console
from rich.markup import escape

from runner.backends.staging import prepare_staging, read_staged_result
from runner.backends.thishost import OnThisHost
from runner.contract import Execution, bench_args, cell_env
from runner.errors import EXIT_OK
from runner.matrix import Cell
from runner.render import CONTAINER_UID, RenderedImage

CONTAINER_RESULTS = "/results"
CONTAINER_DATA = "/data"
LABEL_RUN = "dlbench.run-id"
LABEL_CELL = "dlbench.cell-id"
LABEL_LOCK = "dlbench.lock"


def device_requests(cell: Cell, gpu_ids: Optional[list[int]]):
    """The DeviceRequest list for a GPU cell: its assigned GPUs, or a count when the host's GPUs are unknown."""
    if cell.device != "gpu" or cell.gpus <= 0:
        return []
    return gpu_options(cell.gpus, gpu_ids)["device_requests"]


def gpu_options(count: int, gpu_ids: Optional[list]) -> dict[str, Any]:
    """create() keywords that give a container `count` GPUs: the listed host indices, or any `count`."""
    import docker
    if count <= 0:
        return {}
    if gpu_ids:
        requests = [docker.types.DeviceRequest(device_ids=[str(i) for i in gpu_ids], capabilities=[["gpu"]])]
    else:
        requests = [docker.types.DeviceRequest(count=count, capabilities=[["gpu"]])]
    return {"device_requests": requests,
            "ulimits": [docker.types.Ulimit(name="memlock", soft=-1, hard=-1),
                        docker.types.Ulimit(name="stack", soft=67108864, hard=67108864)]}


CONTAINER_HOME = "/home/bench"    # the image's user (images/base.Dockerfile.j2)
PIDS_LIMIT = 4096                 # data-loader workers and framework thread pools stay far below it
NOFILE = 16384


def memory_limit(cell: Cell) -> str:
    """The container's memory (and memory+swap: no swap) limit: the workload's `memory_gb`, else
    DLBENCH_CELL_MEMORY_GB, else 90 % of the host's memory, so a runaway cell is OOM-killed (status oom)
    before it takes the host down."""
    gb = cell.memory_gb or float(os.environ.get("DLBENCH_CELL_MEMORY_GB") or 0)
    if gb > 0:
        return f"{int(gb * 1024)}m"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(256, int(total * 0.9) >> 20)}m"


def shm_size(cell: Cell) -> str:
    return f"{max(2, 8 * cell.gpus)}g" if cell.device == "gpu" else "2g"


def container_spec(ctx, cell: Cell, image_tag: str, image_id: Optional[str], staging: Path,
                   gpu_ids: Optional[list[int]], dataset_dir: Optional[Path] = None,
                   cpus: Optional[list[int]] = None) -> dict[str, Any]:
    """Keyword arguments for client.containers.create() of one cell. `dataset_dir`: where the cell's
    dataset is on the machine that runs the container (default: the run's data view); `cpus`: the cpuset
    the scheduler gave the cell (None: every CPU)."""
    out = f"{CONTAINER_RESULTS}/{cell.name}.json"
    memory = memory_limit(cell)
    volumes = {str(staging): {"bind": CONTAINER_RESULTS, "mode": "rw"}}
    if cell.dataset and not cell.synthetic:
        # Only the cell's own dataset, read-only, at /data/<name>, where bench looks first.
        source = dataset_dir or (ctx.data_dir / cell.dataset).resolve()
        volumes[str(source)] = {"bind": f"{CONTAINER_DATA}/{cell.dataset}", "mode": "ro"}
    spec: dict[str, Any] = dict(
        image=image_tag,
        command=bench_args(cell, CONTAINER_DATA, out),
        name=f"dlbench-{ctx.run_id}-{cell.name}"[:200],
        hostname=socket.gethostname()[:63],  # results name the host, not a container id
        labels={LABEL_RUN: ctx.run_id, LABEL_CELL: cell.id, LABEL_LOCK: str(ctx.lock_path)},
        environment=cell_env(ctx.run_id, ctx.machine, ctx.plan.profile, cell, image_tag, image_id),
        network_mode="none",
        volumes=volumes,
        shm_size=shm_size(cell),
        user=f"{CONTAINER_UID}:{CONTAINER_UID}",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        privileged=False,
        # nothing of the image can be changed; frameworks' caches and scratch go to memory-backed tmpfs
        read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,size=4g,mode=1777",
               CONTAINER_HOME: f"rw,nosuid,nodev,size=2g,uid={CONTAINER_UID},gid={CONTAINER_UID},mode=0700"},
        pids_limit=PIDS_LIMIT,
        mem_limit=memory,
        memswap_limit=memory,   # no swap
        ulimits=[nofile_ulimit()],
        detach=True,
    )
    if cpus:
        spec["cpuset_cpus"] = ",".join(str(int(c)) for c in cpus)
    if cell.device == "gpu":
        gpu = gpu_options(cell.gpus, gpu_ids)
        spec["ulimits"] = spec["ulimits"] + gpu.pop("ulimits", [])
        spec.update(gpu)
    return spec


def nofile_ulimit():
    """The open-file limit: NOFILE, or this host's own hard limit where that is lower (runc cannot raise a
    container's limit above the engine's)."""
    import resource
    import docker
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    n = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    return docker.types.Ulimit(name="nofile", soft=n, hard=n)


class ContainerRun:
    """Runs one container spec to its end on an engine: the one code path for how a cell's container runs,
    on this host (DockerBackend) or on a Slurm node (runner/backends/slurm.py)."""

    def __init__(self, client, stop: threading.Event):
        self.client = client
        self.stop = stop
        self.gpu_refused: Optional[str] = None

    def run(self, spec: dict, log_path: Path, timeout: int) -> Execution:
        import docker
        from requests.exceptions import RequestException
        from runner.engine import gpu_refusal

        started = time.monotonic()
        container = None
        try:
            try:
                container = self.client.containers.create(**spec)
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # a leftover of an earlier attempt under the same name
                    remove_container(self.client, spec["name"])
                    container = self.client.containers.create(**spec)
                else:
                    raise
            if self.stop.is_set():
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
            waited = time.monotonic()
            try:
                exit_code = container.wait(timeout=timeout)["StatusCode"]
            except RequestException as exc:
                # the wait's own timeout, or the engine going away: only the first is the cell's timeout
                if engine_lost(exc) and time.monotonic() - waited < timeout - 1:
                    raise
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
            if self.stop.is_set():
                return Execution(error="interrupted", seconds=time.monotonic() - started)
            if engine_lost(exc):
                # not the cell's fault and its outcome is unknown: interrupted, so --resume runs it again
                where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
                return Execution(status="interrupted", seconds=time.monotonic() - started,
                                 error=f"the Docker engine stopped answering ({where}) while this cell ran, so its "
                                       f"outcome is unknown. Start the engine again (`make engine`) and continue "
                                       f"the run with --resume; this cell runs again.")
            text = str(getattr(exc, "explanation", None) or exc).strip()
            return Execution(error=f"the engine could not run the container: {text}",
                             seconds=time.monotonic() - started)
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except (docker.errors.DockerException, RequestException):
                    pass  # an engine that went away keeps it; the next attempt under this name removes it


def engine_lost(exc: BaseException) -> bool:
    """Whether an SDK error means the engine itself is gone (connection refused or reset, socket missing),
    as opposed to the engine answering with an error."""
    from requests.exceptions import ConnectionError as RequestsConnectionError
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (RequestsConnectionError, ConnectionRefusedError, ConnectionResetError,
                            FileNotFoundError, BrokenPipeError)):
            text = str(exc)
            return "Read timed out" not in text
        exc = exc.__cause__ or exc.__context__
    return False


def remove_container(client, name: str) -> None:
    import docker
    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.DockerException:
        pass


def remove_run_containers(client, run_id: str) -> int:
    import docker
    from requests.exceptions import RequestException
    removed = 0
    try:
        containers = client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    except (docker.errors.DockerException, RequestException):
        return 0  # an engine that is gone has nothing we can remove; the next attempt (--resume) does
    for container in containers:
        try:
            container.remove(force=True)
            removed += 1
        except (docker.errors.DockerException, RequestException):
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


def prepare_images(client, ctx, cells: list[Cell], image_of, fail, rebuild: bool, console: Console) -> list[Cell]:
    """Bases and builds for the cells to run; cells whose base or image cannot be had are reported through
    `fail`. Returns the cells that can run (none once the run is stopped)."""
    from runner.build import build_images, ensure_bases
    images = {}
    for cell in cells:
        image = image_of(cell)
        images[image.tag] = image
    problems = ensure_bases({img.choice.base_name for img in images.values()}, console=console, client=client,
                            stop=ctx.stop)
    buildable = [img for img in images.values() if img.choice.base_name not in problems]
    outcomes = build_images(buildable, rebuild=rebuild, console=console, log_dir=ctx.run_dir / "build",
                            client=client, stop=ctx.stop) if buildable else {}
    if ctx.stop.is_set():
        return []  # the run stage records every cell without a result as interrupted
    runnable = []
    for cell in cells:
        image = image_of(cell)
        base_problem = problems.get(image.choice.base_name)
        if base_problem:
            # status error, not unsupported: the combination works where a registry serves the base;
            # it is this host that cannot provide it.
            fail(cell, base_problem, image.tag)
        elif not outcomes[image.tag].ok:
            fail(cell, outcomes[image.tag].message, image.tag)
        else:
            runnable.append(cell)
    return runnable


class DockerBackend(OnThisHost):
    name: ClassVar[str] = "docker"
    uses_images: ClassVar[bool] = True

    def __init__(self, options, console: Console):
        from runner.engine import connect
        self.options = options
        self.console = console
        self.client = connect()          # UserError (the dead-engine paragraph) before anything is written
        self.image_ids: dict[str, str] = {}
        self.runs: dict[str, ContainerRun] = {}

    def prepare(self, ctx, cells, image_of, fail):
        return prepare_images(self.client, ctx, cells, image_of, fail, self.options.rebuild, self.console)

    def image_id(self, tag: str) -> Optional[str]:
        if tag not in self.image_ids:
            try:
                self.image_ids[tag] = self.client.api.inspect_image(tag)["Id"]
            except Exception:
                return None
        return self.image_ids[tag]

    def _container_run(self, ctx) -> ContainerRun:
        if ctx.run_id not in self.runs:
            self.runs[ctx.run_id] = ContainerRun(self.client, ctx.stop)
        return self.runs[ctx.run_id]

    def execute(self, ctx, cell, image: RenderedImage, staging: Path, log_path: Path, gpu_ids, timeout,
                cpus=None) -> Execution:
        runner = self._container_run(ctx)
        image_id = self.image_id(image.tag)
        if cell.device == "gpu" and runner.gpu_refused:
            return Execution(error=runner.gpu_refused, image=image.tag, image_id=image_id)
        prepare_staging(staging, for_container_uid=True)
        spec = container_spec(ctx, cell, image.tag, image_id, staging, gpu_ids, cpus=cpus)
        ex = runner.run(spec, log_path, timeout)
        ex.image, ex.image_id = image.tag, image_id
        ex.result, ex.result_problem = read_staged_result(staging / f"{cell.name}.json")
        return ex

    def stop_all(self, ctx) -> int:
        """Remove every container of this run (by its run-id label)."""
        return remove_run_containers(self.client, ctx.run_id)

    @classmethod
    def clean(cls, console: Console) -> int:
        """Remove dlbench containers no live runner owns: every stopped one, and running ones whose run's
        lock file is gone or whose runner process has died."""
        import docker
        from runner.engine import connect
        from runner.scheduler import lock_is_live
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
