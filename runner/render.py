"""Render stage: one Dockerfile per buildable (framework, version, toolchain), from the Jinja templates in images/.

Deterministic: the same inputs give a byte-identical Dockerfile and so the same
tag. The tag ends in a content hash of the Dockerfile and of every file the
build copies, so a changed input is a new tag and an unchanged one is a cache hit.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import jinja2
from pydantic import BaseModel

from runner import BENCH_DIR, IMAGES_DIR
from runner.compat import ImageChoice, load_compat
from runner.errors import UserError
from runner.validate import CONTROL_RE, printable

CONTAINER_UID = 1000
CA_BUNDLE_CONTEXT_PATH = "certs/ca-bundle.crt"
SOURCE_URL = "https://github.com/dlbench/dlbench"


@dataclass(frozen=True)
class RenderedImage:
    choice: ImageChoice
    tag: str
    dockerfile: str
    # path inside the build context -> file on the host
    context_files: tuple[tuple[str, Path], ...]
    labels: tuple[tuple[str, str], ...]

    @property
    def content_hash(self) -> str:
        return self.tag.rsplit("-", 1)[-1]


def _dockerfile_quote(value: str) -> str:
    """A double-quoted Dockerfile word (LABEL/ENV values): backslash, quote and `$` (Docker substitutes
    variables inside double quotes) are escaped; a newline cannot be, so _finalize refuses it."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _check_context(value, name: str = "") -> None:
    """Every value a template can interpolate is checked here, whatever validated it before: a line break or
    other control character would end the instruction and start a new one (a RUN as root before USER).
    (Not a Jinja `finalize`: that also sees `{{ super() }}`, whose block text has line breaks by design.)"""
    stack = [(value, name)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, BaseModel):
            item = item.model_dump()
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{k}") for k, v in item.items())
            stack.extend((k, f"{where} key") for k in item)
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, str):
            bad = CONTROL_RE.search(item)
            if bad:
                raise UserError(f"the Dockerfile value `{where.lstrip('.')}` contains the control character "
                                f"{bad.group()!r} ({printable(item)[:80]}); it would start a new Dockerfile "
                                f"instruction. Fix the matrix or images/compat.yaml entry it comes from.")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(IMAGES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # HTML escaping means nothing in a Dockerfile: _check_context and the quote filters
    )
    env.filters["shquote"] = shlex.quote
    env.filters["dquote"] = _dockerfile_quote
    return env


def bench_files(bench_dir: Path = BENCH_DIR) -> tuple[tuple[str, Path], ...]:
    """Every file of bench/ the image copies, in a stable order (bytecode excluded)."""
    files = []
    for path in sorted(bench_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append(("bench/" + path.relative_to(bench_dir).as_posix(), path))
    return tuple(files)


CA_BUNDLE_VARS = ("DLBENCH_CA_BUNDLE", "PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
MAX_CA_BUNDLE_BYTES = 8 * 1024 * 1024
_PEM_BEGIN_RE = re.compile(rb"-----BEGIN ([^-\r\n]*)-----")


def host_ca_bundle(environ=None) -> Optional[Path]:
    """The CA bundle the host's pip uses, when the host names one (TLS-intercepting proxies).

    The file is copied into an image layer, where anyone who can pull the image reads it: it is checked to
    hold only certificates (UserError naming the file and the variable otherwise)."""
    environ = os.environ if environ is None else environ
    for var in CA_BUNDLE_VARS:
        value = environ.get(var)
        if value and Path(value).is_file():
            check_ca_bundle(Path(value), var)
            return Path(value)
    return None


def check_ca_bundle(path: Path, var: str) -> None:
    """Refuse a CA bundle that is not a regular file of PEM CERTIFICATE blocks: a private key (or anything
    else) in it would be baked into every image."""
    fix = (f"Point {var} at a file holding only `-----BEGIN CERTIFICATE-----` blocks (e.g. "
           f"/etc/ssl/certs/ca-certificates.crt), or unset it.")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CA_BUNDLE_BYTES:
            raise UserError(f"{path} (named by {var}): not a regular file of at most {MAX_CA_BUNDLE_BYTES} bytes, "
                            f"so it is not copied into the image as the CA bundle. {fix}")
        data = path.read_bytes()[: MAX_CA_BUNDLE_BYTES + 1]
    except OSError as exc:
        raise UserError(f"{path} (named by {var}): cannot read the CA bundle ({exc.strerror or exc}). {fix}") from None
    labels = [m.group(1).decode("ascii", "replace") for m in _PEM_BEGIN_RE.finditer(data)]
    others = sorted({label for label in labels if label != "CERTIFICATE"})
    if others or b"PRIVATE KEY" in data:
        what = ", ".join(others) or "PRIVATE KEY"
        raise UserError(f"{path} (named by {var}): the CA bundle holds a {printable(what)[:80]} block besides "
                        f"certificates; it would be copied into every image layer, readable by anyone who pulls "
                        f"the image. {fix}")
    if not labels:
        raise UserError(f"{path} (named by {var}): no PEM certificate in it, so it is not a CA bundle. {fix}")


def files_digest(files) -> str:
    """Digest of what a build copies; computed once per render_all, not per image."""
    digest = hashlib.sha256()
    for rel, path in files:
        digest.update(b"\0" + rel.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _hash_context(dockerfile: str, copied_digest: str) -> str:
    return hashlib.sha256(dockerfile.encode() + b"\0" + copied_digest.encode()).hexdigest()[:12]


def labels_for(choice: ImageChoice, requirements: list[str]) -> list[tuple[str, str]]:
    compat = load_compat()
    fw = compat.frameworks[choice.framework]
    tc = compat.toolchains[choice.toolchain]
    labels = [
        ("org.opencontainers.image.title", f"dlbench {choice.framework} {choice.version} ({choice.toolchain})"),
        ("org.opencontainers.image.description",
         f"dlbench benchmark image: {fw.display} {choice.version}, {choice.toolchain}, Python {choice.python}"),
        ("org.opencontainers.image.version", choice.version),
        ("org.opencontainers.image.source", SOURCE_URL),
        ("org.opencontainers.image.base.name", choice.base.image),
        ("dlbench.framework", choice.framework),
        ("dlbench.framework.version", choice.version),
        ("dlbench.toolchain", choice.toolchain),
        ("dlbench.device", choice.device),
        ("dlbench.cuda", tc.cuda or choice.base.cuda or "none"),
        ("dlbench.cudnn", tc.cudnn or choice.base.cudnn or "none"),
        ("dlbench.python", choice.python),
        ("dlbench.base", choice.base_name),
        ("dlbench.os", choice.base.os),
        ("dlbench.pip", " ".join(requirements)),
    ]
    if choice.constraints:
        labels.append(("dlbench.pip.constraints", " ".join(choice.constraints)))
    if choice.apt:
        labels.append(("dlbench.apt", " ".join(choice.apt)))
    if choice.backend:
        labels.append(("dlbench.backend", choice.backend))
    if choice.openmpi:
        labels.append(("dlbench.openmpi", choice.openmpi))
    return labels


def render(choice: ImageChoice, ca_bundle: Optional[Path] = None, _copied=None) -> RenderedImage:
    compat = load_compat()
    fw = compat.frameworks[choice.framework]
    template_name = f"{choice.framework}.Dockerfile.j2"
    if not (IMAGES_DIR / template_name).is_file():
        raise UserError(f"images/{template_name} is missing: every framework in images/compat.yaml needs a "
                        f"template that extends base.Dockerfile.j2.")
    requirements = list(choice.pip) + list(choice.extra_pip)
    if not any(r.split("<")[0].split("=")[0].split(">")[0] == "numpy" for r in requirements):
        requirements.append("numpy")  # bench needs it; frameworks' own pins win via the resolver
    labels = labels_for(choice, requirements)
    context = dict(
        template=template_name, display=fw.display, import_name=fw.import_,
        framework=choice.framework, version=choice.version, toolchain=choice.toolchain,
        python=choice.python, base_name=choice.base_name, base=choice.base, device=choice.device,
        apt=list(choice.apt), constraints=list(choice.constraints), requirements=requirements,
        index_url=choice.index_url, openmpi=choice.openmpi, uid=CONTAINER_UID,
        ca_bundle=ca_bundle is not None, labels=labels,
        distribution=re.split(r"[\[=<>!~ ;@]", requirements[0])[0])
    _check_context(context)
    try:
        dockerfile = _environment().get_template(template_name).render(**context)
    except jinja2.TemplateError as exc:
        raise UserError(f"images/{template_name}: template error: {exc}. Fix the template.") from None
    files, copied_digest = _copied or _context_files(ca_bundle)
    digest = _hash_context(dockerfile, copied_digest)
    tag = f"dlbench/{choice.framework}:{choice.version}-{choice.toolchain}-py{choice.python}-{digest}"
    return RenderedImage(choice=choice, tag=tag, dockerfile=dockerfile, context_files=files,
                         labels=tuple(labels))


def _context_files(ca_bundle: Optional[Path]):
    files = bench_files()
    if ca_bundle is not None:
        files = ((CA_BUNDLE_CONTEXT_PATH, ca_bundle),) + files
    return files, files_digest(files)


def render_all(choices, ca_bundle: Optional[Path] = None) -> list[RenderedImage]:
    copied = _context_files(ca_bundle)
    return [render(c, ca_bundle, copied) for c in choices]


def write_dockerfiles(images: list[RenderedImage], out_dir: Path) -> list[Path]:
    """Write each Dockerfile into out_dir (created if missing). Refuses (UserError) an out_dir that is a file
    or cannot be written, and a Dockerfile path that is a symlink (never written through) or would leave
    out_dir; files are replaced atomically, so a reader never sees half a Dockerfile."""
    from runner.results import atomic_write_text

    out_dir = Path(out_dir)
    fix = "Pass a directory you can write to with --out DIR."
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: --out names an existing file, not a directory. {fix}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        root = out_dir.resolve(strict=True)
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot create the --out directory ({exc.strerror or exc}). {fix}") from None
    written = []
    for image in images:
        c = image.choice
        name = f"{c.framework}-{c.version}-{c.toolchain}-py{c.python}.Dockerfile"
        path = out_dir / name
        if "/" in name or name.startswith(".") or (root / name).parent != root:
            raise UserError(f"{path}: the Dockerfile name leaves the --out directory {root}. Fix the framework, "
                            f"version or toolchain name in the matrix.")
        if path.is_symlink():
            raise UserError(f"{path} is a symbolic link; render does not write through links (it could overwrite "
                            f"any file the link points at). Remove the link, or pass another --out DIR.")
        if path.exists() and not path.is_file():
            raise UserError(f"{path} exists and is not a regular file. Remove it, or pass another --out DIR.")
        try:
            atomic_write_text(path, image.dockerfile, mode=0o644)
        except OSError as exc:
            raise UserError(f"{path}: cannot write the Dockerfile ({exc.strerror or exc}). {fix}") from None
        written.append(path)
    return written
