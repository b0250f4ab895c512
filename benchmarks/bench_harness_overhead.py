"""Harness overhead: bench's PyTorch path vs a bare hand-written PyTorch loop.

Times one training step of the cifar10-vgg model (seed 003's CIFAR-10 CNN) at
batch 64 on CPU two ways in the same process:

  harness  bench.specs spec -> PyTorch adapter (DAG-walking module, train step
           from make_train_step) timed by bench.measure.time_steps
  bare     the same layers as a hand-written nn.Sequential, torch.optim.SGD,
           a plain for-loop timed with time.perf_counter

Both sides start from the same weights and draw the same dropout masks (the
RNG is reseeded before each block), so they do the same arithmetic step for
step; two differently initialised models drift apart and then differ by
several per cent for reasons that are not the harness's.  A third side,
"control", is a second identical bare loop: control / bare is the noise floor
of the same run.  Blocks of the sides rotate so drift and neighbours' load hit
all alike.  One process's ratios still move by a few per cent with where its
tensors happen to be allocated (control / bare spans about +-4 % on the 2-core
VM), so the script runs --processes fresh interpreters and reports the median
and quartiles of their ratios.  Goal: within 1 %.

    python benchmarks/bench_harness_overhead.py [--processes 30] [--blocks 6] [--steps 4]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402


def bare_model(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 50, 3, padding=1), nn.ReLU(),
        nn.Conv2d(50, 50, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2, 2), nn.Dropout(0.25),
        nn.Conv2d(50, 100, 3, padding=1), nn.ReLU(),
        nn.Conv2d(100, 100, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2, 2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(6400, 512), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(512, 10))


def median_ci(values, level=0.95, resamples=10000):
    """Bootstrap confidence interval of the median (fixed seed, so reruns on the same
    ratios print the same interval)."""
    import random
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values)))
                     for _ in range(resamples))
    tail = int(resamples * (1 - level) / 2)
    return medians[tail], medians[-tail - 1]


def one_process(args):
    """Both sides in this interpreter; returns a dict of their step times."""
    import torch
    from bench import measure, specs
    from bench.adapters.pytorch import Adapter

    rng = np.random.RandomState(0)
    x_np = rng.rand(args.batch, 3, 32, 32).astype(np.float32)
    y_np = rng.randint(0, 10, args.batch).astype(np.int64)

    # harness side
    adapter = Adapter("cpu", 0, "fp32", {})
    adapter.seed(0)
    model = adapter.build(specs.get_spec("cifar10-vgg"))
    step = adapter.make_train_step(model, {"name": "sgd", "lr": 0.01, "momentum": 0.9,
                                           "loss": "xent"})
    hx, hy = adapter.to_device(x_np.copy()), adapter.to_device(y_np.copy())

    def bare_side():
        """A hand-written model with the harness's initial weights (same layer order)."""
        net = bare_model(torch)
        with torch.no_grad():
            harness_params = list(model.module.parameters())
            bare_params = list(net.parameters())
            assert [p.shape for p in harness_params] == [p.shape for p in bare_params]
            for mine, theirs in zip(bare_params, harness_params):
                mine.copy_(theirs)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        bx, by = torch.from_numpy(x_np.copy()), torch.from_numpy(y_np.copy())

        def steps(n, losses):
            times = []
            for _ in range(n):
                start = time.perf_counter()
                opt.zero_grad()
                loss = loss_fn(net(bx), by)
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - start)
                losses.append(float(loss.detach()))
            return times
        return steps

    def harness_side(n, losses):
        out = []
        times = measure.time_steps(lambda i: out.append(step(hx, hy)), 0, n,
                                   adapter.synchronize, args.batch).times
        losses += [float(v) for v in out]
        return times

    # "control" is a second, identical bare loop: its ratio to "bare" is this
    # process's noise floor, measured in the same run as the harness's ratio
    sides = {"harness": harness_side, "bare": bare_side(), "control": bare_side()}
    names = list(sides)
    times = {name: [] for name in names}
    losses = {name: [] for name in names}
    for name in names:
        torch.manual_seed(1000)
        sides[name](args.warmup, [])
    for block in range(args.blocks):
        # rotate which side goes first so none always follows another
        order = names[block % 3:] + names[:block % 3]
        for name in order:
            torch.manual_seed(block)
            times[name] += sides[name](args.steps, losses[name])
    # the same arithmetic on every side, or the comparison is not of the harness
    drift = max(abs(a - b) for name in names[1:]
                for a, b in zip(losses["harness"], losses[name]))
    return {"times": times, "loss_drift": drift,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--processes", type=int, default=30)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        json.dump(one_process(args), sys.stdout)
        return 0

    from bench import measure

    child_args = [sys.executable, os.path.abspath(__file__), "--child",
                  "--batch", str(args.batch), "--blocks", str(args.blocks),
                  "--steps", str(args.steps), "--warmup", str(args.warmup)]
    ratios, controls, runs = [], [], []
    for i in range(args.processes):
        run = json.loads(subprocess.run(child_args, check=True, stdout=subprocess.PIPE,
                                        cwd=ROOT).stdout)
        med = {name: measure.summarize(t)["median"] for name, t in run["times"].items()}
        ratios.append(med["harness"] / med["bare"])
        controls.append(med["control"] / med["bare"])
        runs.append(run)
        print("process %2d: median step harness %.4f s, bare %.4f s, control %.4f s; "
              "harness/bare %.4f, control/bare %.4f; max loss difference %.2g"
              % (i + 1, med["harness"], med["bare"], med["control"], ratios[-1],
                 controls[-1], run["loss_drift"]), flush=True)

    def spread(values):
        return "median %.4f (95 %% CI %.4f-%.4f), IQR %.4f-%.4f" % (
            statistics.median(values), *median_ci(values), *statistics.quantiles(values, n=4)[::2])

    print()
    print("model cifar10-vgg, batch %d, CPU, torch %s, %d threads; %d processes x %d steps per side"
          % (args.batch, runs[0]["torch"], runs[0]["threads"], args.processes,
             args.blocks * args.steps))
    print("harness / bare  : %s  -> overhead %+.2f %%"
          % (spread(ratios), 100 * (statistics.median(ratios) - 1)))
    print("control / bare  : %s  (noise floor: identical loops)" % spread(controls))
    pooled = {name: measure.summarize([t for r in runs for t in r["times"][name]])["median"]
              for name in runs[0]["times"]}
    print("pooled medians  : harness %.4f s, bare %.4f s, control %.4f s"
          % (pooled["harness"], pooled["bare"], pooled["control"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
