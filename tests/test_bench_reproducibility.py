"""The pure statistics of benchmarks/bench_reproducibility.py (no Docker, no runs)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from runner import ROOT

SCRIPT = ROOT / "benchmarks" / "bench_reproducibility.py"


@pytest.fixture(scope="module")
def repro():
    # benchmarks/ is no package: load the script from its path, as `python benchmarks/...` would run it
    spec = importlib.util.spec_from_file_location("bench_reproducibility", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def side(head_s, low, high, rel):
    return {"head_s": head_s, "head_low_s": low, "head_high_s": high, "head_rel": rel,
            "samples_per_s": 10 / head_s, "rate_low": 10 / high, "rate_high": 10 / low, "head_n": 20.0,
            "repeat": None}


def test_overlap_of_intervals(repro):
    assert repro.intervals_overlap(1.0, 2.0, 1.5, 3.0) is True
    assert repro.intervals_overlap(1.5, 3.0, 1.0, 2.0) is True
    assert repro.intervals_overlap(1.0, 2.0, 2.0, 3.0) is True  # touching ends share a point
    assert repro.intervals_overlap(1.0, 2.0, 1.2, 1.4) is True  # one inside the other
    assert repro.intervals_overlap(1.0, 2.0, 2.1, 3.0) is False
    assert repro.intervals_overlap(2.1, 3.0, 1.0, 2.0) is False
    assert repro.intervals_overlap(1.0, math.nan, 1.5, 3.0) is None
    assert repro.intervals_overlap(1.0, 2.0, None, 3.0) is None


def test_lies_within(repro):
    assert repro.lies_within(1.5, 1.0, 2.0) is True
    assert repro.lies_within(2.0, 1.0, 2.0) is True
    assert repro.lies_within(2.5, 1.0, 2.0) is False
    assert repro.lies_within(math.nan, 1.0, 2.0) is None


def test_compare_cell_ratio_is_of_rates(repro):
    cell = repro.compare_cell("c", side(0.10, 0.09, 0.11, 0.1), side(0.08, 0.075, 0.085, 0.06))
    assert cell["overlap"] is False
    assert cell["b_inside_a"] is False
    assert cell["ratio_b_over_a"] == pytest.approx(1.25)  # B's step is shorter: B is 1.25x as fast


def test_summary_fractions_and_ratios(repro):
    cells = [
        repro.compare_cell("a", side(1.0, 0.98, 1.02, 0.02), side(1.01, 0.99, 1.03, 0.02)),   # overlap, inside
        repro.compare_cell("b", side(1.0, 0.98, 1.02, 0.02), side(1.03, 1.01, 1.05, 0.02)),   # overlap only
        repro.compare_cell("c", side(1.0, 0.98, 1.02, 0.02), side(1.10, 1.08, 1.12, 0.02)),   # disjoint
        repro.compare_cell("d", side(1.0, 0.99, 1.01, 0.01), side(1.00, 0.99, 1.01, 0.01)),   # overlap, inside
    ]
    s = repro.summarize(cells)
    assert s["cells"] == 4
    assert s["overlap_count"] == 3 and s["overlap_fraction"] == pytest.approx(0.75)
    assert s["overlap_goal_met"] is False
    assert s["inside_count"] == 2 and s["inside_fraction"] == pytest.approx(0.5)
    assert s["median_rel_half_width"] == pytest.approx(0.02)
    assert s["rel_half_width_goal_met"] is True
    assert s["intervals_without_95"] == []
    assert s["ratio_min"] == pytest.approx(1 / 1.10)
    assert s["ratio_max"] == pytest.approx(1.0)
    assert s["ratio_median"] == pytest.approx((1 / 1.03 + 1 / 1.01) / 2)


def test_intervals_without_95_percent_count_against_the_width_goal(repro):
    # 3 of 4 intervals below 5 %, one with too few samples: the median is still that of the 95 % ones
    cells = [repro.compare_cell("a", side(1.0, 0.99, 1.01, 0.01), side(1.0, 0.9, 1.1, None)),
             repro.compare_cell("b", side(1.0, 0.99, 1.01, 0.01), side(1.0, 0.98, 1.02, 0.02))]
    s = repro.summarize(cells)
    assert s["intervals"] == 4 and s["intervals_95"] == 3
    assert s["overlap_cells_without_95"] == 1
    assert s["intervals_without_95"] == [{"cell_id": "a", "run": "b"}]
    assert s["median_rel_half_width"] == pytest.approx(0.015)
    assert s["rel_half_width_goal_met"] is True
    # with half of them missing, the median is infinitely wide: no figure, goal not met
    cells[1]["a"]["head_rel"] = math.nan
    s = repro.summarize(cells)
    assert s["median_rel_half_width"] is None
    assert s["median_rel_half_width_95_only"] == pytest.approx(0.015)
    assert s["rel_half_width_goal_met"] is False
    assert [m["cell_id"] for m in s["intervals_without_95"]] == ["a", "b"]


def test_unknown_overlap_counts_as_no(repro):
    cells = [repro.compare_cell("a", side(1.0, math.nan, math.nan, None), side(1.0, 0.9, 1.1, 0.1)),
             repro.compare_cell("b", side(1.0, 0.9, 1.1, 0.1), side(1.0, 0.9, 1.1, 0.1))]
    s = repro.summarize(cells)
    assert s["overlap_unknown"] == 1
    assert s["overlap_fraction"] == pytest.approx(0.5)
    assert s["inside_fraction"] == pytest.approx(0.5)


def test_summary_of_no_cells(repro):
    s = repro.summarize([])
    assert s["cells"] == 0 and s["overlap_fraction"] is None and s["median_rel_half_width"] is None
    assert s["overlap_goal_met"] is False and s["rel_half_width_goal_met"] is False


def test_status_mismatches(repro):
    a = {"x": "ok", "y": "ok", "z": "error", "only-a": "ok"}
    b = {"x": "ok", "y": "oom", "z": "ok", "only-b": "error"}
    assert repro.status_mismatches(a, b) == [{"cell_id": "y", "a": "ok", "b": "oom"},
                                             {"cell_id": "z", "a": "error", "b": "ok"}]
