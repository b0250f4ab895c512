"""Report stage, `--baseline`: the current run's ok cells against the same cells of a baseline run.

A change is reported only when it is real and large enough: both results' 95 % confidence intervals
(of the median step time) separate, AND the change exceeds a minimum effect. Results without intervals
(runs made before bench recorded them) fall back to the step-time jitter as noise. The test used is
named in every row.

The minimum effect, unless given, is the noise floor measured from the two runs themselves: a cell's
interval says how steady its steps were inside one process, but a fresh process on a shared host lands
several per cent away (benchmarks/RESULTS.md, reproducibility: ~7 % per process here). Across the cells
compared, most of which did not change, the spread of log(time change) is that process-to-process noise;
its robust standard deviation (1.4826 x MAD) times 1.96 is the change that noise alone stays under 95 %
of the time. Below FLOOR_MIN_CELLS cells the spread cannot be estimated and the floor is
DEFAULT_MIN_EFFECT.
"""

from __future__ import annotations

import math
import statistics
from typing import Optional

import pandas as pd

from runner.report.frame import COMPARE_KEY, fmt_fixed, key_series, md_table, row_labels, source_line
from runner.report.tables import with_ci

DEFAULT_MIN_EFFECT = 0.05
FLOOR_MIN_CELLS = 8
VERDICT_ORDER = {"regression": 0, "improvement": 1, "within noise": 2, "no change": 3}
_OUT = ("baseline_run", "metric", "baseline_value", "value", "baseline_half", "half", "speedup", "change",
        "noise", "test", "verdict")


def _rel_jitter(jitter, median):
    return (jitter / median).where((median > 0) & jitter.notna(), math.nan)


def _empty(df: pd.DataFrame, min_effect: Optional[float]) -> pd.DataFrame:
    out = df.iloc[0:0].assign(**{c: [] for c in _OUT})
    return _with_floor(out, min_effect, None)


def noise_floor(change: pd.Series) -> Optional[float]:
    """1.96 x the robust standard deviation (1.4826 x MAD) of log(1 + change) over the cells compared: the
    time change that process-to-process noise alone stays under 95 % of the time. None below
    FLOOR_MIN_CELLS cells."""
    x = [math.log1p(c) for c in change if isinstance(c, float) and c > -1 and math.isfinite(c)]
    if len(x) < FLOOR_MIN_CELLS:
        return None
    mid = statistics.median(x)
    mad = statistics.median(abs(v - mid) for v in x)
    return math.expm1(1.96 * 1.4826 * mad)


def _with_floor(out: pd.DataFrame, given: Optional[float], floor: Optional[float]) -> pd.DataFrame:
    """Records on the frame which minimum effect the verdicts used, and where it came from."""
    if given is not None:
        out.attrs.update(min_effect=given, min_effect_how="as given with --min-effect")
    elif floor is not None:
        out.attrs.update(min_effect=floor, min_effect_how=(
            f"the noise floor of these two runs: 1.96 x the robust sd of the time change over the "
            f"{len(out)} cells compared"))
    else:
        out.attrs.update(min_effect=DEFAULT_MIN_EFFECT, min_effect_how=(
            f"the default: fewer than {FLOOR_MIN_CELLS} cells compared, too few to measure the noise floor"))
    return out


def compare_runs(current: pd.DataFrame, baseline: pd.DataFrame, min_effect: Optional[float] = None) -> pd.DataFrame:
    """Current ok cells matched to the baseline's ok cells by everything but the run id.

    Adds: baseline_run, metric ('images/s' or a time), baseline_value, value, their CI half-widths
    (baseline_half, half; NaN without a CI), speedup (>1 faster), change (relative change of the time per
    sample; +0.2 = 20 % slower), noise (jitter test only: sqrt(j1^2 + j2^2) of the relative step-time
    jitters), test ('95 % CIs' or 'jitter'), verdict: 'regression' / 'improvement' only when the test says
    the results differ (CIs separate; or |change| > noise) and |change| > min_effect; 'within noise' when
    only the effect is large; otherwise 'no change'. min_effect None: the runs' own noise floor
    (noise_floor), else DEFAULT_MIN_EFFECT; the frame's attrs say which (min_effect, min_effect_how)."""
    cols = ["samples_per_s", "rate_low", "rate_high", "head_low_s", "head_high_s", "step_median_s",
            "step_jitter_s", "train_time_s", "total_time_s", "run_id"]
    if current.empty or baseline.empty:
        return _empty(current, min_effect)

    def keyed(df):
        ok = df[df["status"] == "ok"]
        return ok.assign(_key=key_series(ok, COMPARE_KEY))

    cur, base = keyed(current), keyed(baseline)
    base = base.drop_duplicates("_key", keep="last")[["_key"] + cols]
    m = cur.merge(base, on="_key", how="inner", suffixes=("", "_b"))
    if m.empty:
        return _empty(m.drop(columns=["_key"]), min_effect)
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
    keep = time_ratio.notna()
    m, metric, value, base_value, time_ratio = (x[keep] for x in (m, metric, value, base_value, time_ratio))
    m = m.copy()
    change = time_ratio - 1.0
    floor = noise_floor(change) if min_effect is None else None
    effect = min_effect if min_effect is not None else (floor if floor is not None else DEFAULT_MIN_EFFECT)

    # the CI test, on step time (the headline the intervals belong to)
    has_ci = (m[["head_low_s", "head_high_s", "head_low_s_b", "head_high_s_b"]].notna().all(axis=1)
              & (metric == "images/s"))
    separate = (m["head_low_s"] > m["head_high_s_b"]) | (m["head_high_s"] < m["head_low_s_b"])
    # the fallback for older results: jitter as noise
    noise = (_rel_jitter(m["step_jitter_s"], m["step_median_s"]) ** 2
             + _rel_jitter(m["step_jitter_s_b"], m["step_median_s_b"]) ** 2) ** 0.5
    noise = noise.where(~has_ci, math.nan)
    differs = separate.where(has_ci, change.abs() > noise.fillna(0.0))
    large = change.abs() > effect
    verdict = pd.Series("no change", index=m.index, dtype=object)
    verdict[large] = "within noise"
    verdict[large & differs & (change > 0)] = "regression"
    verdict[large & differs & (change < 0)] = "improvement"
    test = pd.Series("", index=m.index, dtype=object)
    test[has_ci] = separate[has_ci].map({True: "95 % CIs separate", False: "95 % CIs overlap"})
    test[~has_ci] = noise[~has_ci].map(lambda x: f"jitter {x * 100:.1f} %" if not pd.isna(x) else "jitter unknown")
    half = ((m["rate_high"] - m["rate_low"]) / 2.0).where(has_ci, math.nan)
    base_half = ((m["rate_high_b"] - m["rate_low_b"]) / 2.0).where(has_ci, math.nan)
    out = m.drop(columns=["_key"] + [c + "_b" for c in cols if c != "run_id"]).rename(
        columns={"run_id_b": "baseline_run"})
    out = out.assign(metric=metric, value=value, baseline_value=base_value, half=half, baseline_half=base_half,
                     speedup=1.0 / time_ratio, change=change, noise=noise, test=test, verdict=verdict)
    return _with_floor(out, min_effect, floor)


def comparison_section(cmp: pd.DataFrame, baseline_run: str, min_effect: Optional[float] = None) -> str:
    """The comparison table; min_effect None: the one compare_runs used (the frame's attrs)."""
    if cmp is None or cmp.empty:
        return ""
    how = cmp.attrs.get("min_effect_how", "given")
    if min_effect is None:
        min_effect = cmp.attrs.get("min_effect", DEFAULT_MIN_EFFECT)
    blocks = []
    for machine, g in cmp.groupby("machine", sort=True):
        g = g.assign(label=row_labels(g, qualifiers=("device", "gpu_count_q", "toolchain", "python", "precision",
                                                     "batch", "dataset", "model")))
        g = g.sort_values(["verdict", "workload", "label"], kind="stable",
                          key=lambda s: s.map(VERDICT_ORDER) if s.name == "verdict" else s)
        rows = []
        for _, r in g.iterrows():
            digits = 1 if r["metric"] == "images/s" else 3
            no_mark = {"ci_missed": False}
            rows.append([r["workload"], r["label"], r["metric"],
                         with_ci(no_mark, fmt_fixed(r["baseline_value"], digits), r["baseline_half"]),
                         with_ci(no_mark, fmt_fixed(r["value"], digits), r["half"]), f"{r['speedup']:.3f}x",
                         f"{r['change'] * 100:+.1f} %", r["test"], r["verdict"]])
        line = (f"{source_line(g)} Baseline: run `{baseline_run}` on the same machine. A change counts only when "
                f"the two results' 95 % confidence intervals of the median step time separate and the change "
                f"exceeds {min_effect * 100:.3g} % ({how}); results without intervals (older runs) use the step-time "
                "jitter of both as the noise the change must exceed. The Test column names the test used.")
        table = md_table(["Workload", "Configuration", "Metric", "Baseline", "Current", "Speedup",
                          "Time change", "Test", "Verdict"], rows,
                         align=["left", "left", "left", "right", "right", "right", "right", "left", "left"])
        blocks.append(line + "\n\n" + table)
    return "\n\n".join(blocks)
