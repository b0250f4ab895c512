"""Result files: one JSON document per benchmark cell, validated by bench/schema/result-v1.json.

Layout: ``results/<run-id>/<cell-id>.json``; run ids sort chronologically.
Used by the run stage (writing) and the report stage (reading).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import secrets
import socket
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional

import jsonschema

from runner import BENCH_DIR
from runner.errors import UserError

SCHEMA_PATH = BENCH_DIR / "schema" / "result-v1.json"
SCHEMA_VERSION = 1
FAILURE_STATUSES = ("error", "timeout", "interrupted")
CELL_REQUIRED = ("framework", "workload", "batch_size", "precision", "device", "gpus")


class ResultError(UserError):
    """A result file that is missing, unparseable or invalid; the message is one line."""


@lru_cache(maxsize=1)
def _schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


@lru_cache(maxsize=1)
def _validator():
    schema = _schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _error_path(err) -> str:
    out = ""
    for part in err.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(top level)"


def validate_result(obj) -> list[str]:
    """Schema errors as 'path: message' strings, sorted by path; [] when `obj` is valid."""
    errors = sorted(_validator().iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{_error_path(e)}: {e.message}" for e in errors]


def _refuse_constant(name):
    raise ValueError(f"{name} is not a JSON number; a measurement that is {name} is not a result")


def load_result(path) -> dict:
    """Read and validate one result file; ResultError (one line) when it is missing, unparseable or invalid."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultError(f"{path}: result file is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultError(f"{path}: cannot read result file ({e})") from None
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise ResultError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except ValueError as e:  # NaN / Infinity: Python's json accepts them, JSON does not
        raise ResultError(f"{path}: not valid JSON ({e})") from None
    errors = validate_result(obj)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ResultError(f"{path}: does not match {SCHEMA_PATH.name}: {errors[0]}{more}")
    return obj


def write_result(path, obj) -> None:
    """Write `obj` as JSON atomically (temp file in the same directory, then os.replace).

    Refuses to overwrite an existing file (ResultError): a result, once written, is evidence.
    """
    path = Path(path)
    if path.exists():
        raise ResultError(f"{path}: result file already exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n"

    def refuse_if_appeared():  # a file that appeared meanwhile is still not overwritten
        if path.exists():
            raise ResultError(f"{path}: result file already exists; refusing to overwrite it")

    atomic_write_text(path, data, mode=0o644, before_replace=refuse_if_appeared)


def atomic_write_text(path: Path, text: str, mode: int, before_replace=None) -> None:
    """Write text to a temp file beside `path`, fsync, then os.replace: readers never see half a file.
    `mode` is the final permission (mkstemp makes 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _host_environment() -> dict:
    return {
        "framework_version": None,
        "cuda": None,
        "cudnn": None,
        "gpus": [],
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "machine": os.environ.get("DLBENCH_MACHINE") or None,
    }


def error_result(cell: dict, status: str, message: str, log_tail: Iterable[str] = (),
                 started_at: Optional[str] = None) -> dict:
    """A schema-valid result for a cell that wrote none (status error, timeout or interrupted)."""
    if status not in FAILURE_STATUSES:
        raise ValueError(f"error_result: status must be one of {FAILURE_STATUSES}, not {status!r}")
    props = _schema()["properties"]["cell"]["properties"]
    cell = {k: v for k, v in dict(cell).items() if k in props}
    now = _now()
    obj = {
        "schema_version": SCHEMA_VERSION,
        "cell": cell,
        "status": status,
        "message": str(message),
        "metrics": {},
        "environment": _host_environment(),
        "log_tail": [str(line) for line in log_tail],
        "started_at": started_at or now,
        "finished_at": now,
    }
    return obj


def run_dirs(results_root) -> list[Path]:
    """Run directories under `results_root`, oldest first (run ids sort chronologically)."""
    root = Path(results_root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def latest_run(results_root) -> Optional[Path]:
    dirs = run_dirs(results_root)
    return dirs[-1] if dirs else None


_ID_RE = re.compile(
    r"^(?P<framework>[a-z0-9_]+)-(?P<version>[^-]+)-(?P<toolchain>.+?)-py(?P<python>\d[\d.]*)-(?P<rest>.+)"
    r"-b(?P<batch>\d+)-(?P<precision>fp32|fp16|bf16|amp)-(?P<device>cpu|gpu)(?P<gpus>\d*)(?:-.*)?$")


def _cell_from_id(stem: str) -> dict:
    """Cell fields read back from a cell id (runner.matrix.Cell.id) used as a file name; {} if it is not one."""
    from bench.workloads import DATASETS, WORKLOADS

    m = _ID_RE.match(stem)
    if not m:
        return {}
    rest = m["rest"]
    workload = next((w for w in sorted(WORKLOADS, key=len, reverse=True)
                     if rest == w or rest.startswith(w + "-")), None)
    if workload is None:
        return {}
    cell = {"framework": m["framework"], "framework_version": m["version"], "toolchain": m["toolchain"],
            "python": m["python"], "workload": workload, "batch_size": int(m["batch"]),
            "precision": m["precision"], "device": m["device"],
            "gpus": int(m["gpus"]) if m["gpus"] else (1 if m["device"] == "gpu" else 0)}
    extra = rest[len(workload) + 1:]
    for ds in sorted(DATASETS, key=len, reverse=True):
        if extra == ds or extra.endswith("-" + ds):
            cell["dataset"] = ds
            extra = extra[: -len(ds)].rstrip("-")
            break
    if extra:
        cell["model"] = extra
    return cell


def _salvage_cell(obj, run_dir: Path, path: Path) -> dict:
    """The parts of a broken file's `cell` that are individually valid, plus placeholders."""
    props = _schema()["properties"]["cell"]["properties"]
    cell = {}
    raw = obj.get("cell") if isinstance(obj, dict) else None
    if isinstance(raw, dict):
        for key, value in raw.items():
            if key in props and not list(jsonschema.Draft202012Validator(props[key]).iter_errors(value)):
                cell[key] = value
    for key, value in _cell_from_id(path.stem).items():
        cell.setdefault(key, value)
    placeholders = {"framework": "unknown", "workload": "unknown", "batch_size": 1,
                    "precision": "fp32", "device": "cpu", "gpus": 0}
    for key, value in placeholders.items():
        cell.setdefault(key, value)
    cell["id"] = path.stem
    cell["run_id"] = run_dir.name
    return cell


def load_run(run_dir) -> list[dict]:
    """All results of one run, sorted by file name. A file that cannot be used becomes an
    error result whose message names the file, so that it is reported, never silently dropped."""
    run_dir = Path(run_dir)
    out = []
    for path in sorted(run_dir.glob("*.json")):
        try:
            obj = load_result(path)
        except ResultError as e:
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raw = None
            obj = error_result(_salvage_cell(raw, run_dir, path), "error",
                               f"unusable result file {path.name}: {str(e).split(': ', 1)[-1]}")
            env = raw.get("environment") if isinstance(raw, dict) else None
            if isinstance(env, dict):
                # keep what the broken file says about its machine, when it says it properly
                for key in ("machine", "hostname"):
                    if isinstance(env.get(key), str):
                        obj["environment"][key] = env[key]
            if not isinstance(env, dict) or not isinstance(env.get("machine"), str):
                obj["environment"]["machine"] = None
                obj["environment"]["hostname"] = None
            obj["log_tail"] = []
            obj["started_at"] = obj["finished_at"] = ""
        obj.setdefault("cell", {})
        obj["cell"].setdefault("run_id", run_dir.name)
        obj["cell"].setdefault("id", path.stem)
        if obj["cell"].get("run_id") is None:
            obj["cell"]["run_id"] = run_dir.name
        if obj["cell"].get("id") is None:
            obj["cell"]["id"] = path.stem
        out.append(obj)
    return out


def new_run_id() -> str:
    """'YYYYMMDD-HHMMSS-xxxx' (UTC time + 4 random hex digits): sorts chronologically."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"
