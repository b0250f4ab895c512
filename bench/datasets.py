"""Real dataset loaders (numpy only; bench never downloads).

`load(name, data_dir)` returns a dict:
    {"x_train", "y_train", "x_test", "y_test",   # images uint8 (N, C, H, W);
                                                 # imdb: int64 (N, seq_len)
     "num_classes": int, "source": directory, "files": [checksum records]}
Labels are int64 class ids.  Images stay uint8 (ImageNet32 is 3.9 GB as
uint8); procedures scale batches to float32 as they go.

Where data is looked up: `<data_dir>/<name>/` (the host runner's dataset cache
is mounted and passed as --data-dir), then the dataset's system locations
(Fashion-MNIST: /usr/share/datasets/fashion-mnist, Debian's
dataset-fashion-mnist package).  Missing data raises DatasetUnavailable whose
message starts "dataset NAME not available: ".  Never a silent switch to
synthetic data.
"""

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile

import numpy as np

DATASETS = ("mnist", "fashion-mnist", "cifar10", "imdb", "imagenet32")

from bench.contract import CHECKSUMS, MD5_OFFICIAL, SYSTEM_DIRS  # noqa: E402,F401  (one owner)


class DatasetUnavailable(Exception):
    pass


class DatasetError(Exception):
    """The data is there but wrong (checksum mismatch, malformed file)."""


def _unavailable(name, looked_in, expected):
    return DatasetUnavailable(
        "dataset %s not available: looked for %s in %s; provide it through the host "
        "runner's dataset cache (--data-dir DIR holding %s/...) or run with --synthetic"
        % (name, expected, ", ".join(looked_in) if looked_in else "(no --data-dir given)", name))


def candidate_dirs(name, data_dir=None):
    dirs = []
    if data_dir:
        dirs.append(os.path.join(data_dir, name))
    dirs.extend(SYSTEM_DIRS.get(name, ()))
    return dirs


def _file_digest(path, algorithm):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(name, path, check=True):
    """Checksum record for one file; raises DatasetError on a known-file mismatch."""
    filename = os.path.basename(path)
    record = {"file": path, "sha256": None, "verified": None, "note": ""}
    if not check:
        record["note"] = "checksum not checked (verify_checksums=0)"
        return record
    sha = _file_digest(path, "sha256")
    record["sha256"] = sha
    known = CHECKSUMS.get(name, {}).get(filename)
    md5_known = MD5_OFFICIAL.get(name, {}).get(filename)
    if not known and not md5_known:
        record["note"] = "checksum unknown for this variant of %s; not verified" % filename
        return record
    for digest, variant in known or ():
        if digest == sha:
            record["verified"] = True
            record["note"] = "sha256 matches the %s file" % variant
            return record
    if md5_known and _file_digest(path, "md5") == md5_known:
        record["verified"] = True
        record["note"] = "md5 matches the official file (only md5 is published)"
        return record
    expected = ", ".join("%s (%s)" % (d, v) for d, v in known or ())
    if md5_known:
        expected += (", " if expected else "") + "md5 %s (official)" % md5_known
    raise DatasetError("checksum mismatch for %s: sha256 %s, expected %s; re-fetch the file "
                       "into the dataset cache" % (path, sha, expected))


# ------------------------------------------------------------------ idx (MNIST)

def read_idx(path):
    """An idx file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise DatasetError("%s: too short for an idx file" % path)
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
              0x0E: ">f8"}
    if zero != 0 or dtype_code not in dtypes:
        raise DatasetError("%s: not an idx file (magic %r)" % (path, data[:4]))
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    expected = int(np.prod(dims)) if dims else 1
    if array.size != expected:
        raise DatasetError("%s: %d values for dims %r" % (path, array.size, dims))
    return array.reshape(dims)


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find_idx(directory):
    found = {}
    for base in IDX_FILES:
        for candidate in (base + ".gz", base):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                found[base] = path
                break
    return found if len(found) == len(IDX_FILES) else None


def load_mnist_like(name, data_dir=None, check=True):
    dirs = candidate_dirs(name, data_dir)
    for directory in dirs:
        found = _find_idx(directory)
        if found:
            files = [verify(name, found[b], check) for b in IDX_FILES]
            x_train = read_idx(found[IDX_FILES[0]])
            y_train = read_idx(found[IDX_FILES[1]])
            x_test = read_idx(found[IDX_FILES[2]])
            y_test = read_idx(found[IDX_FILES[3]])
            return {"x_train": x_train[:, None, :, :], "y_train": y_train.astype(np.int64),
                    "x_test": x_test[:, None, :, :], "y_test": y_test.astype(np.int64),
                    "num_classes": 10, "source": directory, "files": files}
    raise _unavailable(name, dirs, "the 4 idx files (train-images-idx3-ubyte[.gz], ...)")


# ------------------------------------------------------------------ CIFAR-10

CIFAR_TRAIN = tuple("data_batch_%d" % i for i in range(1, 6))
CIFAR_TEST = "test_batch"


def _unpickle(fileobj):
    try:
        return pickle.load(fileobj, encoding="bytes")
    except TypeError:  # Python 2 pickle.load has no encoding argument
        return pickle.load(fileobj)


def _cifar_arrays(batch):
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DatasetError("CIFAR batch without data/labels")
    return (np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32),
            np.asarray(labels, dtype=np.int64))


def _cifar_from_batches(read):
    parts = [_cifar_arrays(read(n)) for n in CIFAR_TRAIN]
    x_test, y_test = _cifar_arrays(read(CIFAR_TEST))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            x_test, y_test)


def load_cifar10(data_dir=None, check=True):
    dirs = candidate_dirs("cifar10", data_dir)
    for directory in dirs:
        for sub in (os.path.join(directory, "cifar-10-batches-py"), directory):
            if all(os.path.isfile(os.path.join(sub, n)) for n in CIFAR_TRAIN + (CIFAR_TEST,)):
                files = [verify("cifar10", os.path.join(sub, n), check)
                         for n in CIFAR_TRAIN + (CIFAR_TEST,)]

                def read(n, sub=sub):
                    with open(os.path.join(sub, n), "rb") as f:
                        return _unpickle(f)

                x_tr, y_tr, x_te, y_te = _cifar_from_batches(read)
                return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te,
                        "num_classes": 10, "source": sub, "files": files}
        archive = os.path.join(directory, "cifar-10-python.tar.gz")
        if os.path.isfile(archive):
            files = [verify("cifar10", archive, check)]
            with tarfile.open(archive, "r:gz") as tar:
                members = dict((os.path.basename(m.name), m) for m in tar.getmembers()
                               if m.isfile())

                def read(n):
                    if n not in members:
                        raise DatasetError("%s has no %s" % (archive, n))
                    return _unpickle(io.BytesIO(tar.extractfile(members[n]).read()))

                x_tr, y_tr, x_te, y_te = _cifar_from_batches(read)
            return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te,
                    "num_classes": 10, "source": archive, "files": files}
    raise _unavailable("cifar10", dirs, "cifar-10-batches-py/{data_batch_1..5,test_batch} or "
                       "cifar-10-python.tar.gz")


# ------------------------------------------------------------------ IMDB

def pad_sequences(sequences, seq_len, vocab_size, start_char=1, oov_char=2, index_from=3):
    """Keras imdb.load_data + pad_sequences semantics: word index i becomes
    i + index_from, each review starts with start_char, ids >= vocab_size
    become oov_char, then pad with 0 and truncate at the front ('pre') to
    seq_len."""
    out = np.zeros((len(sequences), seq_len), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids = np.concatenate([[start_char], np.asarray(seq, dtype=np.int64) + index_from])
        ids[ids >= vocab_size] = oov_char
        ids = ids[-seq_len:]
        out[row, seq_len - len(ids):] = ids
    return out


def load_imdb(data_dir=None, vocab_size=30000, seq_len=150, check=True):
    dirs = candidate_dirs("imdb", data_dir)
    for directory in dirs:
        path = os.path.join(directory, "imdb.npz")
        if os.path.isfile(path):
            files = [verify("imdb", path, check)]
            with np.load(path, allow_pickle=True) as f:
                x_train, y_train = f["x_train"], f["y_train"]
                x_test, y_test = f["x_test"], f["y_test"]
            return {"x_train": pad_sequences(x_train, seq_len, vocab_size),
                    "y_train": np.asarray(y_train, dtype=np.int64),
                    "x_test": pad_sequences(x_test, seq_len, vocab_size),
                    "y_test": np.asarray(y_test, dtype=np.int64),
                    "num_classes": 2, "source": directory, "files": files}
    raise _unavailable("imdb", dirs, "imdb.npz (Keras format)")


# ------------------------------------------------------------------ ImageNet32

IMAGENET32_TRAIN = tuple("train_data_batch_%d" % i for i in range(1, 11))
IMAGENET32_VAL = "val_data"


def _imagenet32_batch(path):
    if path.endswith(".npz"):
        with np.load(path) as f:
            data, labels = f["data"], f["labels"]
    else:
        with open(path, "rb") as f:
            batch = _unpickle(f)
        data = batch.get(b"data", batch.get("data"))
        labels = batch.get(b"labels", batch.get("labels"))
    # labels are 1..1000 in the official batches
    return (np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32),
            np.asarray(labels, dtype=np.int64) - 1)


def _find_batch(directory, base):
    for candidate in (base, base + ".npz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def load_imagenet32(data_dir=None, check=True, max_train_batches=None):
    dirs = candidate_dirs("imagenet32", data_dir)
    for directory in dirs:
        train_paths = [_find_batch(directory, b) for b in IMAGENET32_TRAIN]
        val_path = _find_batch(directory, IMAGENET32_VAL)
        if all(train_paths) and val_path:
            if max_train_batches:
                train_paths = train_paths[:max_train_batches]
            files = [verify("imagenet32", p, check) for p in train_paths + [val_path]]
            parts = [_imagenet32_batch(p) for p in train_paths]
            x_test, y_test = _imagenet32_batch(val_path)
            return {"x_train": np.concatenate([p[0] for p in parts]),
                    "y_train": np.concatenate([p[1] for p in parts]),
                    "x_test": x_test, "y_test": y_test, "num_classes": 1000,
                    "source": directory, "files": files}
    raise _unavailable("imagenet32", dirs, "train_data_batch_1..10 and val_data (pickle or .npz)")


def load(name, data_dir=None, check=True, **kwargs):
    if name in ("mnist", "fashion-mnist"):
        return load_mnist_like(name, data_dir, check)
    if name == "cifar10":
        return load_cifar10(data_dir, check)
    if name == "imdb":
        return load_imdb(data_dir, check=check, **kwargs)
    if name == "imagenet32":
        return load_imagenet32(data_dir, check, **kwargs)
    raise DatasetUnavailable("dataset %s not available: unknown dataset (known: %s)"
                             % (name, ", ".join(DATASETS)))


# Shapes and sizes of the real datasets, for --synthetic stand-ins.
SHAPES = {
    "mnist": {"image": (1, 28, 28), "classes": 10, "train": 60000, "test": 10000},
    "fashion-mnist": {"image": (1, 28, 28), "classes": 10, "train": 60000, "test": 10000},
    "cifar10": {"image": (3, 32, 32), "classes": 10, "train": 50000, "test": 10000},
    "imagenet32": {"image": (3, 32, 32), "classes": 1000, "train": 1281167, "test": 50000},
    "imdb": {"classes": 2, "train": 25000, "test": 25000},
}

SYNTHETIC_MAX_TRAIN = 50000  # keeps a synthetic ImageNet32 stand-in at 150 MB


def synthetic(name, seed=0, vocab_size=30000, seq_len=150):
    """Random data with the real dataset's shapes (train size capped at
    SYNTHETIC_MAX_TRAIN).  Only ever used when --synthetic was given."""
    info = SHAPES[name]
    rng = np.random.RandomState(seed)
    n_train = min(info["train"], SYNTHETIC_MAX_TRAIN)
    n_test = min(info["test"], 10000)
    if name == "imdb":
        x_train = rng.randint(1, vocab_size, size=(n_train, seq_len)).astype(np.int64)
        x_test = rng.randint(1, vocab_size, size=(n_test, seq_len)).astype(np.int64)
    else:
        x_train = rng.randint(0, 256, size=(n_train,) + info["image"], dtype=np.uint8)
        x_test = rng.randint(0, 256, size=(n_test,) + info["image"], dtype=np.uint8)
    return {"x_train": x_train,
            "y_train": rng.randint(0, info["classes"], size=n_train).astype(np.int64),
            "x_test": x_test,
            "y_test": rng.randint(0, info["classes"], size=n_test).astype(np.int64),
            "num_classes": info["classes"], "source": "synthetic", "files": []}
