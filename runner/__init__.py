"""Host-side runner: matrix -> compat -> render -> build -> run -> results -> report.

One module per stage. This package is the only code that talks to Docker.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = ROOT / "images"
BENCH_DIR = ROOT / "bench"
DEFAULT_MATRIX = ROOT / "matrix.yaml"
