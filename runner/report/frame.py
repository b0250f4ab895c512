"""Report stage, data layer: results -> one tidy pandas DataFrame, labels and number formats."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pandas as pd
from tabulate import tabulate

from bench.contract import DATASET_NAMES, FRAMEWORK_NAMES  # one owner, shared with bench
from bench.measure import median, median_ci
from runner.errors import UserError
from runner.results import load_run


class ReportError(UserError):
    """A user-facing report problem (bad input, unknown baseline, README without markers)."""


BACKEND_NAMES = {
    "tensorflow": "TF", "jax": "JAX", "torch": "PyTorch", "pytorch": "PyTorch",
    "cntk": "CNTK", "theano": "Theano", "numpy": "NumPy", "mxnet": "MXNet",
}
# Option keys already shown by the framework name, or not worth a label.
# backend/api are in the framework name already; the rest are workload counts and
# hyper-parameters the runner passes as options, not variants of a framework.
_LABEL_SKIP_OPTIONS = {"backend", "api", "eval_batches", "lr", "momentum", "log_every", "verify_checksums"}
_OPTION_NAMES = {"xla": "XLA", "mkl": "MKL", "amp": "AMP", "jit": "JIT", "compile": "compile",
                 "cudnn_benchmark": "cudnn.benchmark", "tf32": "TF32"}
_LAYOUTS = {"channels_last": "NHWC", "channels_first": "NCHW", "nhwc": "NHWC", "nchw": "NCHW"}

MODEL_NAMES = {"inception3": "InceptionV3", "resnet50": "ResNet-50", "vgg16": "VGG16", "alexnet": "Alexnet",
               "nasnet": "Nasnet"}

# Cell identity (what must be equal for two results to be "the same cell").
CELL_KEY = ["machine", "framework", "version", "toolchain", "python", "workload", "model", "dataset",
            "synthetic", "batch", "precision", "device", "gpus", "options_key"]
COMPARE_KEY = CELL_KEY + ["iterations", "epochs", "warmup"]

# tidy column <- json_normalize column
_COLUMNS = {
    "run_id": "cell.run_id",
    "cell_id": "cell.id",
    "framework": "cell.framework",
    "requested_version": "cell.framework_version",
    "toolchain": "cell.toolchain",
    "python": "cell.python",
    "image": "cell.image",
    "workload": "cell.workload",
    "model": "cell.model",
    "dataset": "cell.dataset",
    "synthetic": "cell.synthetic",
    "batch": "cell.batch_size",
    "precision": "cell.precision",
    "device": "cell.device",
    "gpus": "cell.gpus",
    "iterations": "cell.iterations",
    "epochs": "cell.epochs",
    "warmup": "cell.warmup",
    "profile": "cell.profile",
    "repeat": "cell.repeat",
    "status": "status",
    "message": "message",
    "step_n": "metrics.step_time_s.n",
    "step_mean_s": "metrics.step_time_s.mean",
    "step_median_s": "metrics.step_time_s.median",
    "step_std_s": "metrics.step_time_s.std",
    "step_min_s": "metrics.step_time_s.min",
    "step_max_s": "metrics.step_time_s.max",
    "step_p95_s": "metrics.step_time_s.p95",
    "step_jitter_s": "metrics.step_time_s.jitter",
    "timed_wall_s": "metrics.timed_wall_s",
    "head_s": "metrics.headline.value",
    "head_low_s": "metrics.headline.ci_low",
    "head_high_s": "metrics.headline.ci_high",
    "head_rel": "metrics.headline.rel_half_width",
    "head_target": "metrics.headline.target_rel_half_width",
    "head_n": "metrics.headline.n",
    "stop_reason": "metrics.headline.stop_reason",
    "timed_steps": "metrics.timed_steps",
    "warmup_steps": "metrics.warmup_steps",
    "compile_s": "metrics.compile_s",
    "warmup_s": "metrics.warmup_s",
    "samples_per_s": "metrics.samples_per_s",
    "train_time_s": "metrics.train_time_s",
    "total_time_s": "metrics.total_time_s",
    "test_accuracy": "metrics.test_accuracy",
    "inference_time_s": "metrics.inference_time_s",
    "peak_memory_bytes": "metrics.peak_memory_bytes",
    "param_count": "metrics.param_count",
    "flops_per_sample": "metrics.flops_per_sample",
    "achieved_tflops": "metrics.achieved_tflops",
    "mfu": "metrics.mfu",
    "energy_j": "metrics.energy_j",
    "cudnn_rnn": "metrics.cudnn_rnn",
    "oom_batch_size": "metrics.oom_batch_size",
    # how the adapter ran the framework (bench.adapters.base.Adapter.settings)
    "set_layout": "metrics.settings.layout",
    "set_graph": "metrics.settings.graph",
    "set_precision_method": "metrics.settings.precision_method",
    "set_loss_scaler": "metrics.settings.loss_scaler",
    "set_tf32": "metrics.settings.tf32",
    "set_threads": "metrics.settings.threads",
    "reported_version": "environment.framework_version",
    "cuda": "environment.cuda",
    "cudnn": "environment.cudnn",
    "env_machine": "environment.machine",
    "hostname": "environment.hostname",
    "cpu_model": "environment.cpu_model",
    "cpu_cores": "environment.cpu_cores",
    "cpu_affinity": "environment.cpu_affinity",
    "ram_bytes": "environment.ram_bytes",
    "os": "environment.os",
    "env_python": "environment.python",
    "env_gpus": "environment.gpus",
    "started_at": "started_at",
    "finished_at": "finished_at",
}
_NUMERIC = ["batch", "gpus", "iterations", "epochs", "warmup", "repeat", "head_s", "head_low_s", "head_high_s",
            "head_rel", "head_target", "head_n", "timed_steps", "warmup_steps", "compile_s", "warmup_s",
            "rate_low", "rate_high", "step_n", "step_mean_s", "step_median_s",
            "step_std_s", "step_min_s", "step_max_s", "step_p95_s", "step_jitter_s", "timed_wall_s",
            "samples_per_s", "train_time_s", "total_time_s", "test_accuracy", "inference_time_s",
            "peak_memory_bytes", "param_count", "flops_per_sample", "achieved_tflops", "mfu", "energy_j",
            "oom_batch_size", "cpu_cores", "ram_bytes"]

# Column order of the tidy frame (and of results.csv).
FRAME_COLUMNS = [
    "run_id", "cell_id", "machine", "framework", "framework_label", "version", "requested_version",
    "reported_version", "toolchain", "python", "image", "workload", "model", "dataset", "synthetic",
    "batch", "precision", "device", "gpus", "iterations", "epochs", "warmup", "profile", "repeat", "options",
    "options_key", "status", "message",
    "head_s", "head_low_s", "head_high_s", "head_rel", "head_target", "head_n", "ci_missed", "stop_reason",
    "rate_low", "rate_high", "timed_steps", "warmup_steps", "compile_s", "warmup_s",
    "step_n", "step_mean_s", "step_median_s", "step_std_s", "step_min_s", "step_max_s", "step_p95_s",
    "step_jitter_s", "step_rel_jitter", "timed_wall_s", "samples_per_s", "train_time_s", "total_time_s",
    "test_accuracy", "inference_time_s", "peak_memory_bytes", "param_count", "flops_per_sample",
    "achieved_tflops", "mfu", "energy_j", "samples_per_j", "cudnn_rnn", "oom_batch_size",
    "set_layout", "set_graph", "set_precision_method", "set_loss_scaler", "set_tf32", "set_threads",
    "hostname", "cpu_model", "cpu_cores", "cpu_affinity", "ram_bytes", "gpu_name", "gpu_count", "gpu_memory_bytes",
    "gpu_driver", "gpu_sm_clock_mhz", "os", "env_python", "cuda", "cudnn", "started_at", "finished_at",
]


# ------------------------------------------------------------------ labels

def ran_version(requested, reported):
    """The version a row is labelled with: what actually ran.  The local backend may meet another
    version than the matrix asked for; a local build label (2.15.0+cu132) of the requested version
    is the same release.  Cells that never started report nothing and keep the requested version."""
    if not isinstance(reported, str) or not reported:
        return requested
    if isinstance(requested, str) and reported.split("+", 1)[0] == requested:
        return requested
    return reported


def _typed_value(value):
    """bench records `--option` values as the strings it was given ("true", "2"); the runner writes
    a never-started cell's options with their YAML types. One form, so both group and label alike."""
    if not isinstance(value, str):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _typed_options(options) -> dict:
    return {k: _typed_value(v) for k, v in (options or {}).items()}


def _option_text(key: str, value) -> str:
    if key in ("layout", "data_format"):
        return _LAYOUTS.get(str(value).lower(), str(value).upper())
    name = _OPTION_NAMES.get(key, key)
    if isinstance(value, bool):
        if key in ("xla",):
            return f"with {name}" if value else f"no {name}"
        return name if value else f"no {name}"
    return f"{name}={value}"


def options_label(options: Optional[dict]) -> str:
    """Options worth showing next to the framework name, e.g. 'NCHW with XLA'."""
    parts = []
    for key in sorted((options or {})):
        value = options[key]
        if key in _LABEL_SKIP_OPTIONS or value is None:
            continue
        if key == "optimizer" and str(value).lower() == "sgd":
            continue
        parts.append(_option_text(key, value))
    return " ".join(parts)


def framework_label(framework: str, version: Optional[str], options: Optional[dict] = None) -> str:
    """Display name of a framework build: 'PyTorch 2.15.0', 'Keras 3.15.1 (TF)', 'Gluon (MXNet 1.9.1)'."""
    options = options or {}
    name = FRAMEWORK_NAMES.get(framework, framework)
    ver = f" {version}" if version else ""
    backend = options.get("backend")
    if framework == "mxnet" and str(options.get("api", "")).lower() == "gluon":
        return f"Gluon (MXNet{ver})"
    if backend:
        return f"{name}{ver} ({BACKEND_NAMES.get(str(backend).lower(), str(backend))})"
    return f"{name}{ver}"


# ------------------------------------------------------------------ loading

def load_runs(run_dirs: Iterable) -> list[dict]:
    results = []
    for run_dir in run_dirs:
        results.extend(load_run(run_dir))
    return results


def _gpu_field(gpus, field: str):
    if isinstance(gpus, list) and gpus and isinstance(gpus[0], dict):
        return gpus[0].get(field)
    return None


def build_frame(results: Sequence[dict]) -> pd.DataFrame:
    """One row per result (cell x run), every metric flattened. Empty frame with all columns when none."""
    if not results:
        return pd.DataFrame(columns=FRAME_COLUMNS)
    flat = pd.json_normalize(list(results), max_level=3)
    flat = flat.reindex(columns=sorted(set(flat.columns) | set(_COLUMNS.values())))
    df = pd.DataFrame({name: flat[src] for name, src in _COLUMNS.items()})
    rate_ci = [(r.get("metrics") or {}).get("samples_per_s_ci") for r in results]
    df["rate_low"] = [c[0] if isinstance(c, list) and len(c) == 2 else None for c in rate_ci]
    df["rate_high"] = [c[1] if isinstance(c, list) and len(c) == 2 else None for c in rate_ci]
    df["options"] = pd.Series([_typed_options(r.get("cell", {}).get("options")) for r in results], index=df.index)
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["synthetic"] = df["synthetic"].map(lambda v: bool(v) if isinstance(v, bool) else False)
    df["cudnn_rnn"] = df["cudnn_rnn"].map(lambda v: v if isinstance(v, bool) else None).astype(object)
    df["version"] = [ran_version(req, rep) for req, rep in zip(df["requested_version"], df["reported_version"])]
    df["options_key"] = df["options"].map(lambda o: json.dumps(o, sort_keys=True, default=str))
    df["framework_label"] = [framework_label(f, v if isinstance(v, str) else None, o)
                             for f, v, o in zip(df["framework"], df["version"], df["options"])]
    # machine: what the runner named it; for results without one (e.g. broken files) the run's
    # machine, then the host name.
    run_machine = df.groupby("run_id")["env_machine"].transform(
        lambda s: s.dropna().iloc[0] if s.dropna().nunique() == 1 else None)
    # object dtype first: a column of only missing values is float, and filling it with text is deprecated
    df["machine"] = (df["env_machine"].astype(object).fillna(run_machine).fillna(df["hostname"])
                     .fillna("unknown machine").astype(str))
    df["gpu_name"] = df["env_gpus"].map(lambda g: _gpu_field(g, "name"))
    df["gpu_count"] = df["env_gpus"].map(lambda g: len(g) if isinstance(g, list) else 0)
    df["gpu_memory_bytes"] = pd.to_numeric(df["env_gpus"].map(lambda g: _gpu_field(g, "memory_bytes")),
                                           errors="coerce")
    df["gpu_driver"] = df["env_gpus"].map(lambda g: _gpu_field(g, "driver"))
    df["gpu_sm_clock_mhz"] = pd.to_numeric(df["env_gpus"].map(lambda g: _gpu_field(g, "sm_clock_mhz")),
                                           errors="coerce")
    df["step_rel_jitter"] = df["step_jitter_s"] / df["step_median_s"]
    # a CI that misses its target (or is no 95 % interval at all: too few samples) is marked `~`
    df["ci_missed"] = df["head_s"].notna() & df["head_target"].notna() & ~(df["head_rel"] <= df["head_target"])
    df["samples_per_j"] = df["samples_per_s"] * df["timed_wall_s"] / df["energy_j"]
    df.loc[~(df["energy_j"] > 0), "samples_per_j"] = math.nan
    df = df.drop(columns=["env_gpus", "env_machine"])
    return df[FRAME_COLUMNS].sort_values(["run_id", "machine", "workload", "cell_id"], kind="stable") \
        .reset_index(drop=True)


def _key_text(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def key_series(df: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One string per row identifying it by `columns`, independent of dtypes (1 == 1.0, None == NaN)."""
    if df.empty:
        return pd.Series([], index=df.index, dtype=object)
    return df[list(columns)].map(_key_text).agg("\x1f".join, axis=1)


UNUSABLE_PREFIX = "unusable result file"


def _combine_repeats(g: pd.DataFrame) -> pd.Series:
    """One row for several processes (cell.repeat) of one cell in one run: the headline is the median
    of the per-process medians, its CI the order-statistic interval over those per-process values
    (min..max and marked `~` below 6 processes, where no 95 % interval exists)."""
    ok = g[(g["status"] == "ok") & g["head_s"].notna()]
    if len(ok) < 2:
        return (ok if len(ok) else g).iloc[-1]
    values = [float(v) for v in ok["head_s"]]
    low, high, coverage = median_ci(values)
    mid = median(values)
    row = ok.iloc[0].copy()
    batch = float(row["batch"]) * max(1.0, float(row["gpus"]) if row["device"] == "gpu" and _isnum(row["gpus"])
                                      else 1.0)
    row["head_s"], row["head_low_s"], row["head_high_s"] = mid, low, high
    row["head_rel"] = (high - low) / 2.0 / mid if coverage >= 0.95 and mid > 0 else math.nan
    row["head_n"] = float(ok["head_n"].sum())
    row["timed_steps"] = float(ok["timed_steps"].sum()) if ok["timed_steps"].notna().all() else math.nan
    row["samples_per_s"] = batch / mid
    row["rate_low"], row["rate_high"] = batch / high, batch / low
    row["ci_missed"] = not (row["head_rel"] <= row["head_target"]) if _isnum(row["head_target"]) else \
        not (coverage >= 0.95)
    row["repeat"] = float(len(ok))  # in a combined row: how many processes stand behind it
    return row


def run_order(df: pd.DataFrame) -> dict:
    """run id -> rank, oldest first: by the last finish time its results record, then by id (run ids such as
    20261122-061500-ab12 sort by time, but a named run, --run-id cpu-idle-1006, need not)."""
    finished = df["finished_at"].astype(str).str.slice(0, 19).where(df["finished_at"].notna(), "")
    last = finished.groupby(df["run_id"].astype(str)).max()
    ranked = sorted(last.index, key=lambda r: (last[r], r))
    return {r: i for i, r in enumerate(ranked)}


def latest_cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: the latest run's result of it. A file that could not be read does not replace an older
    readable result of the cell; several processes of one cell in that run (cell.repeat) become one row."""
    if df.empty:
        return df
    keyed = df.assign(_key=key_series(df, CELL_KEY),
                      _unusable=df["message"].astype(str).str.startswith(UNUSABLE_PREFIX))
    has_usable = keyed.groupby("_key")["_unusable"].transform(lambda s: (~s).any())
    keyed = keyed[~(keyed["_unusable"] & has_usable)]
    order = run_order(keyed)
    keyed = keyed.assign(_order=keyed["run_id"].map(order))
    last = keyed.groupby("_key")["_order"].transform("max")
    keyed = keyed[keyed["_order"] == last].drop(columns="_order")
    counts = keyed.groupby("_key")["_key"].transform("size")
    single = keyed[counts == 1]
    parts = [single]
    for _, g in keyed[counts > 1].groupby("_key", sort=False):
        parts.append(_combine_repeats(g.sort_values("repeat", kind="stable")).to_frame().T)
    out = pd.concat(parts) if len(parts) > 1 else single
    out = out.astype({c: single[c].dtype for c in single.columns if c in out.columns}, errors="ignore")
    return out.sort_index().drop(columns=["_key", "_unusable"])


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    out["options"] = out["options_key"]
    for col in out.columns:  # 100.0 -> 100 where a column holds only whole numbers
        if out[col].dtype.kind == "f":
            vals = out[col].dropna()
            if len(vals) and (vals == vals.round()).all() and vals.abs().max() < 2**53:
                out[col] = out[col].astype("Int64")
    out.drop(columns=["options_key"]).to_csv(path, index=False, lineterminator="\n")
    return path


# ------------------------------------------------------------------ formatting

MISSING = "n/a"


def _isnum(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and not pd.isna(x)


def fmt_fixed(x, digits: int = 2, suffix: str = "") -> str:
    return f"{float(x):,.{digits}f}{suffix}" if _isnum(x) else MISSING


def fmt_pct(frac, digits: int = 1) -> str:
    return f"{float(frac) * 100:.{digits}f}" if _isnum(frac) else MISSING


def fmt_bytes_gib(n) -> str:
    return f"{float(n) / 2**30:.1f} GiB" if _isnum(n) else MISSING


def sec_digits(x) -> int:
    """Decimals that show a seconds value to ~3 significant digits, at least 3 (the seed's format)."""
    if not _isnum(x) or x <= 0:
        return 3
    return max(3, -math.floor(math.log10(abs(float(x)))) + 2)


def fmt_sec_batch(x, digits: Optional[int] = None) -> str:
    if not _isnum(x):
        return MISSING
    return f"{float(x):.{digits if digits is not None else sec_digits(x)}f}"


def short(text, limit: int = 60) -> str:
    """First line of a message (the last line of a Python traceback), cut to `limit` characters."""
    lines = [ln.strip() for ln in str(text or "").strip().splitlines() if ln.strip()]
    line = (lines[-1] if lines and lines[0].startswith("Traceback") else lines[0]) if lines else ""
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def status_text(row) -> str:
    """How a non-ok cell shows in a table; '' for ok cells."""
    status = row["status"]
    if status == "ok":
        return ""
    if status == "oom":
        batch = row["oom_batch_size"] if _isnum(row["oom_batch_size"]) else row["batch"]
        return f"OOM at batch {int(batch)}" if _isnum(batch) else "OOM"
    if status == "unsupported":
        reason = short(row["message"])
        return f"unsupported: {reason}" if reason else "unsupported"
    return str(status)


def value_or_status(row, text: str) -> str:
    return text if row["status"] == "ok" else status_text(row)


def md_escape(text) -> str:
    return " ".join(str(text).split("\n")).replace("|", "\\|")


def md_table(headers: Sequence[str], rows: Sequence[Sequence], align: Optional[Sequence[str]] = None) -> str:
    """A GitHub pipe table, columns padded (tabulate), cells escaped; numbers must be pre-formatted."""
    rows = [[md_escape(c) for c in r] for r in rows]
    headers = [md_escape(h) for h in headers]
    align = list(align) if align else ["left"] + ["right"] * (len(headers) - 1)
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)


def source_line(df: pd.DataFrame) -> str:
    """The line that precedes every table: which machine(s) and run(s) its numbers come from."""
    machines = sorted(df["machine"].astype(str).unique())
    runs = sorted(df["run_id"].astype(str).unique())
    m = ", ".join(f"**{md_escape(x)}**" for x in machines)
    r = ", ".join(f"`{x}`" for x in runs)
    return f"Measured on {m} (run{'s' if len(runs) > 1 else ''} {r})."


_QUAL_FORMAT = {
    "device": lambda v: "CPU" if v == "cpu" else "GPU",
    "gpus": lambda v: f"{int(v)} GPU{'s' if int(v) != 1 else ''}" if _isnum(v) else "",
    "gpu_count_q": lambda v: f"{int(v)} GPU{'s' if int(v) != 1 else ''}" if _isnum(v) else "",
    "toolchain": lambda v: str(v) if isinstance(v, str) else "",
    "python": lambda v: f"py{v}" if isinstance(v, str) else "",
    "precision": lambda v: str(v),
    "batch": lambda v: f"batch {int(v)}" if _isnum(v) else "",
    "dataset": lambda v: DATASET_NAMES.get(v, str(v)) if isinstance(v, str) else "",
    "model": lambda v: MODEL_NAMES.get(v, str(v)) if isinstance(v, str) else "",
    "iterations": lambda v: f"{int(v)} iterations" if _isnum(v) else "",
    "epochs": lambda v: f"{int(v)} epochs" if _isnum(v) else "",
    "warmup": lambda v: f"warmup {int(v)}" if _isnum(v) else "",
}
DEFAULT_QUALIFIERS = ("device", "gpu_count_q", "toolchain", "python", "precision", "batch", "dataset", "model",
                      "iterations", "epochs", "warmup")


def row_labels(df: pd.DataFrame, qualifiers: Sequence[str] = DEFAULT_QUALIFIERS,
               mark_synthetic: bool = True, base: Optional[pd.Series] = None) -> pd.Series:
    """framework label + options, then in parentheses the qualifiers that differ between rows
    sharing that label (so every row of a table is told apart), and '(synthetic)'."""
    if df.empty:
        return pd.Series([], dtype=object)
    if base is None:
        opts = df["options"].map(options_label)
        base = df["framework_label"] + opts.map(lambda s: f" {s}" if s else "")
    parts = pd.Series([[] for _ in range(len(df))], index=df.index)
    for q in qualifiers:
        col = df["gpus"].where(df["device"] == "gpu") if q == "gpu_count_q" else df[q]
        text = col.map(_key_text)
        known = pd.DataFrame({"base": base, "v": text})[text != ""]
        varies = base.map(known.groupby("base")["v"].nunique()).fillna(0) > 1
        for idx in df.index[varies.astype(bool)]:
            text = _QUAL_FORMAT[q](col[idx])
            if text:
                parts[idx].append(text)
    if mark_synthetic:
        for idx in df.index[df["synthetic"].astype(bool)]:
            parts[idx].append("synthetic")
    return base + parts.map(lambda p: f" ({', '.join(p)})" if p else "")


def slug(text: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in str(text))
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-") or "x"
