"""Harness overhead: bench's PyTorch path vs a bare hand-written PyTorch loop.

Times one training step of the cifar10-vgg model (seed 003's CIFAR-10 CNN) at
batch 64 on CPU two ways in the same process:

  harness  bench.specs spec -> PyTorch adapter (DAG-walking module, train step
           from make_train_step) timed by bench.measure.time_steps
  bare     the same layers as a hand-written nn.Sequential, torch.optim.SGD,
           a plain for-loop timed with time.perf_counter

Blocks of the two alternate (ABAB...) so drift and neighbours' load hit both
alike; the figure per side is the median over all its steps, and the ratio is
harness / bare.  Goal: within 1 %.

    python benchmarks/bench_harness_overhead.py [--batch 64] [--blocks 6] [--steps 8]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    import torch
    from bench import measure, specs
    from bench.adapters.pytorch import Adapter

    rng = np.random.RandomState(0)
    x_np = rng.rand(args.batch, 3, 32, 32).astype(np.float32)
    y_np = rng.randint(0, 10, args.batch).astype(np.int64)

    # harness side
    adapter = Adapter("cpu", 0, "fp32", {})
    adapter.seed(0)
    spec = specs.get_spec("cifar10-vgg")
    model = adapter.build(spec)
    step = adapter.make_train_step(model, {"name": "sgd", "lr": 0.01, "momentum": 0.9,
                                           "loss": "xent"})
    hx, hy = adapter.to_device(x_np), adapter.to_device(y_np)

    # bare side
    torch.manual_seed(0)
    net = bare_model(torch)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    bx, by = torch.from_numpy(x_np), torch.from_numpy(y_np)
    assert sum(p.numel() for p in net.parameters()) == adapter.param_count(model)

    def bare_steps(n):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            opt.zero_grad()
            loss = loss_fn(net(bx), by)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        return times

    def harness_steps(n):
        return measure.time_steps(lambda i: step(hx, hy), 0, n, adapter.synchronize,
                                  args.batch).times

    harness_steps(args.warmup)
    bare_steps(args.warmup)
    harness, bare = [], []
    for block in range(args.blocks):
        # alternate which side goes first so neither always follows the other
        if block % 2 == 0:
            harness += harness_steps(args.steps)
            bare += bare_steps(args.steps)
        else:
            bare += bare_steps(args.steps)
            harness += harness_steps(args.steps)

    h, b = measure.summarize(harness), measure.summarize(bare)
    print("model cifar10-vgg, batch %d, CPU, torch %s, %d threads"
          % (args.batch, torch.__version__, torch.get_num_threads()))
    print("harness step: median %.4f s  mean %.4f s  jitter %.4f s  (n=%d)"
          % (h["median"], h["mean"], h["jitter"], h["n"]))
    print("bare    step: median %.4f s  mean %.4f s  jitter %.4f s  (n=%d)"
          % (b["median"], b["mean"], b["jitter"], b["n"]))
    ratio = h["median"] / b["median"]
    print("ratio harness/bare (median): %.4f  -> overhead %+.2f %%" % (ratio, 100 * (ratio - 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
