"""Statistics, peaks table and the stdlib PNG codec."""

import math

import numpy as np
import pytest

from bench import measure, peaks, png


def test_summary_on_known_values():
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    s = measure.summarize(values)
    assert s["n"] == 5 and s["min"] == 1.0 and s["max"] == 100.0
    assert s["mean"] == pytest.approx(22.0)
    assert s["median"] == 3.0
    # population std
    assert s["std"] == pytest.approx(math.sqrt(sum((v - 22.0) ** 2 for v in values) / 5))
    # numpy's linear percentile: rank 0.95*4 = 3.8 -> 4 + 0.8*96
    assert s["p95"] == pytest.approx(80.8)
    assert s["p95"] == pytest.approx(float(np.percentile(values, 95)))
    # |v - 3| = 2,1,0,1,97 -> MAD 1 -> jitter 1.4826
    assert s["jitter"] == pytest.approx(1.4826)


def test_jitter_of_constant_is_zero_and_even_median():
    assert measure.jitter([5.0] * 7) == 0.0
    assert measure.median([1, 2, 3, 10]) == 2.5
    assert measure.percentile([7.0], 95) == 7.0


def test_empty_summary():
    assert measure.summarize([])["n"] == 0


def test_time_steps_fixed_counts_warmup_excluded_and_synchronized():
    calls, syncs = [], []
    result = measure.time_steps(lambda i: calls.append(i), warmup=3, steps=5,
                                synchronize=lambda: syncs.append(len(calls)), batch_size=8)
    assert len(calls) == 8 and len(result.times) == 5
    # warmup steps are timed one by one (for steadiness and compile_s), then one sync after
    # the warmup, then one after every timed step
    assert syncs == [1, 2, 3, 3, 4, 5, 6, 7, 8]
    assert result.span >= sum(result.times)
    assert result.span_samples_per_s == pytest.approx(5 * 8 / result.span)
    assert result.samples_per_s == pytest.approx(8 / measure.median(result.times))
    m = result.metrics()
    assert m["warmup_steps"] == 3 and m["timed_steps"] == 5 and m["loops"] == 1


def test_flops_metrics_and_mfu():
    m = measure.flops_metrics(1e9, 1000, 2.0, training=True, peak_tflops_total=10.0)
    assert m["achieved_tflops"] == pytest.approx(1.5)
    assert m["mfu"] == pytest.approx(0.15)
    assert measure.flops_metrics(1e9, 1000, 2.0, False, None)["mfu"] is None


@pytest.mark.parametrize("name,key", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"), ("NVIDIA H200", "H200 SXM"),
    ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA A100 80GB PCIe", "A100"),
    ("NVIDIA L4", "L4"), ("NVIDIA L40S", "L40S"), ("NVIDIA L40", "L40"),
    ("NVIDIA A10", "A10"), ("Tesla V100-SXM2-16GB", "V100 SXM"),
    ("Tesla V100-PCIE-32GB", "V100 PCIe"), ("Tesla T4", "T4"),
    ("NVIDIA GeForce RTX 3090", "RTX 3090"), ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("NVIDIA GeForce RTX 3090 Ti", None), ("Some Future GPU", None), ("", None),
])
def test_peak_device_matching(name, key):
    assert peaks.device_key(name) == key


def test_peaks_values_and_unknowns():
    assert peaks.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4)
    assert peaks.peak_tflops("NVIDIA A100-SXM4-40GB", "tf32") == 156.0
    assert peaks.peak_tflops("Tesla V100-SXM2-16GB", "bf16") is None
    assert peaks.peak_tflops("Unknown", "fp32") is None


def test_png_round_trip(tmp_path):
    rng = np.random.RandomState(0)
    grey = rng.randint(0, 256, (28, 28)).astype(np.uint8)
    rgb = rng.randint(0, 256, (5, 9, 3)).astype(np.uint8)
    for image in (grey, rgb):
        path = str(tmp_path / "x.png")
        png.write(path, image)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert np.array_equal(png.read(path), image)


def test_png_decoder_handles_all_row_filters():
    import struct
    import zlib
    image = np.arange(4 * 6, dtype=np.uint8).reshape(4, 6) * 7

    def filtered(rows):
        out = b""
        prev = np.zeros(6, dtype=np.int64)
        for r, kind in enumerate((1, 2, 3, 4)):
            line = rows[r].astype(np.int64)
            left = np.concatenate([[0], line[:-1]])
            upleft = np.concatenate([[0], prev[:-1]])
            if kind == 1:
                f = line - left
            elif kind == 2:
                f = line - prev
            elif kind == 3:
                f = line - (left + prev) // 2
            else:
                f = np.array([line[i] - png._paeth(int(left[i]), int(prev[i]), int(upleft[i]))
                              for i in range(6)])
            out += bytes([kind]) + bytes((f % 256).astype(np.uint8).tolist())
            prev = line
        return out

    data = (png.SIGNATURE + png._chunk(b"IHDR", struct.pack(">IIBBBBB", 6, 4, 8, 0, 0, 0, 0))
            + png._chunk(b"IDAT", zlib.compress(filtered(image)))
            + png._chunk(b"IEND", b""))
    assert np.array_equal(png.decode(data), image)


def test_png_rejects_corruption():
    data = bytearray(png.encode(np.zeros((2, 2), dtype=np.uint8)))
    data[20] ^= 0xFF  # inside IHDR
    with pytest.raises(ValueError):
        png.decode(bytes(data))


def test_mig_slices_are_recognised_so_mfu_is_omitted():
    from bench.env import on_mig_slice
    h100 = {"name": "NVIDIA H100 80GB HBM3", "mig": False}
    assert not on_mig_slice([h100], visible="0")
    assert on_mig_slice([h100], visible="MIG-4f8c5a2e-1d6b-5f0e-9b0a-3c1d2e3f4a5b")
    assert on_mig_slice([dict(h100, mig=True)], visible="")
    assert not on_mig_slice([{"name": "old GPU"}], visible="")      # records without the key: no MIG
