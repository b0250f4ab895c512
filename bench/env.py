"""The environment a cell ran in (the result's `environment` object).

Framework/CUDA/cuDNN versions come from the adapter (what the framework itself
reports); GPUs from NVML (pynvml, from nvidia-ml-py) when importable, else
nvidia-smi when present, else none.  Everything else from stdlib and /proc.
Each probe tolerates failure: a missing fact is null, never an exception.
"""

import hashlib
import os
import platform
import socket
import subprocess
import sys

# Runner-provided identifiers (environment variable -> where it goes).
CELL_ENV_VARS = {
    "DLBENCH_CELL_ID": "id",
    "DLBENCH_RUN_ID": "run_id",
    "DLBENCH_IMAGE": "image",
    "DLBENCH_IMAGE_ID": "image_id",
    "DLBENCH_PROFILE": "profile",
    "DLBENCH_TOOLCHAIN": "toolchain",
    "DLBENCH_FRAMEWORK_VERSION": "framework_version",
}


def cell_ids_from_env(environ=None):
    environ = os.environ if environ is None else environ
    out = dict((key, environ[var]) for var, key in CELL_ENV_VARS.items() if environ.get(var))
    # which of several processes of one cell this is (repeats); an integer in the result
    repeat = environ.get("DLBENCH_REPEAT", "").strip()
    if repeat.isdigit():
        out["repeat"] = int(repeat)
    return out


def _decode(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def visible_gpu_indices():
    """NVML indices of the GPUs the process may use (CUDA_VISIBLE_DEVICES if it
    lists plain indices; otherwise all)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    parts = [p.strip() for p in visible.split(",") if p.strip()]
    if all(p.isdigit() for p in parts):
        return [int(p) for p in parts]
    return None


def on_mig_slice(gpu_records, visible=None):
    """Whether the process runs on a MIG slice (CUDA_VISIBLE_DEVICES names MIG devices, or a visible GPU
    is in MIG mode): a slice has a fraction of the GPU's peak, so MFU against the whole GPU would be wrong."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "") if visible is None else visible
    return "MIG-" in visible or any(g.get("mig") for g in gpu_records)


def gpus_nvml():
    import pynvml
    pynvml.nvmlInit()
    try:
        driver = _decode(pynvml.nvmlSystemGetDriverVersion())
        indices = visible_gpu_indices()
        if indices is None:
            indices = range(pynvml.nvmlDeviceGetCount())
        gpus = []
        for i in indices:
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            try:
                clock = int(pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM))
            except Exception:
                clock = None
            try:
                mig = bool(pynvml.nvmlDeviceGetMigMode(h)[0])
            except Exception:   # no MIG support (pre-Ampere, or an old NVML)
                mig = False
            gpus.append({"name": _decode(pynvml.nvmlDeviceGetName(h)),
                         "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                         "driver": driver, "sm_clock_mhz": clock, "mig": mig})
        return gpus
    finally:
        pynvml.nvmlShutdown()


def gpus_nvidia_smi():
    out = subprocess.check_output(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
         "--format=csv,noheader,nounits"], stderr=subprocess.STDOUT, timeout=30)
    gpus = []
    for line in _decode(out).strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4:
            continue

        def as_int(text):
            try:
                return int(float(text))
            except ValueError:
                return None

        mib = as_int(fields[1])
        gpus.append({"name": fields[0], "memory_bytes": mib * 1024 * 1024 if mib else None,
                     "driver": fields[2] or None, "sm_clock_mhz": as_int(fields[3])})
    return gpus


def gpus():
    for probe in (gpus_nvml, gpus_nvidia_smi):
        try:
            return probe()
        except Exception:
            continue
    return []


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except (IOError, OSError):
        pass
    return platform.processor() or None


def ram_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (IOError, OSError, ValueError):
        pass
    return None


def os_name():
    try:
        with open("/etc/os-release") as f:
            fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        name = fields.get("PRETTY_NAME") or fields.get("NAME")
        if name:
            return name.strip('"')
    except (IOError, OSError):
        pass
    return platform.platform()


def pip_freeze_sha256():
    try:
        out = subprocess.check_output([sys.executable, "-m", "pip", "freeze"],
                                      stderr=subprocess.DEVNULL, timeout=120)
    except Exception:
        return None
    return hashlib.sha256(out).hexdigest()


def cpu_affinity():
    """The CPUs this process may run on (a cpuset the runner pinned it to, or every CPU), as
    compact ranges ("0-7,16"); None where the OS cannot tell."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    ranges, start, prev = [], None, None
    for c in cpus:
        if start is None:
            start = prev = c
        elif c == prev + 1:
            prev = c
        else:
            ranges.append((start, prev))
            start = prev = c
    if start is not None:
        ranges.append((start, prev))
    return ",".join(str(a) if a == b else "%d-%d" % (a, b) for a, b in ranges)


def collect(versions=None, with_pip=True):
    """The environment object; `versions` from adapter.versions() (or None)."""
    versions = versions or {}
    return {
        "framework_version": versions.get("framework_version"),
        "cuda": versions.get("cuda"),
        "cudnn": versions.get("cudnn"),
        "gpus": gpus(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_affinity": cpu_affinity(),
        "ram_bytes": ram_bytes(),
        "os": os_name(),
        "python": platform.python_version(),
        "pip_freeze_sha256": pip_freeze_sha256() if with_pip else None,
        "hostname": socket.gethostname(),
        "machine": os.environ.get("DLBENCH_MACHINE") or None,
    }


def shared_library_version(names, symbol):
    """An int version read from the first loadable shared library (cudart/cudnn), or None.

    For frameworks that do not report the CUDA/cuDNN they loaded (MXNet, CNTK).
    """
    import ctypes
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        func = getattr(lib, symbol, None)
        if func is None:
            continue
        if symbol == "cudnnGetVersion":
            func.restype = ctypes.c_size_t
            return int(func())
        value = ctypes.c_int(0)
        if func(ctypes.byref(value)) == 0:
            return int(value.value)
    return None
