"""The one protocol every framework adapter implements.

The workload procedures (bench/procedures.py) call ONLY these methods, so a
new framework needs one module with one `Adapter` subclass and nothing else.

Rules for adapter modules:
  * Never import the framework at module import time: import it inside
    `__init__` or the methods.  `python -m bench --list` and the host runner
    import adapter modules to read the static class attributes with no
    framework installed.
  * numpy in, numpy out at the edges.  Arrays handed to `to_device` are:
      images   float32 (N, C, H, W)  -- NCHW; an NHWC framework transposes here
      labels   int64   (N,)          -- class ids
      tokens   int64   (N, seq_len)  -- word ids for `embedding`
    `to_numpy` returns numpy arrays (logits (N, classes), features (N, D), a
    loss as a 0-d array).
  * Models are built from a bench.specs spec (see that module's docstring for
    the node ops and their exact semantics, e.g. LRN alpha and BN momentum
    conventions).  The built model's trainable parameter count must equal
    bench.specs.param_count(spec); the tests check it.
  * Raise `Unsupported("precise reason")` from any method for a combination
    the framework cannot run (e.g. fp16 on CPU, 2 GPUs); the CLI reports
    status `unsupported` with that reason.  Out-of-memory errors are left to
    propagate: the CLI asks `is_oom(exc)` and reports status `oom`.

Optimizer config passed to `make_train_step` (a dict):
    {"name": "sgd" | "none",   # "none": compute gradients, apply no update
                               # (seed 004's AlexNet forward-backward)
     "lr": float, "momentum": float (0 = plain SGD),
     "loss": "xent" | "l2"}    # xent: softmax cross-entropy, mean over the batch;
                               # l2: sum(output**2) / 2 (tf.nn.l2_loss), labels ignored
"""


# One meaning per precision name, the same in every adapter; an adapter that cannot run a method exactly
# reports the precision unsupported with the reason instead of running something else under its name.
PRECISION_METHODS = {
    "fp32": "fp32 weights and math",
    "amp": "fp32 master weights, float16 compute (the framework's autocast/policy), "
           "dynamic loss scaling with the framework's own scaler",
    "bf16": "fp32 master weights, bfloat16 compute, no loss scaling",
    "fp16": "pure float16: weights and math in float16, no loss scaling",
}


def loss_scaler_text(scaler, initial_scale):
    """How a dynamic loss scaler is named in settings: 'keras LossScaleOptimizer (dynamic, initial 2^15)'."""
    import math
    exponent = math.log(initial_scale, 2)
    initial = ("2^%d" % round(exponent)) if abs(exponent - round(exponent)) < 1e-9 else ("%g" % initial_scale)
    return "%s (dynamic, initial %s)" % (scaler, initial)


class Unsupported(Exception):
    """The framework cannot run this combination; the message says exactly why."""


class Adapter(object):
    # --- static metadata (readable without importing the framework) -------
    name = None          # registry key, e.g. "pytorch"
    display = None       # human-readable name, e.g. "PyTorch"
    framework_module = None   # the import name of the framework, e.g. "torch"
    # workload -> precise reason this adapter cannot run it (static).
    unsupported = {}
    # precisions implemented; others are reported unsupported.
    precisions = ("fp32",)
    # precision -> why this framework cannot run it with the project's meaning (PRECISION_METHODS)
    precision_reasons = {}
    # largest `gpus` value the adapter can use (data parallel above 1).
    max_gpus = 1

    def __init__(self, device="cpu", gpus=0, precision="fp32", options=None):
        """device: "cpu" or "gpu"; gpus: GPUs to use (0 on cpu); precision:
        fp32 | fp16 | bf16 | amp; options: dict of --option KEY=VALUE strings.
        Import the framework here (lazily) and raise Unsupported for a
        device/precision/gpus combination it cannot run."""
        self.device = device
        self.gpus = int(gpus)
        self.precision = precision
        self.options = dict(options or {})
        if precision in self.precision_reasons:
            raise Unsupported(self.precision_reasons[precision])
        if precision not in self.precisions:
            raise Unsupported("%s does not implement precision %s (implemented: %s)"
                              % (self.display or self.name, precision,
                                 ", ".join(self.precisions)))
        if self.gpus > self.max_gpus:
            raise Unsupported("%s adapter uses at most %d GPU(s), %d requested"
                              % (self.display or self.name, self.max_gpus, self.gpus))

    # --- option helpers -----------------------------------------------------
    def option_bool(self, key, default=False):
        value = self.options.get(key)
        if value is None:
            return default
        return str(value).strip().lower() in ("1", "true", "yes", "on")

    def option_int(self, key, default=None):
        value = self.options.get(key)
        return default if value is None else int(value)

    def option_positive_float(self, key, default):
        """A finite number > 0 from the options (e.g. a loss scale), else Unsupported naming the key."""
        value = self.options.get(key)
        if value is None:
            return float(default)
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not (number > 0 and number != float("inf")):
            raise Unsupported("option %s must be a finite number above 0, got %r" % (key, value))
        return number

    @classmethod
    def unsupported_reason(cls, workload):
        """Static: the reason this adapter cannot run `workload`, or None."""
        return cls.unsupported.get(workload)

    # --- environment --------------------------------------------------------
    def versions(self):
        """{"framework_version", "cuda", "cudnn"} as the framework itself reports
        them (strings or None; None when a CPU build has no CUDA)."""
        raise NotImplementedError

    def devices(self):
        """Human-readable names of the devices in use, e.g. ["cuda:0 NVIDIA H100"]."""
        raise NotImplementedError

    def peak_precision(self):
        """Key into bench.peaks for MFU: the math the device actually runs
        ("fp32", "tf32", "fp16", "bf16").  Override when fp32 runs as TF32."""
        return {"fp32": "fp32", "fp16": "fp16", "amp": "fp16", "bf16": "bf16"}[self.precision]

    def seed(self, n):
        """Seed every random generator the framework uses."""
        raise NotImplementedError

    def settings(self):
        """How this adapter runs the framework, recorded in every result (metrics.settings) and
        summarised in the README's "How each framework is run": a flat dict of JSON scalars.
        Common keys (None where they do not apply):
          layout            tensor layout of image activations ("NHWC", "NCHW")
          graph             how steps execute ("eager", "tf.function", "XLA", "jit", ...)
          precision_method  what --precision means here, in words (see PRECISION_METHODS)
          loss_scaler       the framework's own loss scaler in use, or None
          tf32              whether fp32 matmuls/convolutions may run as TF32 (GPU), else None
          threads           intra-op CPU threads, where the framework says
          loss_scale_final  the dynamic loss scale the framework's scaler ended the cell with (amp), else
                            None: below the initial scale when it met non-finite gradients
        Adapters add framework-specific keys (e.g. cudnn_benchmark)."""
        return {"layout": None, "graph": None, "precision_method": PRECISION_METHODS[self.precision],
                "loss_scaler": None, "tf32": None, "threads": None,
                "loss_scale_final": self.current_loss_scale()}

    def current_loss_scale(self):
        """The current scale of the framework's own dynamic loss scaler (amp training), else None."""
        return None

    # --- models -------------------------------------------------------------
    def build(self, spec, training=True):
        """A model built from the spec, on the adapter's device(s), parameters
        initialised; `training` False may build an inference-only model."""
        raise NotImplementedError

    def param_count(self, model):
        """Trainable parameters of a built model (BN running stats excluded)."""
        raise NotImplementedError

    def make_train_step(self, model, optimizer_cfg):
        """A callable step(x, y) -> loss that runs forward + backward + update
        (training mode: dropout on, BN batch statistics) on device values from
        `to_device`.  It need not block until the device finishes; the loss is
        a framework value for `to_numpy`."""
        raise NotImplementedError

    def make_forward(self, model):
        """A callable forward(x) -> output in inference mode (dropout off, BN
        running statistics, no gradients).  Need not block."""
        raise NotImplementedError

    def save(self, model, path):
        """Write the model (weights and whatever the framework needs) under the
        directory `path` (it exists and is empty)."""
        raise NotImplementedError

    def load(self, spec, path):
        """A model for inference read back from what `save` wrote to `path`."""
        raise NotImplementedError

    def rnn_uses_cudnn(self, model):
        """True if the model's GRU runs the cuDNN kernel, False if not, None if
        the framework cannot tell."""
        return None

    # --- data and device ----------------------------------------------------
    def to_device(self, array):
        """A numpy array (layouts above) as a framework value on the device."""
        raise NotImplementedError

    def to_numpy(self, value):
        """A framework value (output, loss) as a numpy array; blocks."""
        raise NotImplementedError

    def synchronize(self):
        """Block until all queued device work has finished (no-op on CPU)."""

    def reset_peak_memory(self):
        """Start a new peak-memory window."""

    def peak_memory(self):
        """Peak device bytes allocated since `reset_peak_memory`, or None when
        the framework cannot tell (CPU)."""
        return None

    def is_oom(self, exc):
        """True if `exc` is the framework's out-of-memory error."""
        return isinstance(exc, MemoryError)
