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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import jinja2

from runner import BENCH_DIR, IMAGES_DIR
from runner.compat import ImageChoice, load_compat
from runner.errors import UserError

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
    """A double-quoted Dockerfile word (LABEL/ENV values): only backslash and quote are escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(IMAGES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
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


def host_ca_bundle() -> Optional[Path]:
    """The CA bundle the host's pip uses, when the host names one (TLS-intercepting proxies)."""
    for var in ("DLBENCH_CA_BUNDLE", "PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


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
    try:
        dockerfile = _environment().get_template(template_name).render(
            template=template_name, display=fw.display, import_name=fw.import_,
            framework=choice.framework, version=choice.version, toolchain=choice.toolchain,
            python=choice.python, base_name=choice.base_name, base=choice.base, device=choice.device,
            apt=list(choice.apt), constraints=list(choice.constraints), requirements=requirements,
            index_url=choice.index_url, openmpi=choice.openmpi, uid=CONTAINER_UID,
            ca_bundle=ca_bundle is not None, labels=labels,
            distribution=re.split(r"[\[=<>!~ ]", requirements[0])[0])
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
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for image in images:
        c = image.choice
        name = f"{c.framework}-{c.version}-{c.toolchain}-py{c.python}.Dockerfile"
        path = out_dir / name
        path.write_text(image.dockerfile, encoding="utf-8")
        written.append(path)
    return written
