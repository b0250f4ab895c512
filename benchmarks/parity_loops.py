"""Hand-written ResNet-50 training loops, one per framework, for benchmarks/bench_parity.py.

Runs inside a framework image (stdlib + numpy + the framework; nothing from bench/), the way a user would
write the loop from the framework's own performance guide: ResNet-50 v1.5 (stride on the 3x3, no conv bias,
BN eps 1e-5, 1000 classes), synthetic 224x224 batch already on the device, plain SGD lr 0.01 and softmax
cross-entropy (what the cnn-synthetic cell trains). Timing: `--warmup` steps, then `--steps` steps each
synchronised and timed alone; images/s = batch / median step time, the statistic the cell's headline uses.
Prints one JSON line: {"samples_per_s", "median_step_s", "step_times_s", "params", "framework_version"}.

    python parity_loops.py --framework pytorch|tensorflow [--batch-size 16] [--warmup 3] [--steps 6]
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))


def pytorch_loop(batch, lr):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = width * 4
            self.c1, self.b1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.c2, self.b2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.c3, self.b3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            y = F.relu(self.b2(self.c2(y)))
            y = self.b3(self.c3(y))
            return F.relu(y + (self.proj(x) if self.proj is not None else x))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, (width, n) in enumerate(STAGES):
        for i in range(n):
            layers.append(Bottleneck(cin, width, 2 if (i == 0 and stage > 0) else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    # the PyTorch performance tuning guide: channels_last for convolutional networks
    model = nn.Sequential(*layers).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rng = np.random.RandomState(0)
    x = torch.from_numpy((rng.standard_normal((batch, 3, 224, 224)) * 0.1).astype(np.float32))
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(rng.randint(0, 1000, batch).astype(np.int64))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()   # synchronises (CPU: the step is done when it returns anyway)

    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return step, int(params), torch.__version__


def tensorflow_loop(batch, lr):
    import tensorflow as tf
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    # the tf_cnn_benchmarks-style model and tf.function step of benchmarks/bench_tf_resnet50.py (NHWC)
    from bench_tf_resnet50 import hand_tuned_resnet50, make_hand_step
    trainable, _, call = hand_tuned_resnet50(tf, tf.float32)
    rng = np.random.RandomState(0)
    x = tf.constant((rng.standard_normal((batch, 224, 224, 3)) * 0.1).astype(np.float32))
    y = tf.constant(rng.randint(0, 1000, batch).astype(np.int64))
    fn = make_hand_step(tf, trainable, call, lr, False)

    def step():
        return float(fn(x, y).numpy())

    params = sum(int(np.prod(v.shape)) for v in trainable)
    return step, params, tf.__version__


LOOPS = {"pytorch": pytorch_loop, "tensorflow": tensorflow_loop}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--framework", choices=sorted(LOOPS), required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()
    step, params, version = LOOPS[args.framework](args.batch_size, args.lr)
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(json.dumps({"samples_per_s": args.batch_size / median, "median_step_s": median, "step_times_s": times,
                      "params": params, "framework_version": version}))


if __name__ == "__main__":
    main()
