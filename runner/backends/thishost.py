"""What the backends that run cells on this host (docker, local, script) share: this host's description,
its GPUs for the scheduler to hand out, and one cell per GPU (or one CPU cell) at a time."""

from __future__ import annotations


class OnThisHost:
    def machine(self) -> str:
        from runner.gpus import machine_description
        return machine_description()

    def gpu_ids(self, plan) -> list[int]:
        from runner.gpus import host_gpus
        return [g.index for g in host_gpus()] if plan.device == "gpu" else []

    def cpu_ids(self) -> list[int]:
        import os
        try:
            return sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return []

    def default_parallel(self, plan, gpu_count: int) -> int:
        return max(1, gpu_count) if plan.device == "gpu" else 1
