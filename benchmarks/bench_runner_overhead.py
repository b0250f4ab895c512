"""Runner overhead on a real Docker engine.

(a) A warm re-run of a finished smoke matrix (`python -m runner run --profile smoke --device cpu
    --only pytorch,tensorflow,mxnet --workload lenet-mnist --resume RUN`): zero builds, every cell
    skipped. Goal: under 5 s, interpreter start included.
(b) The runner's own cost per cell (create -> start -> wait -> logs -> result read and validated ->
    result stored -> remove), through the real Runner.run_cell, with the container's command replaced
    by a trivial one that writes a valid result at once. Goal: under 1.5 s per cell.

    python benchmarks/bench_runner_overhead.py [--cells N] [--run RUN_ID --results-dir DIR]

Without --run it first runs the smoke matrix once (images are built if missing; that is not timed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402

from runner import ROOT  # noqa: E402

MATRIX = ["--profile", "smoke", "--device", "cpu", "--only", "pytorch,tensorflow,mxnet", "--workload", "lenet-mnist"]


def runner_cli(*args) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "runner", *map(str, args)], cwd=str(ROOT), capture_output=True,
                          text=True)
    return proc, time.monotonic() - started


def warm_rerun(results_dir: Path, run_id: str | None, repeats: int = 3) -> dict:
    if run_id is None:
        proc, seconds = runner_cli("run", *MATRIX, "--results-dir", results_dir)
        if proc.returncode != 0:
            raise SystemExit(f"the smoke matrix did not finish ok:\n{proc.stdout}\n{proc.stderr}")
        run_id = sorted(p.name for p in results_dir.iterdir() if p.is_dir())[-1]
        print(f"(first run {run_id}: {seconds:.1f}s, not part of the figures)")
    times = []
    for _ in range(repeats):
        proc, seconds = runner_cli("run", *MATRIX, "--results-dir", results_dir, "--resume", run_id)
        if proc.returncode != 0 or "have a result already and are skipped" not in proc.stdout:
            raise SystemExit(f"warm re-run failed:\n{proc.stdout}\n{proc.stderr}")
        if "build [" in proc.stdout:
            raise SystemExit(f"warm re-run built something:\n{proc.stdout}")
        times.append(seconds)
    return {"run_id": run_id, "times": times, "median": statistics.median(times)}


def per_cell_overhead(cells: int) -> dict:
    import runner.backends.docker as docker_backend
    from runner.cli import make_plan, render_plan
    from runner.contract import cell_record
    from runner.options import RunOptions
    from runner.scheduler import RunContext, Scheduler
    from runner.engine import connect, image_exists
    from runner.gpus import machine_description
    from runner.results import error_result

    args = argparse.Namespace(matrix=ROOT / "matrix.yaml", only=["mxnet"], workload=["lenet-mnist"],
                              profile="smoke", device="cpu")
    plan = make_plan(args)
    rendered = render_plan(plan)
    image = next(iter(rendered.values()))
    client = connect()
    if not image_exists(client, image.tag):
        raise SystemExit(f"{image.tag} is missing: run the smoke matrix (or `python -m runner build`) first")
    (cell,) = plan.cells

    original = docker_backend.container_spec

    def trivial_spec(ctx, cell, image_tag, image_id, staging, gpu_ids, **kwargs):
        spec = original(ctx, cell, image_tag, image_id, staging, gpu_ids, **kwargs)
        result = error_result(cell_record(cell, ctx.run_id, ctx.plan.profile, image_tag, image_id),
                              "error", "")
        result["status"] = "ok"
        spec["entrypoint"] = ["python", "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"]
        spec["command"] = [f"/results/{cell.id}.json", json.dumps(result)]
        return spec

    docker_backend.container_spec = trivial_spec
    backend = docker_backend.DockerBackend(RunOptions(), console=None)
    per_cell = []
    with tempfile.TemporaryDirectory() as tmp:
        console = Console(file=open("/dev/null", "w"))
        for i in range(cells):
            run_dir = Path(tmp) / f"run-{i}"
            (run_dir / "logs").mkdir(parents=True)
            ctx = RunContext(plan=plan, run_id=f"bench-overhead-{i}", run_dir=run_dir, console=console,
                                     data_dir=Path(tmp), machine=machine_description())
            runner = Scheduler(ctx, backend, lambda c: image, 1, [])
            runner.total = 1
            started = time.monotonic()
            runner.run_cell(cell, [])
            per_cell.append(time.monotonic() - started)
            status = json.loads((run_dir / f"{cell.id}.json").read_text())["status"]
            if status != "ok":
                raise SystemExit(f"overhead cell ended {status}: {(run_dir / f'{cell.id}.json').read_text()}")
    docker_backend.container_spec = original

    # Where the time goes: the same steps straight through the SDK.
    steps = {"create": [], "start": [], "wait": [], "logs": [], "remove": []}
    for _ in range(cells):
        t0 = time.monotonic()
        c = client.containers.create(image.tag, entrypoint=["python", "-c", "pass"], command=[],
                                     network_mode="none", labels={"dlbench.run-id": "bench-overhead"})
        t1 = time.monotonic()
        c.start()
        t2 = time.monotonic()
        c.wait()
        t3 = time.monotonic()
        c.logs()
        t4 = time.monotonic()
        c.remove(force=True)
        t5 = time.monotonic()
        for key, value in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            steps[key].append(value)
    return {"image": image.tag, "times": per_cell, "median": statistics.median(per_cell),
            "max": max(per_cell), "steps": {k: statistics.median(v) for k, v in steps.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=10, help="cells for the per-cell figure (default 10)")
    ap.add_argument("--run", help="a finished smoke run to re-run (default: make one)")
    ap.add_argument("--results-dir", type=Path, help="where that run is (default: a temporary directory)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = opts.results_dir or Path(tmp) / "results"
        results.mkdir(parents=True, exist_ok=True)
        warm = warm_rerun(results, opts.run)
    print(f"(a) warm re-run of the finished smoke matrix ({' '.join(MATRIX)}): zero builds, "
          f"median {warm['median']:.2f}s over {len(warm['times'])} "
          f"({', '.join(f'{t:.2f}' for t in warm['times'])}); goal < 5 s: "
          f"{'met' if warm['median'] < 5 else 'MISSED'}")
    cell = per_cell_overhead(opts.cells)
    steps = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in cell["steps"].items())
    print(f"(b) runner overhead per cell (trivial command in {cell['image']}): median {cell['median']:.2f}s, "
          f"max {cell['max']:.2f}s over {len(cell['times'])} cells; goal < 1.5 s: "
          f"{'met' if cell['median'] < 1.5 else 'MISSED'}")
    print(f"    SDK steps alone (medians): {steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
