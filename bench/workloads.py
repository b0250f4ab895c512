"""The workload catalog: names, the seed each comes from, and the seed's defaults.

Pure data, importable without any framework (the host-side runner reads it to
validate matrix.yaml). Python 3.6 compatible: no dataclasses, no walrus.
"""

from collections import OrderedDict

PRECISIONS = ("fp32", "fp16", "bf16", "amp")

# Models the `cnn-synthetic` workload (tf_cnn_benchmarks style) trains.
SYNTHETIC_MODELS = ("resnet50", "inception3", "vgg16", "alexnet", "nasnet")

# kind: "train" workloads report a total training wall time; "step" workloads
# time individual steps; "infer" workloads time forward passes only.
# counter: which count the profiles scale ("iterations" or "epochs").
WORKLOADS = OrderedDict([
    ("lenet-mnist", {
        "seed": "000",
        "title": "LeNet on MNIST / Fashion-MNIST (train, test, save, reload, classify PNGs)",
        "kind": "train",
        "model": "lenet",
        "datasets": ("mnist", "fashion-mnist"),
        "defaults": {"batch_size": 100, "iterations": 20000, "warmup": 0,
                     "eval_batches": 200, "dataset": "mnist", "lr": 0.01},
    }),
    ("cifar10-cnn", {
        "seed": "003",
        "title": "Training CNN (VGG-style) on CIFAR-10",
        "kind": "train",
        "model": "cifar10-vgg",
        "datasets": ("cifar10",),
        "defaults": {"batch_size": 64, "epochs": 10, "warmup": 0,
                     "dataset": "cifar10", "lr": 0.01, "momentum": 0.9},
    }),
    ("cifar10-tutorial", {
        "seed": "000",
        "title": "TensorFlow tutorial CIFAR-10 model (conv+pool+LRN x2, 2 FC), 1 and 2 GPUs",
        "kind": "train",
        "model": "cifar10-tutorial",
        "datasets": ("cifar10", "imagenet32"),
        "defaults": {"batch_size": 64, "iterations": 1000000, "warmup": 0,
                     "eval_batches": 1000, "dataset": "cifar10", "lr": 0.1},
    }),
    ("gru-imdb", {
        "seed": "003",
        "title": "Training RNN (GRU) on IMDB",
        "kind": "train",
        "model": "gru-imdb",
        "datasets": ("imdb",),
        "defaults": {"batch_size": 64, "epochs": 3, "warmup": 0, "dataset": "imdb",
                     "vocab_size": 30000, "seq_len": 150, "lr": 0.01, "momentum": 0.9},
    }),
    ("resnet50-inference", {
        "seed": "003",
        "title": "Inference ResNet-50 (Feature Extraction)",
        "kind": "infer",
        "model": "resnet50-features",
        "datasets": (),
        "defaults": {"batch_size": 64, "iterations": 100, "warmup": 10},
    }),
    ("vgg16-step", {
        "seed": "001",
        "title": "VGG16 forward + backward + update, batch 16",
        "kind": "step",
        "model": "vgg16",
        "datasets": (),
        "defaults": {"batch_size": 16, "iterations": 100, "warmup": 5, "lr": 0.01},
    }),
    ("alexnet-fwd", {
        "seed": "004",
        "title": "AlexNet (TF tutorial benchmark) forward",
        "kind": "infer",
        "model": "alexnet-tutorial",
        "datasets": (),
        "defaults": {"batch_size": 128, "iterations": 100, "warmup": 10},
    }),
    ("alexnet-fwdbwd", {
        "seed": "004",
        "title": "AlexNet (TF tutorial benchmark) forward-backward",
        "kind": "step",
        "model": "alexnet-tutorial",
        "datasets": (),
        "defaults": {"batch_size": 128, "iterations": 100, "warmup": 10},
    }),
    ("cnn-synthetic", {
        "seed": "004",
        "title": "tf_cnn_benchmarks-style training images/s on synthetic data",
        "kind": "step",
        "model": None,  # one of SYNTHETIC_MODELS, chosen per cell
        "models": SYNTHETIC_MODELS,
        "datasets": (),
        "defaults": {"batch_size": 32, "iterations": 100, "warmup": 10, "lr": 0.001},
    }),
    ("vgg19-mnist", {
        "seed": "002",
        "title": "VGG19-style model on MNIST and Fashion-MNIST (hardware benchmark)",
        "kind": "train",
        "model": "vgg19-mnist",
        "datasets": ("mnist", "fashion-mnist"),
        "defaults": {"batch_size": 64, "epochs": 10, "warmup": 0,
                     "dataset": "mnist", "lr": 0.01, "momentum": 0.9},
    }),
])

DATASETS = ("mnist", "fashion-mnist", "cifar10", "imdb", "imagenet32")


def workload_model(workload, model=None):
    """The model spec name a cell of `workload` trains (cnn-synthetic takes `model`)."""
    entry = WORKLOADS[workload]
    if entry.get("models"):
        return model
    return entry["model"]
