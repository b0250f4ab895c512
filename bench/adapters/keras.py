"""Keras 3 adapter: the spec as a Keras functional model, trained the Keras way
(`model.compile` + `train_on_batch`, inference with `predict_on_batch`), as the
seeds' Keras rows did.

Options (--option KEY=VALUE):
  backend=tensorflow|jax|torch  the Keras backend (default tensorflow; set as
                         KERAS_BACKEND before keras is imported; the image must
                         have that backend installed).
  data_format=NHWC|NCHW  keras image_data_format channels_last / channels_first
                         (default NHWC; NCHW with the TensorFlow backend needs a
                         GPU, TensorFlow's CPU convolutions being NHWC-only).
  xla=auto|1|0           compile(jit_compile=...); default auto = Keras' own
                         choice (TensorFlow backend: XLA on GPU when every layer
                         supports it, never on CPU; JAX: always; torch: never).
  initial_loss_scale=N   amp: the LossScaleOptimizer's initial scale (2**15).
  cpu_amp=1              testing aid: precision amp on CPU (slow float16 kernels).

Precision (bench.adapters.base.PRECISION_METHODS): Keras dtype policies via
keras.mixed_precision.set_global_policy: bf16 = mixed_bfloat16; amp =
mixed_float16 with Keras' LossScaleOptimizer around the SGD optimizer (what
compile does by itself under that policy; written out so the initial scale is
an option and the scale can be read back), GPU only (`cpu_amp=1`: a testing
aid that allows it on CPU).  fp16 (pure half) is unsupported: Keras trains
float16 as the mixed policy, i.e. amp.  The logits are cast to float32 (a
float32 linear activation) as the mixed-precision guide says.

The Keras adapter runs one device (max_gpus = 1): train_on_batch hands the
whole batch to every replica of a tf.distribute strategy, so it is not a data
parallel step; multi-GPU rows come from the TensorFlow adapter.

The "none" optimizer (seed 004's forward-backward) compiles SGD with learning
rate 0: Keras has no gradients-only step, so a zero update is applied.
"""

import os
import sys

import numpy as np

from bench import specs
from bench.adapters.base import Adapter as BaseAdapter
from bench.adapters.base import Unsupported
from bench.adapters.base import loss_scaler_text
from bench.adapters.tensorflow import gru_layer_can_use_cudnn

BACKENDS = ("tensorflow", "jax", "torch")
_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16", "amp": "mixed_float16"}
FP16_REASON = ("precision fp16 means pure float16 here; Keras trains float16 as mixed precision "
               "(the mixed_float16 policy, LossScaleOptimizer): run it as precision amp")


def same_equivalent(size, kernel, stride, pad):
    """True when Keras 'same' padding equals an explicit symmetric `pad`."""
    out_spec = (size + 2 * pad - kernel) // stride + 1
    out_same = -(-size // stride)
    total = max((out_same - 1) * stride + kernel - size, 0)
    return out_spec == out_same and total // 2 == pad and total - total // 2 == pad


def _layer_classes(keras):
    """Small custom layers written with keras.ops, so they run on every backend."""
    ops = keras.ops

    class PadHW(keras.layers.Layer):
        """Symmetric spatial padding with a constant (-inf for max pooling)."""

        def __init__(self, pad, value, channels_last, **kwargs):
            super(PadHW, self).__init__(**kwargs)
            self.pad, self.value, self.channels_last = tuple(pad), float(value), channels_last

        def call(self, x):
            ph, pw = self.pad
            if self.channels_last:
                widths = [[0, 0], [ph, ph], [pw, pw], [0, 0]]
            else:
                widths = [[0, 0], [0, 0], [ph, ph], [pw, pw]]
            return ops.pad(x, widths, constant_values=ops.cast(self.value, x.dtype))

        def compute_output_shape(self, shape):
            ph, pw = self.pad
            shape = list(shape)
            hi = 1 if self.channels_last else 2
            for i, p in ((hi, ph), (hi + 1, pw)):
                if shape[i] is not None:
                    shape[i] += 2 * p
            return tuple(shape)

    class AvgExcludePad(keras.layers.Layer):
        """Average pool over explicitly zero-padded windows divided by the number
        of real elements in each window (count_include_pad=False)."""

        def __init__(self, kernel, stride, pad, count, channels_last, **kwargs):
            super(AvgExcludePad, self).__init__(**kwargs)
            self.kernel, self.stride, self.pad = tuple(kernel), tuple(stride), tuple(pad)
            self.count = np.asarray(count, np.float32)
            self.channels_last = channels_last
            self.padder = PadHW(pad, 0.0, channels_last)
            self.pool = keras.layers.AveragePooling2D(
                self.kernel, self.stride, "valid",
                data_format="channels_last" if channels_last else "channels_first")

        def call(self, x):
            out = self.pool(self.padder(x))
            return out / ops.cast(ops.convert_to_tensor(self.count), out.dtype)

        def compute_output_shape(self, shape):
            return self.pool.compute_output_shape(self.padder.compute_output_shape(shape))

    class LRN(keras.layers.Layer):
        """out = x / (bias + alpha * sum_{|j-c|<=radius} x_j^2) ** beta (TF semantics)."""

        def __init__(self, radius, alpha, beta, bias, channels_last, **kwargs):
            super(LRN, self).__init__(**kwargs)
            self.radius, self.alpha, self.beta, self.bias = radius, alpha, beta, bias
            self.channels_last = channels_last

        def call(self, x):
            x32 = ops.cast(x, "float32")
            sq = ops.square(x32)
            axis = 3 if self.channels_last else 1
            r = self.radius
            widths = [[0, 0]] * 4
            widths[axis] = [r, r]
            padded = ops.pad(sq, widths)
            c = x.shape[axis]
            total = None
            for j in range(2 * r + 1):
                part = (padded[:, :, :, j:j + c] if self.channels_last
                        else padded[:, j:j + c, :, :])
                total = part if total is None else total + part
            out = x32 / ops.power(self.bias + self.alpha * total, self.beta)
            return ops.cast(out, x.dtype)

        def compute_output_shape(self, shape):
            return shape

    return PadHW, AvgExcludePad, LRN


def build_keras_model(keras, spec, channels_last, mixed):
    """A keras.Model (functional) interpreting the spec."""
    L = keras.layers
    PadHW, AvgExcludePad, LRN = _layer_classes(keras)
    fmt = "channels_last" if channels_last else "channels_first"
    info = specs.infer(spec)
    shapes = info["shapes"]
    values = {}

    def hw(shape):
        return shape[1], shape[2]

    def padding_for(node, in_shape):
        (kh, kw), (sh, sw), (ph, pw) = node["kernel"], node["stride"], node["pad"]
        h, w = hw(in_shape)
        if ph == 0 and pw == 0:
            return "valid", None
        if same_equivalent(h, kh, sh, ph) and same_equivalent(w, kw, sw, pw):
            return "same", None
        return "valid", (ph, pw)

    for node in spec["nodes"]:
        op, name = node["op"], node["name"]
        ins = [values[n] for n in node["inputs"]]
        in_shape = shapes[node["inputs"][0]] if node["inputs"] else None
        a = ins[0] if ins else None
        if op == "input":
            shape = tuple(node["shape"])
            if len(shape) == 3 and channels_last:
                shape = (shape[1], shape[2], shape[0])
            out = keras.Input(shape=shape, dtype=node["dtype"], name=name)
        elif op in ("conv", "sepconv"):
            padding, explicit = padding_for(node, in_shape)
            if explicit:
                a = L.ZeroPadding2D(explicit, data_format=fmt, name=name + "_pad")(a)
            cls = L.Conv2D if op == "conv" else L.SeparableConv2D
            out = cls(node["filters"], node["kernel"], strides=node["stride"], padding=padding,
                      use_bias=node["bias"], data_format=fmt, name=name)(a)
        elif op == "bn":
            axis = (-1 if channels_last else 1) if len(in_shape) == 3 else -1
            # Keras momentum is the running-average decay, as in the spec
            out = L.BatchNormalization(axis=axis, momentum=node["momentum"],
                                       epsilon=node["eps"], name=name)(a)
        elif op == "relu":
            out = L.ReLU(name=name)(a)
        elif op == "maxpool":
            padding, explicit = padding_for(node, in_shape)
            if explicit:
                a = PadHW(explicit, float("-inf"), channels_last, name=name + "_pad")(a)
            out = L.MaxPooling2D(node["kernel"], node["stride"], padding, data_format=fmt,
                                 name=name)(a)
        elif op == "avgpool":
            (kh, kw), (sh, sw), (ph, pw) = node["kernel"], node["stride"], node["pad"]
            if not (ph or pw):
                out = L.AveragePooling2D(node["kernel"], node["stride"], "valid",
                                         data_format=fmt, name=name)(a)
            elif node["count_include_pad"]:
                a = L.ZeroPadding2D((ph, pw), data_format=fmt, name=name + "_pad")(a)
                out = L.AveragePooling2D(node["kernel"], node["stride"], "valid",
                                         data_format=fmt, name=name)(a)
            else:
                padding, explicit = padding_for(node, in_shape)
                if explicit is None:  # 'same' average pooling excludes the padding
                    out = L.AveragePooling2D(node["kernel"], node["stride"], "same",
                                             data_format=fmt, name=name)(a)
                else:
                    h, w = hw(in_shape)
                    ones = np.pad(np.ones((h, w), np.float32), [[ph, ph], [pw, pw]])
                    ho, wo = shapes[name][1], shapes[name][2]
                    count = np.empty((ho, wo), np.float32)
                    for i in range(ho):
                        for j in range(wo):
                            count[i, j] = ones[i * sh:i * sh + kh, j * sw:j * sw + kw].mean()
                    count = count[:, :, None] if channels_last else count[None]
                    out = AvgExcludePad(node["kernel"], node["stride"], (ph, pw), count,
                                        channels_last, name=name)(a)
        elif op == "gap":
            out = L.GlobalAveragePooling2D(data_format=fmt, name=name)(a)
        elif op == "flatten":
            out = L.Flatten(name=name)(a)
        elif op == "dense":
            out = L.Dense(node["units"], use_bias=node["bias"], name=name)(a)
        elif op == "dropout":
            out = L.Dropout(node["rate"], name=name)(a)
        elif op == "lrn":
            out = LRN(node["radius"], node["alpha"], node["beta"], node["bias"], channels_last,
                      name=name)(a)
        elif op == "add":
            out = L.Add(name=name)(ins)
        elif op == "concat":
            axis = (-1 if channels_last else 1) if len(in_shape) == 3 else -1
            out = L.Concatenate(axis=axis, name=name)(ins)
        elif op == "embedding":
            out = L.Embedding(node["vocab"], node["dim"], name=name)(a)
        elif op == "gru":
            # the cuDNN-compatible configuration (Keras 3 defaults)
            out = L.GRU(node["units"], activation="tanh", recurrent_activation="sigmoid",
                        reset_after=True, recurrent_dropout=0.0, unroll=False, use_bias=True,
                        name=name)(a)
        else:
            raise ValueError("unknown op %r" % op)
        values[name] = out
    output = values[spec["output"]]
    if mixed:
        output = L.Activation("linear", dtype="float32", name="output_float32")(output)
    return keras.Model(values[spec["nodes"][0]["name"]], output, name=spec["name"])


class Adapter(BaseAdapter):
    name = "keras"
    display = "Keras"
    framework_module = "keras"
    unsupported = {}
    precisions = ("fp32", "bf16", "amp")
    precision_reasons = {"fp16": FP16_REASON}
    max_gpus = 1

    def __init__(self, device="cpu", gpus=0, precision="fp32", options=None):
        super(Adapter, self).__init__(device, gpus, precision, options)
        backend = str(self.options.get("backend") or "tensorflow").lower()
        if backend not in BACKENDS:
            raise Unsupported("Keras backend %r is not one of %s" % (backend, ", ".join(BACKENDS)))
        self.backend = backend
        fmt = str(self.options.get("data_format", "NHWC")).upper()
        fmt = {"CHANNELS_LAST": "NHWC", "CHANNELS_FIRST": "NCHW"}.get(fmt, fmt)
        if fmt not in ("NHWC", "NCHW"):
            raise Unsupported("data_format must be NHWC or NCHW, got %r"
                              % self.options.get("data_format"))
        self.layout = fmt
        xla = str(self.options.get("xla", "auto")).lower()
        self.jit = "auto" if xla == "auto" else xla in ("1", "true", "yes", "on")
        self.initial_loss_scale = self.option_positive_float("initial_loss_scale", 2.0 ** 15)
        self.optimizer = None
        if device != "gpu":
            if precision == "amp" and not self.option_bool("cpu_amp"):
                raise Unsupported("precision amp (mixed_float16) needs a GPU (no fast float16 CPU "
                                  "kernels; use bf16, mixed_bfloat16, on CPU)")
            if fmt == "NCHW" and backend == "tensorflow":
                raise Unsupported("data_format NCHW (channels_first) with the TensorFlow backend "
                                  "needs a GPU: TensorFlow's CPU Conv2D/MaxPool are NHWC-only")
        if "keras" in sys.modules:
            current = sys.modules["keras"].backend.backend()
            if current != backend:
                raise Unsupported("keras already imported with backend %r; backend %r needs a "
                                  "fresh process" % (current, backend))
        os.environ["KERAS_BACKEND"] = backend
        if device != "gpu":
            if backend == "jax":
                os.environ.setdefault("JAX_PLATFORMS", "cpu")
            elif backend == "torch":
                os.environ["KERAS_TORCH_DEVICE"] = "cpu"
        try:
            import keras
        except ImportError as exc:
            raise Unsupported("keras is not importable with backend %s: %s" % (backend, exc))
        if keras.backend.backend() != backend:
            raise Unsupported("keras came up with backend %r, not %r"
                              % (keras.backend.backend(), backend))
        self.keras = keras
        keras.config.set_image_data_format("channels_last" if fmt == "NHWC"
                                           else "channels_first")
        keras.mixed_precision.set_global_policy(_POLICY[precision])
        self.tf = self.torch = self.jax = None
        self.gpu_names = []
        if backend == "tensorflow":
            import tensorflow as tf
            self.tf = tf
            if device == "gpu":
                if not tf.config.list_physical_devices("GPU"):
                    raise RuntimeError("device gpu requested but TensorFlow %s sees no GPU"
                                       % tf.__version__)
                self.gpu_names = ["GPU:0"]
            elif tf.config.list_physical_devices("GPU"):
                tf.config.set_visible_devices([], "GPU")
        elif backend == "torch":
            import torch
            self.torch = torch
            if device == "gpu":
                if not torch.cuda.is_available():
                    raise RuntimeError("device gpu requested but torch.cuda.is_available() "
                                       "is False")
                self.gpu_names = ["cuda:0"]
        else:
            import jax
            self.jax = jax
            if device == "gpu":
                gpus_seen = [d for d in jax.devices() if d.platform == "gpu"]
                if not gpus_seen:
                    raise RuntimeError("device gpu requested but JAX sees no GPU")
                self.gpu_names = [str(gpus_seen[0])]
        if device == "gpu":
            self.gpus = 1

    # --- environment --------------------------------------------------------
    def _backend_version(self):
        if self.tf is not None:
            return self.tf.__version__
        if self.torch is not None:
            return self.torch.__version__
        return self.jax.__version__

    def versions(self):
        cuda = cudnn = None
        if self.tf is not None:
            try:
                info = dict(self.tf.sysconfig.get_build_info())
            except Exception:
                info = {}
            cuda, cudnn = info.get("cuda_version"), info.get("cudnn_version")
        elif self.torch is not None:
            cuda = self.torch.version.cuda
            try:
                v = self.torch.backends.cudnn.version()
            except Exception:
                v = None
            if v:
                v = int(v)
                cudnn = ("%d.%d.%d" % (v // 10000, (v % 10000) // 100, v % 100) if v >= 90000
                         else "%d.%d.%d" % (v // 1000, (v % 1000) // 100, v % 100))
        elif self.gpu_names:
            try:
                import jaxlib.cuda_versions as jcv  # jaxlib >= 0.4.x
                cuda = str(getattr(jcv, "cuda_runtime_get_version", lambda: None)() or "") \
                    or None
                cudnn = str(getattr(jcv, "cudnn_get_version", lambda: None)() or "") or None
            except Exception:
                pass
        return {"framework_version": self.keras.__version__,
                "cuda": str(cuda) if cuda else None,
                "cudnn": str(cudnn) if cudnn else None}

    def devices(self):
        keras = self.keras
        about = "Keras %s, backend %s %s, %s, %s" % (
            keras.__version__, self.backend, self._backend_version(), _POLICY[self.precision],
            keras.config.image_data_format())
        if self.gpu_names:
            name = self.gpu_names[0]
            if self.tf is not None:
                try:
                    details = self.tf.config.experimental.get_device_details(
                        self.tf.config.list_physical_devices("GPU")[0])
                    name = "GPU:0 %s" % details.get("device_name", "")
                except Exception:
                    pass
            elif self.torch is not None:
                name = "cuda:0 %s" % self.torch.cuda.get_device_name(0)
            return ["%s (%s)" % (name, about)]
        return ["cpu (%s)" % about]

    def peak_precision(self):
        if self.precision == "fp32" and self.gpu_names:
            try:
                if self.tf is not None:
                    details = self.tf.config.experimental.get_device_details(
                        self.tf.config.list_physical_devices("GPU")[0])
                    major = (details.get("compute_capability") or (0, 0))[0]
                    if major >= 8 and \
                            self.tf.config.experimental.tensor_float_32_execution_enabled():
                        return "tf32"
                elif self.torch is not None:
                    major = self.torch.cuda.get_device_capability(0)[0]
                    if major >= 8 and self.torch.backends.cudnn.allow_tf32:
                        return "tf32"
                elif self.jax is not None:
                    return "tf32"  # XLA:GPU default matmul precision on Ampere+ is TF32
            except Exception:
                pass
        return super(Adapter, self).peak_precision()

    def settings(self):
        out = super(Adapter, self).settings()
        jit = {"auto": "Keras' choice (jit_compile='auto')", True: "XLA (jit_compile=True)",
               False: "no XLA (jit_compile=False)"}[self.jit]
        out.update({
            "layout": self.layout,
            "graph": "model.compile + train_on_batch, " + jit,
            "backend": "%s %s" % (self.backend, self._backend_version()),
            "policy": _POLICY[self.precision],
            "loss_scaler": loss_scaler_text("keras LossScaleOptimizer", self.initial_loss_scale)
            if self.precision == "amp" else None,
        })
        if self.tf is not None and not self.gpu_names:
            out["threads"] = self.tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
        if self.tf is not None and self.gpu_names:
            out["tf32"] = bool(self.tf.config.experimental.tensor_float_32_execution_enabled())
        return out

    def current_loss_scale(self):
        scale = getattr(self.optimizer, "dynamic_scale", None)  # built on the first train step
        return float(np.asarray(self.keras.ops.convert_to_numpy(scale))) if scale is not None else None

    def seed(self, n):
        np.random.seed(n)
        self.keras.utils.set_random_seed(n)

    # --- models -------------------------------------------------------------
    def _device_scope(self):
        if self.tf is not None and self.gpu_names:
            return self.tf.device("/GPU:0")
        return _NullScope()

    def build(self, spec, training=True):
        with self._device_scope():
            return build_keras_model(self.keras, spec, self.layout == "NHWC",
                                     self.precision != "fp32")

    def param_count(self, model):
        total = 0
        for v in model.trainable_weights:
            n = 1
            for d in v.shape:
                n *= int(d)
            total += n
        return int(total)

    def _loss(self, kind):
        keras = self.keras
        if kind == "l2":
            ops = keras.ops

            class L2Loss(keras.losses.Loss):
                """tf.nn.l2_loss: sum(output ** 2) / 2 over the batch; labels ignored."""

                def __init__(self):
                    super(L2Loss, self).__init__(name="l2_loss", reduction="sum")

                def call(self, y_true, y_pred):
                    y = ops.cast(y_pred, "float32")
                    y = ops.reshape(y, (ops.shape(y)[0], -1))
                    return 0.5 * ops.sum(ops.square(y), axis=-1)

            return L2Loss()
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def _check_jit(self, model):
        if self.jit is True and self.tf is not None and self.gpu_names and any(
                isinstance(l, self.keras.layers.GRU) for l in model.layers):
            raise Unsupported("xla=1 with the cuDNN GRU: TensorFlow's CudnnRNNV3 op has no XLA "
                              "lowering")

    def make_train_step(self, model, optimizer_cfg):
        keras = self.keras
        self._check_jit(model)
        name = optimizer_cfg.get("name", "sgd")
        if name not in ("sgd", "none"):
            raise Unsupported("optimizer %r not implemented" % name)
        lr = float(optimizer_cfg.get("lr", 0.01)) if name == "sgd" else 0.0
        momentum = float(optimizer_cfg.get("momentum", 0.0)) if name == "sgd" else 0.0
        optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=momentum)
        if self.precision == "amp":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=self.initial_loss_scale)
        self.optimizer = optimizer
        with self._device_scope():
            model.compile(optimizer=optimizer,
                          loss=self._loss(optimizer_cfg.get("loss", "xent")),
                          jit_compile=self.jit)
        def step(x, y):
            if y is None:  # l2 loss: labels ignored, but Keras wants a y
                y = np.zeros((int(x.shape[0]),), np.int64)
            return model.train_on_batch(x, y)

        return step

    def make_forward(self, model):
        self._check_jit(model)

        def forward(x):
            return model.predict_on_batch(x)
        return forward

    def save(self, model, path):
        model.save_weights(os.path.join(path, "model.weights.h5"))

    def load(self, spec, path):
        model = self.build(spec, training=False)
        model.load_weights(os.path.join(path, "model.weights.h5"))
        return model

    def rnn_uses_cudnn(self, model):
        grus = [l for l in model.layers if isinstance(l, self.keras.layers.GRU)]
        if not grus:
            return None
        if not self.gpu_names or self.jax is not None:
            return False  # Keras' JAX GRU is a lax.scan; cuDNN kernels are GPU-only
        return all(gru_layer_can_use_cudnn(layer) for layer in grus)

    # --- data and device ----------------------------------------------------
    def to_device(self, array):
        array = np.asarray(array)
        if array.ndim == 4 and self.layout == "NHWC":
            array = np.ascontiguousarray(array.transpose(0, 2, 3, 1))
        if self.tf is not None:
            with self._device_scope():
                return self.tf.identity(self.tf.constant(array))
        return self.keras.ops.convert_to_tensor(array)

    def to_numpy(self, value):
        if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
            if self.torch is not None and isinstance(value, self.torch.Tensor):
                value = value.detach().cpu().float().numpy()
            else:
                value = value.numpy()
        out = np.asarray(value)
        if out.dtype.kind == "f" and out.dtype not in (np.float32, np.float64):
            out = out.astype(np.float32)
        elif out.dtype.kind == "V" or str(out.dtype) == "bfloat16":
            out = out.astype(np.float32)
        if out.ndim == 4 and self.layout == "NHWC":
            out = out.transpose(0, 3, 1, 2)
        return out

    def synchronize(self):
        if not self.gpu_names:
            return
        if self.tf is not None:
            sync = getattr(getattr(self.tf.test, "experimental", None), "sync_devices", None)
            if sync is not None:
                sync()
        elif self.torch is not None:
            self.torch.cuda.synchronize()

    def reset_peak_memory(self):
        if not self.gpu_names:
            return
        try:
            if self.tf is not None:
                self.tf.config.experimental.reset_memory_stats("GPU:0")
            elif self.torch is not None:
                self.torch.cuda.reset_peak_memory_stats(0)
        except Exception:
            pass

    def peak_memory(self):
        if not self.gpu_names:
            return None
        try:
            if self.tf is not None:
                return int(self.tf.config.experimental.get_memory_info("GPU:0")["peak"])
            if self.torch is not None:
                return int(self.torch.cuda.max_memory_allocated(0))
            dev = [d for d in self.jax.devices() if d.platform == "gpu"][0]
            stats = dev.memory_stats() or {}
            # JAX has no reset: this is the peak since the process started
            return int(stats["peak_bytes_in_use"]) if "peak_bytes_in_use" in stats else None
        except Exception:
            return None

    def is_oom(self, exc):
        if isinstance(exc, MemoryError):
            return True
        if self.tf is not None and isinstance(exc, self.tf.errors.ResourceExhaustedError):
            return True
        if self.torch is not None:
            oom = getattr(self.torch.cuda, "OutOfMemoryError", None)
            if oom is not None and isinstance(exc, oom):
                return True
        text = str(exc)
        return ("RESOURCE_EXHAUSTED" in text or "OOM when allocating" in text
                or "CUDA out of memory" in text)


class _NullScope(object):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
