"""The host's GPUs, from NVML (nvidia-ml-py) or, failing that, nvidia-smi."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional


@dataclass(frozen=True)
class HostGPU:
    index: int
    name: str
    uuid: str
    memory_bytes: Optional[int]
    compute_capability: Optional[str]


@lru_cache(maxsize=1)
def host_gpus() -> tuple[HostGPU, ...]:
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # no driver or no library: fall back to nvidia-smi, then to none
        return _from_nvidia_smi()
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h).total
            try:
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
                cc = f"{major}.{minor}"
            except pynvml.NVMLError:
                cc = None
            out.append(HostGPU(i, name if isinstance(name, str) else name.decode(),
                               uuid if isinstance(uuid, str) else uuid.decode(), int(mem), cc))
        return tuple(out)
    finally:
        pynvml.nvmlShutdown()


def _from_nvidia_smi() -> tuple[HostGPU, ...]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ()
    try:
        text = subprocess.run([smi, "--query-gpu=index,name,uuid,memory.total,compute_cap",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True,
                              timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in text.strip().splitlines():
        idx, name, uuid, mem, cc = [p.strip() for p in line.split(",")]
        gpus.append(HostGPU(int(idx), name, uuid, int(float(mem)) * 1024 * 1024, cc or None))
    return tuple(gpus)


@lru_cache(maxsize=1)
def machine_description() -> str:
    """A short description of the host for results (DLBENCH_MACHINE): hostname, CPU model, cores, GPUs."""
    if os.environ.get("DLBENCH_MACHINE"):
        return os.environ["DLBENCH_MACHINE"]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [cpu, f"{os.cpu_count()} cores"]
    try:
        gpus = host_gpus()
        if gpus:
            names = sorted({g.name for g in gpus})
            parts.append(f"{len(gpus)}x {'/'.join(names)}")
    except Exception:  # GPU discovery is best effort here
        pass
    return f"{socket.gethostname()} ({', '.join(parts)})"
