"""Dataset stage: put each dataset the plan needs in one host directory, once, before any container runs.

Containers run without network, so data is fetched here and mounted read-only.
Where each dataset comes from, in order: a directory the user names
(`--data-dir DIR` holding `<name>/`), the host's cache
(`~/.cache/dlbench/datasets/<name>/`), a system location (Debian's
dataset-fashion-mnist package), then the official URLs, verified against the
checksums bench/datasets.py keeps. A dataset that cannot be had is reported
with where it was looked for and how to provide it; its cells get that error
and never silently switch to synthetic data.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from bench.datasets import CHECKSUMS, SYSTEM_DIRS

DEFAULT_CACHE = Path(os.environ.get("DLBENCH_DATA_CACHE", Path.home() / ".cache" / "dlbench" / "datasets"))
DOWNLOAD_TIMEOUT_S = 30

_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# name -> {file: [urls, first that works wins]}
OFFICIAL_URLS: dict[str, dict[str, list[str]]] = {
    "mnist": {f: [f"http://yann.lecun.com/exdb/mnist/{f}",
                  f"https://ossci-datasets.s3.amazonaws.com/mnist/{f}"] for f in _MNIST_FILES},
    "fashion-mnist": {f: [f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{f}"]
                      for f in _MNIST_FILES},
    "cifar10": {"cifar-10-python.tar.gz": ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]},
    "imdb": {"imdb.npz": ["https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"]},
    # ImageNet32 needs an image-net.org account: it can only come from --data-dir.
    "imagenet32": {},
}

HOW_TO_PROVIDE = {
    "mnist": "the four idx .gz files (train-images-idx3-ubyte.gz, ...)",
    "fashion-mnist": "the four idx .gz files, or Debian/Ubuntu's dataset-fashion-mnist package",
    "cifar10": "cifar-10-python.tar.gz or its extracted cifar-10-batches-py/",
    "imdb": "the Keras imdb.npz",
    "imagenet32": "the Imagenet32 batches (train_data_batch_1..10, val_data) from image-net.org",
}


@dataclass(frozen=True)
class DatasetSource:
    name: str
    path: Optional[Path]      # host directory to mount read-only at /data/<name>
    origin: str               # "--data-dir", "cache", "system", "downloaded"
    problem: Optional[str] = None


def _has_files(directory: Path) -> bool:
    return directory.is_dir() and any(p.is_file() or p.is_dir() for p in directory.iterdir())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, dest: Path, expected: set[str]) -> None:
    """Fetch one file to dest atomically; raise OSError/ValueError with a short reason."""
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, prefix=".part-") as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                shutil.copyfileobj(response, tmp)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    if expected:
        got = _sha256(tmp_path)
        if got not in expected:
            tmp_path.unlink(missing_ok=True)
            raise ValueError(f"checksum mismatch for {url}: sha256 {got}, expected {' or '.join(sorted(expected))}")
    os.replace(tmp_path, dest)


def _fetch(name: str, cache: Path, urls: dict[str, dict[str, list[str]]]) -> Optional[str]:
    """Download a dataset into cache/<name>; None on success, else the reason."""
    files = urls.get(name) or {}
    if not files:
        return "it has no public download URL"
    target = cache / name
    target.mkdir(parents=True, exist_ok=True)
    for filename, candidates in files.items():
        dest = target / filename
        if dest.is_file():
            continue
        expected = {sha for sha, _variant in CHECKSUMS.get(name, {}).get(filename, [])}
        errors = []
        for url in candidates:
            try:
                _download(url, dest, expected)
                break
            except (OSError, ValueError, urllib.error.URLError) as exc:
                reason = getattr(exc, "reason", None) or exc
                errors.append(f"{url}: {reason}")
        else:
            return "download failed (" + "; ".join(errors) + ")"
    return None


def ensure_datasets(names: Iterable[str], *, data_dir: Optional[Path] = None, cache: Path = DEFAULT_CACHE,
                    urls: Optional[dict] = None, console=None) -> dict[str, DatasetSource]:
    """Where each dataset is on the host (or why it is not), fetching into the cache when needed."""
    urls = OFFICIAL_URLS if urls is None else urls
    found: dict[str, DatasetSource] = {}
    for name in sorted(set(names)):
        looked = []
        if data_dir is not None:
            looked.append(str(data_dir / name))
            if _has_files(data_dir / name):
                found[name] = DatasetSource(name, data_dir / name, "--data-dir")
                continue
        looked.append(str(cache / name))
        cached = cache / name
        if _has_files(cached) and all((cached / f).exists() for f in (urls.get(name) or {})):
            found[name] = DatasetSource(name, cached, "cache")
            continue
        system = next((Path(d) for d in SYSTEM_DIRS.get(name, ()) if _has_files(Path(d))), None)
        looked += list(SYSTEM_DIRS.get(name, ()))
        if system is not None:
            found[name] = DatasetSource(name, system, "system")
            continue
        if console is not None:
            console.print(f"datasets: fetching {name} into {cache / name}")
        reason = _fetch(name, cache, urls)
        if reason is None:
            found[name] = DatasetSource(name, cache / name, "downloaded")
            continue
        if (cache / name).is_dir() and not any((cache / name).iterdir()):
            (cache / name).rmdir()  # keep partial downloads, not empty folders
        found[name] = DatasetSource(name, None, "missing", problem=(
            f"dataset {name} not available: looked in {', '.join(looked)}; {reason}. Provide "
            f"{HOW_TO_PROVIDE[name]} in a directory DIR/{name}/ and pass --data-dir DIR, or use "
            f"`synthetic: true` for this workload in the matrix (tables mark synthetic rows)"))
    return found


def datasets_of(cells) -> set[str]:
    return {c.dataset for c in cells if c.dataset and not c.synthetic}
