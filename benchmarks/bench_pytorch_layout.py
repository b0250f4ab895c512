"""PyTorch memory layout: channels_last (NHWC, the adapter's default) vs contiguous NCHW.

PyTorch's performance tuning guide recommends channels_last for convolutional networks; this checks
that the default is the faster layout for every conv workload of the `cpu` profile on this host.
Each side of a pair is one fresh `python -m bench` process (the CLI the containers run, with the
`cpu` profile's counts and calibration); the sides alternate, so drift and neighbours' load hit
both alike. Per workload it prints the median of the per-pair ratios (channels_last / NCHW images/s)
with the order-statistic 95 % interval of that median (bench.measure.median_ci; below 6 pairs no
95 % interval exists and the range is shown).

    python benchmarks/bench_pytorch_layout.py [--pairs 5] [--workload NAME ...] [--json OUT]

Needs torch in the interpreter that runs it (the test extra installs the CPU build).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.measure import median, median_ci  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
CALIBRATION = ["--target-ci", "0.05", "--time-budget", "10", "--warmup-budget", "10",
               "--max-warmup", "50", "--min-samples", "6"]
# name -> bench arguments: the `cpu` profile's sizes (matrix.yaml)
WORKLOADS = {
    "alexnet-fwd": ["--workload", "alexnet-fwd", "--batch-size", "128", "--iterations", "5", "--warmup", "1"]
    + CALIBRATION,
    "alexnet-fwdbwd": ["--workload", "alexnet-fwdbwd", "--batch-size", "128", "--iterations", "3", "--warmup",
                       "1"] + CALIBRATION,
    "cnn-synthetic/resnet50": ["--workload", "cnn-synthetic", "--model", "resnet50", "--batch-size", "16",
                               "--iterations", "3", "--warmup", "1"] + CALIBRATION,
    "cnn-synthetic/alexnet": ["--workload", "cnn-synthetic", "--model", "alexnet", "--batch-size", "16",
                              "--iterations", "3", "--warmup", "1"] + CALIBRATION,
    "resnet50-inference": ["--workload", "resnet50-inference", "--batch-size", "16", "--iterations", "5",
                           "--warmup", "1"] + CALIBRATION,
    "vgg16-step": ["--workload", "vgg16-step", "--batch-size", "16", "--iterations", "2", "--warmup", "1"]
    + CALIBRATION,
    "lenet-mnist": ["--workload", "lenet-mnist", "--dataset", "fashion-mnist", "--batch-size", "100",
                    "--iterations", "300", "--option", "eval_batches=20"],
    "cifar10-cnn": ["--workload", "cifar10-cnn", "--synthetic", "--batch-size", "64", "--epochs", "1",
                    "--iterations", "30", "--option", "eval_batches=10"],
    "vgg19-mnist": ["--workload", "vgg19-mnist", "--dataset", "fashion-mnist", "--batch-size", "64",
                    "--epochs", "1", "--iterations", "10", "--option", "eval_batches=10"],
}
DEFAULT = ["alexnet-fwd", "alexnet-fwdbwd", "cnn-synthetic/resnet50", "cnn-synthetic/alexnet",
           "resnet50-inference", "lenet-mnist", "cifar10-cnn", "vgg19-mnist"]


def one_run(args, channels_last):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "bench", "--framework", "pytorch", "--device", "cpu", "--data-dir", FASHION,
               "--out", out, "--option", "channels_last=%d" % channels_last] + args
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if not os.path.exists(out):
            raise SystemExit("bench wrote no result:\n" + proc.stderr[-2000:])
        with open(out) as f:
            result = json.load(f)
    if result["status"] != "ok":
        raise SystemExit("bench cell %s: %s" % (result["status"], result["message"]))
    return float(result["metrics"]["samples_per_s"]), result["metrics"].get("settings", {}).get("layout")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    ap.add_argument("--json", help="write the per-pair figures here")
    opts = ap.parse_args()
    report = {}
    for name in opts.workload or DEFAULT:
        ratios, rates = [], {"channels_last": [], "NCHW": []}
        for i in range(opts.pairs):
            # alternate which side goes first, so a slow start of the host does not favour one layout
            order = (1, 0) if i % 2 == 0 else (0, 1)
            got = {}
            for side in order:
                got[side], layout = one_run(WORKLOADS[name], side)
                expected = "NHWC (channels_last)" if side else "NCHW"
                if layout != expected:
                    raise SystemExit("%s: settings say layout %r, expected %r" % (name, layout, expected))
            rates["channels_last"].append(got[1])
            rates["NCHW"].append(got[0])
            ratios.append(got[1] / got[0])
            print("%-24s pair %d: channels_last %.2f, NCHW %.2f images/s, ratio %.3f"
                  % (name, i + 1, got[1], got[0], ratios[-1]), flush=True)
        low, high, coverage = median_ci(ratios)
        report[name] = {"ratios": ratios, "rates": rates, "median_ratio": median(ratios), "ci_low": low,
                        "ci_high": high, "coverage": coverage}
    print("\n| workload | channels_last / NCHW (median of pairs) | interval | pairs |")
    print("|---|---|---|---|")
    for name, r in report.items():
        label = "95 % CI" if r["coverage"] >= 0.95 else "range (no 95 % interval below 6 pairs)"
        print("| %s | %.3f | %.3f - %.3f (%s) | %d |" % (name, r["median_ratio"], r["ci_low"], r["ci_high"],
                                                      label, len(r["ratios"])))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
