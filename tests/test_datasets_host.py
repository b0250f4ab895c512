"""Host-side dataset stage: user dir, cache, system location, verified download, clear errors."""

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from bench import contract
from runner import datasets
from runner.datasets import ensure_datasets
from support import require

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on loopback serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_user_data_dir_wins(tmp_path):
    user = tmp_path / "data"
    (user / "cifar10").mkdir(parents=True)
    (user / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"x")
    found = ensure_datasets(["cifar10"], data_dir=user, cache=tmp_path / "cache", urls={})
    assert found["cifar10"].path == user / "cifar10" and found["cifar10"].origin == "--data-dir"


def test_system_fashion_mnist_is_used(tmp_path):
    require(FASHION.is_dir(), "dataset-fashion-mnist not installed (`make datasets` installs it)")
    found = ensure_datasets(["fashion-mnist"], cache=tmp_path / "cache", urls={})
    assert found["fashion-mnist"].path == FASHION and found["fashion-mnist"].origin == "system"


def test_download_is_verified_and_cached(tmp_path, http_root, monkeypatch):
    root, base = http_root
    payload = b"not really imdb, but bytes with a known checksum"
    (root / "imdb.npz").write_bytes(payload)
    monkeypatch.setitem(contract.CHECKSUMS, "imdb", {"imdb.npz": [(hashlib.sha256(payload).hexdigest(), "t")]})
    urls = {"imdb": {"imdb.npz": [f"{base}/missing.npz", f"{base}/imdb.npz"]}}
    cache = tmp_path / "cache"
    found = ensure_datasets(["imdb"], cache=cache, urls=urls)
    assert found["imdb"].origin == "downloaded" and (cache / "imdb" / "imdb.npz").read_bytes() == payload
    (root / "imdb.npz").unlink()  # second call must not download again
    assert ensure_datasets(["imdb"], cache=cache, urls=urls)["imdb"].origin == "cache"


def test_a_publishers_md5_verifies_the_official_download(tmp_path, http_root, monkeypatch):
    """Zalando publishes only md5s of Fashion-MNIST's files: a download matching one is accepted (and one
    matching neither the md5 nor a known sha256 is not)."""
    root, base = http_root
    name = "train-labels-idx1-ubyte.gz"
    payload = b"labels as the publisher serves them"
    (root / name).write_bytes(payload)
    monkeypatch.setitem(contract.CHECKSUMS, "fashion-mnist", {name: [("0" * 64, "debian")]})
    monkeypatch.setitem(contract.MD5_OFFICIAL, "fashion-mnist", {name: hashlib.md5(payload).hexdigest()})
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {})
    urls = {"fashion-mnist": {name: [f"{base}/{name}"]}}
    found = ensure_datasets(["fashion-mnist"], cache=tmp_path / "cache", urls=urls)
    assert found["fashion-mnist"].origin == "downloaded", found["fashion-mnist"].problem
    assert (tmp_path / "cache" / "fashion-mnist" / name).read_bytes() == payload
    monkeypatch.setitem(contract.MD5_OFFICIAL, "fashion-mnist", {name: "f" * 32})
    again = ensure_datasets(["fashion-mnist"], cache=tmp_path / "other", urls=urls)["fashion-mnist"]
    assert again.path is None and "md5:" + "f" * 32 in again.problem


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path, http_root, monkeypatch):
    root, base = http_root
    (root / "imdb.npz").write_bytes(b"tampered")
    monkeypatch.setitem(contract.CHECKSUMS, "imdb", {"imdb.npz": [("0" * 64, "t")]})
    cache = tmp_path / "cache"
    found = ensure_datasets(["imdb"], cache=cache, urls={"imdb": {"imdb.npz": [f"{base}/imdb.npz"]}})
    assert found["imdb"].path is None
    assert "checksum mismatch" in found["imdb"].problem
    assert not (cache / "imdb" / "imdb.npz").exists()


def test_unreachable_dataset_gives_the_clear_error(tmp_path):
    urls = {"cifar10": {"cifar-10-python.tar.gz": ["http://127.0.0.1:9/cifar-10-python.tar.gz"]}}
    found = ensure_datasets(["cifar10"], data_dir=tmp_path / "nothing", cache=tmp_path / "cache", urls=urls)
    problem = found["cifar10"].problem
    assert problem.startswith("dataset cifar10 not available: looked in ")
    assert str(tmp_path / "nothing" / "cifar10") in problem
    assert "--data-dir DIR" in problem and "cifar-10-python.tar.gz" in problem


def test_imagenet32_only_from_a_user_dir(tmp_path):
    found = ensure_datasets(["imagenet32"], cache=tmp_path / "cache")
    assert "no public download URL" in found["imagenet32"].problem
