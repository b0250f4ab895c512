"""Measurement, kept apart from running (as pyperf does).

`time_steps` runs a step callable and records wall times; statistics live in
`summarize` and friends, which take plain lists and know nothing about
frameworks.  Every clock read that ends a timed span comes after the
adapter's `synchronize()`, so asynchronous device work is inside the span.
"""

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


class StepTimes(object):
    """Result of `time_steps`: per-step times and the wall time of the span."""

    def __init__(self, times, span, batch_size):
        self.times = times
        self.span = span
        self.batch_size = batch_size

    @property
    def samples_per_s(self):
        return len(self.times) * self.batch_size / self.span if self.span > 0 else 0.0

    def metrics(self):
        return {"step_time_s": summarize(self.times), "step_times_s": list(self.times),
                "timed_wall_s": self.span, "samples_per_s": self.samples_per_s}


def time_steps(step, warmup, steps, synchronize, batch_size, on_step=None, on_warmup_done=None):
    """Run step(i) `warmup` times untimed, then `steps` times timed.

    Each timed step's clock starts right before step(i) and stops after
    synchronize(); on_step(i, seconds, result) (logging) runs outside the
    step's time but inside the span, which runs from before the first timed
    step to after the last one (seed 001's timer).
    """
    for i in range(warmup):
        step(i)
    synchronize()
    if on_warmup_done is not None:
        on_warmup_done()
    times = []
    span_start = clock()
    for i in range(steps):
        start = clock()
        result = step(i)
        synchronize()
        elapsed = clock() - start
        times.append(elapsed)
        if on_step is not None:
            on_step(i, elapsed, result)
    span = clock() - span_start
    return StepTimes(times, span, batch_size)


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
