"""Where the run-to-run noise comes from: the same cells in N fresh processes (containers) of one run.

    python benchmarks/bench_process_noise.py [--processes 8] [--profile cpu] [--device cpu]
        [--only FW,...] [--workload W ...] [--results-dir DIR] [--run RUN_ID] [--json OUT]

Runs the selection once through `python -m runner run` with the profile's `repeats` set to --processes (a
copy of matrix.yaml in a temporary file; nothing else changes), so each cell runs in that many fresh
containers, round-robin over the selected cells (with one cell: back to back). With --run it only reads an
existing run. Per timed cell it reports the spread of the per-process headlines (images/s): the standard
deviation of their logarithms (~ the relative process-to-process noise) and its range, next to the median
relative half-width of the within-process 95 % intervals. If the processes of one run spread as widely as
two runs half an hour apart do (benchmarks/RESULTS.md, reproducibility), the noise is per process; if they
agree far better, it is the host drifting between runs.

Exit codes: 0 measured, 1 the run crashed or left no timed cell, 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402

from runner import DEFAULT_MATRIX, ROOT  # noqa: E402

console = Console(highlight=False, width=None if sys.stdout.isatty() else 250)


def with_repeats(profile: str, processes: int, out: Path) -> Path:
    """A copy of matrix.yaml with `profiles.<profile>.repeats: processes`; nothing else changed."""
    import yaml
    data = yaml.safe_load(DEFAULT_MATRIX.read_text(encoding="utf-8"))
    data.setdefault("profiles", {}).setdefault(profile, {})["repeats"] = processes
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def per_cell(run_dir: Path) -> dict:
    """cell id -> [(images/s, relative half-width of its 95 % interval or None)] over its processes."""
    out: dict = {}
    for path in sorted(run_dir.glob("*.json")):
        r = json.loads(path.read_text())
        m = r.get("metrics") or {}
        rate, ci = m.get("samples_per_s"), m.get("samples_per_s_ci")
        if r.get("status") != "ok" or not isinstance(rate, (int, float)) or rate <= 0 or not m.get("headline"):
            continue
        half = (ci[1] - ci[0]) / 2 / rate if isinstance(ci, list) and len(ci) == 2 else None
        out.setdefault(r["cell"]["id"], []).append((float(rate), half))
    return out


def summarise(cells: dict) -> list[dict]:
    rows = []
    for cell, values in sorted(cells.items()):
        if len(values) < 2:
            continue
        logs = [math.log(v) for v, _ in values]
        halves = [h for _, h in values if h is not None]
        rows.append({"cell": cell, "processes": len(values), "median_rate": statistics.median(v for v, _ in values),
                     "process_sd": statistics.stdev(logs), "min_over_max": min(v for v, _ in values) / max(
                         v for v, _ in values), "within_half": statistics.median(halves) if halves else None})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu", "auto"])
    ap.add_argument("--only", default="pytorch,keras")
    ap.add_argument("--workload", default="alexnet-fwd")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "results")
    ap.add_argument("--run", help="only read this existing run")
    ap.add_argument("--json", type=Path)
    opts = ap.parse_args()
    if opts.processes < 2:
        console.print("error: --processes must be at least 2 (a spread needs two processes)")
        return 2
    run_id = opts.run
    if run_id is None:
        run_id = "noise-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        with tempfile.TemporaryDirectory() as tmp:
            matrix = with_repeats(opts.profile, opts.processes, Path(tmp) / "matrix.yaml")
            cmd = [sys.executable, "-m", "runner", "run", "--matrix", str(matrix), "--profile", opts.profile,
                   "--device", opts.device, "--only", opts.only, "--workload", opts.workload,
                   "--results-dir", str(opts.results_dir), "--run-id", run_id]
            console.print("running: " + " ".join(cmd))
            code = subprocess.call(cmd, cwd=str(ROOT))
        if code not in (0, 1):
            console.print(f"error: the run exited {code}")
            return 1
    rows = summarise(per_cell(opts.results_dir / run_id))
    if not rows:
        console.print(f"error: run {run_id} has no timed cell with two or more ok processes")
        return 1
    console.print(f"\nrun {run_id}: per cell, its processes' images/s\n")
    console.print("| cell | processes | median images/s | process-to-process sd (log) | min / max | "
                  "within-process ± (median) |")
    console.print("|---|---|---|---|---|---|")
    for r in rows:
        within = f"{r['within_half'] * 100:.1f} %" if r["within_half"] is not None else "-"
        console.print(f"| {r['cell']} | {r['processes']} | {r['median_rate']:.3g} | {r['process_sd'] * 100:.1f} % "
                      f"| {r['min_over_max']:.3f} | {within} |")
    pooled = math.sqrt(statistics.mean(r["process_sd"] ** 2 for r in rows))
    console.print(f"\npooled process-to-process sd: {pooled * 100:.1f} % over {len(rows)} cell(s)")
    if opts.json:
        opts.json.write_text(json.dumps({"run": run_id, "cells": rows, "pooled_process_sd": pooled}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
