"""Reproducibility of the tool's numbers: the same cells run twice, back to back, compared cell by cell.

    python benchmarks/bench_reproducibility.py [--profile cpu] [--device cpu] [--only FW,...]
        [--workload W ...] [--results-dir DIR] [--runs RUN_A RUN_B] [--json OUT]

Without --runs it runs `python -m runner run --profile P --device D [selection] --results-dir DIR
--run-id repro-<UTC time>-a`, then the same with `-b`, and times both. With --runs it only compares two
existing runs under --results-dir (default: the runner's, results/). The runs land in --results-dir like
any other run, so a later `python -m runner report` over that directory sees them.

Throughput cells are the cells ok in both runs with a timed headline (median step time and its interval).
For each: both runs' images/s with their intervals (`~` marks an interval that is not a 95 % one: the
min..max of fewer than 6 samples), both relative half-widths, whether the intervals overlap, whether B's
headline lies inside A's interval, and B/A of the rates (= A's median step time / B's).

Goals: the intervals of >= 95 % of the cells overlap; the median relative half-width over both runs'
intervals is <= 5 %, an interval that is not a 95 % one counting as missing it. How often B's headline
lies inside A's interval is reported, not judged: with honest 95 % intervals only about 83 % are expected.

Exit codes: 0 comparison done (goals met or not: it is a measurement), 1 a runner run crashed or its
results are unusable, 2 usage error (unknown run, no throughput cells in common, a runner usage error),
130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from runner import ROOT  # noqa: E402

OVERLAP_GOAL = 0.95       # fraction of cells whose two intervals overlap
REL_HALF_WIDTH_GOAL = 0.05  # median relative half-width of the intervals
# P(B's median inside A's 95 % interval) when both estimate one median with equal spread: about 0.83
EXPECTED_INSIDE = 0.83

# Wide when piped (as the runner's console), so a logged table keeps one line per cell.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 250)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 250)


class UsageProblem(Exception):
    """Bad input: one paragraph, exit 2."""


class RunProblem(Exception):
    """A runner run that crashed or left nothing to compare: one paragraph, exit 1 (or the code given)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


# ------------------------------------------------------------------ statistics (pure)

def _known(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def intervals_overlap(a_low, a_high, b_low, b_high) -> Optional[bool]:
    """Whether [a_low, a_high] and [b_low, b_high] share a point; None when a bound is missing."""
    if not all(_known(x) for x in (a_low, a_high, b_low, b_high)):
        return None
    return a_low <= b_high and b_low <= a_high


def lies_within(value, low, high) -> Optional[bool]:
    """Whether low <= value <= high; None when any of them is missing."""
    if not all(_known(x) for x in (value, low, high)):
        return None
    return low <= value <= high


def compare_cell(cell_id: str, a: dict, b: dict) -> dict:
    """One throughput cell's figures. `a`/`b`: head_s, head_low_s, head_high_s (median step time and its
    interval, s), head_rel (relative half-width; None when the interval is not a 95 % one), samples_per_s,
    rate_low, rate_high. Overlap and inside are judged on step times, where the intervals were computed."""
    ratio = a["head_s"] / b["head_s"] if _known(a["head_s"]) and _known(b["head_s"]) and b["head_s"] > 0 \
        else None
    return {
        "cell_id": cell_id,
        "a": dict(a),
        "b": dict(b),
        "overlap": intervals_overlap(a["head_low_s"], a["head_high_s"], b["head_low_s"], b["head_high_s"]),
        "b_inside_a": lies_within(b["head_s"], a["head_low_s"], a["head_high_s"]),
        "ratio_b_over_a": ratio,
    }


def summarize(cells: list[dict], overlap_goal: float = OVERLAP_GOAL,
              rel_goal: float = REL_HALF_WIDTH_GOAL) -> dict:
    """The comparison's summary over compare_cell results. Fractions are over all cells: an overlap or
    inside that cannot be said (a bound missing) counts as no. Every interval that is not a 95 % one
    (head_rel None) counts as missing the half-width goal: it enters the median as infinitely wide."""
    n = len(cells)
    overlaps = sum(1 for c in cells if c["overlap"] is True)
    insides = sum(1 for c in cells if c["b_inside_a"] is True)
    widths, without_95 = [], []
    for c in cells:
        for run in ("a", "b"):
            rel = c[run]["head_rel"]
            if _known(rel):
                widths.append(float(rel))
            else:
                without_95.append({"cell_id": c["cell_id"], "run": run})
    all_widths = sorted(widths + [math.inf] * len(without_95))
    median_all = _median(all_widths)
    ratios = [c["ratio_b_over_a"] for c in cells if _known(c["ratio_b_over_a"])]
    overlap_fraction = overlaps / n if n else None
    return {
        "cells": n,
        "overlap_count": overlaps,
        "overlap_unknown": sum(1 for c in cells if c["overlap"] is None),
        # min..max intervals of a few samples: their overlap is judged too, but says less
        "overlap_cells_without_95": sum(1 for c in cells if not (_known(c["a"]["head_rel"])
                                                                  and _known(c["b"]["head_rel"]))),
        "overlap_fraction": overlap_fraction,
        "overlap_goal": overlap_goal,
        "overlap_goal_met": overlap_fraction is not None and overlap_fraction >= overlap_goal,
        "inside_count": insides,
        "inside_fraction": insides / n if n else None,
        "inside_expected": EXPECTED_INSIDE,
        "intervals": 2 * n,
        "intervals_95": len(widths),
        "intervals_without_95": without_95,
        # None: no median (no cells) or an infinite one (half or more of the intervals are not 95 % ones)
        "median_rel_half_width": median_all if median_all is not None and math.isfinite(median_all) else None,
        "median_rel_half_width_95_only": _median(sorted(widths)),
        "rel_half_width_goal": rel_goal,
        "rel_half_width_goal_met": median_all is not None and median_all <= rel_goal,
        "ratio_median": _median(sorted(ratios)),
        "ratio_min": min(ratios) if ratios else None,
        "ratio_max": max(ratios) if ratios else None,
    }


def _median(ordered: list[float]) -> Optional[float]:
    if not ordered:
        return None
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    low, high = ordered[mid - 1], ordered[mid]
    return high if math.isinf(high) else (low + high) / 2.0  # inf + x stays inf; no nan from inf - inf


def status_mismatches(statuses_a: dict, statuses_b: dict) -> list[dict]:
    """Cells of both runs that are ok in one and not the other, sorted by cell id."""
    return [{"cell_id": cell_id, "a": statuses_a[cell_id], "b": statuses_b[cell_id]}
            for cell_id in sorted(set(statuses_a) & set(statuses_b))
            if (statuses_a[cell_id] == "ok") != (statuses_b[cell_id] == "ok")]


# ------------------------------------------------------------------ running

def runner_command(opts, run_id: str) -> list[str]:
    cmd = [sys.executable, "-m", "runner", "run", "--profile", opts.profile, "--device", opts.device]
    if opts.only:
        cmd += ["--only", ",".join(opts.only)]
    if opts.workload:
        cmd += ["--workload", ",".join(opts.workload)]
    return cmd + ["--results-dir", str(opts.results_dir), "--run-id", run_id]


def run_once(cmd: list[str], run_dir: Path) -> dict:
    """Run the runner with its output on this terminal; stderr is also kept to tell a crash (a Python
    traceback also exits 1) from cells that did not end ok (exit 1 as well)."""
    console.print(Text(f"$ python {' '.join(cmd[1:])}", style="bold"))
    sys.stdout.flush()  # the runner writes to the same terminal: our line first
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stderr=subprocess.PIPE, text=True)
    err_lines = []
    try:
        for line in proc.stderr:  # echoed as it comes: a long run's warnings should not wait for its end
            sys.stderr.write(line)
            err_lines.append(line)
    except KeyboardInterrupt:
        # Ctrl-C reached the runner too: let it stop its containers and record the cells before we leave
        proc.wait()
        raise
    code = proc.wait()
    wall = time.monotonic() - started
    stderr = "".join(err_lines)
    if code == 130:
        raise RunProblem(f"the run {run_dir.name} was interrupted (exit 130); nothing is compared.", 130)
    if code == 2:
        raise RunProblem(f"the runner refused to run {run_dir.name} (exit 2: a usage, matrix or environment "
                         f"error such as an unreachable Docker engine; its message is above). Check --profile, "
                         f"--device, --only and --workload, and that the engine answers.", 2)
    crashed = "Traceback (most recent call last)" in stderr
    if code not in (0, 1) or crashed or not any(run_dir.glob("*.json")):
        what = "a Python traceback" if crashed else f"exit {code}"
        raise RunProblem(f"the runner crashed on run {run_dir.name} ({what}; its output is above), so there is "
                         f"nothing to compare. Exit 0 means every cell ended ok and 1 that some cell did not; "
                         f"both leave a result file per cell in {run_dir}. Fix the runner or the environment "
                         f"and run this script again.")
    return {"run_id": run_dir.name, "command": " ".join(["python", *cmd[1:]]), "exit_code": code, "wall_s": wall}


# ------------------------------------------------------------------ reading and comparing

_FIGURES = ("head_s", "head_low_s", "head_high_s", "head_rel", "samples_per_s", "rate_low", "rate_high",
            "head_n", "repeat")


def _plain(value):
    """A frame value as JSON-able Python: numbers as float, NaN/None as None."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return None if math.isnan(number) else number


def load_cells(results_dir: Path, run_id: str):
    """One row per cell of one run (processes of a cell combined, as the report does)."""
    from runner.report.frame import build_frame, latest_cells
    from runner.results import load_run

    frame = latest_cells(build_frame(load_run(results_dir / run_id)))
    if frame["cell_id"].duplicated().any():
        # several machines or versions under one cell id: keep the last, say so
        dupes = sorted(set(frame.loc[frame["cell_id"].duplicated(), "cell_id"]))
        console.print(Text(f"note: run {run_id} has several results for {', '.join(dupes)}; the last is used"))
        frame = frame.drop_duplicates("cell_id", keep="last")
    return frame.set_index("cell_id", drop=False)


def compare_runs(results_dir: Path, run_a: str, run_b: str) -> dict:
    frame_a, frame_b = load_cells(results_dir, run_a), load_cells(results_dir, run_b)
    statuses_a = dict(zip(frame_a["cell_id"], frame_a["status"].astype(str)))
    statuses_b = dict(zip(frame_b["cell_id"], frame_b["status"].astype(str)))
    cells, untimed = [], []
    for cell_id in sorted(set(frame_a.index) & set(frame_b.index)):
        row_a, row_b = frame_a.loc[cell_id], frame_b.loc[cell_id]
        if row_a["status"] != "ok" or row_b["status"] != "ok":
            continue
        a = {k: _plain(row_a[k]) for k in _FIGURES}
        b = {k: _plain(row_b[k]) for k in _FIGURES}
        if a["head_s"] is None or b["head_s"] is None:
            untimed.append(cell_id)
            continue
        cells.append(compare_cell(cell_id, a, b))
    return {"run_a": run_a, "run_b": run_b, "cells": cells, "ok_without_headline": untimed,
            "status_mismatches": status_mismatches(statuses_a, statuses_b),
            "only_in_a": sorted(set(statuses_a) - set(statuses_b)),
            "only_in_b": sorted(set(statuses_b) - set(statuses_a)),
            "cells_a": len(frame_a), "cells_b": len(frame_b)}


# ------------------------------------------------------------------ output

def _num(x) -> str:
    """About 3 significant digits, no exponent: 12,345 / 123 / 1.23 / 0.0123."""
    if not _known(x):
        return "n/a"
    x = float(x)
    if x == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:,.{digits}f}"


def _rate_text(side: dict) -> str:
    mark = "" if _known(side["head_rel"]) else "~"  # not a 95 % interval: marked in front, as the report does
    return f"{mark}{_num(side['samples_per_s'])} [{_num(side['rate_low'])}, {_num(side['rate_high'])}]"


def _pct(x, digits: int = 1) -> str:
    return f"{float(x) * 100:.{digits}f} %" if _known(x) else "n/a"


def _yes_no(flag) -> str:
    return "n/a" if flag is None else ("yes" if flag else "NO")


def print_table(comparison: dict) -> None:
    table = Table(title=f"run A {comparison['run_a']} vs run B {comparison['run_b']}: images/s [95 % interval]",
                  show_lines=False)
    for col in ("cell", "A images/s", "B images/s", "A ±", "B ±", "overlap", "B in A", "B/A"):
        table.add_column(col, overflow="fold", justify="left" if col == "cell" else "right")
    for c in comparison["cells"]:
        table.add_row(*(Text(v) for v in (
            c["cell_id"], _rate_text(c["a"]), _rate_text(c["b"]), _pct(c["a"]["head_rel"]),
            _pct(c["b"]["head_rel"]), _yes_no(c["overlap"]), _yes_no(c["b_inside_a"]),
            _num(c["ratio_b_over_a"]))))
    console.print(table)
    console.print(Text("±: relative half-width of the 95 % interval of the median step time. n/a, and ~ in front of "
                       "a value: fewer than 6 samples (processes, for a cell run in several), so the interval is "
                       "their min..max, not a 95 % one."))


def _cells(n: int) -> str:
    return f"{n} cell{'' if n == 1 else 's'}"


def _met(flag: bool) -> str:
    return "met" if flag else "NOT met"


def print_summary(comparison: dict, summary: dict, runs: list[dict]) -> None:
    n = summary["cells"]
    lines = [f"throughput cells (ok in both runs, timed headline): {n}"]
    unknown = f" ({summary['overlap_unknown']} without interval bounds, counted as not overlapping)" \
        if summary["overlap_unknown"] else ""
    lines.append(f"intervals overlap: {summary['overlap_count']}/{n} = {_pct(summary['overlap_fraction'])}"
                 f"{unknown}; goal >= {summary['overlap_goal'] * 100:.0f} %: {_met(summary['overlap_goal_met'])}")
    if summary["overlap_cells_without_95"]:
        lines.append(f"  in {summary['overlap_cells_without_95']} of the {n} cells at least one interval is not a "
                     f"95 % one (min..max of fewer than 6 samples); their overlap is counted but says less")
    lines.append(f"B's headline inside A's interval: {summary['inside_count']}/{n} = "
                 f"{_pct(summary['inside_fraction'])} (reported, not judged: about "
                 f"{summary['inside_expected'] * 100:.0f} % is expected of honest 95 % intervals)")
    missing = summary["intervals_without_95"]
    median_text = _pct(summary["median_rel_half_width"], 2) if summary["median_rel_half_width"] is not None \
        else "none (half or more of the intervals are not 95 % ones)"
    lines.append(f"median relative half-width over both runs' {summary['intervals']} intervals: {median_text}; "
                 f"goal <= {summary['rel_half_width_goal'] * 100:.0f} %: {_met(summary['rel_half_width_goal_met'])}")
    if missing:
        lines.append(f"  {len(missing)} of the {summary['intervals']} intervals are not 95 % intervals (fewer than "
                     f"6 samples or processes) and count as NOT meeting the half-width goal; over the "
                     f"{summary['intervals_95']} 95 % intervals alone the median is "
                     f"{_pct(summary['median_rel_half_width_95_only'], 2)}:")
        for item in missing:
            lines.append(f"    {item['cell_id']} (run {item['run'].upper()})")
    if summary["ratio_median"] is not None:
        lines.append(f"B/A images/s: median {_num(summary['ratio_median'])}, range {_num(summary['ratio_min'])} .. "
                     f"{_num(summary['ratio_max'])}")
    mismatches = comparison["status_mismatches"]
    lines.append(f"cells ok in one run but not the other: {len(mismatches)}")
    for m in mismatches:
        lines.append(f"    {m['cell_id']}: A {m['a']}, B {m['b']}")
    for run, label in (("only_in_a", "A"), ("only_in_b", "B")):
        if comparison[run]:
            lines.append(f"cells only in run {label} (not compared): {len(comparison[run])}")
    if comparison["ok_without_headline"]:
        lines.append(f"cells ok in both runs without a timed headline (not compared): "
                     f"{len(comparison['ok_without_headline'])}")
    for run, label in zip(runs, "AB"):
        code = "all cells ok" if run["exit_code"] == 0 else "some cell not ok"
        lines.append(f"wall time of run {label} ({run['run_id']}): {run['wall_s']:.1f} s (exit {run['exit_code']}: "
                     f"{code})")
    for line in lines:
        console.print(Text(line))


def write_json(path: Path, comparison: dict, summary: dict, runs: list[dict], results_dir: Path) -> None:
    doc = {"results_dir": str(results_dir), "run_a": comparison["run_a"], "run_b": comparison["run_b"],
           "runs": runs, "summary": summary, "cells": comparison["cells"],
           "ok_without_headline": comparison["ok_without_headline"],
           "status_mismatches": comparison["status_mismatches"], "only_in_a": comparison["only_in_a"],
           "only_in_b": comparison["only_in_b"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: every missing figure is None already; a NaN here would be a bug, not a value
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    console.print(Text(f"wrote {path}"))


# ------------------------------------------------------------------ main

def _names(values: Optional[list[str]]) -> Optional[list[str]]:
    """--only/--workload given as comma lists, repeated, or both."""
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()] or None


def existing_run(results_dir: Path, run_id: str) -> str:
    from runner.errors import UserError
    from runner.results import check_run_id, run_dirs

    try:
        check_run_id(run_id)
    except UserError as exc:
        raise UsageProblem(f"--runs: {exc.message}") from None
    if not (results_dir / run_id).is_dir():
        known = ", ".join(p.name for p in run_dirs(results_dir)[-5:]) or "none"
        raise UsageProblem(f"--runs: no run {run_id} under {results_dir} (latest runs there: {known}). Pass "
                           f"--results-dir where the runs are, or two of its run ids.")
    return run_id


def new_run_ids(results_dir: Path) -> tuple[str, str]:
    prefix = f"repro-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    ids = (f"{prefix}-a", f"{prefix}-b")
    for run_id in ids:
        if (results_dir / run_id).exists():
            raise UsageProblem(f"{results_dir / run_id} exists already; wait a second and run again.")
    return ids


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu", help="the matrix profile to run (default: cpu)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu", "auto"], help="default: cpu")
    # comma lists, several values or repeated flags: all mean the same selection
    ap.add_argument("--only", action="extend", nargs="+", metavar="FW[,FW...]", help="only these frameworks")
    ap.add_argument("--workload", action="extend", nargs="+", metavar="W[,W...]", help="only these workloads")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "results",
                    help="where the runs are written or read (default: the runner's, results/)")
    ap.add_argument("--runs", nargs=2, metavar=("RUN_A", "RUN_B"),
                    help="compare these two existing runs instead of running the cells")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write every figure and the summary as JSON")
    opts = ap.parse_args(argv)
    opts.only, opts.workload = _names(opts.only), _names(opts.workload)
    results_dir = opts.results_dir.resolve()
    opts.results_dir = results_dir
    try:
        runs = []
        if opts.runs:
            if opts.only or opts.workload:
                raise UsageProblem("--only/--workload select cells to run; with --runs every cell the two runs "
                                   "share is compared. Drop one or the other.")
            if opts.runs[0] == opts.runs[1]:
                raise UsageProblem(f"--runs {opts.runs[0]} {opts.runs[1]}: a run compared with itself says "
                                   f"nothing; give two different runs.")
            run_a, run_b = (existing_run(results_dir, r) for r in opts.runs)
        else:
            run_a, run_b = new_run_ids(results_dir)
            for run_id in (run_a, run_b):
                runs.append(run_once(runner_command(opts, run_id), results_dir / run_id))
                console.print(Text(f"run {run_id}: {runs[-1]['wall_s']:.1f} s wall, exit {runs[-1]['exit_code']}",
                                   style="bold"))
        comparison = compare_runs(results_dir, run_a, run_b)
        if not comparison["cells"]:
            raise UsageProblem(
                f"runs {run_a} ({_cells(comparison['cells_a'])}) and {run_b} ({_cells(comparison['cells_b'])}) have no "
                f"throughput cell in common: none is ok in both with a timed headline "
                f"({len(comparison['status_mismatches'])} ok in only one, "
                f"{len(comparison['ok_without_headline'])} ok in both without a headline, "
                f"{len(comparison['only_in_a']) + len(comparison['only_in_b'])} in only one run). Compare two runs "
                f"of the same cells that ended ok.")
        summary = summarize(comparison["cells"])
        print_table(comparison)
        print_summary(comparison, summary, runs)
        if opts.json:
            write_json(opts.json, comparison, summary, runs, results_dir)
        return 0
    except UsageProblem as exc:
        err_console.print(Text("error: ", style="bold red") + Text(str(exc)), soft_wrap=True)
        return 2
    except RunProblem as exc:
        err_console.print(Text("error: ", style="bold red") + Text(str(exc)), soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
