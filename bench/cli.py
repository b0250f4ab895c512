"""`python -m bench`: run one benchmark cell inside a container, write its result.

The result file (schema bench/schema/result-v1.json) is ALWAYS written,
atomically, whatever happens.  Status: ok; oom (adapter.is_oom) with
metrics.oom_batch_size; unsupported (static adapter metadata or Unsupported
raised at run time) with the reason; error with a one-line message (the
traceback goes to stderr); interrupted on SIGINT/SIGTERM.

Exit codes: 0 ok, 1 error, 2 oom, 3 unsupported, 130 interrupted, 64 usage.
"""

import argparse
import datetime
import json
import math
import numbers
import os
import platform
import signal
import sys
import tempfile
import traceback

from bench import env as envmod
from bench import measure, peaks, specs
from bench.adapters import ADAPTERS, AdapterNotAvailable, adapter_class, available
from bench.adapters.base import Unsupported
from bench.contract import CELL_KEYS, OPTIONS_FLAG, cell_record, decode_options
from bench.workloads import PRECISIONS, SYNTHETIC_MODELS, WORKLOADS, workload_model

SCHEMA_VERSION = 1
EXIT = {"ok": 0, "error": 1, "oom": 2, "unsupported": 3, "interrupted": 130, "timeout": 124}
LOG_TAIL_LINES = 60


class Interrupted(Exception):
    pass


def now_iso():
    return datetime.datetime.utcnow().replace(microsecond=0).isoformat() + "Z"


def parse_options(pairs, as_json=None):
    """Options from the runner's one JSON object (types kept), then any --option KEY=VALUE (strings)."""
    options = {}
    if as_json:
        try:
            options.update(decode_options(as_json))
        except ValueError as exc:
            raise SystemExit(str(exc))
    for pair in pairs or ():
        if "=" not in pair:
            raise SystemExit("--option takes KEY=VALUE, got %r" % pair)
        key, value = pair.split("=", 1)
        options[key.strip()] = value.strip()
    return options


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--framework", choices=list(ADAPTERS))
    ap.add_argument("--workload", choices=list(WORKLOADS))
    ap.add_argument("--model", help="cnn-synthetic: one of " + ", ".join(SYNTHETIC_MODELS))
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32")
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--warmup", type=int,
                    help="timed workloads: minimum warmup steps; warmup goes on until step time "
                         "is steady")
    cal = ap.add_argument_group(
        "calibration (timed workloads; --iterations is the minimum sample count)")
    cal.add_argument("--target-ci", type=float, default=0.02, metavar="FRACTION",
                     help="stop once the 95%% CI of the median step time is within this "
                          "relative half-width (default 0.02; 0: no target)")
    cal.add_argument("--time-budget", type=float, default=30.0, metavar="SECONDS",
                     help="stop timed sampling after this many seconds (default 30; 0: exactly "
                          "--iterations samples)")
    cal.add_argument("--min-samples", type=int, default=None, metavar="N",
                     help="at least N timed samples even when --iterations is smaller (6 is the "
                          "fewest with a 95%% interval of the median)")
    cal.add_argument("--max-steps", type=int, default=10000,
                     help="stop after this many timed steps (default 10000)")
    cal.add_argument("--max-warmup", type=int, default=100,
                     help="most warmup steps when never steady (default 100)")
    cal.add_argument("--warmup-budget", type=float, default=30.0, metavar="SECONDS",
                     help="most warmup seconds when never steady (default 30; 0: exactly "
                          "--warmup steps)")
    cal.add_argument("--steady-tolerance", type=float, default=0.10, metavar="FRACTION",
                     help="steady: the last 5 warmup steps within this of their median "
                          "(default 0.10)")
    ap.add_argument("--device", choices=("gpu", "cpu"),
                    help="default: gpu when --gpus >= 1, else cpu")
    ap.add_argument("--gpus", type=int, default=0)
    ap.add_argument("--data-dir")
    ap.add_argument("--dataset")
    ap.add_argument("--synthetic", action="store_true",
                    help="use random data of the dataset's shape (recorded in the result)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="adapter option, or a workload parameter (lr, eval_batches, ...)")
    ap.add_argument(OPTIONS_FLAG, metavar="JSON",
                    help="the options as one JSON object with their types (what the runner passes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="result JSON file")
    ap.add_argument("--list", action="store_true", help="workloads and their frameworks")
    ap.add_argument("--json", action="store_true", help="with --list: JSON output")
    ap.add_argument("--describe", action="store_true",
                    help="per workload: parameter count and forward FLOPs (JSON)")
    ap.add_argument("--selftest", action="store_true",
                    help="print framework/CUDA/cuDNN/devices and run one tiny training step")
    return ap


def _coerce(value, default):
    """An option (a typed JSON value, or an --option string) as the type of the workload default it
    overrides."""
    if not isinstance(value, str):
        return type(default)(value) if isinstance(default, (bool, int, float)) else value
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes", "on")
    for kind in (int, float):
        if isinstance(default, kind):
            return kind(value)
    return value


def resolve_params(args, options):
    """Workload defaults, overridden by CLI flags and matching --option keys."""
    entry = WORKLOADS[args.workload]
    params = dict(entry["defaults"])
    for key, value in options.items():
        if key in params:
            params[key] = _coerce(value, params[key])
        elif key in ("eval_batches", "log_every", "momentum", "lr", "verify_checksums"):
            params[key] = float(value) if key in ("momentum", "lr") else int(value)
    for flag in ("batch_size", "iterations", "epochs", "warmup"):
        value = getattr(args, flag)
        if value is not None:
            params[flag] = value
    for flag in ("target_ci", "time_budget", "max_steps", "max_warmup", "warmup_budget",
                 "steady_tolerance", "min_samples"):
        value = getattr(args, flag, None)
        if value is not None:
            params[flag] = value
    if args.dataset:
        params["dataset"] = args.dataset
    params["model"] = workload_model(args.workload, args.model)
    return params


# ------------------------------------------------------------------ --list / --describe

def cmd_list(as_json):
    adapters = available()
    rows = []
    for workload, entry in WORKLOADS.items():
        frameworks, reasons = [], {}
        for name, cls in adapters.items():
            if isinstance(cls, str):
                reasons[name] = cls
                continue
            reason = cls.unsupported_reason(workload)
            if reason:
                reasons[name] = reason
            else:
                frameworks.append(name)
        rows.append({"workload": workload, "seed": entry["seed"], "kind": entry["kind"],
                     "model": entry["model"] or "|".join(entry.get("models", ())),
                     "title": entry["title"], "frameworks": frameworks,
                     "not_available": reasons})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print("%-20s seed %s  %-5s  %-18s  %s" % (row["workload"], row["seed"], row["kind"],
                                                 row["model"], ", ".join(row["frameworks"]) or "-"))
    missing = [(n, c) for n, c in adapters.items() if isinstance(c, str)]
    for name, reason in missing:
        print("  %s: %s" % (name, reason))
    return 0


def describe_models():
    models = []
    for workload, entry in WORKLOADS.items():
        names = entry.get("models") or (entry["model"],)
        for name in names:
            models.append((workload, name))
    return models


def cmd_describe(framework, device, options):
    out = {"framework": framework, "workloads": {}}
    adapter, note = None, None
    try:
        adapter = adapter_class(framework)("cpu", 0, "fp32", options)
    except Exception as exc:  # framework missing: spec figures only
        note = "%s: %s" % (type(exc).__name__, exc)
    for workload, name in describe_models():
        spec = specs.get_spec(name)
        info = specs.infer(spec)
        record = {"model": name, "spec_param_count": info["param_count"],
                  "flops_per_sample": info["flops_per_sample"],
                  "input_shape": list(spec["input"]["shape"]), "param_count": None}
        if adapter is not None:
            try:
                record["param_count"] = int(adapter.param_count(adapter.build(spec, False)))
            except Exception as exc:
                record["error"] = "%s: %s" % (type(exc).__name__, exc)
        key = workload if workload != "cnn-synthetic" else "cnn-synthetic:" + name
        out["workloads"][key] = record
    if note:
        out["note"] = "framework not importable, spec counts only (" + note + ")"
    print(json.dumps(out, indent=2))
    return 0


def cmd_selftest(framework, device, gpus, precision, options):
    import numpy as np
    cls = adapter_class(framework)
    adapter = cls(device, gpus, precision, options)
    versions = adapter.versions()
    print("framework: %s %s" % (cls.display, versions.get("framework_version")))
    print("CUDA: %s" % versions.get("cuda"))
    print("cuDNN: %s" % versions.get("cudnn"))
    print("devices: %s" % ", ".join(adapter.devices()))
    adapter.seed(0)
    spec = specs.get_spec("lenet")
    model = adapter.build(spec)
    step = adapter.make_train_step(model, {"name": "sgd", "lr": 0.01, "momentum": 0.0,
                                           "loss": "xent"})
    rng = np.random.RandomState(0)
    x = adapter.to_device(rng.rand(2, 1, 28, 28).astype(np.float32))
    y = adapter.to_device(np.array([1, 2], dtype=np.int64))
    loss = float(adapter.to_numpy(step(x, y)))
    print("one LeNet training step (batch 2): loss %.4f" % loss)
    if not np.isfinite(loss):
        print("selftest FAILED: loss is not finite")
        return 1
    compilations = getattr(step, "compilations", None)
    if compilations is not None:
        # a step that compiles again on a later call would put compilation into timed steps
        for _ in range(3):
            adapter.to_numpy(step(x, y))
        count = int(compilations())
        print("train step compilations after 4 calls: %d" % count)
        if count != 1:
            print("selftest FAILED: the train step compiled %d times (expected once)" % count)
            return 1
    print("selftest ok")
    return 0


# ------------------------------------------------------------------ running a cell

def write_atomic(path, document):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory)
    fd, tmp = tempfile.mkstemp(prefix=".result-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            # allow_nan=False: JSON has no NaN/Infinity; a writer that emits them lies
            json.dump(document, f, indent=2, sort_keys=False, default=_json_default,
                      allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(value):
    try:
        import numpy as np
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    if isinstance(value, tuple):
        return list(value)
    raise TypeError("not JSON serializable: %r" % (value,))


def _is_bad_number(value):
    # numbers.Real covers numpy scalars too (np.float32 is no float subclass)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return not math.isfinite(float(value))


# metrics that are rates or durations: a negative value is a broken measurement
_NON_NEGATIVE = ("samples_per_s", "span_samples_per_s", "timed_wall_s", "train_time_s",
                 "total_time_s", "validation_time_s", "inference_time_s", "compile_s",
                 "warmup_s", "energy_j", "achieved_tflops", "mfu", "span_mean_step_s")


def _finite(metrics, path="metrics"):
    """JSON has no NaN/inf: replace them by None, everywhere; returns the paths replaced."""
    bad = []
    items = metrics.items() if isinstance(metrics, dict) else enumerate(metrics)
    for key, value in list(items):
        where = "%s.%s" % (path, key) if isinstance(metrics, dict) else "%s[%d]" % (path, key)
        if _is_bad_number(value):
            metrics[key] = None
            bad.append(where)
        elif isinstance(value, (dict, list)):
            bad.extend(_finite(value, where))
    return bad


def metric_problems(metrics):
    """Why these metrics must not be published: non-finite or negative rates and times."""
    problems = ["%s is not a finite number" % where for where in _finite(metrics)]
    for key in _NON_NEGATIVE:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            problems.append("metrics.%s is negative (%r)" % (key, value))
    rate = metrics.get("samples_per_s")
    if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate == 0:
        problems.append("metrics.samples_per_s is 0 (no time was measured)")
    for i, value in enumerate(metrics.get("step_times_s") or []):
        if isinstance(value, (int, float)) and value < 0:
            problems.append("metrics.step_times_s[%d] is negative (%r)" % (i, value))
            break
    return problems


class Logger(object):
    def __init__(self):
        self.lines = []

    def __call__(self, line):
        print(line)
        sys.stdout.flush()
        self.lines.append(line)


def _on_signal(signum, frame):
    raise Interrupted("interrupted by signal %d" % signum)


def run_cell(args, options):
    from bench import procedures

    started = now_iso()
    log = Logger()
    device = args.device or ("gpu" if args.gpus >= 1 else "cpu")
    gpus = args.gpus if device == "gpu" else 0
    if device == "gpu" and gpus == 0:
        gpus = 1
    entry = WORKLOADS[args.workload]
    params = resolve_params(args, options)
    dataset = params.get("dataset") if entry["datasets"] else None
    ids = envmod.cell_ids_from_env()
    cell = cell_record(framework=args.framework, workload=args.workload, model=params.get("model"),
                       dataset=dataset, synthetic=args.synthetic, batch_size=int(params["batch_size"]),
                       precision=args.precision, device=device, gpus=gpus,
                       iterations=params.get("iterations"), epochs=params.get("epochs"),
                       warmup=params.get("warmup"), options=options, python=platform.python_version(),
                       **{k: v for k, v in ids.items() if k in CELL_KEYS})
    status, message, metrics = "ok", "", {}
    versions = adapter = ctx = environment = None
    try:
        if args.workload == "cnn-synthetic" and params.get("model") not in SYNTHETIC_MODELS:
            raise ValueError("cnn-synthetic needs --model, one of %s"
                             % ", ".join(SYNTHETIC_MODELS))
        if dataset and dataset not in entry["datasets"]:
            raise ValueError("workload %s takes dataset %s, not %r"
                             % (args.workload, " or ".join(entry["datasets"]), dataset))
        cls = adapter_class(args.framework)
        reason = cls.unsupported_reason(args.workload)
        if reason:
            raise Unsupported(reason)
        adapter = cls(device, gpus, args.precision, options)
        versions = adapter.versions()
        adapter.seed(args.seed)
        for line in ["framework: %s %s, CUDA %s, cuDNN %s" % (
                cls.display, versions.get("framework_version"), versions.get("cuda"),
                versions.get("cudnn")), "devices: " + ", ".join(adapter.devices())]:
            log(line)
        environment = envmod.collect(versions)
        gpu_indices = list(range(gpus)) if device == "gpu" else []
        peak = None
        if device == "gpu" and envmod.on_mig_slice(environment["gpus"]):
            log("MFU omitted: the cell runs on a MIG slice, whose share of the GPU's peak is not known here")
        elif device == "gpu":
            names = [g["name"] for g in environment["gpus"]][:gpus]
            per_device = [peaks.peak_tflops(n, adapter.peak_precision()) for n in names]
            if per_device and len(per_device) == gpus and all(per_device):
                peak = sum(per_device)
        ctx = procedures.Context(adapter, args.workload, params, log, data_dir=args.data_dir,
                                 synthetic=args.synthetic, peak_tflops=peak,
                                 gpu_indices=gpu_indices, seed=args.seed)
        ctx.metrics["peak_math"] = adapter.peak_precision()
        energy = measure.EnergyMeter(gpu_indices)
        energy.start()
        adapter.reset_peak_memory()
        procedures.PROCEDURES[args.workload](ctx)
        if ctx.metrics.get("energy_j") is None:
            ctx.metrics["energy_j"] = energy.joules()
        if ctx.metrics.get("peak_memory_bytes") is None:
            ctx.metrics["peak_memory_bytes"] = adapter.peak_memory()
    except Unsupported as exc:
        status, message = "unsupported", str(exc)
    except AdapterNotAvailable as exc:
        status, message = "error", str(exc)
    except (Interrupted, KeyboardInterrupt) as exc:
        status, message = "interrupted", str(exc) or "interrupted"
    except BaseException as exc:
        if adapter is not None and _safe_is_oom(adapter, exc):
            status = "oom"
            message = "out of memory at batch size %d: %s" % (cell["batch_size"],
                                                               _one_line(exc))
            metrics["oom_batch_size"] = cell["batch_size"]
        elif isinstance(exc, SystemExit):
            raise
        else:
            status, message = "error", _one_line(exc)
            if not type(exc).__module__.startswith("bench"):
                message = "%s: %s" % (type(exc).__name__, message)
        traceback.print_exc(file=sys.stderr)
    if ctx is not None:
        metrics.update(ctx.metrics)
    if adapter is not None:
        metrics["settings"] = _settings(adapter)
    metrics["peak_rss_bytes"] = _peak_rss()
    problems = metric_problems(metrics)
    if problems and status == "ok":
        # a broken measurement becomes an error with the reason, never a published number
        status = "error"
        message = "invalid measurement: " + "; ".join(problems[:3])
    if environment is None:
        environment = envmod.collect(versions)
    result = {"schema_version": SCHEMA_VERSION, "cell": cell, "status": status,
              "message": message, "metrics": metrics, "environment": environment,
              "log_tail": log.lines[-LOG_TAIL_LINES:], "started_at": started,
              "finished_at": now_iso()}
    if args.out:
        write_atomic(args.out, result)
    print("status: %s%s" % (status, (" (" + message + ")") if message else ""))
    return EXIT[status]


def _one_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _settings(adapter):
    """The adapter's recorded settings, JSON scalars only; a failing settings() is noted, not fatal
    (the cell's own status says what happened to it)."""
    try:
        raw = adapter.settings()
    except Exception as exc:
        return {"error": "settings() failed: %s" % _one_line(exc)}
    return {str(k): (v if v is None or isinstance(v, (bool, int, float, str)) else str(v))
            for k, v in raw.items()}


def _safe_is_oom(adapter, exc):
    try:
        return bool(adapter.is_oom(exc))
    except Exception:
        return False


def _peak_rss():
    try:
        import resource
        # Linux reports ru_maxrss in KiB
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except Exception:
        return None


def main(argv=None):
    args = build_parser().parse_args(argv)
    options = parse_options(args.option, args.options_json)
    if args.list:
        return cmd_list(args.json)
    if not args.framework:
        print("--framework is required (or --list)", file=sys.stderr)
        return 64
    device = args.device or ("gpu" if args.gpus >= 1 else "cpu")
    if args.describe:
        return cmd_describe(args.framework, device, options)
    if args.selftest:
        return cmd_selftest(args.framework, device, max(args.gpus, 1 if device == "gpu" else 0),
                            args.precision, options)
    if not args.workload or not args.out:
        print("--workload and --out are required to run a cell", file=sys.stderr)
        return 64
    signal.signal(signal.SIGTERM, _on_signal)
    return run_cell(args, options)
