"""The contract between the host-side runner and `python -m bench` in the containers: the facts both
sides need, owned here once (stdlib only, Python 3.6 safe, importable without numpy or a framework).

  * datasets: where they live on a host, their files, the publishers' download URLs, their checksums
    (sha256 where known, and the md5 a publisher gives when that is all it gives), how to provide them,
    their display names;
  * display names of frameworks and models, and the title of each workload's results section;
  * how a cell's options cross into the container (one JSON argument, so their types survive);
  * the result's `cell` record, built by one function on both sides.
The workload catalog itself is bench/workloads.py (re-exported here).
"""

import json
from collections import OrderedDict

from bench.workloads import DATASETS, PRECISIONS, SYNTHETIC_MODELS, WORKLOADS  # noqa: F401  (the catalog)

FRAMEWORK_NAMES = OrderedDict([
    ("pytorch", "PyTorch"), ("tensorflow", "TensorFlow"), ("keras", "Keras"), ("mxnet", "MXNet"),
    ("cntk", "CNTK"), ("jax", "JAX"),
])
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion MNIST", "cifar10": "CIFAR-10",
                 "imdb": "IMDB", "imagenet32": "ImageNet 32x32"}

# ------------------------------------------------------------------ datasets

SYSTEM_DIRS = {
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}

# Known checksums of dataset files: filename -> list of (sha256, variant).
# A file listed here must match one variant; a file not listed is reported as
# "checksum unknown for this variant" and used unverified.
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": [
            ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", "official")],
        "train-labels-idx1-ubyte.gz": [
            ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", "official")],
        "t10k-images-idx3-ubyte.gz": [
            ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", "official")],
        "t10k-labels-idx1-ubyte.gz": [
            ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", "official")],
    },
    # Zalando publishes only MD5s of its .gz files (MD5_OFFICIAL below); the
    # sha256s here are of Debian's dataset-fashion-mnist, which recompresses
    # the same idx content.
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": [
            ("b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7", "debian")],
        "train-labels-idx1-ubyte.gz": [
            ("0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056", "debian")],
        "t10k-images-idx3-ubyte.gz": [
            ("cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa", "debian")],
        "t10k-labels-idx1-ubyte.gz": [
            ("8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05", "debian")],
    },
    "cifar10": {
        "cifar-10-python.tar.gz": [
            ("6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce", "official")],
    },
    "imdb": {
        "imdb.npz": [
            ("69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f",
             "official (Keras tf-keras-datasets)")],
    },
    # ImageNet32 (Chrabaszcz et al. 2017) batches: no checksums are published.
    "imagenet32": {},
}

MD5_OFFICIAL = {
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# name -> {file: [urls; the first that works wins]}. Downloads happen on the host only (runner/datasets.py).
DOWNLOAD_URLS = {
    "mnist": OrderedDict((f, ["http://yann.lecun.com/exdb/mnist/" + f,
                              "https://ossci-datasets.s3.amazonaws.com/mnist/" + f]) for f in _MNIST_FILES),
    "fashion-mnist": OrderedDict((f, ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" + f])
                                 for f in _MNIST_FILES),
    "cifar10": {"cifar-10-python.tar.gz": ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]},
    "imdb": {"imdb.npz": ["https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"]},
    # ImageNet32 needs an image-net.org account: it can only come from a directory the user gives.
    "imagenet32": {},
}

HOW_TO_PROVIDE = {
    "mnist": "the four idx .gz files (train-images-idx3-ubyte.gz, ...)",
    "fashion-mnist": "the four idx .gz files, or Debian/Ubuntu's dataset-fashion-mnist package",
    "cifar10": "cifar-10-python.tar.gz or its extracted cifar-10-batches-py/",
    "imdb": "the Keras imdb.npz",
    "imagenet32": "the Imagenet32 batches (train_data_batch_1..10, val_data) from image-net.org",
}


def known_hashes(name, filename):
    """Every checksum a downloaded `filename` of dataset `name` may match, as "algorithm:hex" strings
    (pooch's known_hash form): the sha256s of CHECKSUMS and the publisher's md5 of MD5_OFFICIAL."""
    hashes = ["sha256:" + sha for sha, _variant in CHECKSUMS.get(name, {}).get(filename, [])]
    md5 = MD5_OFFICIAL.get(name, {}).get(filename)
    if md5:
        hashes.append("md5:" + md5)
    return hashes


# ------------------------------------------------------------------ options

OPTIONS_FLAG = "--options-json"
OPTION_TYPES = (bool, int, float, str)


def encode_options(options):
    """A cell's options as the one JSON object `python -m bench` takes (types kept: true stays a bool)."""
    return json.dumps(OrderedDict(sorted(dict(options).items())), separators=(",", ":"), allow_nan=False)


def decode_options(text):
    """The options object from OPTIONS_FLAG; ValueError with the reason for anything but an object of
    string keys to finite scalars."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise ValueError("%s takes a JSON object: %s" % (OPTIONS_FLAG, exc))
    if not isinstance(value, dict):
        raise ValueError("%s takes a JSON object, got %s" % (OPTIONS_FLAG, type(value).__name__))
    for key, item in value.items():
        if not isinstance(item, OPTION_TYPES):
            raise ValueError("%s: option %r must be a string, number or boolean" % (OPTIONS_FLAG, key))
    return value


def _refuse_constant(name):
    raise ValueError("%s is not a number JSON allows" % name)


# ------------------------------------------------------------------ the result's cell record

CELL_KEYS = ("id", "run_id", "framework", "framework_version", "toolchain", "python", "image", "image_id",
             "workload", "model", "dataset", "synthetic", "batch_size", "precision", "device", "gpus",
             "iterations", "epochs", "warmup", "profile", "options", "repeat")


def cell_record(**fields):
    """The result's `cell` object: every key of CELL_KEYS (missing ones None), in that order; `synthetic`
    is true for workloads without a dataset whatever the caller says."""
    unknown = set(fields) - set(CELL_KEYS)
    if unknown:
        raise TypeError("cell_record: unknown field(s) %s" % ", ".join(sorted(unknown)))
    record = OrderedDict((key, fields.get(key)) for key in CELL_KEYS)
    entry = WORKLOADS.get(record["workload"]) or {}
    record["synthetic"] = bool(record["synthetic"] or not entry.get("datasets"))
    record["options"] = dict(record["options"] or {})
    if record["repeat"] is None:
        del record["repeat"]   # only a cell run in several processes says which one a result is
    return record
