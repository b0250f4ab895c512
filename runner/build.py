"""Base and build stages: make the base images exist, then build one image per rendered Dockerfile.

Bases: present -> fine; else pulled through the SDK; else, when images/compat.yaml gives a
`bootstrap`, made with debootstrap from a distribution mirror and imported through the SDK.

Builds: the legacy builder through the low-level API (`api.build`, a deterministic tar as
the context), streamed into a log file and a progress display. A tag that exists is not
rebuilt (`--rebuild` forces): tags end in a content hash, so an existing tag is current.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from docker.errors import DockerException
from requests.exceptions import RequestException
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from runner import ROOT
from runner.compat import Base, load_compat
from runner.engine import connect, image_exists
from runner.errors import UserError
from runner.render import RenderedImage
from runner.validate import url_credential_problem

DEFAULT_LOG_DIR = ROOT / "build" / "logs"

# Docker's predefined build args: usable without an ARG line and kept out of `docker history`.
PROXY_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
# Declared with ARG in images/base.Dockerfile.j2: their values show in `docker history`.
PIP_ARGS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST")

_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


@dataclass
class BuildOutcome:
    ok: bool
    message: str
    log_path: Optional[Path]
    skipped: bool = False      # the tag existed: nothing was built
    seconds: float = 0.0


# ---------------------------------------------------------------- bases

def ensure_bases(base_names: Iterable[str], console: Console, client=None, stop=None) -> dict[str, str]:
    """Make every named base image exist locally. Returns {base_name: problem} for those that cannot.
    `stop` (a threading.Event): when set, the remaining bases are reported as not made."""
    compat = load_compat()
    client = client or connect()
    problems: dict[str, str] = {}
    for name in sorted(set(base_names)):
        base = compat.bases[name]
        if stop is not None and stop.is_set():
            if not image_exists(client, base.image):
                problems[name] = f"base {name} ({base.image}): not made, the run was interrupted"
            continue
        if image_exists(client, base.image):
            continue
        pull_error = _pull(client, base, console)
        if pull_error is None:
            continue
        if base.bootstrap is None:
            problems[name] = (f"base {name} ({base.image}): cannot be pulled (no registry answers: {pull_error}) "
                              f"and cannot be bootstrapped from this host's mirror; run where a registry "
                              f"serves it")
        else:
            console.print(f"base {name}: pull failed ({escape(pull_error)}); bootstrapping {base.image} with "
                          f"debootstrap from {base.bootstrap.mirror}")
            problem = _bootstrap(client, name, base, console)
            if problem:
                problems[name] = (f"base {name} ({base.image}): cannot be pulled (no registry answers: "
                                  f"{pull_error}) and bootstrapping it failed: {problem}")
    for name, problem in problems.items():
        console.print(f"[bold red]base unavailable[/]: {escape(problem)}")
    return problems


def _short(exc: BaseException, limit: int = 160) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip().splitlines()
    text = text[-1] if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _split_ref(ref: str) -> tuple[str, str]:
    """'repo/name:tag' -> ('repo/name', 'tag'); a registry port is not a tag."""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, "latest"


def _pull(client, base: Base, console: Console) -> Optional[str]:
    """Pull base.pull (tagging it as base.image); None on success, else a one-line reason."""
    if not base.pull:
        return "compat.yaml gives no `pull` reference"
    repo, tag = _split_ref(base.pull)
    console.print(f"base: pulling {base.pull}")
    try:
        image = client.images.pull(repo, tag=tag)
        if base.pull != base.image:
            image.tag(*_split_ref(base.image))
        return None
    except (DockerException, RequestException) as exc:
        return _short(exc)


def _bootstrap(client, name: str, base: Base, console: Console) -> Optional[str]:
    """debootstrap a rootfs into a temporary directory, import it as base.image. None on success."""
    boot = base.bootstrap
    tool = shutil.which("debootstrap")
    if tool is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            console.print("base: installing debootstrap (apt-get)")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            for cmd in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"]):
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    return f"installing debootstrap failed: {_last_line(proc.stderr or proc.stdout)}"
            tool = shutil.which("debootstrap")
        if tool is None:
            return ("debootstrap is not installed; install it (Debian/Ubuntu: `apt-get install debootstrap`) "
                    "and run as root, or use a host where a registry serves the image")
    if os.geteuid() != 0:
        return "debootstrap needs root; run `python -m runner base` as root once"
    tmp = Path(tempfile.mkdtemp(prefix=f"dlbench-bootstrap-{name}-"))
    try:
        rootfs = tmp / "rootfs"
        log = tmp / "debootstrap.log"
        started = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.run([tool, f"--variant={boot.variant}", boot.suite, str(rootfs), boot.mirror],
                                  stdout=out, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            return f"debootstrap exited with {proc.returncode}: {_last_line(log.read_text(errors='replace'))}"
        # Nothing of the bootstrap host's package cache goes into the image.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / sub).glob("*"):
                if entry.is_file() and entry.name not in ("lock",):
                    entry.unlink()
        tarball = tmp / "rootfs.tar"
        proc = subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tarball), "."],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return f"packing the rootfs failed: {_last_line(proc.stderr)}"
        repo, tag = _split_ref(base.image)
        client.api.import_image_from_file(str(tarball), repository=repo, tag=tag,
                                          changes=['CMD ["bash"]',
                                                   "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                                   "/sbin:/bin", "ENV LANG=C.UTF-8"])
        if not image_exists(client, base.image):
            return "the engine imported the rootfs but the tag is missing"
        console.print(f"base {name}: bootstrapped {base.image} in {time.monotonic() - started:.0f}s")
        return None
    except (DockerException, RequestException, OSError) as exc:
        return _short(exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


# ---------------------------------------------------------------- build arguments

def _has_credentials(url: str) -> bool:
    return url_credential_problem(url) is not None


_HOST_RE = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")


def build_args(environ=None) -> dict[str, str]:
    """Build args from the host environment. Refuses (UserError) a PIP_* index URL that may carry a
    credential in any form (user info, a query string, a token-like path segment): PIP_* are declared ARGs,
    whose values `docker history` shows to anyone who can pull the image. The low-level build API has no
    BuildKit secrets, so refusing is the only way to keep a credential out of the image."""
    environ = os.environ if environ is None else environ
    args = {}
    for name in PIP_ARGS:
        value = environ.get(name)
        if not value:
            continue
        fix = ("Use a credential-free mirror URL, or reach the index through a proxy (HTTP_PROXY/HTTPS_PROXY are "
               "passed as Docker's predefined build args, which `docker history` does not show), then build "
               "again; see docs/security.md.")
        if any(c in value for c in "\r\n\t\0"):
            raise UserError(f"{name} contains a control character; unset it or give one URL per space. {fix}")
        for item in value.split():
            if name == "PIP_TRUSTED_HOST":
                if not _HOST_RE.fullmatch(item):
                    raise UserError(f"{name} is refused: one of its entries is not a host name (host or "
                                    f"host:port; user info would be a credential in the image's history). Fix "
                                    f"{name} and build again.")
                continue
            problem = url_credential_problem(item)
            if problem:
                # the value itself is not printed: it may be the credential
                raise UserError(
                    f"{name} is refused: {problem}. dlbench passes {name} to the build as a build argument, and "
                    f"build arguments end up in the image's history, so it refuses URLs that may carry "
                    f"credentials. {fix}")
        args[name] = value
    for name in PROXY_ARGS:
        for key in (name, name.lower()):
            value = environ.get(key)
            if value:
                args[key] = value
    return args


# ---------------------------------------------------------------- context and build

def build_context(image: RenderedImage) -> io.BytesIO:
    """A deterministic tar: Dockerfile + context files, sorted, fixed mtime/owner/mode."""
    buf = io.BytesIO()
    entries = [("Dockerfile", image.dockerfile.encode())]
    entries += [(rel, Path(host).read_bytes()) for rel, host in image.context_files]
    dirs = set()
    for rel, _ in entries:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        items = [(d, None) for d in dirs] + entries
        for rel, data in sorted(items, key=lambda item: item[0]):
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o644
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def sanitise(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tag)


def build_images(images: list[RenderedImage], rebuild: bool, console: Console, log_dir: Optional[Path] = None,
                 client=None, stop=None) -> dict[str, BuildOutcome]:
    """Build every image whose tag is missing (all with rebuild). {tag: BuildOutcome}.
    `stop` (a threading.Event): when set, the build in progress is abandoned and the rest are not started."""
    client = client or connect()
    log_dir = Path(log_dir) if log_dir else DEFAULT_LOG_DIR
    outcomes: dict[str, BuildOutcome] = {}
    todo = []
    for image in images:
        if image.tag in outcomes or image in todo:
            continue
        if not rebuild and image_exists(client, image.tag):
            outcomes[image.tag] = BuildOutcome(True, "cached", None, skipped=True)
        else:
            todo.append(image)
    cached = len(outcomes)
    if cached:
        console.print(f"build: {cached} image(s) cached, {len(todo)} to build")
    if not todo:
        return outcomes
    buildargs = build_args()
    log_dir.mkdir(parents=True, exist_ok=True)
    with Progress(TextColumn("{task.description}"), BarColumn(bar_width=20),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  TextColumn("{task.fields[step]}"), console=console, transient=False) as progress:
        for n, image in enumerate(todo, 1):
            log_path = log_dir / f"{sanitise(image.tag)}.log"
            if stop is not None and stop.is_set():
                outcomes[image.tag] = BuildOutcome(False, f"image {image.tag} not built: the run was interrupted",
                                                   None)
                continue
            task = progress.add_task(escape(image.tag), total=None, step="sending context")
            progress.console.print(f"build [{n}/{len(todo)}]: {escape(image.tag)} (log: {log_path})")
            outcome = _build_one(client, image, buildargs, log_path, progress, task, stop)
            outcomes[image.tag] = outcome
            progress.update(task, step="done" if outcome.ok else "FAILED",
                            **({"total": 1, "completed": 1} if outcome.ok and progress._tasks[task].total is None
                               else {"completed": progress._tasks[task].total} if outcome.ok else {}))
            if outcome.ok:
                progress.console.print(f"[green]built[/] {escape(image.tag)} in {outcome.seconds:.0f}s")
            else:
                progress.console.print(f"[bold red]build failed[/]: {escape(image.tag)}: {escape(outcome.message)}")
    return outcomes


def _build_one(client, image: RenderedImage, buildargs: dict, log_path: Path, progress, task,
               stop=None) -> BuildOutcome:
    started = time.monotonic()
    error = None
    last_lines: list[str] = []
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# dlbench build of {image.tag}\n# build args: {', '.join(sorted(buildargs)) or 'none'}\n")
        try:
            context = build_context(image)
            stream = client.api.build(fileobj=context, custom_context=True, tag=image.tag, decode=True, rm=True,
                                      forcerm=True, pull=False, buildargs=buildargs)
            for chunk in stream:
                if stop is not None and stop.is_set():
                    error = "interrupted"  # leaving the stream closes the connection: the engine cancels
                    log.write("ERROR: interrupted\n")
                    stream.close()
                    break
                if "error" in chunk or "errorDetail" in chunk:
                    detail = chunk.get("errorDetail") or {}
                    error = (detail.get("message") or chunk.get("error") or "build failed").strip()
                    log.write(f"ERROR: {error}\n")
                    continue
                text = chunk.get("stream")
                if text is None:
                    if chunk.get("status"):
                        log.write(f"{chunk['status']} {chunk.get('progress', '')}\n")
                    continue
                log.write(text)
                for line in text.splitlines():
                    line = line.rstrip()
                    if not line:
                        continue
                    last_lines = (last_lines + [line])[-20:]
                    m = _STEP_RE.match(line)
                    if m:
                        step = m.group(3)
                        progress.update(task, total=int(m.group(2)), completed=int(m.group(1)) - 1,
                                        step=escape(step if len(step) <= 70 else step[:67] + "..."))
                log.flush()
        except (DockerException, RequestException, OSError) as exc:
            error = _short(exc)
            log.write(f"ERROR: {error}\n")
        seconds = time.monotonic() - started
        if error is None and not image_exists(client, image.tag):
            error = "the build ended without producing the tag"
        log.write(f"# {'failed' if error else 'built'} in {seconds:.1f}s\n")
    if error:
        last = _last_line(error)
        return BuildOutcome(False, f"image {image.tag} failed to build: {last} (full log: {log_path})",
                            log_path, seconds=seconds)
    return BuildOutcome(True, "built", log_path, seconds=seconds)


def prune_images(keep: set[str], frameworks: Iterable[str], console: Console, client=None) -> int:
    """Remove `dlbench/<framework>:*` tags that the matrix no longer renders to.

    Every change to bench/ or a template gives an image a new content-hash tag and leaves the old
    one behind; their framework layers are shared, but each keeps its own bench/ layer and blocks
    `docker image prune`.  Base images (`dlbench/base`) are never touched: they are slow to make.
    A tag a container still uses is kept (the engine refuses with 409).  Returns how many were removed.
    """
    from docker.errors import APIError, ImageNotFound
    client = client or connect()
    wanted = {f"dlbench/{name}" for name in frameworks}
    removed, in_use = [], []
    for image in client.images.list(name="dlbench/*"):
        for tag in image.tags:
            repository = tag.rsplit(":", 1)[0]
            if repository not in wanted or tag in keep:
                continue
            try:
                client.images.remove(tag)
                removed.append(tag)
            except ImageNotFound:
                pass
            except APIError as exc:
                if exc.status_code != 409:
                    raise
                in_use.append(tag)
    for tag in sorted(removed):
        console.print(f"removed image {escape(tag)}")
    if in_use:
        console.print(f"kept {len(in_use)} image(s) still used by a container: {escape(', '.join(sorted(in_use)))}")
    kept = sorted(t for t in keep if t.rsplit(":", 1)[0] in wanted)
    console.print(f"clean --images: removed {len(removed)} stale tag(s); the matrix renders {len(kept)} "
                  f"image(s) for {', '.join(sorted(frameworks))}")
    return len(removed)


# ---------------------------------------------------------------- push (images shared through a registry)

def registry_ref(registry: str, tag: str) -> str:
    """Where an image tag lives in `registry` (host[:port][/prefix]): the same repository and tag under it."""
    return f"{registry.rstrip('/')}/{tag}"


def push_images(tags: Iterable[str], registry: str, console: Console, client=None) -> dict[str, tuple[bool, str]]:
    """Push each built tag to the registry under its content-hash tag. {tag: (True, "repo@sha256:...")} — the
    digest reference jobs pull by, so every node runs the very bytes that were built — or (False, why)."""
    client = client or connect()
    out: dict[str, tuple[bool, str]] = {}
    for tag in dict.fromkeys(tags):
        ref = registry_ref(registry, tag)
        repository, _, version = ref.rpartition(":")
        try:
            client.api.tag(tag, repository, version)
            error = None
            for event in client.api.push(repository, tag=version, stream=True, decode=True):
                if event.get("error"):
                    error = str(event.get("error")).strip()
            if error:
                out[tag] = (False, f"push of {tag} to {registry} failed: {error}")
                continue
            digests = client.api.inspect_image(ref).get("RepoDigests") or []
            mine = [d for d in digests if d.startswith(repository + "@")]
            if not mine:
                out[tag] = (False, f"push of {tag} to {registry} reported no digest")
                continue
            out[tag] = (True, mine[0])
            console.print(f"push: {escape(tag)} -> {escape(mine[0])}")
        except (DockerException, RequestException) as exc:
            out[tag] = (False, f"push of {tag} to {registry} failed: {_short(exc)}. Check that the registry "
                               f"answers (`make cluster` starts one on 127.0.0.1:5000) and that this engine may "
                               f"push to it (an insecure registry other than localhost needs "
                               f"`insecure-registries` in the engine's daemon.json).")
    return out
