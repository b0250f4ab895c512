"""bench.measure's statistics and stopping rules, apart from running: synthetic data and a fake
step whose times (on a fake clock) the test controls."""

import math
import random

import pytest

from bench import measure


# ------------------------------------------------------------------ CI of the median

def test_ranks_match_the_binomial_tables():
    # classic table of distribution-free 95 % median intervals (e.g. Conover): n -> rank j
    assert measure.median_ci_ranks(6)[:2] == (1, 6)
    assert measure.median_ci_ranks(10)[:2] == (2, 9)
    assert measure.median_ci_ranks(20)[:2] == (6, 15)
    assert measure.median_ci_ranks(50)[:2] == (18, 33)
    for n in (6, 10, 20, 50, 399):
        assert measure.median_ci_ranks(n)[2] >= 0.95


def test_too_few_samples_cannot_claim_95_percent():
    low, high, coverage = measure.median_ci([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (low, high) == (1.0, 5.0) and coverage < 0.95
    h = measure.headline([3.0, 1.0, 2.0, 5.0, 4.0])
    assert h["value"] == 3.0 and h["rel_half_width"] == float("inf")


def test_normal_approximation_joins_the_exact_ranks():
    exact = measure.median_ci_ranks(400)[0]
    approx = measure.median_ci_ranks(401)[0]
    assert abs(exact - approx) <= 1


def test_coverage_on_synthetic_skewed_data():
    # log-normal step times (right-skewed like real ones): the interval must hold the true
    # median in ~95 % of repetitions, not far less (seeded: deterministic)
    rng = random.Random(7)
    true_median = math.exp(0.0)
    hits, reps = 0, 400
    for _ in range(reps):
        values = [rng.lognormvariate(0.0, 0.5) for _ in range(30)]
        low, high, _ = measure.median_ci(values)
        hits += low <= true_median <= high
    assert 0.92 <= hits / float(reps) <= 0.995


def test_interval_narrows_with_more_samples():
    rng = random.Random(1)
    widths = []
    for n in (20, 200, 2000):
        values = [rng.gauss(1.0, 0.05) for _ in range(n)]
        h = measure.headline(values)
        assert h["ci_low"] <= h["value"] <= h["ci_high"]
        widths.append(h["rel_half_width"])
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.01


def test_is_steady():
    assert not measure.is_steady([5.0, 1.0, 1.0], window=5, tolerance=0.1)
    assert not measure.is_steady([5.0, 1.0, 1.0, 1.0, 1.0], window=5, tolerance=0.1)
    assert measure.is_steady([5.0, 1.0, 1.02, 0.99, 1.0, 1.05], window=5, tolerance=0.1)
    assert not measure.is_steady([1.0, 1.0, 1.0, 1.0, 1.2], window=5, tolerance=0.1)


def test_loops_for_short_steps():
    assert measure.loops_for(0.01, 0.001) == 1
    assert measure.loops_for(0.0003, 0.001) == 4
    assert measure.loops_for(0.0, 0.001) == 1


def test_should_stop_rules():
    s = {"min_samples": 10, "target": 0.02, "budget_s": 5.0, "max_steps": 100}
    tight = [1.0 + 0.001 * (i % 3) for i in range(10)]
    noisy = [1.0 + 0.5 * (i % 2) for i in range(10)]
    assert measure.should_stop(tight[:9], 9, 100.0, s) is None       # the minimum always wins
    assert measure.should_stop(tight, 10, 0.1, s) == "target_met"
    assert measure.should_stop(noisy, 10, 0.1, s) is None
    assert measure.should_stop(noisy, 10, 5.0, s) == "budget_spent"
    assert measure.should_stop(noisy, 100, 0.1, s) == "max_steps"


# ------------------------------------------------------------------ the loop, with a fake step

class FakeDevice(object):
    """A step whose duration the test sets; the clock only moves when the step runs."""

    def __init__(self, durations):
        self.t = 0.0
        self.durations = durations
        self.calls = 0

    def clock(self):
        return self.t

    def step(self, i):
        self.t += self.durations(self.calls)
        self.calls += 1

    def sync(self):
        pass


def run(device, cal, batch=4):
    return measure.time_steps(device.step, cal.warmup_min, cal.min_samples, device.sync, batch,
                              calibration=cal, clock_fn=device.clock)


def test_compilation_stays_out_of_timed_steps():
    # first call compiles (10 s), a second retrace (3 s) on call 2, then 0.1 s steady
    dev = FakeDevice(lambda c: {0: 10.0, 1: 3.0}.get(c, 0.1))
    r = run(dev, measure.Calibration(10, target=0.02, budget_s=60, warmup_min=1))
    assert r.warmup_times[:2] == [10.0, 3.0]
    assert max(r.times) == pytest.approx(0.1)
    m = r.metrics()
    assert m["compile_s"] == 10.0 and m["warmup_stop"] == "steady"
    assert m["warmup_steps"] == 2 + 5  # two slow ones, then a steady window of 5
    assert m["warmup_s"] == pytest.approx(13.5)
    assert m["headline"]["stop_reason"] == "target_met"
    assert m["samples_per_s"] == pytest.approx(40.0)


def test_warmup_floor_and_ceiling():
    dev = FakeDevice(lambda c: 0.1)
    r = run(dev, measure.Calibration(6, warmup_min=20, budget_s=60))
    assert len(r.warmup_times) == 20          # --warmup is a floor
    dev = FakeDevice(lambda c: 0.1 * (1 + c % 2))  # never steady
    r = run(dev, measure.Calibration(6, warmup_min=0, warmup_max=30, warmup_budget_s=1e9))
    assert len(r.warmup_times) == 30 and r.warmup_reason == "max_warmup"
    dev = FakeDevice(lambda c: 0.1 * (1 + c % 2))
    r = run(dev, measure.Calibration(6, warmup_min=0, warmup_max=1000, warmup_budget_s=2.0))
    assert r.warmup_reason == "time_cap" and r.warmup_s == pytest.approx(2.1, abs=0.11)


def test_noisy_steps_run_until_target_or_budget():
    rng = random.Random(3)
    # 5 % noise: needs far more than the minimum 10 samples to reach +/- 1 %
    dev = FakeDevice(lambda c: 0.1 * (1 + 0.05 * rng.uniform(-1, 1)))
    r = run(dev, measure.Calibration(10, target=0.01, budget_s=1e9, max_steps=100000,
                                     tolerance=0.2))
    h = r.metrics()["headline"]
    assert h["stop_reason"] == "target_met" and h["rel_half_width"] <= 0.01
    assert len(r.times) > 10
    dev = FakeDevice(lambda c: 0.1 * (1 + 0.05 * rng.uniform(-1, 1)))
    r = run(dev, measure.Calibration(10, target=0.0001, budget_s=3.0, tolerance=0.2))
    assert r.stop_reason == "budget_spent" and 3.0 <= r.span <= 3.2
    dev = FakeDevice(lambda c: 0.1 * (1 + 0.05 * rng.uniform(-1, 1)))
    r = run(dev, measure.Calibration(10, target=0.0001, budget_s=1e9, max_steps=50,
                                     tolerance=0.2))
    assert r.stop_reason == "max_steps" and len(r.times) == 50


def test_minimum_samples_beat_everything():
    dev = FakeDevice(lambda c: 0.1)
    r = run(dev, measure.Calibration(40, target=0.5, budget_s=0.0, max_steps=5))
    assert len(r.times) == 40


def test_short_steps_are_timed_in_groups():
    dev = FakeDevice(lambda c: 0.0002)
    r = run(dev, measure.Calibration(10, target=0.02, budget_s=10.0))
    assert r.loops == 8  # 8 x 0.2 ms >= 1 ms
    assert r.steps == 8 * len(r.times)
    assert r.times[0] == pytest.approx(0.0002)
    assert r.metrics()["timed_steps"] == r.steps


def test_repeat_index_from_the_runner():
    from bench.env import cell_ids_from_env
    assert cell_ids_from_env({"DLBENCH_REPEAT": "2", "DLBENCH_RUN_ID": "r"}) == {"repeat": 2, "run_id": "r"}
    assert "repeat" not in cell_ids_from_env({"DLBENCH_REPEAT": "x"})
