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

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from bench.contract import DOWNLOAD_URLS, HOW_TO_PROVIDE, SYSTEM_DIRS, known_hashes

DEFAULT_CACHE = Path(os.environ.get("DLBENCH_DATA_CACHE", Path.home() / ".cache" / "dlbench" / "datasets"))
DOWNLOAD_TIMEOUT_S = 30

# The catalog (URLs, checksums, how to provide each) has one owner, bench/contract.py, shared with bench.
OFFICIAL_URLS = DOWNLOAD_URLS


@dataclass(frozen=True)
class DatasetSource:
    name: str
    path: Optional[Path]      # host directory to mount read-only at /data/<name>
    origin: str               # "--data-dir", "cache", "system", "downloaded"
    problem: Optional[str] = None


def _has_files(directory: Path) -> bool:
    return directory.is_dir() and any(p.is_file() or p.is_dir() for p in directory.iterdir())


def _download(url: str, dest: Path, expected: list[str]) -> None:
    """Fetch one file to dest atomically with pooch; it must match one of `expected` ("sha256:…" or the
    publisher's "md5:…") when any is known. Raises OSError/ValueError with a short reason."""
    import pooch
    part = f".part-{dest.name}"
    (dest.parent / part).unlink(missing_ok=True)
    downloader = pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT_S, progressbar=False)
    try:
        fetched = Path(pooch.retrieve(url, known_hash=None, fname=part, path=dest.parent, downloader=downloader))
    except Exception as exc:  # requests' errors, HTTP status errors
        (dest.parent / part).unlink(missing_ok=True)
        raise OSError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if expected:
        got = {alg: pooch.file_hash(str(fetched), alg=alg) for alg in {h.split(":", 1)[0] for h in expected}}
        if not any(got[h.split(":", 1)[0]] == h.split(":", 1)[1] for h in expected):
            fetched.unlink(missing_ok=True)
            found = ", ".join(f"{alg} {value}" for alg, value in sorted(got.items()))
            raise ValueError(f"checksum mismatch for {url}: {found}, expected {' or '.join(expected)}")
    os.replace(fetched, dest)


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
        expected = known_hashes(name, filename)
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
