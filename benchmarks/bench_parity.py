"""Parity: our cnn-synthetic ResNet-50 cell against a hand-written training loop, in the same image.

For each framework, alternating pairs of fresh containers of the project's own image (built or reused
through the runner's render and build stages): one runs the cell exactly as `python -m runner` would
(the same `python -m bench` arguments, the `cpu` profile's calibration: warmup until steady, at least 6
timed samples, ±5 % target or 10 s), the other runs benchmarks/parity_loops.py, a hand-written loop of
the same model (ResNet-50 v1.5, 25,557,032 parameters, batch 16, fp32, synthetic data, plain SGD) written
the way the framework's performance guide says. Both report batch / median step time. Per framework it
prints the median of the per-pair ratios (ours / hand-written) with the order-statistic 95 % interval of
that median (bench.measure.median_ci; below 6 pairs no 95 % interval exists and the range is shown).
Goal (issue: fair and correct per framework): >= 0.98 for TensorFlow and PyTorch on this host, >= 0.95 for
Keras, MXNet and JAX (benchmarks/parity_loops.py says how each hand-written loop follows its guide).

    python benchmarks/bench_parity.py [--pairs 5] [--framework keras --framework jax ...] [--json OUT]

Containers run with no network, as the cells do; the benchmarks/ folder is mounted read-only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402

from bench.measure import median, median_ci  # noqa: E402
from runner import ROOT  # noqa: E402

HERE = Path(__file__).resolve().parent
BATCH = 16
# CNTK is left out: its image needs an ubuntu:18.04 base, which no registry serves to this host
FRAMEWORKS = ["tensorflow", "pytorch", "keras", "mxnet", "jax"]
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def cell_and_image(framework: str):
    """The cpu profile's cnn-synthetic ResNet-50 cell of `framework` and its image, built if missing."""
    import argparse as ap
    from runner.build import build_images
    from runner.cli import make_plan, render_plan
    args = ap.Namespace(matrix=ROOT / "matrix.yaml", only=[framework], workload=["cnn-synthetic"], profile="cpu",
                        device="cpu", backend="docker", rebuild=False, resume=None, parallel="auto",
                        results_dir=None, data_dir=None, timeout=None, run_id=None)
    plan = make_plan(args)
    cells = [c for c in plan.cells if c.model == "resnet50" and c.batch_size == BATCH and c.precision == "fp32"]
    if len(cells) != 1:
        raise SystemExit(f"{framework}: expected one cnn-synthetic resnet50 b{BATCH} fp32 cell, found {len(cells)}")
    rendered = render_plan(plan)
    image = rendered[(cells[0].framework, cells[0].version, cells[0].toolchain)]
    outcomes = build_images([image], rebuild=False, console=console)
    if not all(o.ok for o in outcomes.values()):
        raise SystemExit(f"{framework}: the image did not build: {outcomes}")
    return cells[0], image.tag


def run_container(client, tag: str, entrypoint: list[str], command: list[str], out_dir: Path) -> str:
    container = client.containers.run(
        tag, entrypoint=entrypoint, command=command, network_mode="none", detach=True, user="0:0",
        volumes={str(HERE): {"bind": "/parity", "mode": "ro"}, str(out_dir): {"bind": "/out", "mode": "rw"}})
    try:
        code = container.wait(timeout=1800)["StatusCode"]
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    if code != 0:
        raise SystemExit(f"{tag} {' '.join(command[:3])}... exited {code}:\n{logs[-3000:]}")
    return logs


def ours(client, cell, tag: str) -> float:
    from runner.contract import bench_args
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        out.chmod(0o777)
        run_container(client, tag, ["python", "-m", "bench"], bench_args(cell, "/data", "/out/r.json"), out)
        result = json.loads((out / "r.json").read_text())
    if result["status"] != "ok":
        raise SystemExit(f"our cell: {result['status']}: {result['message']}")
    m = result["metrics"]
    if m["param_count"] != 25_557_032:
        raise SystemExit(f"our cell built {m['param_count']} parameters")
    return float(m["samples_per_s"])


def hand(client, framework: str, tag: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        logs = run_container(client, tag, ["python", "/parity/parity_loops.py"],
                             ["--framework", framework, "--batch-size", str(BATCH)], Path(tmp))
    result = json.loads(logs.strip().splitlines()[-1])
    if result["params"] != 25_557_032:
        raise SystemExit(f"the hand-written {framework} loop has {result['params']} parameters")
    return float(result["samples_per_s"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--framework", action="append", choices=FRAMEWORKS)
    ap.add_argument("--json", help="write the per-pair figures here")
    opts = ap.parse_args()
    from runner.engine import connect
    client = connect()
    report = {}
    for framework in opts.framework or FRAMEWORKS:
        cell, tag = cell_and_image(framework)
        ratios, pairs = [], []
        for i in range(opts.pairs):
            # alternate which side goes first: drift of the host must not favour one side
            if i % 2 == 0:
                a = ours(client, cell, tag)
                h = hand(client, framework, tag)
            else:
                h = hand(client, framework, tag)
                a = ours(client, cell, tag)
            ratios.append(a / h)
            pairs.append({"ours": a, "hand": h})
            console.print(f"{framework} pair {i + 1}: ours {a:.2f}, hand-written {h:.2f} images/s, ratio {a / h:.3f}")
        low, high, coverage = median_ci(ratios)
        report[framework] = {"image": tag, "pairs": pairs, "ratios": ratios, "median_ratio": median(ratios),
                             "ci_low": low, "ci_high": high, "coverage": coverage}
    console.print("\n| framework | ours / hand-written (median of pairs) | interval | pairs | ours images/s (median) "
                  "| hand-written images/s (median) |")
    console.print("|---|---|---|---|---|---|")
    for framework, r in report.items():
        label = "95 % CI" if r["coverage"] >= 0.95 else "range: no 95 % interval below 6 pairs"
        console.print(f"| {framework} | {r['median_ratio']:.3f} | {r['ci_low']:.3f} - {r['ci_high']:.3f} ({label}) "
                      f"| {len(r['ratios'])} | {median([p['ours'] for p in r['pairs']]):.2f} "
                      f"| {median([p['hand'] for p in r['pairs']]):.2f} |")
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
