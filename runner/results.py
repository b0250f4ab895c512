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
import stat
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional

import jsonschema

from runner import BENCH_DIR
from runner.errors import UserError
from runner.validate import printable

SCHEMA_PATH = BENCH_DIR / "schema" / "result-v1.json"
SCHEMA_VERSION = 1
FAILURE_STATUSES = ("error", "timeout", "interrupted", "unsupported")
CELL_REQUIRED = ("framework", "workload", "batch_size", "precision", "device", "gpus")
# A result file is a few KiB; these bound what a hostile one can cost the report.
MAX_RESULT_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 64
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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


def _depth_exceeds(obj, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:  # iterative: a deep document must not exhaust the interpreter's stack here either
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def read_json_file(path, what: str = "result file", lenient: bool = False):
    """The JSON document in a regular file (not a symlink, device or pipe) of bounded size and depth;
    ResultError (one line, naming the file) otherwise."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ResultError(f"{path}: {what} is missing") from None
    except OSError as e:
        raise ResultError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if stat.S_ISLNK(st.st_mode):
        raise ResultError(f"{path}: {what} is a symbolic link; only regular files are read (a link could point "
                          f"at any file on the host)")
    if not stat.S_ISREG(st.st_mode):
        raise ResultError(f"{path}: {what} is not a regular file (a directory, device or pipe)")
    if st.st_size > MAX_RESULT_BYTES:
        raise ResultError(f"{path}: {what} is too big ({st.st_size} bytes; the limit is {MAX_RESULT_BYTES})")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ResultError(f"{path}: {what} is not a regular file")
            data = f.read(MAX_RESULT_BYTES + 1)
    except OSError as e:
        raise ResultError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if len(data) > MAX_RESULT_BYTES:
        raise ResultError(f"{path}: {what} is too big (over {MAX_RESULT_BYTES} bytes)")
    return parse_json_bytes(data, path, what, lenient)


def parse_json_bytes(data: bytes, path, what: str = "result file", lenient: bool = False):
    """The JSON document in `data` (`path` names where it came from), of bounded depth; ResultError otherwise.
    `lenient` accepts NaN/Infinity: only for salvaging what a broken file says about its cell."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ResultError(f"{path}: cannot read {what} (not UTF-8: byte 0x{data[e.start]:02x} at offset "
                          f"{e.start})") from None
    try:
        # Python accepts NaN/Infinity; JSON does not, and a measurement that is one is no result
        obj = json.loads(text) if lenient else json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise ResultError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise ResultError(f"{path}: not a usable {what}: JSON nested too deep") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ResultError(f"{path}: not valid JSON ({printable(e)[:120]})") from None
    if _depth_exceeds(obj, MAX_JSON_DEPTH):
        raise ResultError(f"{path}: not a usable {what}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return obj


def load_result(path) -> dict:
    """Read and validate one result file; ResultError (one line) when it is missing, unparseable or invalid."""
    path = Path(path)
    return _validated(read_json_file(path), path)


def parse_result(data: bytes, name) -> dict:
    """Parse and validate a result's bytes as a backend hands them back (`name` says where they came from)."""
    if len(data) > MAX_RESULT_BYTES:
        raise ResultError(f"{name}: result file is too big ({len(data)} bytes; the limit is {MAX_RESULT_BYTES})")
    return _validated(parse_json_bytes(data, name), name)


def _validated(obj, path) -> dict:
    errors = validate_result(obj)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        first = printable(errors[0])
        first = first if len(first) <= 300 else first[:297] + "..."
        raise ResultError(f"{path}: does not match {SCHEMA_PATH.name}: {first}{more}")
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
    if path.is_symlink():
        # os.replace would turn the link into a plain file; writing through it could change any file.
        raise UserError(f"{path} is a symbolic link; dlbench does not replace or write through links. Pass the "
                        f"file it points at ({os.path.realpath(path)}) instead, or remove the link.")
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
    """A schema-valid result for a cell that wrote none (status error, timeout or interrupted), or was not run
    (unsupported: a batch sweep's batches past its out-of-memory)."""
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
                raw = read_json_file(path, lenient=True)
            except ResultError:
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


def check_run_id(value) -> str:
    """A run id names a directory directly under the results root: letters, digits and . _ - only, starting
    with a letter or digit (so never `..`, `/` or a hidden name). UserError otherwise."""
    if not isinstance(value, str) or not RUN_ID_RE.fullmatch(value):
        raise UserError(f"run id {printable(repr(value))[:120]} is refused: a run id is a plain directory name of "
                        f"letters, digits and . _ - (at most 100, starting with a letter or digit), such as "
                        f"20261122-061500-ab12. Pass such a name to --run-id/--resume.")
    return value


def inside(root, name: str) -> Path:
    """root/name, checked to stay inside root once resolved (UserError otherwise)."""
    root_path = Path(root).resolve()
    path = (root_path / name).resolve()
    if path.parent != root_path:
        raise UserError(f"{root_path / name}: leaves {root_path}; refusing to write there.")
    return path


def new_run_id() -> str:
    """'YYYYMMDD-HHMMSS-xxxx' (UTC time + 4 random hex digits): sorts chronologically."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"
