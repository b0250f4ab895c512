"""Measurement, kept apart from running (as pyperf does).

`time_steps` runs a step callable and records wall times; statistics live in
`summarize` and friends, which take plain lists and know nothing about
frameworks.  Every clock read that ends a timed span comes after the
adapter's `synchronize()`, so asynchronous device work is inside the span.
"""

import functools
import math
import time

clock = time.perf_counter

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this = its sigma


def median(values):
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of no values")
    mid = n // 2
    if n % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def percentile(values, q):
    """q-th percentile (0..100), linear interpolation between closest ranks
    (numpy's default method)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = (len(ordered) - 1) * q / 100.0
    low = int(math.floor(rank))
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def jitter(values):
    """1.4826 x median absolute deviation: a robust sigma (tf_cnn_benchmarks)."""
    mid = median(values)
    return MAD_TO_SIGMA * median([abs(v - mid) for v in values])


def mean_std(values):
    """Mean and population standard deviation (what seed 004's +/- reports)."""
    n = len(values)
    mean = sum(values) / float(n)
    var = sum((v - mean) ** 2 for v in values) / float(n)
    return mean, math.sqrt(var)


def summarize(values):
    """The schema's step_time_s object."""
    if not values:
        return {"n": 0, "mean": 0.0, "median": 0.0, "std": 0.0, "min": 0.0, "max": 0.0,
                "p95": 0.0, "jitter": 0.0}
    mean, std = mean_std(values)
    return {"n": len(values), "mean": mean, "median": median(values), "std": std,
            "min": float(min(values)), "max": float(max(values)),
            "p95": percentile(values, 95), "jitter": jitter(values)}


# ------------------------------------------------------------------ confidence interval of the median

CONFIDENCE = 0.95
CI_METHOD = "order-statistic interval of the median (binomial, distribution-free)"
_EXACT_MAX_N = 400  # exact binomial ranks up to here; the normal approximation beyond is tight enough


def _z(confidence):
    """Two-sided standard normal quantile for the usual confidences (no scipy in containers)."""
    table = {0.8: 1.2815515655446004, 0.9: 1.6448536269514722, 0.95: 1.959963984540054,
             0.98: 2.3263478740408408, 0.99: 2.5758293035489004}
    for level, z in table.items():
        if abs(level - confidence) < 1e-9:
            return z
    raise ValueError("confidence must be one of %s" % sorted(table))


def _binom_half_cdf(n):
    """Cumulative P(B <= i) for B ~ Binomial(n, 1/2), i = 0..n (log space: no underflow)."""
    log_half_n = n * math.log(0.5)
    out, total = [], 0.0
    for i in range(n + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                          + log_half_n)
        out.append(total)
    return out


@functools.lru_cache(maxsize=1024)
def median_ci_ranks(n, confidence=CONFIDENCE):
    """1-based ranks (j, k) of the order statistics bounding the median with at least
    `confidence` coverage, and that coverage; (1, n, coverage) when n is too small to reach it.

    [x_(j), x_(k)] holds the population median unless fewer than j or more than k-1 of the n
    samples lie below it; that count is Binomial(n, 1/2) whatever the distribution, so the
    interval assumes only independent samples from one continuous distribution."""
    if n < 1:
        raise ValueError("no samples")
    if n <= _EXACT_MAX_N:
        cdf = _binom_half_cdf(n)
        best = None
        for j in range(1, n // 2 + 1):  # symmetric: k = n + 1 - j
            coverage = 1.0 - 2.0 * cdf[j - 1]
            if coverage >= confidence:
                best = (j, n + 1 - j, coverage)
            else:
                break
        if best is None:
            return 1, n, 1.0 - 2.0 * cdf[0] if n > 1 else 0.0
        return best
    z = _z(confidence)
    j = int(math.floor(n / 2.0 - z * math.sqrt(n) / 2.0))  # normal approximation, conservative floor
    j = max(1, j)
    return j, n + 1 - j, confidence


def median_ci(values, confidence=CONFIDENCE):
    """(low, high, coverage) of the median of `values` (see median_ci_ranks)."""
    ordered = sorted(values)
    j, k, coverage = median_ci_ranks(len(ordered), confidence)
    return float(ordered[j - 1]), float(ordered[k - 1]), coverage


def rel_half_width(low, high, center):
    """Half the interval's width over the headline; inf when it cannot be said."""
    if center is None or not center > 0:
        return float("inf")
    return (high - low) / 2.0 / center


def headline(values, confidence=CONFIDENCE):
    """The headline statistic of step times: median, its CI, and whether that CI is real."""
    mid = median(values)
    low, high, coverage = median_ci(values, confidence)
    return {"statistic": "median", "value": mid, "ci_low": low, "ci_high": high,
            "confidence": confidence, "coverage": coverage, "ci_method": CI_METHOD,
            "n": len(values),
            # fewer than 6 samples cannot bound a median at 95 %: the interval is min..max
            # and its half-width is not claimed as a 95 % figure
            "rel_half_width": rel_half_width(low, high, mid) if coverage >= confidence
            else float("inf")}


# ------------------------------------------------------------------ stopping rules (pure)

def is_steady(times, window, tolerance):
    """The last `window` step times all lie within `tolerance` (relative) of their median."""
    if window < 1 or len(times) < window:
        return False
    last = times[-window:]
    mid = median(last)
    if mid <= 0:
        return False
    return all(abs(t - mid) <= tolerance * mid for t in last)


def should_stop(samples, steps_done, elapsed, settings):
    """Why sampling stops now, or None to go on.

    settings: min_samples, target (relative CI half-width), budget_s, max_steps.  The minimum
    sample count always wins; then the target, the step cap and the time budget."""
    n = len(samples)
    if n < settings["min_samples"]:
        return None
    if settings["target"] is not None and settings["target"] > 0:
        if headline(samples)["rel_half_width"] <= settings["target"]:
            return "target_met"
    if settings["max_steps"] is not None and steps_done >= settings["max_steps"]:
        return "max_steps"
    if settings["budget_s"] is None or elapsed >= settings["budget_s"]:
        return "budget_spent"
    return None


def loops_for(step_s, min_time):
    """Steps per timed sample so that one sample lasts >= min_time (a power of 2, as pyperf)."""
    if step_s <= 0:
        return 1
    loops = 1
    while loops * step_s < min_time and loops < 2 ** 20:
        loops *= 2
    return loops


class Calibration(object):
    """How long to warm up and how many samples to take (the bench CLI's flags).

    Warmup: at least `warmup_min` steps (--warmup), then until the last `window` step times lie
    within `tolerance` of their median, at most `warmup_max` steps or `warmup_budget_s` seconds.
    Sampling: at least `min_samples` samples (--iterations), then until the 95 % CI of the median
    is within `target` (relative half-width), `max_steps` steps are done or `budget_s` seconds
    are spent.  Steps shorter than `min_time` are timed in groups (pyperf's loops).

    Calibration.fixed(warmup, steps) is the old fixed count: exactly that many of each."""

    def __init__(self, min_samples, target=0.02, budget_s=30.0, max_steps=10000, warmup_min=0,
                 warmup_max=100, warmup_budget_s=30.0, window=5, tolerance=0.10, min_time=0.001):
        self.min_samples = max(1, int(min_samples))
        self.target = target
        self.budget_s = budget_s
        self.max_steps = max_steps
        self.warmup_min = max(0, int(warmup_min))
        self.warmup_max = warmup_max
        self.warmup_budget_s = warmup_budget_s
        self.window = window
        self.tolerance = tolerance
        self.min_time = min_time

    @classmethod
    def fixed(cls, warmup, steps):
        return cls(steps, target=None, budget_s=0.0, max_steps=None, warmup_min=warmup,
                   warmup_max=warmup, warmup_budget_s=0.0, min_time=0.0)

    def stop_settings(self):
        return {"min_samples": self.min_samples, "target": self.target,
                "budget_s": self.budget_s, "max_steps": self.max_steps}

    def describe(self):
        return {"target_rel_half_width": self.target, "time_budget_s": self.budget_s,
                "min_samples": self.min_samples, "max_steps": self.max_steps,
                "warmup_min": self.warmup_min, "warmup_max": self.warmup_max,
                "warmup_budget_s": self.warmup_budget_s, "steady_window": self.window,
                "steady_tolerance": self.tolerance}


class StepTimes(object):
    """Result of `time_steps`: per-step times (one per sample: a group's time / loops), the
    wall time of the sampling span, and how warmup and sampling ended."""

    def __init__(self, times, span, batch_size, loops=1, warmup_times=(), warmup_s=0.0,
                 warmup_reason="fixed", stop_reason="budget_spent", calibration=None):
        self.times = times
        self.span = span
        self.batch_size = batch_size
        self.loops = loops
        self.warmup_times = list(warmup_times)
        self.warmup_s = warmup_s
        self.warmup_reason = warmup_reason
        self.stop_reason = stop_reason
        self.calibration = calibration

    @property
    def steps(self):
        return len(self.times) * self.loops

    @property
    def span_samples_per_s(self):
        """Seed 001's rate: timed steps x batch / wall time of the span."""
        return self.steps * self.batch_size / self.span if self.span > 0 else 0.0

    def headline(self):
        return headline(self.times) if self.times else None

    @property
    def samples_per_s(self):
        """The headline rate: batch / median step time."""
        h = self.headline()
        return self.batch_size / h["value"] if h and h["value"] > 0 else 0.0

    def metrics(self):
        h = self.headline()
        out = {"step_time_s": summarize(self.times), "step_times_s": list(self.times),
               "timed_wall_s": self.span, "samples_per_s": self.samples_per_s,
               "span_samples_per_s": self.span_samples_per_s, "timed_steps": self.steps,
               "loops": self.loops, "warmup_steps": len(self.warmup_times),
               "compile_s": self.warmup_times[0] if self.warmup_times else None,
               "warmup_s": self.warmup_s, "warmup_stop": self.warmup_reason}
        if h is not None:
            h = dict(h, metric="step_time_s", stop_reason=self.stop_reason, loops=self.loops)
            if self.calibration is not None:
                h.update(self.calibration.describe())
            if h["rel_half_width"] == float("inf"):
                h["rel_half_width"] = None  # JSON has no inf: unknown
            out["headline"] = h
            if h["ci_low"] > 0:
                out["samples_per_s_ci"] = [self.batch_size / h["ci_high"],
                                           self.batch_size / h["ci_low"]]
        return out


def _warm_up(step, synchronize, cal, now):
    """Untimed-for-the-result steps until steady; returns (step times, seconds, why it ended)."""
    times = []
    start = now()
    while True:
        n = len(times)
        if n >= cal.warmup_min:
            if cal.warmup_max is not None and n >= cal.warmup_max:
                reason = "fixed" if cal.warmup_max == cal.warmup_min else "max_warmup"
                break
            if n and is_steady(times, cal.window, cal.tolerance):
                reason = "steady"
                break
            if cal.warmup_budget_s is None or now() - start >= cal.warmup_budget_s:
                reason = "time_cap" if n > cal.warmup_min or cal.warmup_budget_s else "fixed"
                break
        t0 = now()
        step(n)
        synchronize()
        times.append(now() - t0)
    return times, now() - start, reason


def time_steps(step, warmup, steps, synchronize, batch_size, on_step=None, on_warmup_done=None,
               calibration=None, clock_fn=None):
    """Warm up, then take timed samples until the stopping rule says enough.

    calibration: a Calibration; None means exactly `warmup` untimed and `steps` timed steps.
    Each sample's clock starts right before its step(s) and stops after synchronize();
    on_step(i, seconds per step, result) (logging) runs outside the sample's time but inside
    the span, which runs from before the first sample to after the last (seed 001's timer).
    clock_fn: the clock (tests pass a fake one)."""
    now = clock_fn or clock
    cal = calibration or Calibration.fixed(warmup, steps)
    warm_times, warm_s, warm_reason = _warm_up(step, synchronize, cal, now)
    synchronize()
    if on_warmup_done is not None:
        on_warmup_done()
    loops = 1
    if cal.min_time and warm_times:
        loops = loops_for(median(warm_times[-cal.window:]), cal.min_time)
    settings = cal.stop_settings()
    times = []
    index = len(warm_times)
    next_check = 0
    span_start = now()
    while True:
        n = len(times)
        # the CI costs a sort: after 100 samples check it only every ~5 % more samples
        check = n < 100 or n >= next_check
        if check:
            next_check = int(n * 1.05) + 1
        reason = should_stop(times, n * loops, now() - span_start,
                             settings if check else dict(settings, target=None))
        if reason is not None:
            break
        start = now()
        for _ in range(loops):
            result = step(index)
            index += 1
        synchronize()
        elapsed = (now() - start) / loops
        times.append(elapsed)
        if on_step is not None:
            on_step(n, elapsed, result)
    span = now() - span_start
    return StepTimes(times, span, batch_size, loops=loops, warmup_times=warm_times,
                     warmup_s=warm_s, warmup_reason=warm_reason, stop_reason=reason,
                     calibration=cal if calibration is not None else None)


def flops_metrics(flops_per_sample, samples, seconds, training, peak_tflops_total):
    """achieved_tflops and mfu.  Training costs ~3x the forward FLOPs (forward +
    backward for activations and weights).  peak_tflops_total: the summed dense
    peak of the devices used, or None (CPU / unknown device) -> mfu None."""
    if not flops_per_sample or not seconds or seconds <= 0:
        return {"achieved_tflops": None, "mfu": None}
    factor = 3.0 if training else 1.0
    achieved = flops_per_sample * factor * samples / seconds / 1e12
    mfu = achieved / peak_tflops_total if peak_tflops_total else None
    return {"achieved_tflops": achieved, "mfu": mfu}


class EnergyMeter(object):
    """GPU energy over a span from NVML's total-energy counter (mJ since the
    driver loaded; Volta and newer).  Inactive (joules() -> None) when pynvml
    is not importable, there is no GPU, or the counter is unsupported."""

    def __init__(self, gpu_indices):
        self._handles = []
        self._start = None
        self._nvml = None
        if not gpu_indices:
            return
        try:
            import pynvml
            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in gpu_indices]
            for h in self._handles:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        except Exception:
            self._handles = []

    def _read(self):
        return sum(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles)

    def start(self):
        if self._handles:
            try:
                self._start = self._read()
            except Exception:
                self._handles = []

    def joules(self):
        if not self._handles or self._start is None:
            return None
        try:
            return (self._read() - self._start) / 1000.0
        except Exception:
            return None
