"""Report stage: results/<run-id>/*.json -> reports/ (CSV, Markdown tables, plots) and README sections.

    python -m runner report [--results DIR [DIR ...]] [--readme PATH] [--out DIR]
                            [--baseline RUN_ID] [--min-effect PCT]

Public API (the CLI wires it): add_report_arguments(parser), run_report(args) -> exit code,
ReportError, build_frame / load_frame, compare_runs, build_sections, regenerate_readme.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from runner import ROOT
from runner.errors import EXIT_OK, UserError
from runner.report_frame import (  # noqa: F401  (re-exported)
    CELL_KEY, COMPARE_KEY, ReportError, build_frame, fmt_fixed, fmt_pct, key_series, latest_cells, load_runs, md_table,
    row_labels, source_line, write_csv,
)
from runner.report_tables import SECTION_NAMES, SECTION_TITLES, build_sections
from runner.results import atomic_write_text, latest_run, run_dirs

__all__ = [
    "ReportError", "SECTION_NAMES", "EMPTY_SECTION", "add_report_arguments", "run_report", "load_frame",
    "build_frame", "compare_runs", "comparison_section", "build_sections", "regenerate_readme", "check_readme",
    "make_report",
    "render_all", "DEFAULT_MIN_EFFECT_PCT",
]

EMPTY_SECTION = "_No results yet for this section._"
DEFAULT_MIN_EFFECT_PCT = 5.0
MARKER_SYNTAX = "<!-- results:NAME --> ... <!-- /results:NAME -->"
_MARKER_RE = re.compile(r"^[ \t]*<!--[ \t]*(/?)results:([A-Za-z0-9_.-]+)[ \t]*-->[ \t]*$")
_FENCE_RE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")


# ------------------------------------------------------------------ loading

def load_frame(dirs: Sequence) -> pd.DataFrame:
    """The tidy frame (one row per result) of the given run directories."""
    return build_frame(load_runs(dirs))


# ------------------------------------------------------------------ comparison

def _rel_jitter(jitter, median):
    return (jitter / median).where((median > 0) & jitter.notna(), math.nan)


def compare_runs(current: pd.DataFrame, baseline: pd.DataFrame, min_effect: float = 0.05) -> pd.DataFrame:
    """Current ok cells matched to the baseline's ok cells by everything but the run id.

    Adds: baseline_run, metric ('images/s' or a time), baseline_value, value, speedup (>1 faster),
    change (relative change of the time per sample; +0.2 = 20 % slower), noise (combined relative
    jitter of both cells' step times: sqrt(j1^2 + j2^2), j = step_time_s.jitter / median; NaN when
    unknown), verdict: 'regression' / 'improvement' only when |change| exceeds both the noise and
    `min_effect`; otherwise 'within noise' (exceeds min_effect only) or 'no change'.
    """
    cols = ["samples_per_s", "step_median_s", "step_jitter_s", "train_time_s", "total_time_s", "run_id"]
    if current.empty or baseline.empty:
        return current.iloc[0:0].assign(**{c: [] for c in ("baseline_run", "metric", "baseline_value", "value",
                                                            "speedup", "change", "noise", "verdict")})

    def keyed(df):
        ok = df[df["status"] == "ok"]
        return ok.assign(_key=key_series(ok, COMPARE_KEY))

    cur, base = keyed(current), keyed(baseline)
    base = base.drop_duplicates("_key", keep="last")[["_key"] + cols]
    m = cur.merge(base, on="_key", how="inner", suffixes=("", "_b"))
    if m.empty:
        return m.drop(columns=["_key"]).assign(**{c: [] for c in (
            "baseline_run", "metric", "baseline_value", "value", "speedup", "change", "noise", "verdict")})
    rate = m["samples_per_s"].notna() & m["samples_per_s_b"].notna() & (m["samples_per_s"] > 0)
    metric = pd.Series("", index=m.index, dtype=object)
    value = pd.Series(math.nan, index=m.index)
    base_value = pd.Series(math.nan, index=m.index)
    time_ratio = pd.Series(math.nan, index=m.index)
    # first metric both cells have: throughput, then step time, then training / total time
    metric[rate] = "images/s"
    value[rate], base_value[rate] = m["samples_per_s"][rate], m["samples_per_s_b"][rate]
    time_ratio[rate] = m["samples_per_s_b"][rate] / m["samples_per_s"][rate]
    for col, name in (("step_median_s", "step time (s)"), ("train_time_s", "training time (s)"),
                      ("total_time_s", "total time (s)")):
        use = time_ratio.isna() & m[col].notna() & m[col + "_b"].notna() & (m[col + "_b"] > 0)
        metric[use] = name
        value[use], base_value[use] = m[col][use], m[col + "_b"][use]
        time_ratio[use] = m[col][use] / m[col + "_b"][use]
    m = m[time_ratio.notna()].copy()
    time_ratio = time_ratio[m.index]
    noise = (_rel_jitter(m["step_jitter_s"], m["step_median_s"]) ** 2
             + _rel_jitter(m["step_jitter_s_b"], m["step_median_s_b"]) ** 2) ** 0.5
    change = time_ratio - 1.0
    threshold = noise.fillna(0.0).clip(lower=min_effect)
    verdict = pd.Series("no change", index=m.index, dtype=object)
    verdict[change.abs() > min_effect] = "within noise"
    verdict[change > threshold] = "regression"
    verdict[change < -threshold] = "improvement"
    out = m.drop(columns=["_key"] + [c + "_b" for c in cols if c != "run_id"]).rename(
        columns={"run_id_b": "baseline_run"})
    return out.assign(metric=metric[m.index], value=value[m.index], baseline_value=base_value[m.index],
                      speedup=1.0 / time_ratio, change=change, noise=noise, verdict=verdict)


def comparison_section(cmp: pd.DataFrame, baseline_run: str, min_effect: float) -> str:
    if cmp is None or cmp.empty:
        return ""
    blocks = []
    for machine, g in cmp.groupby("machine", sort=True):
        g = g.assign(label=row_labels(g, qualifiers=("device", "gpu_count_q", "toolchain", "python", "precision",
                                                     "batch", "dataset", "model")))
        g = g.sort_values(["verdict", "workload", "label"], kind="stable",
                          key=lambda s: s.map({"regression": 0, "improvement": 1, "within noise": 2,
                                               "no change": 3}) if s.name == "verdict" else s)
        rows = []
        for _, r in g.iterrows():
            digits = 1 if r["metric"] == "images/s" else 3
            rows.append([r["workload"], r["label"], r["metric"], fmt_fixed(r["baseline_value"], digits),
                         fmt_fixed(r["value"], digits), f"{r['speedup']:.3f}x",
                         f"{r['change'] * 100:+.1f} %",
                         f"{r['noise'] * 100:.1f} %" if not pd.isna(r["noise"]) else "unknown",
                         r["verdict"]])
        line = (f"{source_line(g)} Baseline: run `{baseline_run}` on the same machine. A change counts only "
                f"when it is larger than both the measured noise and {min_effect * 100:g} %.")
        table = md_table(["Workload", "Configuration", "Metric", "Baseline", "Current", "Speedup",
                          "Time change", "Noise", "Verdict"], rows,
                         align=["left", "left", "left", "right", "right", "right", "right", "right", "left"])
        blocks.append(line + "\n\n" + table)
    return "\n\n".join(blocks)


# ------------------------------------------------------------------ README markers

def _marker_help(path) -> str:
    return (f"Put each generated section between a pair of lines of the form `{MARKER_SYNTAX}`, each marker "
            f"alone on its line (known NAMEs: {', '.join(SECTION_NAMES)}); the report replaces only the "
            f"text between them. {path} was not changed.")


def _find_sections(text: str, path) -> "OrderedDict[str, tuple[int, int]]":
    """name -> (offset just after the opening marker's line, offset of the closing marker's line)."""
    spans = OrderedDict()
    open_name, open_line, open_end = None, 0, 0
    fence = None
    offset = 0
    seen_lines = {}
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        start, offset = offset, offset + len(line)
        body = line.rstrip("\r\n")
        f = _FENCE_RE.match(body)
        if f:
            if fence is None:
                fence = f.group(1)[0] * len(f.group(1))
            elif f.group(1).startswith(fence):
                fence = None
            continue
        if fence is not None:
            continue
        m = _MARKER_RE.match(body)
        if not m:
            continue
        closing, name = bool(m.group(1)), m.group(2)
        if not closing:
            if open_name is not None:
                raise ReportError(f"{path}:{lineno}: marker `<!-- results:{name} -->` opens a section while "
                                  f"`results:{open_name}` (line {open_line}) is still open; sections cannot nest. "
                                  + _marker_help(path))
            if name in spans or name in seen_lines:
                raise ReportError(f"{path}:{lineno}: section `{name}` appears twice (first at line "
                                  f"{seen_lines[name]}); each section may appear once. " + _marker_help(path))
            open_name, open_line, open_end = name, lineno, offset
            seen_lines[name] = lineno
        else:
            if open_name != name:
                what = f"`results:{open_name}` (line {open_line}) is open" if open_name else "no section is open"
                raise ReportError(f"{path}:{lineno}: closing marker `<!-- /results:{name} -->` but {what}. "
                                  + _marker_help(path))
            spans[name] = (open_end, start)
            open_name = None
    if open_name is not None:
        raise ReportError(f"{path}:{open_line}: section `{open_name}` is opened but never closed with "
                          f"`<!-- /results:{open_name} -->`. " + _marker_help(path))
    return spans


def check_readme(readme_path) -> list:
    """The section names a README's markers ask for; ReportError when it has none or they are unsafe."""
    path = Path(readme_path)
    return list(_checked_sections(path, _read_readme(path), SECTION_NAMES))


def _checked_sections(path: Path, text: str, known) -> dict:
    """The README's marker spans; ReportError when there are none or one names an unknown section."""
    spans = _find_sections(text, path)
    if not spans:
        raise ReportError(f"{path} has no result markers, so there is no place to put the tables, and the "
                          "report will not guess one. " + _marker_help(path))
    unknown = [n for n in spans if n not in known]
    if unknown:
        raise ReportError(f"{path}: unknown section name(s) {', '.join(unknown)} in the result markers. "
                          + _marker_help(path))
    return spans


def _read_readme(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise ReportError(f"{path}: README not found; pass an existing file to --readme, or leave --readme out "
                          "to write only the report directory.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read the README ({e}).") from None


def regenerate_readme(readme_path, sections: dict) -> bool:
    """Replace the text between each `<!-- results:NAME -->` / `<!-- /results:NAME -->` pair with
    sections[NAME] (or a 'no results yet' line when it is empty). Text outside the markers is never
    touched; running it twice changes nothing. Returns whether the file changed.

    ReportError (file unchanged) when the file is missing, has no markers, or has unbalanced,
    nested, duplicated or unknown markers."""
    path = Path(readme_path)
    text = _read_readme(path)
    spans = _checked_sections(path, text, sections)
    newline = "\r\n" if "\r\n" in text else "\n"
    out, pos = [], 0
    for name, (begin, end) in sorted(spans.items(), key=lambda kv: kv[1][0]):
        body = (sections.get(name) or "").strip("\n") or EMPTY_SECTION
        body = body.replace("\r\n", "\n")
        if newline != "\n":
            body = body.replace("\n", newline)
        out.append(text[pos:begin])
        out.append(newline + body + newline + newline)
        pos = end
    out.append(text[pos:])
    new = "".join(out)
    if new == text:
        return False
    atomic_write_text(path, new, mode=path.stat().st_mode & 0o7777)
    return True


# ------------------------------------------------------------------ whole report

def render_all(sections: dict, runs: Sequence[str]) -> str:
    """reports/README-tables.md: every section under its heading."""
    parts = ["# dlbench results", "",
             "Generated by `python -m runner report` from run(s) " + ", ".join(f"`{r}`" for r in runs)
             + ". Regenerated on every report; edit the README markers, not this file.", ""]
    for name in SECTION_NAMES:
        parts += [f"## {SECTION_TITLES[name]}", "", (sections.get(name) or "").strip("\n") or EMPTY_SECTION, ""]
    return "\n".join(parts)


def _is_run_dir(p: Path) -> bool:
    return p.is_dir() and any(p.glob("*.json"))


def _resolve_results(given: Optional[Sequence[str]], results_root=None) -> list[Path]:
    if not given:
        roots = [Path(results_root)] if results_root else [Path("results"), ROOT / "results"]
        for root in roots:
            run = latest_run(root)
            if run is not None and _is_run_dir(run):
                return [run]
        raise ReportError(f"no results found: {roots[0]} holds no run directory with result files. Run the "
                          "benchmark first (`python -m runner run`), or point --results at a run directory "
                          "such as results/<run-id>.")
    dirs = []
    for g in given:
        p = Path(g)
        if not p.exists():
            raise ReportError(f"{p}: no such results directory; pass a run directory such as "
                              "results/<run-id> to --results.")
        if not p.is_dir():
            raise ReportError(f"{p}: not a directory; --results takes run directories such as results/<run-id>.")
        if not _is_run_dir(p):
            runs = [r for r in run_dirs(p) if _is_run_dir(r)]
            if runs:
                raise ReportError(f"{p} holds run directories, not result files; pass one or more of them, e.g. "
                                  f"--results {runs[-1]}.")
            raise ReportError(f"{p} holds no result files (*.json); pass a run directory such as "
                              "results/<run-id> that the run stage has written to.")
        dirs.append(p)
    # keep order chronological and unique
    return sorted(set(dirs), key=lambda d: (d.name, str(d)))


def _resolve_baseline(baseline: str, results: list[Path], results_root=None) -> Path:
    p = Path(baseline)
    if p.is_dir() and _is_run_dir(p):
        return p
    roots = [Path(results_root)] if results_root else []
    for d in results:
        if d.parent not in roots:
            roots.append(d.parent)
    for root in roots:
        cand = root / baseline
        if _is_run_dir(cand):
            return cand
    known = sorted({r.name for root in roots for r in run_dirs(root) if _is_run_dir(r)})
    listing = ", ".join(known[-10:]) if known else "none"
    raise ReportError(f"unknown baseline run `{baseline}`: no such run directory under "
                      f"{', '.join(str(r) for r in roots)} (runs there: {listing}). Pass one of those run ids, "
                      "or a path to a run directory, to --baseline.")


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--results", nargs="+", metavar="DIR", default=None,
                        help="run directories to report (default: the latest run under results/)")
    parser.add_argument("--readme", metavar="PATH", default=None,
                        help="regenerate the sections between <!-- results:NAME --> markers in this README")
    parser.add_argument("--out", metavar="DIR", default="reports",
                        help="where results.csv, README-tables.md and the plots go (default: reports/)")
    parser.add_argument("--baseline", metavar="RUN_ID", default=None,
                        help="compare against this run (a run id under the same results root, or a run directory)")
    parser.add_argument("--min-effect", metavar="PCT", type=float, default=DEFAULT_MIN_EFFECT_PCT,
                        help="smallest change (in %%) flagged as a regression or improvement, on top of the "
                             "measured noise (default: %(default)s)")
    return parser


def _links(plots, out_dir: Path, target_dir: Path) -> list:
    rel = os.path.relpath(out_dir.resolve(), target_dir.resolve())
    base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
    return [(title, base + name) for title, name in plots]


def make_report(results: Optional[Sequence], out_dir, readme=None, baseline=None,
                min_effect_pct: float = DEFAULT_MIN_EFFECT_PCT, results_root=None, log=print) -> dict:
    """Everything `report` does, for code and tests; raises ReportError. Returns what it wrote."""
    from runner.report_plots import make_plots

    if min_effect_pct is None or not (min_effect_pct >= 0) or math.isinf(min_effect_pct):
        raise ReportError(f"--min-effect must be a percentage >= 0, not {min_effect_pct!r}.")
    if readme:  # refuse a README without usable markers before doing any work
        check_readme(readme)
    dirs = _resolve_results(results, results_root)
    base_dir = _resolve_baseline(str(baseline), dirs, results_root) if baseline else None
    if base_dir is not None:
        dirs = [d for d in dirs if d.resolve() != base_dir.resolve()]
        if not dirs:
            raise ReportError(f"the baseline run {base_dir} is the only run given; pass the run to compare "
                              "with --results.")
    frame = load_frame(dirs)
    if frame.empty:
        raise ReportError(f"no results in {', '.join(map(str, dirs))}.")
    df = latest_cells(frame)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    min_effect = min_effect_pct / 100.0

    comparison = ""
    csv_frame = frame
    if base_dir is not None:
        cmp = compare_runs(df, load_frame([base_dir]), min_effect)
        comparison = comparison_section(cmp, base_dir.name, min_effect)
        extra = ["baseline_run", "metric", "baseline_value", "speedup", "change", "noise", "verdict"]
        csv_frame = frame.merge(cmp[["run_id", "cell_id"] + extra], on=["run_id", "cell_id"], how="left")
        regressions = int((cmp["verdict"] == "regression").sum())
        log(f"report: compared {len(cmp)} cell(s) with baseline {base_dir.name}: {regressions} regression(s)")

    csv_path = write_csv(csv_frame, out_dir / "results.csv")
    plots = make_plots(df, out_dir)
    runs = sorted(df["run_id"].astype(str).unique())
    tables_path = out_dir / "README-tables.md"
    sections = build_sections(df, _links(plots, out_dir, out_dir), comparison)
    tables_path.write_text(render_all(sections, runs), encoding="utf-8")
    written = {"csv": csv_path, "tables": tables_path, "plots": [out_dir / name for _, name in plots],
               "readme": None}
    if readme:
        readme = Path(readme)
        readme_sections = build_sections(df, _links(plots, out_dir, readme.parent), comparison)
        changed = regenerate_readme(readme, readme_sections)
        written["readme"] = readme
        log(f"report: {readme} {'updated' if changed else 'already up to date'}")
    failed = int((df["status"] != "ok").sum())
    log(f"report: {len(df)} cell(s) from {len(runs)} run(s) ({failed} not ok); wrote {tables_path}, "
        f"{csv_path} and {len(plots)} plot(s)")
    return written


def run_report(args) -> int:
    """The `report` stage: 0 when the report was written, 2 for bad input (message on stderr)."""
    try:
        make_report(getattr(args, "results", None), getattr(args, "out", None) or "reports",
                    readme=getattr(args, "readme", None), baseline=getattr(args, "baseline", None),
                    min_effect_pct=getattr(args, "min_effect", DEFAULT_MIN_EFFECT_PCT),
                    results_root=getattr(args, "results_root", None) or getattr(args, "results_dir", None))
    except UserError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"error: cannot write the report: {e}. Check that --out and --readme point at writable places.",
              file=sys.stderr)
        return 2
    return EXIT_OK


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.report", description=__doc__.splitlines()[0])
    add_report_arguments(parser)
    return run_report(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
