"""MXNet adapter (Gluon API) for bench.adapters.base.

Interprets a bench.specs spec with one Gluon HybridBlock whose hybrid_forward
walks the spec's nodes in order.  Every layer is created with its input size
(`in_channels`, `in_units`, `input_size`), so parameters exist right after
`initialize()` (no deferred init) and the parameter count is exact at build.

API: Gluon only.  Seed 003 has separate "MXNet" (symbolic Module API) and
"Gluon" rows; a hybridized Gluon block runs through the same symbolic graph
executor (CachedOp over an nnvm graph) as the Module API, so the default
(`hybridize=1`) is the symbolic-execution row and `hybridize=0` the imperative
Gluon row.  `--option api=symbol` (the Module API itself) is not implemented
and is reported unsupported.

Options (--option KEY=VALUE):
  hybridize=1   (default ON) net.hybridize(static_alloc=True, static_shape=True):
                the graph is traced once and run by MXNet's graph executor with
                static memory, as seed 003's Gluon notebooks did; 0 runs the
                imperative (NDArray-by-NDArray) path.  Exception: on CPU, models
                with sepconv (NASNet) default to 0, because MXNet 1.9.1's MKLDNN
                backend fails on that hybridized graph ("could not construct a
                sub-memory"); an explicit hybridize=1 still forces it.
  api=gluon     the only API implemented (see above).
  initial_loss_scale=N  amp: the LossScaler's initial scale (AMP's default 2**16).
  cpu_amp=1     testing aid: precision amp on CPU (see Precisions).

MXNet's engine is asynchronous on CPU as well as on GPU: `synchronize()` calls
mx.nd.waitall() on every device, so every clock read that follows it includes
the queued work.

Precisions (bench.adapters.base.PRECISION_METHODS): fp32; fp16 = pure half on
GPU (net.cast('float16'), float16 weights updated in float16 without master
copies or loss scaling; BatchNorm parameters stay fp32 as Gluon and cuDNN
keep them; the loss is computed in fp32).  amp = MXNet's AMP
(mxnet.contrib.amp, its performance guide's recipe): amp.init() before the
net is built (fp32 weights, float16 compute where AMP's op lists allow),
amp.init_trainer(trainer) and amp.scale_loss (its dynamic LossScaler: skips a
step with non-finite gradients and halves the scale, doubles it after 2000
good steps), GPU only.  `cpu_amp=1` (testing aid) runs the same AMP code on
the CPU with bfloat16, AMP's CPU dtype: MXNet has no float16 CPU GEMM.
fp16 on CPU and bf16 are unsupported.
TF32: cuDNN 8+ runs fp32 convolutions as TF32 on compute capability >= 8.0
unless NVIDIA_TF32_OVERRIDE=0, so MFU of fp32 cells there divides by the TF32
peak (peak_precision) and settings records it.

GPUs: gpus=2 (up to 16) is data parallel: each batch is split with
gluon.utils.split_and_load over the context list, per-device losses are
back-propagated together and gluon.Trainer sums the gradients over devices
(kvstore 'device').

Hopper: MXNet 1.9.1's CUDA wheels have no sm_90 kernels; on a compute
capability 9.x GPU the adapter raises Unsupported pointing at the NVIDIA MXNet
container base (nvcr-mxnet-24.05), whose build does; that image sets
DLBENCH_MXNET_HOPPER_OK=1 (images/mxnet.Dockerfile.j2), which lifts the check.
"""

import os
import subprocess

from bench.adapters.base import Adapter as BaseAdapter
from bench.adapters.base import Unsupported
from bench.adapters.base import loss_scaler_text
from bench.env import shared_library_version

HOPPER_REASON = ("MXNet 1.9.1's CUDA wheels carry no kernels for compute capability 9.0 "
                 "(Hopper); use the NVIDIA MXNet container base nvcr-mxnet-24.05")


def compute_capabilities():
    """Compute capabilities ("9.0", ...) of the visible GPUs: NVML (pynvml) when
    importable, else nvidia-smi, else [] (the caller falls back to MXNet)."""
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            caps = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                caps.append("%d.%d" % (major, minor))
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible and all(p.strip().isdigit() for p in visible.split(",") if p.strip()):
                idx = [int(p) for p in visible.split(",") if p.strip()]
                caps = [caps[i] for i in idx if i < len(caps)]
            return caps
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    try:
        out = subprocess.check_output(["nvidia-smi", "--query-gpu=compute_cap",
                                       "--format=csv,noheader"],
                                      stderr=subprocess.STDOUT, universal_newlines=True,
                                      timeout=30)
        caps = [line.strip() for line in out.splitlines() if line.strip()]
        if caps and all(c.replace(".", "").isdigit() for c in caps):
            return caps
    except Exception:
        pass
    return []


def is_hopper(caps):
    return any(str(c).split(".")[0] == "9" for c in caps)


def is_oom_message(text):
    """True for MXNet's out-of-memory messages (GPU pooled allocator, cudaMalloc,
    CPU allocator)."""
    lowered = text.lower()
    return ("out of memory" in lowered or "cudamalloc failed" in lowered
            or "cudamalloc retry failed" in lowered
            or "memory allocation failed" in lowered
            or "std::bad_alloc" in lowered or "failed to allocate" in lowered)


def _build_net_class(mx):
    gluon = mx.gluon
    nn = gluon.nn
    from bench import specs

    class SpecNet(gluon.HybridBlock):
        """Runs the spec's nodes in order (values dropped after their last use)."""

        def __init__(self, spec, **kwargs):
            super(SpecNet, self).__init__(**kwargs)
            info = specs.infer(spec)
            shapes = info["shapes"]
            last = specs.last_use(spec)
            plan = []
            self._blocks = {}
            with self.name_scope():
                for index, node in enumerate(spec["nodes"]):
                    name = node["name"]
                    in_shape = shapes[node["inputs"][0]] if node["inputs"] else None
                    block = self._make(node, in_shape)
                    if block is not None:
                        # attribute registration gives save_parameters stable,
                        # structure-based names
                        attr = "n_" + name.replace("-", "_")
                        setattr(self, attr, block)
                        self._blocks[name] = block
                    release = tuple(n for n in node["inputs"]
                                    if last.get(n) == index and n != spec["output"])
                    plan.append((name, node["op"], tuple(node["inputs"]), release))
            self._plan = plan
            self._output = spec["output"]
            self.has_gru = any(n["op"] == "gru" for n in spec["nodes"])

        @staticmethod
        def _make(node, in_shape):
            op = node["op"]
            if op == "conv":
                return nn.Conv2D(node["filters"], node["kernel"], node["stride"], node["pad"],
                                 use_bias=node["bias"], in_channels=in_shape[0])
            if op == "sepconv":
                c = in_shape[0]
                seq = nn.HybridSequential(prefix="")
                with seq.name_scope():
                    seq.add(nn.Conv2D(c, node["kernel"], node["stride"], node["pad"],
                                      groups=c, use_bias=False, in_channels=c))
                    seq.add(nn.Conv2D(node["filters"], (1, 1), use_bias=node["bias"],
                                      in_channels=c))
                return seq
            if op == "bn":
                # MXNet's momentum is the running-average decay, as in the spec
                return nn.BatchNorm(axis=1, momentum=node["momentum"], epsilon=node["eps"],
                                    in_channels=in_shape[0])
            if op == "maxpool":
                return nn.MaxPool2D(node["kernel"], node["stride"], node["pad"])
            if op == "avgpool":
                return nn.AvgPool2D(node["kernel"], node["stride"], node["pad"],
                                    count_include_pad=node["count_include_pad"])
            if op == "dense":
                return nn.Dense(node["units"], use_bias=node["bias"], in_units=in_shape[0])
            if op == "dropout":
                return nn.Dropout(node["rate"])
            if op == "embedding":
                return nn.Embedding(node["vocab"], node["dim"])
            if op == "gru":
                # fused RNN operator: cuDNN on GPU; weights i2h/h2h with two
                # bias vectors = the spec's cuDNN layout
                return gluon.rnn.GRU(node["units"], layout="NTC", input_size=in_shape[1])
            if op == "lrn":
                return _LRN(node)
            return None

        def hybrid_forward(self, F, x):
            values = {}
            blocks = self._blocks
            for name, op, inputs, release in self._plan:
                if op == "input":
                    out = x
                elif op == "relu":
                    # Activation, not F.relu: on CPU only Activation runs in MKL-DNN; relu forces every
                    # activation out of MKL-DNN's blocked layout and back (ResNet-50 training 6-8 % slower)
                    out = F.Activation(values[inputs[0]], act_type="relu")
                elif op == "add":
                    if len(inputs) == 2:
                        out = F.elemwise_add(values[inputs[0]], values[inputs[1]])
                    else:
                        out = F.add_n(*[values[n] for n in inputs])
                elif op == "concat":
                    out = F.concat(*[values[n] for n in inputs], dim=1)
                elif op == "flatten":
                    out = F.flatten(values[inputs[0]])
                elif op == "gap":
                    out = F.mean(values[inputs[0]], axis=(2, 3))
                elif op == "gru":
                    seq = blocks[name](values[inputs[0]])          # (N, T, units)
                    out = F.squeeze(F.slice_axis(seq, axis=1, begin=-1, end=None), axis=1)
                else:
                    out = blocks[name](values[inputs[0]])
                values[name] = out
                for n in release:
                    del values[n]
            return values[self._output]

    class _LRN(gluon.HybridBlock):
        def __init__(self, node, **kwargs):
            super(_LRN, self).__init__(**kwargs)
            self._size = node["size"]
            # MXNet divides alpha by the window size; the spec (TF) does not
            self._alpha = node["alpha"] * node["size"]
            self._beta = node["beta"]
            self._knorm = node["bias"]

        def hybrid_forward(self, F, x):
            return F.LRN(x, alpha=self._alpha, beta=self._beta, knorm=self._knorm,
                         nsize=self._size)

    return SpecNet


class Adapter(BaseAdapter):
    name = "mxnet"
    display = "MXNet"
    framework_module = "mxnet"
    unsupported = {}
    precisions = ("fp32", "fp16", "amp")
    max_gpus = 16

    def __init__(self, device="cpu", gpus=0, precision="fp32", options=None):
        super(Adapter, self).__init__(device, gpus, precision, options)
        api = str(self.options.get("api", "gluon")).lower()
        if api != "gluon":
            raise Unsupported("api=%s: the MXNet adapter implements the Gluon API only "
                              "(hybridize=1, the default, runs Gluon through MXNet's "
                              "symbolic graph executor)" % api)
        if device != "gpu" and precision == "amp" and not self.option_bool("cpu_amp"):
            raise Unsupported("precision amp (MXNet AMP, float16 compute) needs a GPU: MXNet 1.9 "
                              "has no float16 CPU GEMM")
        import mxnet as mx
        self.mx = mx
        if device == "gpu":
            features = mx.runtime.Features()
            if not features.is_enabled("CUDA"):
                raise RuntimeError("device gpu requested but this MXNet %s build has no CUDA "
                                   "(pip package mxnet, not mxnet-cu*)" % mx.__version__)
            caps = compute_capabilities()
            if not caps:
                try:
                    cc = int(mx.util.get_cuda_compute_capability(mx.gpu(0)))
                    caps = ["%d.%d" % (cc // 10, cc % 10)]
                except Exception:
                    caps = []
            if is_hopper(caps) and not self._hopper_capable(mx):
                raise Unsupported(HOPPER_REASON)
            count = mx.context.num_gpus()
            self.gpus = max(1, self.gpus)
            if self.gpus > count:
                raise Unsupported("%d GPUs requested, %d visible" % (self.gpus, count))
            self.ctxs = [mx.gpu(i) for i in range(self.gpus)]
        else:
            if self.gpus > 1:
                raise Unsupported("data parallel over %d GPUs needs device gpu" % self.gpus)
            if precision == "fp16":
                raise Unsupported("fp16 on CPU: MXNet 1.9's CPU convolution/dense kernels "
                                  "are fp32 (float16 runs only on GPU)")
            self.ctxs = [mx.cpu()]
        self.ctx = self.ctxs[0]
        self.dtype = "float16" if precision == "fp16" else "float32"
        self.amp_dtype = None
        self.initial_loss_scale = self.option_positive_float("initial_loss_scale", 2.0 ** 16)
        self.trainer = None
        if precision == "amp":
            from mxnet.contrib import amp
            # before any net exists: AMP patches the operators the net will be built from
            self.amp_dtype = "float16" if device == "gpu" else "bfloat16"
            amp.init(target_dtype=self.amp_dtype)
            self.amp = amp
        self.hybridize = self.option_bool("hybridize", True)
        self.hybridize_note = None
        self._net_class = None

    @staticmethod
    def _hopper_capable(mx):
        # set by images/mxnet.Dockerfile.j2 on the nvcr-mxnet base, whose
        # NVIDIA build of MXNet has sm_90 kernels
        return os.environ.get("DLBENCH_MXNET_HOPPER_OK") == "1"

    # --- environment --------------------------------------------------------
    def versions(self):
        mx = self.mx
        features = mx.runtime.Features()
        cuda = cudnn = None
        if features.is_enabled("CUDA"):
            v = shared_library_version(["libcudart.so", "libcudart.so.12", "libcudart.so.11.0"],
                             "cudaRuntimeGetVersion")
            cuda = "%d.%d" % (v // 1000, (v % 1000) // 10) if v else "enabled"
        if features.is_enabled("CUDNN"):
            v = shared_library_version(["libcudnn.so", "libcudnn.so.9", "libcudnn.so.8"],
                             "cudnnGetVersion")
            if v:
                if v >= 90000:
                    cudnn = "%d.%d.%d" % (v // 10000, (v % 10000) // 100, v % 100)
                else:
                    cudnn = "%d.%d.%d" % (v // 1000, (v % 1000) // 100, v % 100)
            else:
                cudnn = "enabled"
        return {"framework_version": mx.__version__, "cuda": cuda, "cudnn": cudnn}

    def build_info(self):
        """Extra facts: feature flags and GPU count as MXNet reports them."""
        mx = self.mx
        features = mx.runtime.Features()
        return {"CUDA": features.is_enabled("CUDA"), "CUDNN": features.is_enabled("CUDNN"),
                "MKLDNN": features.is_enabled("MKLDNN"),
                "num_gpus": mx.context.num_gpus() if features.is_enabled("CUDA") else 0,
                "hybridize": self.hybridize, "hybridize_note": self.hybridize_note}

    def devices(self):
        if self.device == "gpu":
            names = []
            try:
                out = subprocess.check_output(["nvidia-smi", "--query-gpu=name",
                                               "--format=csv,noheader"],
                                              universal_newlines=True, timeout=30)
                names = [n.strip() for n in out.splitlines() if n.strip()]
            except Exception:
                pass
            return ["gpu(%d)%s" % (i, (" " + names[i]) if i < len(names) else "")
                    for i in range(len(self.ctxs))]
        return ["cpu(0) (MXNet engine, OMP_NUM_THREADS=%s)"
                % os.environ.get("OMP_NUM_THREADS", "default")]

    def _tf32(self):
        """Whether fp32 math may run as TF32: cuDNN 8+ uses TF32 for fp32 convolutions on
        Ampere and later by default (NVIDIA_TF32_OVERRIDE=0 turns it off); MXNet's own
        MXNET_CUDA_TENSOR_OP_MATH_ALLOW_CONVERSION=1 asks for it explicitly."""
        if self.device != "gpu":
            return None
        if os.environ.get("NVIDIA_TF32_OVERRIDE") == "0":
            return False
        if os.environ.get("MXNET_CUDA_TENSOR_OP_MATH_ALLOW_CONVERSION") == "1":
            return True
        caps = compute_capabilities()
        try:
            return bool(caps) and float(caps[0]) >= 8.0
        except ValueError:
            return False

    def peak_precision(self):
        if self.precision == "fp32" and self._tf32():
            return "tf32"
        return super(Adapter, self).peak_precision()

    def settings(self):
        out = super(Adapter, self).settings()
        out.update({
            "layout": "NCHW",
            "graph": ("hybridized (static_alloc, static_shape)" if self.hybridize and not self.hybridize_note
                      else "imperative (not hybridized)"),
            "tf32": self._tf32(),
            "threads": os.environ.get("OMP_NUM_THREADS") if self.device != "gpu" else None,
            "data_parallel": "split_and_load + kvstore device" if len(self.ctxs) > 1 else None,
        })
        if self.precision == "amp":
            out["loss_scaler"] = loss_scaler_text("mxnet.contrib.amp LossScaler", self.initial_loss_scale)
            out["amp_dtype"] = self.amp_dtype
        if self.hybridize_note:
            out["graph_note"] = self.hybridize_note
        return out

    def current_loss_scale(self):
        scaler = getattr(self.trainer, "_amp_loss_scaler", None)
        return float(scaler.loss_scale) if scaler is not None else None

    def seed(self, n):
        import numpy as np
        np.random.seed(n)
        for ctx in self.ctxs:
            self.mx.random.seed(n, ctx=ctx)
        self.mx.random.seed(n)

    # --- models -------------------------------------------------------------
    def _new_net(self, spec):
        if self._net_class is None:
            self._net_class = _build_net_class(self.mx)
        return self._net_class(spec, prefix="net_")

    def build(self, spec, training=True):
        mx = self.mx
        net = self._new_net(spec)
        net.initialize(mx.init.Xavier(), ctx=self.ctxs)
        if self.dtype != "float32":
            net.cast(self.dtype)
        self._maybe_hybridize(net, spec)
        return _Model(net, spec)

    def _maybe_hybridize(self, net, spec):
        hybridize = self.hybridize
        if (hybridize and self.device == "cpu" and "hybridize" not in self.options
                and any(n["op"] == "sepconv" for n in spec["nodes"])):
            # MXNet 1.9.1's MKLDNN CPU backend fails on the hybridized NASNet
            # graph ("could not construct a sub-memory", any hybridize flags);
            # the imperative path runs it, so the default falls back there
            hybridize = False
            self.hybridize_note = ("hybridize off by default for sepconv models on CPU: "
                                   "MXNet 1.9.1 MKLDNN fails on the hybridized graph")
        if hybridize:
            net.hybridize(static_alloc=True, static_shape=True)
        net.hybridized = hybridize

    def param_count(self, model):
        total = 0
        for param in model.net.collect_params().values():
            if param.grad_req == "null":
                continue  # BN running mean/var
            n = 1
            for d in param.shape:
                n *= int(d)
            total += n
        return int(total)

    def make_train_step(self, model, optimizer_cfg):
        mx = self.mx
        autograd = mx.autograd
        gluon = mx.gluon
        net = model.net
        name = optimizer_cfg.get("name", "sgd")
        loss_kind = optimizer_cfg.get("loss", "xent")
        trainer = None
        if name == "sgd":
            opt_args = {"learning_rate": optimizer_cfg.get("lr", 0.01),
                        "momentum": optimizer_cfg.get("momentum", 0.0)}
            kvstore = "device" if len(self.ctxs) > 1 else None
            trainer = gluon.Trainer(net.collect_params(), "sgd", opt_args, kvstore=kvstore)
            if self.precision == "amp":
                self.amp.init_trainer(trainer)
                scaler = trainer._amp_loss_scaler  # AMP has no public knob for the initial scale
                scaler._loss_scale = scaler._next_loss_scale = self.initial_loss_scale
            self.trainer = trainer
        elif name != "none":
            raise Unsupported("optimizer %r not implemented" % name)
        xent = gluon.loss.SoftmaxCrossEntropyLoss()
        ctx0 = self.ctx

        amp = self.amp if (self.precision == "amp" and trainer is not None) else None

        def shard_loss(out, y):
            out = out.astype("float32") if (self.dtype != "float32" or amp is not None) else out
            if loss_kind == "l2":
                return (out * out).sum() / 2
            return xent(out, y).sum()   # summed here, divided by the batch below

        def step(x, y):
            xs = x.shards if isinstance(x, _Sharded) else [x]
            ys = y.shards if isinstance(y, _Sharded) else [y]
            n = sum(int(s.shape[0]) for s in xs)
            with autograd.record(train_mode=True):
                scaled = [shard_loss(net(xi), yi) for xi, yi in zip(xs, ys)]
                if loss_kind == "xent":
                    # gradient of the batch-mean loss: backward of (shard sum / n)
                    scaled = [l / n for l in scaled]
                if amp is not None:
                    # multiplies by the loss scale; trainer.step unscales, or skips on overflow
                    with amp.scale_loss(scaled, trainer) as amp_scaled:
                        autograd.backward(amp_scaled)
            if amp is None:
                autograd.backward(scaled)
            if trainer is not None:
                trainer.step(1)
            total = scaled[0].as_in_context(ctx0)
            for l in scaled[1:]:
                total = total + l.as_in_context(ctx0)
            return total

        return step

    def make_forward(self, model):
        net = model.net

        def forward(x):
            if isinstance(x, _Sharded):
                return _Sharded([net(s) for s in x.shards])
            return net(x)   # outside autograd.record: inference mode

        return forward

    def save(self, model, path):
        model.net.save_parameters(os.path.join(path, "model.params"))

    def load(self, spec, path):
        net = self._new_net(spec)
        net.load_parameters(os.path.join(path, "model.params"), ctx=self.ctxs)
        if self.dtype != "float32":
            net.cast(self.dtype)
        self._maybe_hybridize(net, spec)
        return _Model(net, spec)

    def rnn_uses_cudnn(self, model):
        if not model.net.has_gru:
            return None
        # gluon.rnn.GRU runs the fused RNN operator, which dispatches to cuDNN
        # on GPU contexts of a cuDNN build and to MXNet's own kernel on CPU
        return bool(self.device == "gpu" and self.mx.runtime.Features().is_enabled("CUDNN"))

    # --- data and device ----------------------------------------------------
    def to_device(self, array):
        mx = self.mx
        dtype = array.dtype
        if dtype.kind == "f":
            dtype = self.dtype
        if len(self.ctxs) > 1:
            if array.shape[0] < len(self.ctxs):
                raise Unsupported("batch of %d cannot be split over %d GPUs"
                                  % (array.shape[0], len(self.ctxs)))
            data = mx.nd.array(array, ctx=mx.cpu(), dtype=dtype)
            return _Sharded(mx.gluon.utils.split_and_load(data, self.ctxs, even_split=False))
        return mx.nd.array(array, ctx=self.ctx, dtype=dtype)

    def to_numpy(self, value):
        import numpy as np
        if isinstance(value, _Sharded):
            return np.concatenate([self.to_numpy(s) for s in value.shards])
        kind = np.dtype(value.dtype).kind
        if kind == "V" or np.dtype(value.dtype) == np.float16:
            value = value.astype("float32")  # float16, and AMP's bfloat16 (a void dtype in numpy)
        return value.asnumpy()

    def synchronize(self):
        # the engine is asynchronous on CPU too
        self.mx.nd.waitall()

    def is_oom(self, exc):
        if isinstance(exc, MemoryError):
            return True
        mx = self.mx
        error_type = getattr(getattr(mx, "base", None), "MXNetError", None)
        if error_type is not None and isinstance(exc, error_type):
            return is_oom_message(str(exc))
        return False


class _Model(object):
    def __init__(self, net, spec):
        self.net = net
        self.spec = spec


class _Sharded(object):
    """A batch split over several GPU contexts (gpus > 1)."""

    def __init__(self, shards):
        self.shards = list(shards)

    @property
    def shape(self):
        first = self.shards[0].shape
        return (sum(s.shape[0] for s in self.shards),) + tuple(first[1:])
