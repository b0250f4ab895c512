"""Dataset loaders against small files generated in each real on-disk format."""

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from bench import datasets
from support import require

RNG = np.random.RandomState(0)


def write_idx(path, array, compress):
    codes = {np.dtype(np.uint8): 0x08}
    header = struct.pack(">HBB", 0, codes[array.dtype], array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def make_mnist(directory, n_train=12, n_test=5, compress=True):
    os.makedirs(directory)
    arrays = {
        "train-images-idx3-ubyte": RNG.randint(0, 256, (n_train, 28, 28)).astype(np.uint8),
        "train-labels-idx1-ubyte": RNG.randint(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": RNG.randint(0, 256, (n_test, 28, 28)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": RNG.randint(0, 10, n_test).astype(np.uint8),
    }
    for base, array in arrays.items():
        write_idx(os.path.join(directory, base + (".gz" if compress else "")), array, compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx(tmp_path, compress):
    arrays = make_mnist(str(tmp_path / "mnist"), compress=compress)
    # generated .gz files carry the official names but not the official bytes
    data = datasets.load("mnist", str(tmp_path), check=not compress)
    assert data["x_train"].shape == (12, 1, 28, 28) and data["x_train"].dtype == np.uint8
    assert np.array_equal(data["x_train"][:, 0], arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data["y_test"], arrays["t10k-labels-idx1-ubyte"].astype(np.int64))
    assert data["y_train"].dtype == np.int64
    if not compress:  # no checksum is known for unpacked idx files
        assert all(f["verified"] is None for f in data["files"])


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    make_mnist(str(tmp_path / "mnist"), compress=True)
    with pytest.raises(datasets.DatasetError) as info:
        datasets.load("mnist", str(tmp_path))
    assert "checksum mismatch" in str(info.value)
    assert "440fcabf" in str(info.value)  # the official sha256 it expected
    # and can be skipped explicitly
    data = datasets.load("mnist", str(tmp_path), check=False)
    assert len(data["y_train"]) == 12


def test_unknown_variant_is_reported_unverified(tmp_path):
    make_mnist(str(tmp_path / "fashion-mnist"), compress=False)
    record = datasets.verify("fashion-mnist",
                             str(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte"))
    assert record["verified"] is None and "unknown" in record["note"]


def test_idx_rejects_garbage(tmp_path):
    path = str(tmp_path / "bad")
    with open(path, "wb") as f:
        f.write(b"\x01\x02\x03\x04\x05")
    with pytest.raises(datasets.DatasetError):
        datasets.read_idx(path)


def cifar_batch(n, seed):
    rng = np.random.RandomState(seed)
    return {b"batch_label": b"x", b"labels": rng.randint(0, 10, n).tolist(),
            b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
            b"filenames": [b"f"] * n}


def test_cifar10_pickle_batches(tmp_path):
    sub = tmp_path / "cifar10" / "cifar-10-batches-py"
    os.makedirs(str(sub))
    batches = {}
    for i, name in enumerate(datasets.CIFAR_TRAIN + (datasets.CIFAR_TEST,)):
        batches[name] = cifar_batch(4, i)
        with open(str(sub / name), "wb") as f:
            pickle.dump(batches[name], f, protocol=2)
    data = datasets.load("cifar10", str(tmp_path))
    assert data["x_train"].shape == (20, 3, 32, 32) and data["x_test"].shape == (4, 3, 32, 32)
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32)
    assert np.array_equal(data["x_train"][0], first)
    assert data["y_test"].tolist() == batches["test_batch"][b"labels"]
    assert all("unknown" in f["note"] for f in data["files"])


def test_cifar10_official_tar_gz(tmp_path, monkeypatch):
    os.makedirs(str(tmp_path / "cifar10"))
    archive = str(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for i, name in enumerate(datasets.CIFAR_TRAIN + (datasets.CIFAR_TEST,)):
            payload = pickle.dumps(cifar_batch(3, i), protocol=2)
            info = tarfile.TarInfo("cifar-10-batches-py/" + name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    # our archive is not the official one: declare it as a known variant for the test
    with open(archive, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    monkeypatch.setitem(datasets.CHECKSUMS["cifar10"], "cifar-10-python.tar.gz",
                        [(digest, "test")])
    data = datasets.load("cifar10", str(tmp_path))
    assert data["x_train"].shape == (15, 3, 32, 32)
    assert data["files"][0]["verified"] is True


def test_imdb_npz_pad_truncate_clip(tmp_path):
    os.makedirs(str(tmp_path / "imdb"))
    x_train = np.empty(2, dtype=object)
    x_train[0] = [5, 6, 7]
    x_train[1] = list(range(1, 20))
    x_test = np.empty(1, dtype=object)
    x_test[0] = [100]
    np.savez(str(tmp_path / "imdb" / "imdb.npz"), x_train=x_train, y_train=np.array([0, 1]),
             x_test=x_test, y_test=np.array([1]))
    data = datasets.load("imdb", str(tmp_path), check=False, vocab_size=20, seq_len=6)
    # start_char 1, indices + 3, pre-padding with 0
    assert data["x_train"][0].tolist() == [0, 0, 1, 8, 9, 10]
    # truncated from the front; ids >= vocab become oov 2
    assert data["x_train"][1].tolist() == [17, 18, 19, 2, 2, 2]
    assert data["x_test"][0].tolist() == [0, 0, 0, 0, 1, 2]
    assert data["y_train"].dtype == np.int64 and data["num_classes"] == 2


@pytest.mark.parametrize("fmt", ["pickle", "npz"])
def test_imagenet32_batches(tmp_path, fmt):
    directory = tmp_path / "imagenet32"
    os.makedirs(str(directory))
    names = list(datasets.IMAGENET32_TRAIN) + [datasets.IMAGENET32_VAL]
    for i, name in enumerate(names):
        rng = np.random.RandomState(i)
        batch = {"data": rng.randint(0, 256, (2, 3072)).astype(np.uint8),
                 "labels": [1, 1000], "mean": np.zeros(3072)}
        if fmt == "npz":
            np.savez(str(directory / (name + ".npz")), **batch)
        else:
            with open(str(directory / name), "wb") as f:
                pickle.dump(batch, f)
    data = datasets.load("imagenet32", str(tmp_path))
    assert data["x_train"].shape == (20, 3, 32, 32) and data["num_classes"] == 1000
    assert data["y_train"][:2].tolist() == [0, 999]  # 1-based labels shifted
    limited = datasets.load("imagenet32", str(tmp_path), max_train_batches=2)
    assert limited["x_train"].shape[0] == 4


def test_missing_dataset_message(tmp_path):
    with pytest.raises(datasets.DatasetUnavailable) as info:
        datasets.load("cifar10", str(tmp_path))
    text = str(info.value)
    assert text.startswith("dataset cifar10 not available: ")
    assert str(tmp_path / "cifar10") in text and "--synthetic" in text
    assert "dataset cache" in text


def test_real_fashion_mnist_if_installed():
    require(os.path.isdir("/usr/share/datasets/fashion-mnist"),
            "dataset-fashion-mnist not installed")
    data = datasets.load("fashion-mnist")
    assert data["x_train"].shape == (60000, 1, 28, 28)
    assert data["x_test"].shape == (10000, 1, 28, 28)
    assert sorted(set(data["y_test"].tolist())) == list(range(10))
    assert all(f["verified"] for f in data["files"])


def test_synthetic_is_only_explicit():
    data = datasets.synthetic("cifar10")
    assert data["source"] == "synthetic" and data["x_train"].dtype == np.uint8
    assert len(data["x_train"]) == 50000
