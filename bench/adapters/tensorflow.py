"""TensorFlow 2 adapter: raw TensorFlow, no Keras training loop.

The spec is interpreted by `_Net`, a DAG walker over tf.Variables and tf.nn
ops (conv2d with explicit padding, fused batch norm, tf.nn LRN, ...), with one
exception: the GRU is the Keras GRU layer used as a plain layer, because that
is how TensorFlow 2 reaches the cuDNN GRU kernel (CudnnRNNV3).  The training
step is a `tf.function` (GradientTape, SGD with momentum through the fused
ResourceApplyMomentum / ResourceApplyGradientDescent kernels, as the TF 1
optimizers and tf_cnn_benchmarks did; amp steps update through Keras'
LossScaleOptimizer and SGD instead, see Precision).

Options (--option KEY=VALUE):
  data_format=NHWC|NCHW  tensor layout (default NHWC).  NCHW needs a GPU: on
                         CPU TensorFlow's Conv2D/MaxPool kernels are NHWC-only.
  xla=1                  tf.function(jit_compile=True) for the train step and
                         the forward pass.
  memory_growth=1        tf.config.experimental.set_memory_growth on every GPU
                         (default off: TF's BFC allocator reserves the memory up
                         front, as in the seeds; the peak reported is the
                         allocator's in-use peak either way).
  threads=N              intra-op threads on CPU.
  cpu_replicas=N         testing aid: MirroredStrategy over N logical CPU
                         devices (exercises the multi-GPU code path on CPU).
  cpu_amp=1             testing aid: allow precision amp on CPU, whose float16
                         kernels are slow (exercises the loss-scaler path).
  initial_loss_scale=N   amp: the LossScaleOptimizer's initial scale (2**15).

Precision (bench.adapters.base.PRECISION_METHODS): fp32; bf16 = the Keras
`mixed_bfloat16` policy (fp32 variables, bfloat16 compute); amp =
`mixed_float16` (fp32 variables, float16 compute) with TensorFlow's shipped
dynamic loss scaler: updates go through keras.optimizers.LossScaleOptimizer
wrapping keras.optimizers.SGD (the mixed-precision guide's recipe: scale_loss,
then apply, which unscales, skips non-finite steps and adapts the scale).  GPU
only (`cpu_amp=1` lifts that, as a testing aid).  fp16 (pure half) is
unsupported: TensorFlow's float16 training is the mixed policy, i.e. amp --
which is what tf_cnn_benchmarks' --use_fp16 ran.

Multi-GPU (gpus > 1): tf.distribute.MirroredStrategy; the per-GPU batch is the
global batch / gpus (to_device splits batches across replicas); gradients are
all-reduced (NCCL on GPUs) and every replica applies the same update.
"""

import os
import sys

import numpy as np

from bench import specs
from bench.adapters.base import Adapter as BaseAdapter
from bench.adapters.base import Unsupported
from bench.adapters.base import loss_scaler_text

_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16", "amp": "mixed_float16"}
FP16_REASON = ("precision fp16 means pure float16 here; TensorFlow trains float16 as mixed precision "
               "(the mixed_float16 policy, fp32 variables, loss scaling): run it as precision amp")


def same_equivalent(size, kernel, stride, pad):
    """True when TF's 'SAME' padding equals an explicit symmetric `pad` for this
    input size: same output size and the same rows padded before and after."""
    out_spec = (size + 2 * pad - kernel) // stride + 1
    out_same = -(-size // stride)
    total = max((out_same - 1) * stride + kernel - size, 0)
    return out_spec == out_same and total // 2 == pad and total - total // 2 == pad


def import_keras_tf_backend():
    """Keras 3 with the TensorFlow backend (needed for the GRU layer)."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise Unsupported("the TensorFlow adapter's GRU is the Keras GRU layer, but Keras was "
                          "already imported with backend %r" % backend)
    return keras


def _glorot(tf, shape, fan_in, fan_out):
    limit = np.sqrt(6.0 / float(fan_in + fan_out))
    return tf.random.uniform(shape, -limit, limit, dtype=tf.float32)


class _Net(object):
    """A spec interpreted with tf.Variables and tf.nn ops.

    `call(x, training)` runs the DAG; `trainable` / `nontrainable` are lists of
    (name, variable) -- the Keras GRU's weights included, unwrapped to their
    tf.Variable (or MirroredVariable) so every variable has `.handle`.
    """

    def __init__(self, tf, spec, layout, precision, gpu):
        self.tf = tf
        self.spec = spec
        self.layout = layout
        self.compute_dtype = {"fp32": tf.float32, "bf16": tf.bfloat16,
                              "amp": tf.float16}[precision]
        self.policy = _POLICY[precision]
        self.gpu = gpu
        self.trainable = []
        self.nontrainable = []
        self.grus = []
        info = specs.infer(spec)
        self.shapes = info["shapes"]
        self.plan = []
        last = specs.last_use(spec)
        for index, node in enumerate(spec["nodes"]):
            in_shape = self.shapes[node["inputs"][0]] if node["inputs"] else None
            state = self._make(node, in_shape)
            release = tuple(n for n in node["inputs"] if last.get(n) == index
                            and n != spec["output"])
            self.plan.append((node, state, release))
        self.output_name = spec["output"]

    # ---- variables --------------------------------------------------------
    def _var(self, name, initial, trainable=True, stat=False):
        tf = self.tf
        if stat:
            # BN running statistics: each replica keeps its own; reads outside
            # a replica (inference) average them.
            v = tf.Variable(initial, trainable=False, name=name,
                            synchronization=tf.VariableSynchronization.ON_READ,
                            aggregation=tf.VariableAggregation.MEAN)
        else:
            v = tf.Variable(initial, trainable=trainable, name=name)
        (self.trainable if trainable else self.nontrainable).append((name, v))
        return v

    def _hw_list(self, a, b):
        """A 4-element per-dimension list (strides, ksize) in this layout."""
        if self.layout == "NHWC":
            return [1, a, b, 1]
        return [1, 1, a, b]

    def _pad_spec(self, ph, pw):
        if self.layout == "NHWC":
            return [[0, 0], [ph, ph], [pw, pw], [0, 0]]
        return [[0, 0], [0, 0], [ph, ph], [pw, pw]]

    def _conv_padding(self, node, in_shape):
        (kh, kw), (sh, sw), (ph, pw) = node["kernel"], node["stride"], node["pad"]
        _, h, w = in_shape
        if ph == 0 and pw == 0:
            return "VALID"
        if same_equivalent(h, kh, sh, ph) and same_equivalent(w, kw, sw, pw):
            return "SAME"
        return self._pad_spec(ph, pw)

    def _make(self, node, in_shape):
        tf = self.tf
        op, name = node["op"], node["name"]
        if op == "conv":
            (kh, kw), c, f = node["kernel"], in_shape[0], node["filters"]
            st = {"w": self._var(name + "/kernel",
                                 _glorot(tf, (kh, kw, c, f), kh * kw * c, kh * kw * f)),
                  "strides": self._hw_list(*node["stride"]),
                  "padding": self._conv_padding(node, in_shape)}
            if node["bias"]:
                st["b"] = self._var(name + "/bias", tf.zeros((f,)))
            return st
        if op == "sepconv":
            (kh, kw), c, f = node["kernel"], in_shape[0], node["filters"]
            st = {"dw": self._var(name + "/depthwise_kernel",
                                  _glorot(tf, (kh, kw, c, 1), kh * kw, kh * kw)),
                  "pw": self._var(name + "/pointwise_kernel", _glorot(tf, (1, 1, c, f), c, f)),
                  "strides": self._hw_list(*node["stride"]),
                  "padding": self._conv_padding(node, in_shape)}
            if node["bias"]:
                st["b"] = self._var(name + "/bias", tf.zeros((f,)))
            return st
        if op == "bn":
            c = in_shape[0] if len(in_shape) == 3 else in_shape[-1]
            return {"gamma": self._var(name + "/gamma", tf.ones((c,))),
                    "beta": self._var(name + "/beta", tf.zeros((c,))),
                    "mean": self._var(name + "/moving_mean", tf.zeros((c,)), False, stat=True),
                    "var": self._var(name + "/moving_variance", tf.ones((c,)), False, stat=True),
                    "rank": len(in_shape) + 1}
        if op == "maxpool":
            (kh, kw), (sh, sw), (ph, pw) = node["kernel"], node["stride"], node["pad"]
            _, h, w = in_shape
            st = {"ksize": self._hw_list(kh, kw), "strides": self._hw_list(sh, sw),
                  "padding": "VALID", "pad": None}
            if ph or pw:
                if same_equivalent(h, kh, sh, ph) and same_equivalent(w, kw, sw, pw):
                    st["padding"] = "SAME"  # SAME max pool ignores the padding
                else:
                    st["pad"] = self._pad_spec(ph, pw)  # pad with -inf, then VALID
            return st
        if op == "avgpool":
            (kh, kw), (sh, sw), (ph, pw) = node["kernel"], node["stride"], node["pad"]
            _, h, w = in_shape
            st = {"ksize": self._hw_list(kh, kw), "strides": self._hw_list(sh, sw),
                  "padding": "VALID", "pad": None, "count": None}
            if ph or pw:
                if node["count_include_pad"]:
                    st["pad"] = self._pad_spec(ph, pw)  # zeros counted
                elif same_equivalent(h, kh, sh, ph) and same_equivalent(w, kw, sw, pw):
                    st["padding"] = "SAME"  # TF's SAME average excludes the padding
                else:
                    # sum over zero-padded windows / number of real elements
                    st["pad"] = self._pad_spec(ph, pw)
                    ones = np.ones((1, h, w, 1) if self.layout == "NHWC" else (1, 1, h, w),
                                   np.float32)
                    ones = np.pad(ones, st["pad"], mode="constant")
                    frac = tf.nn.avg_pool2d(tf.constant(ones), st["ksize"], st["strides"],
                                            "VALID", data_format=self.layout)
                    st["count"] = frac.numpy()
            return st
        if op == "dense":
            n_in, u = in_shape[0], node["units"]
            st = {"w": self._var(name + "/kernel", _glorot(tf, (n_in, u), n_in, u))}
            if node["bias"]:
                st["b"] = self._var(name + "/bias", tf.zeros((u,)))
            return st
        if op == "embedding":
            return {"table": self._var(name + "/embeddings",
                                       tf.random.uniform((node["vocab"], node["dim"]),
                                                         -0.05, 0.05))}
        if op == "gru":
            keras = import_keras_tf_backend()
            layer = keras.layers.GRU(
                node["units"], activation="tanh", recurrent_activation="sigmoid",
                reset_after=True, recurrent_dropout=0.0, unroll=False, use_bias=True,
                return_sequences=False, dtype=self.policy, name=name,
                # on GPU insist on cuDNN (an error, not a silent fallback);
                # on CPU the generic loop
                use_cudnn=True if self.gpu else False)
            layer.build((None,) + tuple(in_shape))
            for i, v in enumerate(layer.trainable_weights):
                tv = getattr(v, "value", v)
                self.trainable.append(("%s/%s" % (name, v.name.split("/")[-1] or i), tv))
            self.grus.append(layer)
            return {"layer": layer}
        if op == "flatten":
            n = 1
            for d in in_shape:
                n *= d
            return {"size": n}
        if op == "concat":
            return {"axis": (-1 if self.layout == "NHWC" else 1) if len(in_shape) == 3 else 1}
        if op == "gap":
            return {"axis": [1, 2] if self.layout == "NHWC" else [2, 3]}
        if op == "lrn":
            return {"radius": node["radius"], "alpha": node["alpha"], "beta": node["beta"],
                    "bias": node["bias"]}
        if op == "dropout":
            return {"rate": node["rate"]}
        return {}

    # ---- forward ----------------------------------------------------------
    def _w(self, v):
        return self.tf.cast(v, self.compute_dtype)

    def call(self, x, training):
        tf = self.tf
        values = {}
        layout = self.layout
        cdt = self.compute_dtype
        for node, st, release in self.plan:
            op = node["op"]
            a = values[node["inputs"][0]] if node["inputs"] else None
            if op == "input":
                out = x if x.dtype.is_integer else tf.cast(x, cdt)
            elif op == "conv":
                out = tf.nn.conv2d(a, self._w(st["w"]), st["strides"], st["padding"],
                                   data_format=layout)
                if "b" in st:
                    out = tf.nn.bias_add(out, self._w(st["b"]), data_format=layout)
            elif op == "sepconv":
                out = tf.nn.depthwise_conv2d(a, self._w(st["dw"]), st["strides"],
                                             st["padding"], data_format=layout)
                out = tf.nn.conv2d(out, self._w(st["pw"]), 1, "VALID", data_format=layout)
                if "b" in st:
                    out = tf.nn.bias_add(out, self._w(st["b"]), data_format=layout)
            elif op == "bn":
                out = self._bn(a, st, node, training)
            elif op == "relu":
                out = tf.nn.relu(a)
            elif op == "maxpool":
                if st["pad"] is not None:
                    a = tf.pad(a, st["pad"], constant_values=float("-inf"))
                out = tf.nn.max_pool2d(a, st["ksize"], st["strides"], st["padding"],
                                       data_format=layout)
            elif op == "avgpool":
                if st["pad"] is not None:
                    a = tf.pad(a, st["pad"])
                out = tf.nn.avg_pool2d(a, st["ksize"], st["strides"], st["padding"],
                                       data_format=layout)
                if st["count"] is not None:
                    out = out / tf.constant(st["count"], dtype=out.dtype)
            elif op == "gap":
                out = tf.reduce_mean(a, axis=st["axis"])
            elif op == "flatten":
                out = tf.reshape(a, [-1, st["size"]])
            elif op == "dense":
                out = tf.matmul(a, self._w(st["w"]))
                if "b" in st:
                    out = tf.nn.bias_add(out, self._w(st["b"]))
            elif op == "dropout":
                out = tf.nn.dropout(a, rate=st["rate"]) if training else a
            elif op == "lrn":
                out = self._lrn(a, st)
            elif op == "add":
                out = tf.add_n([values[n] for n in node["inputs"]])
            elif op == "concat":
                out = tf.concat([values[n] for n in node["inputs"]], axis=st["axis"])
            elif op == "embedding":
                out = tf.cast(tf.nn.embedding_lookup(st["table"], a), cdt)
            elif op == "gru":
                out = st["layer"](a, training=training)
            else:
                raise ValueError("unknown op %r" % op)
            values[node["name"]] = out
            for n in release:
                del values[n]
        return tf.cast(values[self.output_name], tf.float32)

    def _lrn(self, a, st):
        tf = self.tf
        dtype = a.dtype
        # the LRN kernels are NHWC; spec alpha is TF's (not divided by the window)
        if self.layout == "NCHW":
            a = tf.transpose(a, [0, 2, 3, 1])
        if dtype == tf.bfloat16:
            a = tf.cast(a, tf.float32)  # no bfloat16 LRN kernel
        out = tf.nn.local_response_normalization(a, depth_radius=st["radius"], bias=st["bias"],
                                                 alpha=st["alpha"], beta=st["beta"])
        out = tf.cast(out, dtype)
        if self.layout == "NCHW":
            out = tf.transpose(out, [0, 3, 1, 2])
        return out

    def _bn(self, a, st, node, training):
        tf = self.tf
        eps, decay = node["eps"], node["momentum"]
        if st["rank"] == 4:
            if training:
                out, mean, var = tf.compat.v1.nn.fused_batch_norm(
                    a, st["gamma"], st["beta"], epsilon=eps, data_format=self.layout,
                    is_training=True)
                # spec momentum = decay of the running averages (TF convention)
                st["mean"].assign(st["mean"] * decay + mean * (1.0 - decay))
                st["var"].assign(st["var"] * decay + var * (1.0 - decay))
                return out
            out, _, _ = tf.compat.v1.nn.fused_batch_norm(
                a, st["gamma"], st["beta"], mean=st["mean"].read_value(),
                variance=st["var"].read_value(), epsilon=eps, data_format=self.layout,
                is_training=False)
            return out
        x32 = tf.cast(a, tf.float32)
        if training:
            mean, var = tf.nn.moments(x32, axes=[0])
            st["mean"].assign(st["mean"] * decay + mean * (1.0 - decay))
            st["var"].assign(st["var"] * decay + var * (1.0 - decay))
        else:
            mean, var = st["mean"].read_value(), st["var"].read_value()
        out = tf.nn.batch_normalization(x32, mean, var, st["beta"], st["gamma"], eps)
        return tf.cast(out, a.dtype)


class _Model(object):
    def __init__(self, net, training):
        self.net = net
        self.training = training



def gru_layer_can_use_cudnn(layer):
    """Keras' conditions for a GRU layer to run the cuDNN kernel on a GPU (shared with the Keras adapter)."""
    cell = layer.cell
    return bool(getattr(cell.activation, "__name__", "") == "tanh"
                and getattr(cell.recurrent_activation, "__name__", "") == "sigmoid"
                and cell.reset_after and cell.use_bias and not cell.recurrent_dropout
                and not layer.unroll and layer.use_cudnn in (True, "auto"))

class Adapter(BaseAdapter):
    name = "tensorflow"
    display = "TensorFlow"
    framework_module = "tensorflow"
    unsupported = {}
    precisions = ("fp32", "bf16", "amp")
    precision_reasons = {"fp16": FP16_REASON}
    max_gpus = 8

    def __init__(self, device="cpu", gpus=0, precision="fp32", options=None):
        super(Adapter, self).__init__(device, gpus, precision, options)
        fmt = str(self.options.get("data_format", "NHWC")).upper()
        fmt = {"CHANNELS_LAST": "NHWC", "CHANNELS_FIRST": "NCHW"}.get(fmt, fmt)
        if fmt not in ("NHWC", "NCHW"):
            raise Unsupported("data_format must be NHWC or NCHW, got %r"
                              % self.options.get("data_format"))
        self.layout = fmt
        self.xla = self.option_bool("xla")
        self.initial_loss_scale = self.option_positive_float("initial_loss_scale", 2.0 ** 15)
        self.loss_scaler = None
        if device != "gpu":
            if self.gpus > 1:
                raise Unsupported("data parallel over %d GPUs needs device gpu" % self.gpus)
            if fmt == "NCHW":
                raise Unsupported("data_format NCHW needs a GPU: TensorFlow's CPU Conv2D and "
                                  "MaxPool kernels only support NHWC")
            if precision == "amp" and not self.option_bool("cpu_amp"):
                raise Unsupported("precision amp (mixed_float16) needs a GPU in TensorFlow: its "
                                  "CPU kernels have no fast float16 path (use bf16, "
                                  "mixed_bfloat16, on CPU)")
        import tensorflow as tf
        self.tf = tf
        threads = self.option_int("threads")
        if threads and device != "gpu":
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        cpu_replicas = self.option_int("cpu_replicas", 0)
        self.strategy = None
        self.replicas = 1
        if device == "gpu":
            gpu_list = tf.config.list_physical_devices("GPU")
            if not gpu_list:
                raise RuntimeError("device gpu requested but TensorFlow %s sees no GPU (CUDA "
                                   "build: %s)" % (tf.__version__, tf.test.is_built_with_cuda()))
            self.gpus = max(1, self.gpus)
            if self.gpus > len(gpu_list):
                raise Unsupported("%d GPUs requested, TensorFlow sees %d"
                                  % (self.gpus, len(gpu_list)))
            if self.option_bool("memory_growth"):
                for g in gpu_list:
                    tf.config.experimental.set_memory_growth(g, True)
            self.gpu_names = ["GPU:%d" % i for i in range(self.gpus)]
            self.dev = "/GPU:0"
            if self.gpus > 1:
                self.strategy = tf.distribute.MirroredStrategy(
                    devices=["/gpu:%d" % i for i in range(self.gpus)])
                self.replicas = self.gpus
        else:
            self.gpu_names = []
            self.dev = "/CPU:0"
            if cpu_replicas > 1:
                cpu = tf.config.list_physical_devices("CPU")[0]
                tf.config.set_logical_device_configuration(
                    cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
                self.strategy = tf.distribute.MirroredStrategy(
                    devices=["/cpu:%d" % i for i in range(cpu_replicas)])
                self.replicas = cpu_replicas

    # --- environment --------------------------------------------------------
    def versions(self):
        tf = self.tf
        try:
            info = dict(tf.sysconfig.get_build_info())
        except Exception:
            info = {}
        cuda = info.get("cuda_version") if info.get("is_cuda_build", True) else None
        cudnn = info.get("cudnn_version") if info.get("is_cuda_build", True) else None
        return {"framework_version": tf.__version__,
                "cuda": str(cuda) if cuda else None,
                "cudnn": str(cudnn) if cudnn else None}

    def devices(self):
        tf = self.tf
        extra = "layout %s, %s%s" % (self.layout, _POLICY[self.precision],
                                     ", XLA" if self.xla else "")
        if self.gpu_names:
            out = []
            for i, g in enumerate(tf.config.list_physical_devices("GPU")[:self.gpus]):
                try:
                    details = tf.config.experimental.get_device_details(g)
                except Exception:
                    details = {}
                cc = details.get("compute_capability")
                out.append("GPU:%d %s%s (%s)" % (i, details.get("device_name", g.name),
                                                 " cc %d.%d" % tuple(cc) if cc else "", extra))
            if self.strategy is not None:
                out.append("MirroredStrategy over %d GPUs" % self.replicas)
            return out
        threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
        out = ["cpu (%s intra-op threads; %s)" % (threads, extra)]
        if self.strategy is not None:
            out.append("MirroredStrategy over %d logical CPUs" % self.replicas)
        return out

    def peak_precision(self):
        tf = self.tf
        if self.precision == "fp32" and self.gpu_names:
            try:
                details = tf.config.experimental.get_device_details(
                    tf.config.list_physical_devices("GPU")[0])
                major = (details.get("compute_capability") or (0, 0))[0]
            except Exception:
                major = 0
            # TF runs fp32 matmuls/convolutions as TF32 on Ampere+ by default
            if major >= 8 and tf.config.experimental.tensor_float_32_execution_enabled():
                return "tf32"
        return super(Adapter, self).peak_precision()

    def settings(self):
        tf = self.tf
        out = super(Adapter, self).settings()
        out.update({
            "layout": self.layout,
            "graph": "tf.function + XLA (jit_compile)" if self.xla else "tf.function",
            "policy": _POLICY[self.precision],
            "loss_scaler": loss_scaler_text("keras LossScaleOptimizer", self.initial_loss_scale)
            if self.precision == "amp" else None,
            "threads": (tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count())
            if not self.gpu_names else None,
            "optimizer_kernels": ("keras.optimizers.SGD inside the LossScaleOptimizer" if self.precision == "amp"
                                  else "ResourceApplyMomentum / ResourceApplyGradientDescent"),
            "data_parallel": "MirroredStrategy" if self.strategy is not None else None,
        })
        if self.gpu_names:
            out["tf32"] = bool(tf.config.experimental.tensor_float_32_execution_enabled())
        return out

    def current_loss_scale(self):
        if self.loss_scaler is None:
            return None
        return float(np.asarray(self.loss_scaler.dynamic_scale.numpy()))

    def seed(self, n):
        np.random.seed(n)
        self.tf.random.set_seed(n)
        if "keras" in sys.modules:
            try:
                sys.modules["keras"].utils.set_random_seed(n)
            except Exception:
                pass

    # --- models -------------------------------------------------------------
    def _scope(self):
        if self.strategy is not None:
            return self.strategy.scope()
        return self.tf.device(self.dev)

    def build(self, spec, training=True):
        with self._scope():
            net = _Net(self.tf, spec, self.layout, self.precision, bool(self.gpu_names))
        return _Model(net, training)

    def param_count(self, model):
        total = 0
        for _, v in model.net.trainable:
            n = 1
            for d in v.shape:
                n *= int(d)
            total += n
        return int(total)

    def _check_xla(self, net):
        if self.xla and net.grus and self.gpu_names:
            raise Unsupported("xla=1 with the cuDNN GRU: TensorFlow's CudnnRNNV3 op has no XLA "
                              "lowering (Keras disables jit_compile for it too)")

    def make_train_step(self, model, optimizer_cfg):
        tf = self.tf
        net = model.net
        self._check_xla(net)
        name = optimizer_cfg.get("name", "sgd")
        if name not in ("sgd", "none"):
            raise Unsupported("optimizer %r not implemented" % name)
        update = name == "sgd"
        lr = float(optimizer_cfg.get("lr", 0.01))
        momentum = float(optimizer_cfg.get("momentum", 0.0))
        loss_kind = optimizer_cfg.get("loss", "xent")
        variables = [v for _, v in net.trainable]
        replicas = self.replicas
        # no update, nothing to protect: gradients-only cells skip scaling (as PyTorch's GradScaler does)
        scaling = self.precision == "amp" and update
        loss_scaler = None
        with self._scope():
            slots = ([tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
                      for v in variables] if (update and momentum and not scaling) else None)
            if scaling:
                # TensorFlow's own dynamic loss scaler (the mixed-precision guide's recipe); Keras 3's
                # LossScaleOptimizer wraps a Keras optimizer, so amp updates go through keras SGD
                keras = import_keras_tf_backend()
                loss_scaler = keras.optimizers.LossScaleOptimizer(
                    keras.optimizers.SGD(learning_rate=lr, momentum=momentum),
                    initial_scale=self.initial_loss_scale)
                loss_scaler.build(variables)
        self.loss_scaler = loss_scaler
        lr_t = tf.constant(lr, tf.float32)
        mom_t = tf.constant(momentum, tf.float32)

        def loss_fn(out, y):
            if loss_kind == "l2":
                return tf.nn.l2_loss(out)
            return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=out))

        def grads_fn(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(net.call(x, True), y)
                scaled = loss / replicas if replicas > 1 else loss
                if scaling:
                    scaled = loss_scaler.scale_loss(scaled)
            grads = tape.gradient(scaled, variables)
            # embedding gradients arrive as IndexedSlices: dense, as in PyTorch
            grads = [tf.convert_to_tensor(g) for g in grads]
            return loss, grads

        def apply(grads):
            ops = []
            for i, (v, g) in enumerate(zip(variables, grads)):
                if slots is not None:
                    ops.append(tf.raw_ops.ResourceApplyMomentum(
                        var=v.handle, accum=slots[i].handle, lr=lr_t, grad=g,
                        momentum=mom_t, use_locking=False, use_nesterov=False))
                else:
                    ops.append(tf.raw_ops.ResourceApplyGradientDescent(
                        var=v.handle, alpha=lr_t, delta=g, use_locking=False))
            return ops

        def finish(loss, grads):
            if not update:
                return loss, grads  # returned, so the backward pass is not pruned
            if scaling:
                # unscales, skips a step whose gradients are not finite, adapts the scale; under
                # MirroredStrategy it sums the replicas' gradients itself (Keras' documented use)
                loss_scaler.apply(grads, variables)
            else:
                apply(grads)
            return loss, None

        xla = self.xla
        if self.strategy is None:
            @tf.function(jit_compile=xla)
            def step_fn(x, y):
                loss, grads = grads_fn(x, y)
                loss, extra = finish(loss, grads)
                if extra is not None:
                    return loss, extra
                return loss

            def step(x, y):
                if y is None:
                    y = tf.zeros([0], tf.int64)
                out = step_fn(x, y)
                return out[0] if isinstance(out, tuple) else out
            return step

        strategy = self.strategy
        inner = tf.function(grads_fn, jit_compile=True) if xla else grads_fn

        def replica_fn(x, y):
            loss, grads = inner(x, y)
            ctx = tf.distribute.get_replica_context()
            if not scaling:  # the LossScaleOptimizer sums the replicas' gradients itself
                grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            loss, extra = finish(loss, grads)
            return loss / replicas, (extra if extra is not None else [])

        @tf.function
        def dist_step(x, y):
            loss, extra = strategy.run(replica_fn, args=(x, y))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None), extra

        def step(x, y):
            x = self._distribute(x)
            y = self._distribute(y if y is not None else np.zeros([self.replicas], np.int64))
            return dist_step(x, y)[0]
        return step

    def make_forward(self, model):
        tf = self.tf
        net = model.net
        self._check_xla(net)

        @tf.function(jit_compile=self.xla)
        def forward_fn(x):
            return net.call(x, False)

        if self.strategy is None:
            return forward_fn
        strategy = self.strategy

        @tf.function
        def dist_forward(x):
            out = strategy.run(forward_fn, args=(x,))
            return strategy.gather(out, axis=0)

        def forward(x):
            if isinstance(x, tf.distribute.DistributedValues):
                return dist_forward(x)
            return forward_fn(x)  # a batch that does not split: the primary replica
        return forward

    def _all_variables(self, net):
        return list(net.trainable) + list(net.nontrainable)

    def save(self, model, path):
        arrays = {}
        for i, (name, v) in enumerate(self._all_variables(model.net)):
            arrays["%04d" % i] = np.asarray(v.numpy())
        names = [name for name, _ in self._all_variables(model.net)]
        np.savez(os.path.join(path, "weights.npz"), names=np.array(names), **arrays)

    def load(self, spec, path):
        model = self.build(spec, training=False)
        data = np.load(os.path.join(path, "weights.npz"))
        pairs = self._all_variables(model.net)
        saved = [str(n) for n in data["names"]]
        if saved != [name for name, _ in pairs]:
            raise ValueError("saved weights do not match the spec's variables")
        for i, (_, v) in enumerate(pairs):
            v.assign(data["%04d" % i])
        return model

    def rnn_uses_cudnn(self, model):
        net = model.net
        if not net.grus:
            return None
        if not self.gpu_names:
            return False  # CudnnRNNV3 is a GPU kernel
        return all(gru_layer_can_use_cudnn(layer) for layer in net.grus)

    # --- data and device ----------------------------------------------------
    def _host_array(self, array):
        array = np.asarray(array)
        if array.ndim == 4 and self.layout == "NHWC":
            array = np.ascontiguousarray(array.transpose(0, 2, 3, 1))
        return array

    def _distribute(self, value):
        tf = self.tf
        if isinstance(value, tf.distribute.DistributedValues):
            return value
        array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        n = self.replicas
        if len(array) % n:
            raise ValueError("a batch of %d does not split over %d replicas" % (len(array), n))
        chunks = np.split(array, n)
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(chunks[ctx.replica_id_in_sync_group]))

    def to_device(self, array):
        tf = self.tf
        array = self._host_array(array)
        if self.strategy is not None and array.ndim >= 1 and len(array) % self.replicas == 0 \
                and len(array) >= self.replicas:
            return self._distribute(array)
        with tf.device(self.dev):
            return tf.identity(tf.constant(array))

    def to_numpy(self, value):
        tf = self.tf
        if isinstance(value, tf.distribute.DistributedValues):
            parts = [np.asarray(p.numpy()) for p in
                     self.strategy.experimental_local_results(value)]
            out = np.concatenate(parts) if parts[0].ndim else np.asarray(sum(parts))
        else:
            out = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        if out.dtype.kind == "f" and out.dtype != np.float32 and out.dtype != np.float64:
            out = out.astype(np.float32)
        elif out.dtype.kind == "V" or str(out.dtype) == "bfloat16":
            out = out.astype(np.float32)
        if out.ndim == 4 and self.layout == "NHWC":
            out = out.transpose(0, 3, 1, 2)  # image-shaped outputs back to NCHW
        return out

    def synchronize(self):
        sync = getattr(getattr(self.tf.test, "experimental", None), "sync_devices", None)
        if sync is not None and self.gpu_names:
            sync()

    def reset_peak_memory(self):
        for name in self.gpu_names:
            try:
                self.tf.config.experimental.reset_memory_stats(name)
            except Exception:
                pass

    def peak_memory(self):
        if not self.gpu_names:
            return None
        total = 0
        for name in self.gpu_names:
            total += int(self.tf.config.experimental.get_memory_info(name)["peak"])
        return total

    def is_oom(self, exc):
        tf = self.tf
        if isinstance(exc, (tf.errors.ResourceExhaustedError, MemoryError)):
            return True
        text = str(exc)
        return "RESOURCE_EXHAUSTED" in text or "OOM when allocating" in text
