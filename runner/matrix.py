"""Matrix stage: read matrix.yaml, validate it (pydantic), apply a profile and expand it into cells.

Expansion is a plain cartesian product of the matrix's lists, minus `exclude`,
plus `include` (the CI-matrix rules users know), checked against the
compatibility data. Every combination that cannot be built is kept, with its
reason, in `Plan.dropped`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, Strict, ValidationError, \
    field_validator, model_validator

from bench.workloads import DATASETS, SYNTHETIC_MODELS, WORKLOADS
from runner.compat import CompatData, Dropped, ImageChoice, load_compat, resolve
from runner.errors import UserError, data_loc as _data_loc, format_path
from runner.validate import check_name, check_option_key, check_option_value, check_requirement, id_value, printable
from runner.yamlfile import load_yaml

Precision = Literal["fp32", "fp16", "bf16", "amp"]
Device = Literal["gpu", "cpu"]
# Every string of the matrix is validated before it can reach a template, a path or a pip command line:
# names and option keys come from a safe alphabet (they become cell ids and file names), requirements are
# parsed by `packaging`, numbers are strict (YAML's `true` is not batch size 1) and bounded.
Name = Annotated[str, Strict(), AfterValidator(check_name)]
OptionKey = Annotated[str, Strict(), AfterValidator(check_option_key)]
OptionValue = Annotated[Union[bool, int, float, str], PlainValidator(check_option_value)]
PipRequirement = Annotated[str, Strict(), AfterValidator(check_requirement)]
PositiveInt = Annotated[int, Strict(), Field(gt=0, le=10 ** 9)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0, le=10 ** 9)]
GpuCount = Annotated[int, Strict(), Field(gt=0, le=64)]
BatchSize = Annotated[int, Strict(), Field(gt=0, le=1 << 20)]
Seconds = Annotated[int, Strict(), Field(gt=0, le=7 * 24 * 3600)]
Options = dict[OptionKey, OptionValue]
# Plans bigger than this are refused before they are built (10^6 cells took minutes and GBs);
# DLBENCH_MAX_CELLS raises it.
DEFAULT_MAX_CELLS = 10_000


def _unique(values, what):
    if values is not None and len(set(values)) != len(values):
        counts = Counter(values)  # not values.count: quadratic on a long hostile list
        dupes = sorted({str(v) for v, n in counts.items() if n > 1})
        raise ValueError(f"duplicate {what}: {', '.join(dupes[:10])}")
    return values


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FrameworkSpec(_Strict):
    versions: list[Name] = Field(min_length=1)
    extra_pip: list[PipRequirement] = []
    base: Optional[Name] = None
    python: Optional[Name] = None
    options: Options = {}

    @field_validator("versions")
    @classmethod
    def _versions_unique(cls, v):
        return _unique(v, "versions")


class Variant(_Strict):
    """One more cell per variant, with these options on top of the framework's and workload's
    (seed 001 compares NHWC/NCHW with and without XLA in one table); `framework` limits it to one."""
    framework: Optional[Name] = None
    options: Options = Field(min_length=1)


Repeats = Annotated[int, Strict(), Field(gt=0, le=100)]
Fraction = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
Budget = Annotated[float, Field(ge=0, le=24 * 3600, allow_inf_nan=False)]


class Calibration(_Strict):
    """How bench samples a timed workload (bench/measure.py): warm up until steady, then time steps until the
    95 % CI of the median is within target_ci of it, or the budget is spent. 0 budgets: exactly the
    workload's warmup/iterations (smoke). min_samples raises the workload's iterations (the sample minimum) to
    what a 95 % interval needs (6: fewer samples have no distribution-free 95 % interval of the median)."""
    target_ci: Optional[Fraction] = None
    min_samples: Optional[Annotated[int, Strict(), Field(gt=0, le=100000)]] = None
    time_budget_s: Optional[Budget] = None
    warmup_budget_s: Optional[Budget] = None
    max_warmup: Optional[Annotated[int, Strict(), Field(ge=0, le=100000)]] = None
    max_steps: Optional[Annotated[int, Strict(), Field(gt=0, le=10_000_000)]] = None
    steady_tolerance: Optional[Fraction] = None


class Sweep(_Strict):
    """`sweep:` (or `batch_sizes: auto`): batches start, start*factor, ... up to max, run smallest first; the
    first out-of-memory ends the sweep and the larger batches are not run (recorded unsupported, with why)."""
    start: Optional[BatchSize] = None      # default: the workload's default batch size
    factor: Annotated[int, Strict(), Field(ge=2, le=16)] = 2
    max: BatchSize = 1 << 16

    def batches(self, default_start: int) -> list[int]:
        out, batch = [], self.start or default_start
        while batch <= self.max:
            out.append(batch)
            batch *= self.factor
        return out


# calibration key -> the bench flag that carries it
CALIBRATION_FLAGS = {"target_ci": "--target-ci", "time_budget_s": "--time-budget",
                     "warmup_budget_s": "--warmup-budget", "max_warmup": "--max-warmup", "max_steps": "--max-steps",
                     "steady_tolerance": "--steady-tolerance", "min_samples": "--min-samples"}


class WorkloadSpec(_Strict):
    # a list, or `auto`: the sweep below with its defaults
    batch_sizes: Optional[Union[list[BatchSize], Literal["auto"]]] = Field(default=None, min_length=1)
    sweep: Optional[Sweep] = None
    precisions: Optional[list[Precision]] = Field(default=None, min_length=1)
    iterations: Optional[PositiveInt] = None
    epochs: Optional[PositiveInt] = None
    warmup: Optional[NonNegativeInt] = None
    eval_batches: Optional[PositiveInt] = None
    gpus: Optional[list[GpuCount]] = Field(default=None, min_length=1)
    devices: Optional[list[Device]] = Field(default=None, min_length=1)
    datasets: Optional[list[Name]] = Field(default=None, min_length=1)
    models: Optional[list[Name]] = Field(default=None, min_length=1)
    synthetic: Optional[Annotated[bool, Strict()]] = None
    timeout_s: Optional[Seconds] = None
    # the container's memory limit in GB (default: most of the host's memory; see runner/backends/docker.py)
    memory_gb: Optional[Annotated[float, Field(gt=0, le=1 << 16, allow_inf_nan=False)]] = None
    repeats: Optional[Repeats] = None
    calibration: Optional[Calibration] = None
    options: Options = {}
    variants: Optional[list[Variant]] = Field(default=None, min_length=1, max_length=500)

    @field_validator("batch_sizes", "precisions", "gpus", "devices", "datasets", "models")
    @classmethod
    def _lists_unique(cls, v, info):
        return v if v == "auto" else _unique(v, info.field_name)

    @model_validator(mode="after")
    def _one_batch_source(self):
        if self.sweep is not None and isinstance(self.batch_sizes, list):
            raise ValueError("give `batch_sizes: [...]` or `sweep: {start, factor, max}`, not both (a sweep "
                             "chooses its own batch sizes; `batch_sizes: auto` is a sweep with the defaults)")
        if self.sweep is not None and self.sweep.start is not None and self.sweep.start > self.sweep.max:
            raise ValueError(f"sweep.start ({self.sweep.start}) is larger than sweep.max ({self.sweep.max}): "
                             f"the sweep would have no batch size")
        return self

    def swept(self) -> Optional[Sweep]:
        """The sweep this workload asks for, if any."""
        if self.sweep is not None:
            return self.sweep
        return Sweep() if self.batch_sizes == "auto" else None

    def batch_list(self, default: int) -> list[int]:
        sweep = self.swept()
        if sweep is not None:
            return sweep.batches(default)
        return list(self.batch_sizes or [default])


class Rule(_Strict):
    framework: Optional[Name] = None
    version: Optional[Name] = None
    toolchain: Optional[Name] = None
    python: Optional[Name] = None
    workload: Optional[Name] = None
    model: Optional[Name] = None
    dataset: Optional[Name] = None
    batch_size: Optional[BatchSize] = None
    precision: Optional[Precision] = None
    device: Optional[Device] = None
    gpus: Optional[Annotated[int, Strict(), Field(ge=0, le=64)]] = None




class Profile(_Strict):
    timeout_s: Optional[Seconds] = None
    # fresh processes (containers) per cell; the tables show the median over them with its interval
    repeats: Optional[Repeats] = None
    calibration: Optional[Calibration] = None
    workloads: dict[Name, WorkloadSpec] = {}


REGISTRY_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$"


class MatrixFile(_Strict):
    base: Literal["plain", "registry"] = "plain"
    profile: Name = "auto"
    device: Literal["auto", "gpu", "cpu"] = "auto"
    frameworks: dict[Name, FrameworkSpec] = Field(min_length=1)
    toolchains: list[Name] = Field(min_length=1)
    workloads: dict[Name, Optional[WorkloadSpec]] = Field(min_length=1)
    # every rule is matched against every cell: bounded, like the cell count
    include: list[Rule] = Field(default=[], max_length=500)
    exclude: list[Rule] = Field(default=[], max_length=500)
    profiles: dict[Name, Profile] = {}
    # host[:port][/prefix] of an image registry the Slurm backend pushes to and its jobs pull from by digest
    registry: Optional[str] = Field(default=None, pattern=REGISTRY_PATTERN)

    @field_validator("toolchains")
    @classmethod
    def _toolchains_unique(cls, v):
        return _unique(v, "toolchains")


RULE_KEYS = tuple(Rule.model_fields)
DEFAULT_TIMEOUT_S = 3600


@dataclass(frozen=True, slots=True)
class Cell:
    """One benchmark run: one container, one result file."""

    framework: str
    version: str
    toolchain: str
    python: str
    workload: str
    model: Optional[str]
    dataset: Optional[str]
    batch_size: int
    precision: str
    device: str
    gpus: int
    iterations: Optional[int]
    epochs: Optional[int]
    warmup: Optional[int]
    eval_batches: Optional[int]
    synthetic: bool
    timeout_s: int
    options: tuple[tuple[str, Any], ...]
    image: ImageChoice = field(compare=False, hash=False, repr=False)
    variant: tuple[tuple[str, Any], ...] = ()   # the variant's own options, part of the id
    memory_gb: Optional[float] = field(default=None, compare=False, hash=False)
    repeats: int = field(default=1, compare=False, hash=False)   # processes the cell runs in
    repeat: int = 0                                               # which of them this is (0: the only one)
    calibration: tuple[tuple[str, Any], ...] = field(default=(), compare=False, hash=False)
    # part of a batch sweep: its batches run smallest first and stop at the first out-of-memory
    sweep: bool = field(default=False, compare=False, hash=False)

    @property
    def key(self) -> tuple:
        return (self.framework, self.version, self.toolchain, self.python, self.workload, self.model,
                self.dataset, self.batch_size, self.precision, self.device, self.gpus, self.variant)

    @property
    def id(self) -> str:
        parts = [self.framework, self.version, self.toolchain, f"py{self.python}", self.workload]
        if self.model:
            parts.append(self.model)
        if self.dataset:
            parts.append(self.dataset)
        parts += [f"b{self.batch_size}", self.precision, f"{self.device}{self.gpus if self.gpus else ''}"]
        for key, value in self.variant:
            parts += [key, id_value(value)]  # injective: see runner.validate.id_value
        return "-".join(parts)

    @property
    def name(self) -> str:
        """The cell's file name stem (result, log, staging): its id, plus .r<k> for the k-th of several
        processes (repeats)."""
        return self.id if not self.repeat else f"{self.id}.r{self.repeat}"

    def field(self, name: str):
        return getattr(self, name)

    @property
    def sweep_key(self) -> tuple:
        """What the cells of one batch sweep share: everything but the batch size."""
        return self.key[:7] + self.key[8:]   # Cell.key without batch_size


@dataclass
class Plan:
    matrix_path: Path
    profile: str
    device: str
    cells: list[Cell]
    dropped: list[Dropped]
    images: list[ImageChoice]
    skipped_note: Optional[str] = None
    registry: Optional[str] = None


# ---------------------------------------------------------------- loading

def _allowed(names) -> str:
    return ", ".join(str(n) for n in names)


def _explain(loc, err, model_fields_by_loc) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = loc[:-1]
        allowed = model_fields_by_loc(parent)
        return f"unknown key `{loc[-1]}`" + (f"; allowed keys: {allowed}" if allowed else "")
    if kind == "missing":
        return "this key is required"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and kind not in ("too_short", "value_error"):
        got = repr(err["input"])
        msg += f" (got {got if len(got) <= 80 else got[:77] + '...'})"
    return printable(msg)


def _fields_at(loc) -> str:
    """Allowed keys of the model at a location, for 'unknown key' messages."""
    if not loc:
        return _allowed(MatrixFile.model_fields)
    head = loc[0]
    if head == "frameworks" and len(loc) == 2:
        return _allowed(FrameworkSpec.model_fields)
    if head == "workloads" and len(loc) == 2:
        return _allowed(WorkloadSpec.model_fields)
    if head in ("include", "exclude") and len(loc) == 2:
        return _allowed(RULE_KEYS)
    if head == "profiles" and len(loc) == 2:
        return _allowed(Profile.model_fields)
    if head == "profiles" and len(loc) == 4:
        return _allowed(WorkloadSpec.model_fields)
    return ""


def _fail(path: Path, lines: dict, loc: tuple, problem: str, fix: str = "") -> UserError:
    line = lines.get(tuple(loc))
    where = f" (line {line})" if line else ""
    text = f"{path}: key `{format_path(loc)}`{where}: {problem}."
    if fix:
        text += f" {fix}"
    return UserError(printable(text))  # a hostile key or value must not break the paragraph


def load_matrix(path: Path) -> tuple[MatrixFile, dict]:
    data, lines = load_yaml(path, "matrix")
    if data is None:
        raise UserError(f"{path}: the matrix file is empty. It needs at least `frameworks:`, `toolchains:` "
                        f"and `workloads:`; see the default matrix.yaml for an example.")
    if not isinstance(data, dict):
        raise UserError(f"{path}: the matrix must be a mapping of keys (frameworks, toolchains, workloads, ...), "
                        f"not a {type(data).__name__}. See the default matrix.yaml for an example.")
    try:
        matrix = MatrixFile.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        loc = _data_loc(data, first["loc"])
        more = f" ({len(errors) - 1} more problem(s) after this one)" if len(errors) > 1 else ""
        raise _fail(path, lines, loc, _explain(loc, first, _fields_at) + more,
                    "Fix that key and run `python -m runner plan` again.") from None
    _check_names(path, lines, matrix, load_compat())
    return matrix, lines


# ---------------------------------------------------------------- semantic checks

def _check_names(path, lines, matrix: MatrixFile, compat: CompatData):
    for fw_name, fw in matrix.frameworks.items():
        if fw_name not in compat.frameworks:
            raise _fail(path, lines, ("frameworks", fw_name), f"unknown framework `{fw_name}`",
                        f"Known frameworks: {_allowed(compat.frameworks)}.")
        known = compat.frameworks[fw_name].versions
        for i, ver in enumerate(fw.versions):
            if ver not in known:
                raise _fail(path, lines, ("frameworks", fw_name, "versions", i),
                            f"unknown {fw_name} version `{ver}`",
                            f"Versions in images/compat.yaml: {_allowed(known)}; add a version there first.")
        if fw.base and fw.base not in compat.bases:
            raise _fail(path, lines, ("frameworks", fw_name, "base"), f"unknown base `{fw.base}`",
                        f"Bases in images/compat.yaml: {_allowed(compat.bases)}.")
    for i, tc in enumerate(matrix.toolchains):
        if tc not in compat.toolchains:
            raise _fail(path, lines, ("toolchains", i), f"unknown toolchain `{tc}`",
                        f"Known toolchains: {_allowed(compat.toolchains)}.")
    for wl_name, wl in matrix.workloads.items():
        _check_workload(path, lines, ("workloads", wl_name), wl_name, wl, matrix.frameworks)
    for prof_name, prof in matrix.profiles.items():
        for wl_name, wl in prof.workloads.items():
            _check_workload(path, lines, ("profiles", prof_name, "workloads", wl_name), wl_name, wl,
                            matrix.frameworks)
    for kind in ("include", "exclude"):
        for i, rule in enumerate(getattr(matrix, kind)):
            _check_rule(path, lines, (kind, i), rule, matrix, compat)


def _check_workload(path, lines, loc, name, wl: Optional[WorkloadSpec], frameworks: dict):
    if name not in WORKLOADS:
        raise _fail(path, lines, loc, f"unknown workload `{name}`", f"Known workloads: {_allowed(WORKLOADS)}.")
    if wl is None:
        return
    entry = WORKLOADS[name]
    for i, ds in enumerate(wl.datasets or ()):
        if ds not in entry["datasets"]:
            ok = _allowed(entry["datasets"]) or "none (it uses synthetic inputs)"
            raise _fail(path, lines, loc + ("datasets", i), f"workload {name} cannot use dataset `{ds}`",
                        f"Allowed: {ok}.")
    if wl.models is not None:
        if not entry.get("models"):
            raise _fail(path, lines, loc + ("models",), f"workload {name} has a fixed model",
                        "Only cnn-synthetic takes `models`.")
        for i, model in enumerate(wl.models):
            if model not in entry["models"]:
                raise _fail(path, lines, loc + ("models", i), f"unknown model `{model}`",
                            f"Allowed: {_allowed(entry['models'])}.")
    seen = set()
    for i, variant in enumerate(wl.variants or ()):
        if variant.framework is not None and variant.framework not in frameworks:
            raise _fail(path, lines, loc + ("variants", i, "framework"),
                        f"variant for `{variant.framework}`, which is not under `frameworks:`",
                        f"Use one of: {_allowed(frameworks)}, or drop `framework` to apply it to all.")
        key = (variant.framework, tuple(sorted(variant.options.items())))
        if key in seen:
            raise _fail(path, lines, loc + ("variants", i), "the same variant twice (it would run the same "
                        "cell twice)", "Remove one of them.")
        seen.add(key)


def _check_rule(path, lines, loc, rule: Rule, matrix: MatrixFile, compat: CompatData):
    if not rule.model_fields_set:
        raise _fail(path, lines, loc, "an empty rule matches every cell",
                    f"Give at least one of: {_allowed(RULE_KEYS)}.")
    checks = {
        "framework": compat.frameworks, "toolchain": compat.toolchains, "workload": WORKLOADS,
        "dataset": DATASETS, "model": SYNTHETIC_MODELS,
    }
    for key, known in checks.items():
        value = getattr(rule, key)
        if value is not None and value not in known:
            raise _fail(path, lines, loc + (key,), f"unknown {key} `{value}`", f"Allowed: {_allowed(known)}.")
    if rule.version is not None and rule.framework is not None \
            and rule.version not in compat.frameworks[rule.framework].versions:
        raise _fail(path, lines, loc + ("version",), f"unknown {rule.framework} version `{rule.version}`",
                    f"Allowed: {_allowed(compat.frameworks[rule.framework].versions)}.")


# ---------------------------------------------------------------- profiles and expansion

def _merge(base: Optional[WorkloadSpec], override: Optional[WorkloadSpec], profile: Optional[Profile] = None
           ) -> WorkloadSpec:
    """A workload's settings under a profile: the profile's own entry for it wins, then the matrix's entry,
    then the profile-wide defaults (repeats)."""
    merged = dict(base.model_dump(exclude_unset=True)) if base else {}
    if profile is not None:
        if profile.repeats and "repeats" not in merged:
            merged["repeats"] = profile.repeats
        if profile.calibration is not None:
            merged["calibration"] = {**profile.calibration.model_dump(exclude_none=True),
                                     **(merged.get("calibration") or {})}
    if override:
        over = override.model_dump(exclude_unset=True)
        if "sweep" in over or over.get("batch_sizes") == "auto":
            merged.pop("batch_sizes", None)    # the profile sweeps where the matrix lists batches
        elif "batch_sizes" in over:
            merged.pop("sweep", None)          # the profile lists batches where the matrix sweeps
        options = {**merged.get("options", {}), **over.pop("options", {})}
        merged.update(over)
        merged["options"] = options
    return WorkloadSpec(**merged)


def resolve_profile(matrix: MatrixFile, requested: Optional[str], host_has_gpu: bool, path, lines) -> str:
    name = requested or matrix.profile
    if name == "auto":
        # A matrix without a cpu profile runs its own counts everywhere.
        name = "cpu" if not host_has_gpu and "cpu" in matrix.profiles else "full"
    if name != "full" and name not in matrix.profiles:
        known = _allowed(sorted(set(matrix.profiles) | {"full", "auto"}))
        raise UserError(f"{path}: profile `{name}` is not defined under `profiles:` (known: {known}). "
                        f"Pass one of those with --profile, or add it to the matrix.")
    return name


def _rule_matches(rule: Rule, values: dict) -> bool:
    for key in rule.model_fields_set:
        if values.get(key) != getattr(rule, key):
            return False
    return True


def expand(matrix: MatrixFile, *, path: Path, lines: dict, profile: str, device: str,
           only: Optional[list[str]] = None, workloads: Optional[list[str]] = None,
           compat: Optional[CompatData] = None) -> Plan:
    """Expand a validated matrix into cells. `device` is 'gpu' or 'cpu' (auto already decided)."""
    compat = compat or load_compat()
    frameworks = dict(matrix.frameworks)
    if only:
        unknown = [f for f in only if f not in frameworks]
        if unknown:
            raise UserError(f"--only {','.join(unknown)}: not in {path} `frameworks:` "
                            f"(it has: {_allowed(frameworks)}). Add the framework to the matrix or fix the name.")
        frameworks = {k: v for k, v in frameworks.items() if k in only}
    selected_workloads = dict(matrix.workloads)
    if workloads:
        unknown = [w for w in workloads if w not in selected_workloads]
        if unknown:
            raise UserError(f"--workload {','.join(unknown)}: not in {path} `workloads:` "
                            f"(it has: {_allowed(selected_workloads)}).")
        selected_workloads = {k: v for k, v in selected_workloads.items() if k in workloads}

    prof = matrix.profiles.get(profile, Profile())
    default_timeout = prof.timeout_s or DEFAULT_TIMEOUT_S

    # Images: one per buildable (framework, version, toolchain).
    images: dict[tuple[str, str, str], ImageChoice] = {}
    dropped: list[Dropped] = []
    wanted_toolchains = [t for t in matrix.toolchains
                         if device == "gpu" or compat.toolchains[t].device == "cpu"]
    skipped_note = None
    if device == "cpu" and len(wanted_toolchains) < len(matrix.toolchains):
        skipped_note = ("device cpu: GPU toolchains (" +
                        ", ".join(t for t in matrix.toolchains if t not in wanted_toolchains) +
                        ") not planned; their workloads run on the cpu toolchain")
    for fw_name, fw in frameworks.items():
        backend = fw.options.get("backend")
        for ver in fw.versions:
            for tc in wanted_toolchains:
                choice = resolve(compat, fw_name, ver, tc, base_choice=matrix.base, base_override=fw.base,
                                 python_override=fw.python, backend=backend, extra_pip=tuple(fw.extra_pip))
                if isinstance(choice, Dropped):
                    dropped.append(choice)
                else:
                    images[(fw_name, ver, tc)] = choice

    cells: list[Cell] = []
    seen: set = set()
    limit = max_cells()
    merged = {name: _merge(spec, prof.workloads.get(name), prof) for name, spec in selected_workloads.items()}
    for name, wl in merged.items():
        default_batch = WORKLOADS[name]["defaults"]["batch_size"]
        if wl.swept() is not None and not wl.batch_list(default_batch):
            raise UserError(f"{path}: `workloads.{name}` sweeps from batch {default_batch} (the workload's default "
                            f"start) but its `max` is {wl.swept().max}, so the sweep has no batch size. Give the "
                            f"sweep a `start` at or below `max`, or a larger `max`.")
    count = sum(_count_cells(name, wl, images, frameworks, device) for name, wl in merged.items())
    if count > limit:
        raise _too_many(path, count, limit)
    for wl_name, wl in merged.items():
        cells.extend(_workload_cells(wl_name, wl, images, frameworks, device, default_timeout))

    cells = [c for c in cells if not any(_rule_matches(r, _rule_values(c)) for r in matrix.exclude)]
    for c in cells:
        seen.add(c.key)

    for i, rule in enumerate(matrix.include):
        added = _include(rule, matrix, prof, images, frameworks, device, default_timeout, compat)
        if not added:
            raise _fail(path, lines, ("include", i),
                        "this include asks for a combination that cannot run: " + _why_not(rule, compat, matrix,
                                                                                           device, images),
                        "Remove it, or change it to a combination images/compat.yaml supports.")
        for c in added:
            if c.key in seen:
                raise _fail(path, lines, ("include", i), f"duplicate cell {c.id}: the matrix already has it",
                            "Remove the include entry or narrow it.")
            seen.add(c.key)
            cells.append(c)
        if len(cells) > limit:
            raise _too_many(path, len(cells), limit)

    _check_ids_unique(cells, path)
    if not cells:
        reason = "every combination was excluded or dropped"
        if dropped:
            reason += " (e.g. " + dropped[0].reason + ")"
        raise UserError(f"{path}: the matrix is empty after expansion: {reason}. "
                        f"Check `frameworks:`, `toolchains:` and `exclude:`, or run with --device gpu/cpu "
                        f"to match the toolchains listed.")
    return Plan(matrix_path=path, profile=profile, device=device, cells=cells, dropped=dropped,
                images=list(images.values()), skipped_note=skipped_note, registry=matrix.registry)


def max_cells() -> int:
    raw = os.environ.get("DLBENCH_MAX_CELLS", "")
    if not raw:
        return DEFAULT_MAX_CELLS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"DLBENCH_MAX_CELLS={printable(raw)[:40]}: expected a positive number of cells (the limit "
                        f"on a plan's size; default {DEFAULT_MAX_CELLS}). Set it to a number or unset it.")
    return value


def _too_many(path, count: int, limit: int) -> UserError:
    return UserError(f"{path}: the matrix expands to {count} cells, more than the limit of {limit} (each cell is "
                     f"one container run). Narrow `batch_sizes:`, `models:`, `precisions:` or `variants:`, select "
                     f"with --only/--workload, or raise the limit with DLBENCH_MAX_CELLS={count}.")


def _count_cells(wl_name: str, wl: WorkloadSpec, images: dict, frameworks: dict, device: str) -> int:
    """How many cells _workload_cells would make, without making them (a 10^6-cell matrix is refused
    before it costs minutes and GBs)."""
    entry = WORKLOADS[wl_name]
    devices = ["cpu"] if device == "cpu" else (wl.devices or ["gpu"])
    per_image = len(wl.models or entry.get("models") or [None]) * len(wl.datasets or [None]) * \
        len(wl.batch_list(entry["defaults"]["batch_size"])) * len(wl.precisions or [None])
    total = 0
    for image in images.values():
        if image.device not in devices:
            continue
        variants = sum(1 for v in wl.variants or () if v.framework in (None, image.framework)) or 1
        gpu_counts = len(wl.gpus or [1]) if image.device == "gpu" else 1
        total += per_image * variants * gpu_counts
    return total


def describe_cell(c: Cell) -> str:
    text = f"{c.framework} {c.version} {c.toolchain} py{c.python} {c.workload}"
    text += "".join(f" {v}" for v in (c.model, c.dataset) if v)
    text += f" b{c.batch_size} {c.precision} {c.device} gpus={c.gpus}"
    text += "".join(f" {k}={v!r}" for k, v in c.variant)
    return printable(text)


def _check_ids_unique(cells: list[Cell], path) -> None:
    """Two different cells must never share a result file. Compared case-folded: on a case-insensitive
    file system NHWC.json and nhwc.json are one file."""
    by_id: dict[str, Cell] = {}
    for c in cells:
        other = by_id.setdefault(c.id.casefold(), c)
        if other is not c and other.key != c.key:
            raise UserError(f"{path}: two different cells get the same id {c.id!r} (so the same result file): "
                            f"[{describe_cell(other)}] and [{describe_cell(c)}]. Make their variant options "
                            f"differ by more than letter case or punctuation, or drop one of them.")


def processes(cells: list[Cell]) -> list[Cell]:
    """What the run stage runs: each cell once, or, with `repeats: N`, N times (repeat 1..N), each in a fresh
    process and with a result file of its own. Round-robin: every cell's first process, then every cell's
    second, ... so a cell's processes are spread over the run and the interval over them sees the host's
    drift (a shared host is faster or slower for minutes at a time), not only process-to-process noise."""
    rounds = max((c.repeats for c in cells), default=1)
    return [c if c.repeats <= 1 else dataclasses.replace(c, repeat=k)
            for k in range(1, rounds + 1) for c in cells if k <= max(c.repeats, 1)]


def _rule_values(c: Cell) -> dict:
    return {k: getattr(c, k) for k in RULE_KEYS}


def _workload_cells(wl_name: str, wl: WorkloadSpec, images: dict, frameworks: dict, device: str,
                    default_timeout: int, only_image: Optional[ImageChoice] = None) -> list[Cell]:
    entry = WORKLOADS[wl_name]
    defaults = entry["defaults"]
    devices = ["cpu"] if device == "cpu" else (wl.devices or ["gpu"])
    models = wl.models or (list(entry["models"]) if entry.get("models") else [None])
    datasets = wl.datasets or ([defaults["dataset"]] if defaults.get("dataset") else [None])
    batch_sizes = wl.batch_list(defaults["batch_size"])
    swept = wl.swept() is not None
    precisions = wl.precisions or ["fp32"]
    out = []
    for image in ([only_image] if only_image else images.values()):
        if image.device not in devices:
            continue
        fw_options = dict(frameworks[image.framework].options)
        # no variant for this framework: one cell with the framework's and workload's options
        variants = [tuple(sorted(v.options.items())) for v in wl.variants or ()
                    if v.framework in (None, image.framework)] or [()]
        gpu_counts = (wl.gpus or [1]) if image.device == "gpu" else [0]
        for model, dataset, batch, precision, gpus, variant in itertools.product(
                models, datasets, batch_sizes, precisions, gpu_counts, variants):
            options = tuple(sorted({**fw_options, **wl.options, **dict(variant)}.items()))
            out.append(Cell(
                framework=image.framework, version=image.version, toolchain=image.toolchain,
                python=image.python, workload=wl_name, model=model,
                dataset=None if wl.synthetic else dataset, batch_size=batch, precision=precision,
                device=image.device, gpus=gpus,
                iterations=wl.iterations if wl.iterations is not None else defaults.get("iterations"),
                epochs=wl.epochs if wl.epochs is not None else defaults.get("epochs"),
                warmup=wl.warmup if wl.warmup is not None else defaults.get("warmup"),
                eval_batches=wl.eval_batches if wl.eval_batches is not None else defaults.get("eval_batches"),
                synthetic=bool(wl.synthetic), timeout_s=wl.timeout_s or default_timeout,
                options=options, image=image, variant=variant, memory_gb=wl.memory_gb,
                repeats=wl.repeats or 1,
                calibration=tuple(sorted(wl.calibration.model_dump(exclude_none=True).items()))
                if wl.calibration else (), sweep=swept))
    return out


def _include(rule: Rule, matrix, prof, images, frameworks, device, default_timeout, compat) -> list[Cell]:
    """Cells an include rule adds: keys it gives are fixed, the rest expand over the matrix."""
    wl_names = [rule.workload] if rule.workload else list(matrix.workloads)
    out = []
    for wl_name in wl_names:
        base = matrix.workloads.get(wl_name)
        wl = _merge(base, prof.workloads.get(wl_name), prof)
        overrides = {}
        if rule.batch_size is not None:
            overrides["batch_sizes"] = [rule.batch_size]
            overrides["sweep"] = None   # one named batch, not a sweep
        if rule.precision is not None:
            overrides["precisions"] = [rule.precision]
        if rule.gpus is not None:
            overrides["gpus"] = [rule.gpus] if rule.gpus else None
        if rule.model is not None:
            overrides["models"] = [rule.model]
        if rule.dataset is not None:
            overrides["datasets"] = [rule.dataset]
        if rule.device is not None:
            overrides["devices"] = [rule.device]
        wl = WorkloadSpec(**{**wl.model_dump(exclude_unset=True), **overrides})
        for image in images.values():
            if rule.framework and image.framework != rule.framework:
                continue
            if rule.version and image.version != rule.version:
                continue
            if rule.toolchain and image.toolchain != rule.toolchain:
                continue
            if rule.python and image.python != rule.python:
                continue
            out.extend(_workload_cells(wl_name, wl, images, frameworks, device, default_timeout, image))
    return [c for c in out if all(getattr(c, k) == getattr(rule, k) for k in rule.model_fields_set)]


def _why_not(rule: Rule, compat: CompatData, matrix: MatrixFile, device: str, images: dict) -> str:
    if rule.framework and rule.framework not in matrix.frameworks:
        return f"framework {rule.framework} is not in `frameworks:`"
    if rule.toolchain and device == "cpu" and compat.toolchains[rule.toolchain].device == "gpu":
        return f"toolchain {rule.toolchain} needs a GPU and this plan is for --device cpu"
    if rule.framework and rule.toolchain:
        fw = matrix.frameworks[rule.framework]
        reasons = []
        for version in ([rule.version] if rule.version else fw.versions):
            if version not in compat.frameworks[rule.framework].versions:
                continue
            choice = resolve(compat, rule.framework, version, rule.toolchain, base_choice=matrix.base,
                             base_override=fw.base, python_override=rule.python or fw.python,
                             backend=fw.options.get("backend"))
            if isinstance(choice, Dropped):
                reasons.append(choice.reason)
        if reasons:
            return "; ".join(reasons)
    if rule.framework and rule.version and rule.version not in matrix.frameworks[rule.framework].versions:
        return f"{rule.framework} {rule.version} is not in `frameworks.{rule.framework}.versions`"
    if rule.device == "cpu" and rule.gpus:
        return "a CPU cell has no GPUs"
    return "no buildable image matches all of its keys"
