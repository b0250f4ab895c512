"""Compatibility stage: which (framework, version, toolchain) combinations can be built, on which base and Python.

The data is images/compat.yaml; this module only reads it and answers questions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Optional

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import AfterValidator, BaseModel, ConfigDict, Strict, ValidationError

from runner import IMAGES_DIR
from runner.errors import UserError, data_loc, format_path
from runner.validate import (
    check_apt_package, check_image_ref, check_index_url, check_name, check_option_key, check_requirement,
    check_text, printable,
)
from runner.yamlfile import load_yaml

COMPAT_PATH = IMAGES_DIR / "compat.yaml"

# Compatibility data is rendered into Dockerfiles run as root: validated as strictly as the matrix.
Name = Annotated[str, Strict(), AfterValidator(check_name)]
Text = Annotated[str, Strict(), AfterValidator(check_text)]
PipRequirement = Annotated[str, Strict(), AfterValidator(check_requirement)]
AptPackage = Annotated[str, Strict(), AfterValidator(check_apt_package)]
ImageRef = Annotated[str, Strict(), AfterValidator(check_image_ref)]
Url = Annotated[str, Strict(), AfterValidator(check_index_url)]
Identifier = Annotated[str, Strict(), AfterValidator(check_option_key)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bootstrap(_Strict):
    tool: Literal["debootstrap"]
    suite: Name
    variant: Name = "minbase"
    mirror: Url


class Base(_Strict):
    kind: Literal["plain", "registry"]
    image: ImageRef
    pull: Optional[ImageRef] = None
    bootstrap: Optional[Bootstrap] = None
    os: Text
    python: Name
    python_packages: list[AptPackage] = []
    cuda: Optional[Name] = None
    cudnn: Optional[Name] = None
    preinstalled: Optional[Name] = None


class Toolchain(_Strict):
    device: Literal["cpu", "gpu"]
    cuda: Optional[Name] = None
    cudnn: Optional[Name] = None
    plain: Name
    registry: Name


class ToolchainInstall(_Strict):
    pip: list[PipRequirement]
    index_url: Optional[Url] = None
    base: Optional[Name] = None
    note: Optional[Text] = None


class VersionEntry(_Strict):
    python: Text
    apt: list[AptPackage] = []
    constraints: list[PipRequirement] = []
    openmpi: Optional[Name] = None
    gpu_arch_missing: list[Name] = []
    gpu_arch_note: Optional[Text] = None
    toolchains: dict[Name, ToolchainInstall]


class FrameworkEntry(_Strict):
    display: Text
    import_: Identifier
    backends: dict[Name, dict[Literal["cpu", "gpu"], list[PipRequirement]]] = {}
    versions: dict[Name, VersionEntry]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def __init__(self, **data):
        if "import" in data:
            data["import_"] = data.pop("import")
        super().__init__(**data)


class CompatData(_Strict):
    bases: dict[Name, Base]
    toolchains: dict[Name, Toolchain]
    frameworks: dict[Name, FrameworkEntry]


@dataclass(frozen=True)
class ImageChoice:
    """A buildable (framework, version, toolchain) combination and everything needed to render it."""

    framework: str
    version: str
    toolchain: str
    python: str
    base_name: str
    base: Base
    device: str
    pip: tuple[str, ...]
    index_url: Optional[str]
    apt: tuple[str, ...]
    constraints: tuple[str, ...]
    backend: Optional[str] = None
    extra_pip: tuple[str, ...] = ()
    openmpi: Optional[str] = None
    note: Optional[str] = None
    labels: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True)
class Dropped:
    framework: str
    version: str
    toolchain: str
    reason: str


@lru_cache(maxsize=4)
def load_compat(path: Path = COMPAT_PATH) -> CompatData:
    data, lines = load_yaml(path, "compatibility data", option="images/compat.yaml")
    if not isinstance(data, dict):
        raise UserError(f"{path}: the compatibility data must be a mapping (bases, toolchains, frameworks). "
                        f"This file is project data; restore it from the repository.")
    try:
        compat = CompatData.model_validate(data)
    except (ValidationError, TypeError) as exc:
        err = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        loc = data_loc(data, err["loc"])
        msg = printable(err["msg"].removeprefix("Value error, "))
        raise UserError(f"{path}: key `{format_path(loc)}` (line {lines.get(loc, '?')}): {msg}. "
                        f"This file is project data; fix the entry.") from None
    for tc_name, tc in compat.toolchains.items():
        for base in (tc.plain, tc.registry):
            if base not in compat.bases:
                raise UserError(f"{path}: toolchains.{tc_name} names base `{base}`, which `bases:` lacks.")
    for fw_name, fw in compat.frameworks.items():
        for ver, entry in fw.versions.items():
            _specifier(entry.python, f"{path}: frameworks.{fw_name}.versions.{ver}.python")
            for tc_name, inst in entry.toolchains.items():
                if tc_name not in compat.toolchains:
                    raise UserError(f"{path}: frameworks.{fw_name}.versions.{ver} names toolchain "
                                    f"`{tc_name}`, which `toolchains:` lacks.")
                if inst.base and inst.base not in compat.bases:
                    raise UserError(f"{path}: frameworks.{fw_name}.versions.{ver}.toolchains.{tc_name} "
                                    f"names base `{inst.base}`, which `bases:` lacks.")
    return compat


def _specifier(text: str, where: str) -> SpecifierSet:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise UserError(f"{where}: `{text}` is not a version range like `>=3.10,<3.14`.") from None


def resolve(compat: CompatData, framework: str, version: str, toolchain: str, *, base_choice: str,
            base_override: Optional[str] = None, python_override: Optional[str] = None,
            backend: Optional[str] = None, extra_pip: tuple[str, ...] = ()) -> ImageChoice | Dropped:
    """Decide whether one combination can be built; a Dropped says why not."""
    fw = compat.frameworks[framework]
    entry = fw.versions[version]

    def drop(reason: str) -> Dropped:
        return Dropped(framework, version, toolchain, reason)

    install = entry.toolchains.get(toolchain)
    if install is None:
        offered = ", ".join(entry.toolchains) or "none"
        return drop(f"{fw.display} {version} has no build for {toolchain} (it has: {offered})")
    tc = compat.toolchains[toolchain]
    base_name = base_override or install.base or getattr(tc, base_choice)
    base = compat.bases[base_name]
    if base.preinstalled and base.preinstalled != framework:
        return drop(f"base {base_name} ships {base.preinstalled}, not {framework}")
    python = python_override or base.python
    if python != base.python:
        return drop(f"base {base_name} provides Python {base.python}, the matrix asks for Python {python}")
    if Version(python) not in _specifier(entry.python, "images/compat.yaml"):
        return drop(f"{fw.display} {version} needs Python {entry.python}; "
                    f"base {base_name} ({base.os}) provides {python}")
    pip = tuple(install.pip)
    if fw.backends:
        backend = backend or next(iter(fw.backends))
        if backend not in fw.backends:
            return drop(f"{fw.display} has no backend {backend!r} (it has: {', '.join(fw.backends)})")
        pip += tuple(fw.backends[backend][tc.device])
    elif backend:
        return drop(f"{fw.display} takes no backend option")
    return ImageChoice(
        framework=framework, version=version, toolchain=toolchain, python=python, base_name=base_name,
        base=base, device=tc.device, pip=pip, index_url=install.index_url, apt=tuple(entry.apt),
        constraints=tuple(entry.constraints), backend=backend if fw.backends else None,
        extra_pip=tuple(extra_pip), openmpi=entry.openmpi, note=install.note)
