"""The run stage's options as one typed object (what `python -m runner run` was asked to do).

Backends and the scheduler read these fields, never an argparse.Namespace: a test or another front end
builds a RunOptions directly."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional, Union

from runner import ROOT


@dataclass(frozen=True)
class SlurmOptions:
    """What `--backend slurm` submits with (the cell adds GPUs, CPUs, memory and its time limit)."""
    partition: Optional[str] = None
    account: Optional[str] = None
    shared_dir: Optional[Path] = None     # a directory every node sees: the run directory lives under it
    registry: Optional[str] = None        # host:port/prefix the images are pushed to and pulled from by digest
    poll_s: float = 2.0


@dataclass(frozen=True)
class RunOptions:
    backend: str = "docker"
    results_dir: Path = ROOT / "results"
    run_id: Optional[str] = None
    resume: Optional[str] = None
    parallel: Union[int, str] = "auto"
    share_cpus: bool = False              # cells side by side share every CPU (no cpusets, CPU cells not alone)
    data_dir: Optional[Path] = None
    timeout: Optional[int] = None
    rebuild: bool = False
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    @classmethod
    def from_args(cls, args, registry: Optional[str] = None) -> "RunOptions":
        """From the CLI's Namespace (attributes it lacks keep their defaults); `registry` from matrix.yaml
        unless --registry names one."""
        values = {f.name: getattr(args, f.name) for f in fields(cls)
                  if f.name != "slurm" and getattr(args, f.name, None) is not None}
        slurm = SlurmOptions(partition=getattr(args, "slurm_partition", None),
                             account=getattr(args, "slurm_account", None),
                             shared_dir=getattr(args, "shared_dir", None),
                             registry=getattr(args, "registry", None) or registry)
        return cls(slurm=slurm, **values)
