"""Benchmark: planning a 10,000-cell matrix (load + validate + expand + render) should take under 2 s.

Run: python benchmarks/bench_plan.py. A benchmark, not a timed test: the figure
goes into benchmarks/RESULTS.md with the machine it ran on.
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.matrix import expand, load_matrix, resolve_profile  # noqa: E402
from runner.render import render_all  # noqa: E402

MATRIX = """\
frameworks:
  pytorch: {versions: ["2.15.0", "2.14.1"]}
  tensorflow: {versions: ["2.21.0", "2.20.0", "2.19.1", "2.18.1", "2.17.1", "2.16.2"]}
  jax: {versions: ["0.10.2"]}
  mxnet: {versions: ["1.9.1"]}
toolchains: [cpu, cuda13.0-cudnn9, cuda12.8-cudnn9, cuda12.5-cudnn9.3, cuda11.7-cudnn8]
workloads:
  cnn-synthetic:
    models: [inception3, resnet50, vgg16, alexnet, nasnet]
    batch_sizes: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    precisions: [fp32, fp16, bf16, amp]
    gpus: [1, 2, 4, 8]
    devices: [gpu, cpu]
  vgg16-step:
    batch_sizes: [8, 16, 32, 64, 128]
    precisions: [fp32, fp16, bf16, amp]
    gpus: [1, 2, 4, 8]
    variants:
      - {framework: tensorflow, options: {data_format: NHWC, xla: false}}
      - {framework: tensorflow, options: {data_format: NHWC, xla: true}}
      - {framework: tensorflow, options: {data_format: NCHW, xla: false}}
      - {framework: tensorflow, options: {data_format: NCHW, xla: true}}
      - {framework: pytorch, options: {channels_last: true}}
exclude:
  - {framework: mxnet, precision: bf16}
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(MATRIX)
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            matrix, lines = load_matrix(path)
            profile = resolve_profile(matrix, "full", True, path, lines)
            plan = expand(matrix, path=path, lines=lines, profile=profile, device="gpu")
            images = render_all(plan.images)
            timings.append(time.perf_counter() - start)
        timings.sort()
        print(f"cells: {len(plan.cells)}, images: {len(images)}, dropped: {len(plan.dropped)}")
        print(f"plan time: best {timings[0]:.3f} s, median {timings[2]:.3f} s (goal < 2 s)")
        return 0 if len(plan.cells) >= 10000 and timings[2] < 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
