"""CNTK 2.7 adapter for bench.adapters.base (Python 3.6: CNTK's only Python).

Builds the spec as a CNTK graph over `C.input_variable((C, H, W))` (CNTK is
channel-first, like the protocol) or, for token ids, a sparse one-hot
`C.sequence.input_variable(vocab)`.  Explicit symmetric pads are C.pad
followed by an unpadded convolution/pooling, so the spec's output sizes hold
exactly; the ops:

  conv      C.convolution over C.pad (weights (F, C, kh, kw), bias (F, 1, 1))
  sepconv   C.convolution with groups=C (depthwise, (C, 1, kh, kw)) + 1x1 conv
  bn        C.layers.BatchNormalization (map_rank=1 on CHW: per channel)
  maxpool   C.pad with the lowest float32 (padding never wins) + MAX_POOLING
  avgpool   count_include_pad: C.pad zeros + AVG_POOLING; else the padded sum
            divided by the pooled count of ones (exactly 'exclude pad')
  lrn       C.local_response_normalization(radius, bias, alpha * size, beta):
            CNTK divides alpha by the window 2r+1, the spec does not
  gru       GPU: C.optimized_rnnstack(recurrent_op='gru') = cuDNN, whose packed
            weights are the spec's layout (two bias vectors);  CPU: a GRU step
            with the same parameters (W, U, two biases) under
            C.layers.Recurrence; then C.sequence.last
  embedding C.layers.Embedding over the one-hot input

Training: C.Trainer with cross_entropy_with_softmax (or the l2 loss) and
C.momentum_sgd(unit_gain=False, i.e. PyTorch's v = m*v + g) / C.sgd.  CNTK
sums per-sample gradients over the minibatch, so the protocol's lr (for the
batch-mean loss) is set per sample as lr / N, N = the first minibatch's size.

Deviations (the same in every CNTK cell): CNTK's BN running averages decay
with a time constant in samples, not a per-step momentum; the spec momentum m
is converted at a reference minibatch of 32 samples (tc = -32 / ln m).

Unsupported: fp16/bf16/amp (fp32 only here), gpus > 1 (CNTK's data
parallelism needs an MPI launch, mpiexec -n 2, with a distributed learner;
one container runs one process), and whatever CNTK itself rejects at run time
(its "not supported"/"not implemented" errors are classified unsupported).
"""

import math
import os

from bench.adapters.base import Adapter as BaseAdapter
from bench.adapters.base import Unsupported
from bench.env import shared_library_version

BN_REFERENCE_BATCH = 32
FLOAT32_LOWEST = -3.4028234663852886e38

OOM_MARKERS = ("out of memory", "cuda failure 2", "std::bad_alloc", "bad_alloc",
               "cudamalloc", "cannot allocate memory", "memory allocation failed",
               "cudnn_status_alloc_failed", "cublas_status_alloc_failed")
UNSUPPORTED_MARKERS = ("not supported", "unsupported", "not implemented",
                       "notimplementederror", "only supported on gpu",
                       "is only implemented", "requires cudnn", "cudnn is not available",
                       "cudnn not available")


def classify_error(type_name, message):
    """Map a CNTK exception (its class name and message) to a result status:
    "oom", "unsupported" or "error".  Pure: the tests feed it synthetic errors.

    CNTK surfaces native failures as RuntimeError/ValueError with the C++
    message: "CUDA failure 2: out of memory ; GPU=0 ...", "std::bad_alloc",
    "... is not supported ..."."""
    text = ("%s: %s" % (type_name, message)).lower()
    if type_name in ("MemoryError", "OutOfMemoryError") or any(m in text for m in OOM_MARKERS):
        return "oom"
    if type_name in ("NotImplementedError", "Unsupported") or \
            any(m in text for m in UNSUPPORTED_MARKERS):
        return "unsupported"
    return "error"


def bn_time_constant(momentum, reference_batch=BN_REFERENCE_BATCH):
    """CNTK normalization_time_constant (samples) equivalent to the spec's
    per-step decay `momentum` at `reference_batch` samples per step."""
    if momentum <= 0.0:
        return 0.0          # CNTK: 0 = use only the current minibatch
    if momentum >= 1.0:
        return float("inf")
    return -float(reference_batch) / math.log(momentum)


class Adapter(BaseAdapter):
    name = "cntk"
    display = "CNTK"
    framework_module = "cntk"
    unsupported = {}
    precisions = ("fp32",)
    max_gpus = 1

    def __init__(self, device="cpu", gpus=0, precision="fp32", options=None):
        if int(gpus) > 1:
            raise Unsupported("CNTK data parallelism over %d GPUs needs an MPI launch (mpiexec "
                              "-n %d python ...) with C.train.distributed."
                              "data_parallel_distributed_learner; the adapter runs one "
                              "process on one GPU" % (int(gpus), int(gpus)))
        if precision != "fp32":
            raise Unsupported("the CNTK adapter implements fp32 only (CNTK 2.7's float16 "
                              "needs C.cast around every BN/loss; %s not implemented)"
                              % precision)
        super(Adapter, self).__init__(device, gpus, precision, options)
        import cntk as C
        self.C = C
        if device == "gpu":
            self.gpus = 1
            ok = C.device.try_set_default_device(C.device.gpu(0))
            if not ok:
                raise RuntimeError("device gpu requested but CNTK cannot use GPU 0 (cntk %s; "
                                   "the cntk-gpu wheel and a driver are needed)"
                                   % C.__version__)
            self.dev = C.device.gpu(0)
        else:
            C.device.try_set_default_device(C.device.cpu())
            self.dev = C.device.cpu()

    # --- environment --------------------------------------------------------
    def versions(self):
        C = self.C
        cuda = cudnn = None
        if self.device == "gpu":
            v = shared_library_version(["libcudart.so.10.0", "libcudart.so"], "cudaRuntimeGetVersion")
            cuda = "%d.%d" % (v // 1000, (v % 1000) // 10) if v else None
            v = shared_library_version(["libcudnn.so.7", "libcudnn.so"], "cudnnGetVersion")
            cudnn = "%d.%d.%d" % (v // 1000, (v % 1000) // 100, v % 100) if v else None
        return {"framework_version": C.__version__, "cuda": cuda, "cudnn": cudnn}

    def devices(self):
        C = self.C
        if self.device == "gpu":
            try:
                props = C.device.get_gpu_properties(self.dev)
                return ["gpu(0) %s" % props.name]
            except Exception:
                return ["gpu(0)"]
        return ["cpu (CNTK, OMP_NUM_THREADS=%s)" % os.environ.get("OMP_NUM_THREADS", "default")]

    def seed(self, n):
        import numpy as np
        np.random.seed(n)
        C = self.C
        try:
            C.cntk_py.set_fixed_random_seed(int(n))
        except Exception:
            pass

    # --- graph construction -------------------------------------------------
    def _pad(self, x, ph, pw, value=0.0):
        C = self.C
        if not ph and not pw:
            return x
        return C.pad(x, pattern=[(0, 0), (ph, ph), (pw, pw)], mode=C.ops.CONSTANT_PAD,
                     constant_value=value)

    def _conv(self, x, in_ch, node, groups=1, filters=None, kernel=None, stride=None,
              pad=None, bias=None):
        C = self.C
        filters = node["filters"] if filters is None else filters
        (kh, kw) = node["kernel"] if kernel is None else kernel
        (sh, sw) = node["stride"] if stride is None else stride
        (ph, pw) = node["pad"] if pad is None else pad
        bias = node["bias"] if bias is None else bias
        W = C.parameter((filters, in_ch // groups, kh, kw), init=C.glorot_uniform())
        kwargs = {"strides": (sh, sw), "auto_padding": [False]}
        if groups > 1:
            kwargs["groups"] = groups
        out = C.convolution(W, self._pad(x, ph, pw), **kwargs)
        if bias:
            out = out + C.parameter((filters, 1, 1), init=0)
        return out

    def _gru(self, x, in_dim, units):
        C = self.C
        if self.device == "gpu":
            W = C.parameter((C.InferredDimension, units), init=C.glorot_uniform())
            seq = C.optimized_rnnstack(x, W, units, 1, recurrent_op="gru")
            return C.sequence.last(seq)
        W = C.parameter((in_dim, 3 * units), init=C.glorot_uniform())
        U = C.parameter((units, 3 * units), init=C.glorot_uniform())
        b_i = C.parameter((3 * units,), init=0)
        b_h = C.parameter((3 * units,), init=0)
        u = units

        def step(h, xt):
            xw = C.times(xt, W) + b_i
            hu = C.times(h, U) + b_h
            r = C.sigmoid(C.slice(xw, 0, 0, u) + C.slice(hu, 0, 0, u))
            z = C.sigmoid(C.slice(xw, 0, u, 2 * u) + C.slice(hu, 0, u, 2 * u))
            n = C.tanh(C.slice(xw, 0, 2 * u, 3 * u) + r * C.slice(hu, 0, 2 * u, 3 * u))
            return (1 - z) * n + z * h

        return C.sequence.last(C.layers.Recurrence(step)(x))

    def _graph(self, spec):
        C = self.C
        from bench import specs
        shapes = specs.infer(spec)["shapes"]
        inp = spec["input"]
        if inp["dtype"] == "int64":
            vocab = next(n["vocab"] for n in spec["nodes"] if n["op"] == "embedding")
            x = C.sequence.input_variable(vocab, is_sparse=True, name="tokens")
            token_vocab = vocab
        else:
            x = C.input_variable(tuple(inp["shape"]), name="images")
            token_vocab = None
        values = {}
        for node in spec["nodes"]:
            op, name = node["op"], node["name"]
            ins = [values[n] for n in node["inputs"]]
            in_shape = shapes[node["inputs"][0]] if node["inputs"] else None
            if op == "input":
                out = x
            elif op == "conv":
                out = self._conv(ins[0], in_shape[0], node)
            elif op == "sepconv":
                c = in_shape[0]
                dw = self._conv(ins[0], c, node, groups=c, filters=c, bias=False)
                out = self._conv(dw, c, node, filters=node["filters"], kernel=(1, 1),
                                 stride=(1, 1), pad=(0, 0))
            elif op == "bn":
                map_rank = 1 if len(in_shape) == 3 else None
                out = C.layers.BatchNormalization(
                    map_rank=map_rank, epsilon=node["eps"],
                    normalization_time_constant=bn_time_constant(node["momentum"]))(ins[0])
            elif op == "relu":
                out = C.relu(ins[0])
            elif op == "maxpool":
                (ph, pw) = node["pad"]
                out = C.pooling(self._pad(ins[0], ph, pw, FLOAT32_LOWEST), C.MAX_POOLING,
                                tuple(node["kernel"]), strides=tuple(node["stride"]),
                                auto_padding=[False])
            elif op == "avgpool":
                (ph, pw) = node["pad"]
                kernel, stride = tuple(node["kernel"]), tuple(node["stride"])
                out = C.pooling(self._pad(ins[0], ph, pw), C.AVG_POOLING, kernel,
                                strides=stride, auto_padding=[False])
                if (ph or pw) and not node["count_include_pad"]:
                    import numpy as np
                    ones = C.constant(np.ones((1,) + tuple(in_shape[1:]), dtype=np.float32))
                    frac = C.pooling(self._pad(ones, ph, pw), C.AVG_POOLING, kernel,
                                     strides=stride, auto_padding=[False])
                    out = C.element_divide(out, frac)
            elif op == "gap":
                out = C.reshape(C.layers.GlobalAveragePooling()(ins[0]), (in_shape[0],))
            elif op == "flatten":
                n = 1
                for d in in_shape:
                    n *= d
                out = C.reshape(ins[0], (n,))
            elif op == "dense":
                out = C.layers.Dense(node["units"], bias=node["bias"],
                                     init=C.glorot_uniform())(ins[0])
            elif op == "dropout":
                out = C.layers.Dropout(node["rate"])(ins[0])
            elif op == "lrn":
                out = C.local_response_normalization(ins[0], node["radius"], node["bias"],
                                                     node["alpha"] * node["size"],
                                                     node["beta"])
            elif op == "add":
                out = ins[0]
                for other in ins[1:]:
                    out = C.plus(out, other)
            elif op == "concat":
                out = C.splice(*ins, axis=0)
            elif op == "embedding":
                out = C.layers.Embedding(node["dim"])(ins[0])
            elif op == "gru":
                out = self._gru(ins[0], in_shape[1], node["units"])
            else:
                raise Unsupported("CNTK adapter: op %r not implemented" % op)
            values[name] = out
        return _Model(values[spec["output"]], x, spec, token_vocab)

    # --- models -------------------------------------------------------------
    def build(self, spec, training=True):
        try:
            return self._graph(spec)
        except Exception as exc:
            if classify_error(type(exc).__name__, str(exc)) == "unsupported":
                raise Unsupported("CNTK %s cannot build %s: %s"
                                  % (self.C.__version__, spec["name"], exc))
            raise

    def param_count(self, model):
        total = 0
        for p in model.z.parameters:
            n = 1
            for d in p.shape:
                n *= int(d)
            total += n
        return int(total)

    def _feed_x(self, model, x):
        C = self.C
        if model.token_vocab is not None:
            # int ids (N, T) -> N one-hot sequences of length T
            return C.Value.one_hot([list(map(int, row)) for row in x], model.token_vocab,
                                   device=self.dev)
        return x

    def _device_x(self, model, x):
        """A batch as a Value on the adapter's device (token ids as one-hot sequences)."""
        import numpy as np
        if model.token_vocab is not None:
            return self._feed_x(model, x)
        return self.C.Value.create(model.x, np.ascontiguousarray(x, dtype=np.float32), device=self.dev)

    def settings(self):
        out = super(Adapter, self).settings()
        out.update({"layout": "NCHW", "graph": "static CNTK graph, C.Trainer"})
        return out

    def make_train_step(self, model, optimizer_cfg):
        C = self.C
        import numpy as np
        name = optimizer_cfg.get("name", "sgd")
        if name not in ("sgd", "none"):
            raise Unsupported("optimizer %r not implemented" % name)
        loss_kind = optimizer_cfg.get("loss", "xent")
        z = model.z
        classes = model.spec.get("num_classes") or 1
        label = C.input_variable(classes, name="labels")
        if loss_kind == "l2":
            loss = C.reduce_sum(C.square(z)) / 2.0   # per sample; CNTK sums over the batch
        else:
            loss = C.cross_entropy_with_softmax(z, label)
        state = {"trainer": None, "n": None}
        adapter = self

        def trainer_for(n):
            if state["trainer"] is None:
                lr = C.learning_parameter_schedule_per_sample(
                    float(optimizer_cfg.get("lr", 0.01)) / n)
                momentum = float(optimizer_cfg.get("momentum", 0.0) or 0.0)
                if momentum > 0:
                    learner = C.momentum_sgd(z.parameters, lr, C.momentum_schedule(momentum),
                                             unit_gain=False)
                else:
                    learner = C.sgd(z.parameters, lr)
                state["trainer"] = C.Trainer(z, (loss, None), [learner])
            return state["trainer"]

        def onehot(y):
            out = np.zeros((len(y), classes), dtype=np.float32)
            if loss_kind != "l2":
                out[np.arange(len(y)), y.astype(np.int64)] = 1.0
            return out

        # the last batch as device Values: a synthetic workload feeds the same arrays every step, so
        # its data and one-hot labels are copied to the device once, before timing, not in each step
        last = {"x": None, "y": None, "feed": None}

        def feed_for(x, y):
            if last["feed"] is not None and last["x"] is x and last["y"] is y:
                return last["feed"]
            feed = {model.x: adapter._device_x(model, x)}
            if loss_kind != "l2":
                feed[label] = C.Value.create(label, onehot(y), device=adapter.dev)
            last.update(x=x, y=y, feed=feed)
            return feed

        def step(x, y):
            n = int(len(x))
            feed = feed_for(x, y)
            if name == "none":
                # forward + backward, no update: one pass that also returns the loss; the
                # gradients stay on the device (as_numpy=False)
                _, value = loss.grad(feed, wrt=z.parameters, outputs=[loss], as_numpy=False)
                total = float(np.sum(value.asarray())) if loss_kind == "l2" else 0.0
                return np.float32(total)
            trainer = trainer_for(n)
            trainer.train_minibatch(feed)
            avg = float(trainer.previous_minibatch_loss_average)
            # previous_minibatch_loss_average is the per-sample mean; l2 wants the sum
            return np.float32(avg * n if loss_kind == "l2" else avg)

        return step

    def make_forward(self, model):
        adapter = self

        def forward(x):
            # Function.eval runs in inference mode: dropout off, BN running stats
            return model.z.eval({model.x: adapter._feed_x(model, x)}, device=adapter.dev)

        return forward

    def save(self, model, path):
        model.z.save(os.path.join(path, "model.cntk"))

    def load(self, spec, path):
        C = self.C
        z = C.load_model(os.path.join(path, "model.cntk"), device=self.dev)
        vocab = next((n["vocab"] for n in spec["nodes"] if n["op"] == "embedding"), None)
        return _Model(z, z.arguments[0], spec, vocab if spec["input"]["dtype"] == "int64" else None)

    def rnn_uses_cudnn(self, model):
        if not any(n["op"] == "gru" for n in model.spec["nodes"]):
            return None
        return self.device == "gpu"   # optimized_rnnstack on GPU, Recurrence on CPU

    # --- data and device ----------------------------------------------------
    def to_device(self, array):
        # CNTK takes numpy batches directly in feed dicts (it copies them to
        # the default device per call); token ids become one-hot Values at feed
        return array

    def to_numpy(self, value):
        import numpy as np
        if isinstance(value, list):    # sequence outputs come back as lists
            value = np.stack([np.asarray(v) for v in value])
        return np.asarray(value, dtype=np.float32)

    def synchronize(self):
        # train_minibatch / eval return after the device finished: they read
        # back the loss / the outputs
        pass

    def is_oom(self, exc):
        return classify_error(type(exc).__name__, str(exc)) == "oom"


class _Model(object):
    def __init__(self, z, x, spec, token_vocab):
        self.z = z
        self.x = x
        self.spec = spec
        self.token_vocab = token_vocab
