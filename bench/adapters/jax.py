"""JAX adapter (Flax linen + optax) for bench.adapters.base.

Interprets a bench.specs spec with one flax.linen Module whose __call__ walks
the spec's nodes.  JAX convolutions run NHWC here (XLA's preferred layout on
GPU and CPU): `to_device` transposes the protocol's NCHW images once, so the
channel axis is the last one inside the model (BN, LRN, concat use axis -1).

Train and forward steps are `jax.jit`-compiled pure functions; the model object
holds the current state (params, batch_stats, optimizer state, dropout key)
and a train step replaces it with the jitted function's outputs (the old
buffers are donated).  JAX dispatch is asynchronous on CPU as well as GPU:
`synchronize()` blocks on the last outputs (loss and new state) with
jax.block_until_ready, so every clock read that follows includes the work.

GRU: a GRU layer written here (not flax's GRUCell, which has one bias set and
so 3*(in*u + u*u) + 3u params): the spec's cuDNN layout with two bias
vectors, r/z/n gates, n = tanh(x W_n + b_in + r * (h U_n + b_hn)), run with
jax.lax.scan.  XLA does not call cuDNN's RNN kernel: rnn_uses_cudnn is False.

Precisions (bench.adapters.base.PRECISION_METHODS): fp32; bf16 (params fp32,
computation bf16, BN statistics and the loss fp32) on CPU and GPU; fp16 = pure
half on GPU only (params cast to float16 after init, computation float16, the
loss fp32; no loss scaling unless --option loss_scale=N asks for a static
one); amp = fp32 master weights, float16 computation (as bf16, in float16) and
dynamic loss scaling with jmp.DynamicLossScale, the JAX ecosystem's shipped
scaler (DeepMind's jmp, built for optax training loops; optax itself has
none), in the recipe of jmp's README: scale the loss, unscale the gradients,
jmp.all_finite, adjust the scale (halve on overflow, double after 2000 finite
steps), and keep the old params/optimizer state on a non-finite step
(jmp.select_tree) -- all inside the one jitted step.  GPU only; `cpu_amp=1`
(testing aid) runs it on the CPU, whose float16 math XLA emulates.

GPUs: gpus=2 (or more) is data parallel with jax.sharding: a 1-D device mesh,
the batch sharded over it, parameters replicated; jit's SPMD partitioner
inserts the gradient all-reduce.  The batch must divide by the GPU count.

Peak memory: device memory_stats()['peak_bytes_in_use'] summed over the
devices in use (GPU); JAX cannot reset it, so it is the peak since the process
started (None on CPU, whose devices report no memory stats).

Options (--option KEY=VALUE):
  loss_scale=N   static loss scale for fp16 (default 1)
  initial_loss_scale=N  amp: the dynamic scale's initial value (default 2**15)
  cpu_amp=1      testing aid: precision amp on the CPU
"""

import os

from bench.adapters.base import Adapter as BaseAdapter
from bench.adapters.base import Unsupported
from bench.adapters.base import loss_scaler_text


def is_oom_error(type_name, message):
    """JAX/XLA's out-of-memory errors: XlaRuntimeError / JaxRuntimeError whose
    status is RESOURCE_EXHAUSTED (the allocator's 'Out of memory ...')."""
    if type_name == "MemoryError":
        return True
    if type_name in ("XlaRuntimeError", "JaxRuntimeError", "RuntimeError"):
        return "RESOURCE_EXHAUSTED" in message or "Out of memory" in message
    return False


def _make_module_class(jax, jnp, nn, spec_nodes_key):
    from bench import specs

    lax = jax.lax

    class GRU(nn.Module):
        """GRU over (N, T, F) -> last hidden state (N, units); cuDNN layout."""
        units: int
        dtype: object = None

        @nn.compact
        def __call__(self, x):
            u = self.units
            f = x.shape[-1]
            init = nn.initializers.lecun_normal()
            w_i = self.param("kernel_i", init, (f, 3 * u), jnp.float32)
            w_h = self.param("kernel_h", nn.initializers.orthogonal(), (u, 3 * u), jnp.float32)
            b_i = self.param("bias_i", nn.initializers.zeros, (3 * u,), jnp.float32)
            b_h = self.param("bias_h", nn.initializers.zeros, (3 * u,), jnp.float32)
            dtype = self.dtype or jnp.float32
            w_i, w_h, b_i, b_h = [p.astype(dtype) for p in (w_i, w_h, b_i, b_h)]
            x = x.astype(dtype)
            xw = jnp.einsum("ntf,fg->tng", x, w_i) + b_i      # (T, N, 3u)

            def cell(h, xw_t):
                hu = jnp.dot(h, w_h) + b_h
                xr, xz, xn = jnp.split(xw_t, 3, axis=-1)
                hr, hz, hn = jnp.split(hu, 3, axis=-1)
                r = jax.nn.sigmoid(xr + hr)
                z = jax.nn.sigmoid(xz + hz)
                n = jnp.tanh(xn + r * hn)
                h = (1 - z) * n + z * h
                return h, None

            h0 = jnp.zeros((x.shape[0], u), dtype)
            h, _ = lax.scan(cell, h0, xw)
            return h

    def lrn(x, node):
        # TF semantics over the channel (last) axis
        r = node["radius"]
        sq = jnp.square(x.astype(jnp.float32))
        window = lax.reduce_window(sq, 0.0, lax.add, (1, 1, 1, 2 * r + 1), (1, 1, 1, 1),
                                   ((0, 0), (0, 0), (0, 0), (r, r)))
        out = x.astype(jnp.float32) / jnp.power(node["bias"] + node["alpha"] * window,
                                                node["beta"])
        return out.astype(x.dtype)

    class SpecNet(nn.Module):
        spec_key: str
        dtype: object = None

        @nn.compact
        def __call__(self, x, train=False):
            spec = _SPECS[self.spec_key]
            shapes = specs.infer(spec)["shapes"]
            last = specs.last_use(spec)
            dtype = self.dtype
            values = {}
            for index, node in enumerate(spec["nodes"]):
                op, name = node["op"], node["name"]
                ins = [values[n] for n in node["inputs"]]
                if op == "input":
                    out = x
                elif op == "conv":
                    (ph, pw) = node["pad"]
                    out = nn.Conv(node["filters"], tuple(node["kernel"]), tuple(node["stride"]),
                                  padding=((ph, ph), (pw, pw)), use_bias=node["bias"],
                                  dtype=dtype, name=name)(ins[0])
                elif op == "sepconv":
                    (ph, pw) = node["pad"]
                    c = shapes[node["inputs"][0]][0]
                    y = nn.Conv(c, tuple(node["kernel"]), tuple(node["stride"]),
                                padding=((ph, ph), (pw, pw)), feature_group_count=c,
                                use_bias=False, dtype=dtype, name=name + "_dw")(ins[0])
                    out = nn.Conv(node["filters"], (1, 1), use_bias=node["bias"], dtype=dtype,
                                  name=name + "_pw")(y)
                elif op == "bn":
                    # flax momentum = running-average decay, as in the spec
                    out = nn.BatchNorm(use_running_average=not train, momentum=node["momentum"],
                                       epsilon=node["eps"], axis=-1, dtype=dtype,
                                       name=name)(ins[0])
                elif op == "relu":
                    out = nn.relu(ins[0])
                elif op == "maxpool":
                    (ph, pw) = node["pad"]
                    out = nn.max_pool(ins[0], tuple(node["kernel"]), tuple(node["stride"]),
                                      padding=((ph, ph), (pw, pw)))
                elif op == "avgpool":
                    (ph, pw) = node["pad"]
                    out = nn.avg_pool(ins[0], tuple(node["kernel"]), tuple(node["stride"]),
                                      padding=((ph, ph), (pw, pw)),
                                      count_include_pad=node["count_include_pad"])
                elif op == "gap":
                    out = jnp.mean(ins[0], axis=(1, 2))
                elif op == "flatten":
                    out = ins[0].reshape((ins[0].shape[0], -1))
                elif op == "dense":
                    out = nn.Dense(node["units"], use_bias=node["bias"], dtype=dtype,
                                   name=name)(ins[0])
                elif op == "dropout":
                    out = nn.Dropout(node["rate"], deterministic=not train, name=name)(ins[0])
                elif op == "lrn":
                    out = lrn(ins[0], node)
                elif op == "add":
                    out = ins[0]
                    for other in ins[1:]:
                        out = out + other
                elif op == "concat":
                    out = jnp.concatenate(ins, axis=-1)
                elif op == "embedding":
                    out = nn.Embed(node["vocab"], node["dim"], dtype=dtype, name=name)(ins[0])
                elif op == "gru":
                    out = GRU(node["units"], dtype=dtype, name=name)(ins[0])
                else:
                    raise ValueError("unknown op %r" % op)
                values[name] = out
                for n in node["inputs"]:
                    if last.get(n) == index and n != spec["output"]:
                        del values[n]
            return values[spec["output"]]

    return SpecNet


# Specs by key: linen modules are frozen dataclasses whose fields must be
# hashable, so the module holds a key into this table instead of the dict.
_SPECS = {}


class Adapter(BaseAdapter):
    name = "jax"
    display = "JAX"
    framework_module = "jax"
    unsupported = {}
    precisions = ("fp32", "bf16", "fp16", "amp")
    max_gpus = 16

    def __init__(self, device="cpu", gpus=0, precision="fp32", options=None):
        super(Adapter, self).__init__(device, gpus, precision, options)
        cpu_float16 = precision == "fp16" or (precision == "amp" and not self.option_bool("cpu_amp"))
        if device != "gpu" and cpu_float16:
            raise Unsupported("%s on CPU: XLA's CPU backend emulates float16 convolutions "
                              "and matmuls through fp32 (no native fp16 math); use bf16" % precision)
        import jax
        import jax.numpy as jnp
        import flax.linen as nn
        import optax
        self.jax, self.jnp, self.nn, self.optax = jax, jnp, nn, optax
        if device == "gpu":
            try:
                gpus_found = jax.devices("gpu")
            except RuntimeError as exc:
                raise RuntimeError("device gpu requested but JAX finds no GPU backend (%s); "
                                   "install jax[cuda12] / jax[cuda13]" % exc)
            self.gpus = max(1, self.gpus)
            if self.gpus > len(gpus_found):
                raise Unsupported("%d GPUs requested, %d visible" % (self.gpus, len(gpus_found)))
            self.devs = list(gpus_found[:self.gpus])
        else:
            if self.gpus > 1:
                raise Unsupported("data parallel over %d GPUs needs device gpu" % self.gpus)
            self.devs = [jax.devices("cpu")[0]]
        self.compute_dtype = {"fp32": None, "bf16": jnp.bfloat16,
                              "fp16": jnp.float16, "amp": jnp.float16}[precision]
        self.input_dtype = self.compute_dtype or jnp.float32
        self.loss_scale = float(self.options.get("loss_scale", 1.0))
        self.jmp = None
        self.initial_loss_scale = self.option_positive_float("initial_loss_scale", 2.0 ** 15)
        if precision == "amp":
            try:
                import jmp
            except ImportError:
                raise Unsupported("precision amp needs jmp (DeepMind's JAX mixed-precision library, "
                                  "its dynamic loss scaler) in the image: pip install jmp")
            self.jmp = jmp
        self._loss_scale_state = None
        self.mesh = None
        if len(self.devs) > 1:
            from jax.sharding import Mesh, NamedSharding, PartitionSpec
            import numpy as np
            self.mesh = Mesh(np.array(self.devs), ("batch",))
            self.batch_sharding = NamedSharding(self.mesh, PartitionSpec("batch"))
            self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self._seed = 0
        self._pending = None
        self._module_class = None

    # --- environment --------------------------------------------------------
    def versions(self):
        jax = self.jax
        cuda = cudnn = None
        if self.device == "gpu":
            try:
                from jax._src.lib import cuda_versions
            except Exception:
                cuda_versions = None
            if cuda_versions is not None:
                get = getattr(cuda_versions, "cuda_runtime_get_version", None)
                if get is not None:
                    v = int(get())
                    cuda = "%d.%d" % (v // 1000, (v % 1000) // 10)
                get = getattr(cuda_versions, "cudnn_get_version", None)
                if get is not None:
                    v = int(get())
                    if v >= 90000:
                        cudnn = "%d.%d.%d" % (v // 10000, (v % 10000) // 100, v % 100)
                    else:
                        cudnn = "%d.%d.%d" % (v // 1000, (v % 1000) // 100, v % 100)
        return {"framework_version": jax.__version__, "cuda": cuda, "cudnn": cudnn}

    def devices(self):
        out = []
        for d in self.devs:
            kind = getattr(d, "device_kind", "")
            out.append("%s:%d %s" % (d.platform, d.id, kind))
        return out

    def peak_precision(self):
        if self.precision == "fp32" and self.device == "gpu":
            # XLA's default matmul/conv precision on Ampere+ GPUs is TF32
            kind = str(getattr(self.devs[0], "compute_capability", "0"))
            try:
                major = int(kind.split(".")[0])
            except ValueError:
                major = 0
            prec = str(getattr(self.jax.config, "jax_default_matmul_precision", None) or "")
            if major >= 8 and prec.lower() not in ("highest", "float32"):
                return "tf32"
        return super(Adapter, self).peak_precision()

    def settings(self):
        out = super(Adapter, self).settings()
        out.update({
            "layout": "NHWC",
            "graph": "jax.jit, train state donated (donate_argnums)",
            "loss_scaler": (loss_scaler_text("jmp.DynamicLossScale", self.initial_loss_scale)
                            if self.precision == "amp" else
                            ("static x%g" % self.loss_scale) if self.loss_scale != 1.0 else None),
            "tf32": (self.peak_precision() == "tf32") if self.device == "gpu" and self.precision == "fp32"
            else None,
            "data_parallel": "jax.sharding mesh over %d devices" % len(self.devs) if self.mesh is not None
            else None,
        })
        return out

    def current_loss_scale(self):
        if self._loss_scale_state is None:
            return None
        import numpy as np
        return float(np.asarray(self.jax.device_get(self._loss_scale_state[0].loss_scale)))

    def seed(self, n):
        import numpy as np
        np.random.seed(n)
        self._seed = int(n)

    # --- models -------------------------------------------------------------
    def _module(self, spec):
        if self._module_class is None:
            self._module_class = _make_module_class(self.jax, self.jnp, self.nn, None)
        key = "%s#%d" % (spec.get("name", "spec"), len(_SPECS))
        _SPECS[key] = spec
        return self._module_class(spec_key=key, dtype=self.compute_dtype)

    def _dummy_input(self, spec):
        jnp = self.jnp
        shape = tuple(spec["input"]["shape"])
        if spec["input"]["dtype"] == "int64":
            return jnp.zeros((1,) + shape, jnp.int32)
        c, h, w = shape
        return jnp.zeros((1, h, w, c), self.input_dtype)

    def build(self, spec, training=True):
        jax = self.jax
        module = self._module(spec)
        key = jax.random.PRNGKey(self._seed)
        params_key, dropout_key, self_key = jax.random.split(key, 3)
        init = jax.jit(lambda k: module.init({"params": k}, self._dummy_input(spec), train=False))
        variables = init(params_key)
        variables = dict(variables)
        if self.precision == "fp16":
            # pure half: the weights themselves are float16 (bf16 keeps fp32 master weights)
            variables["params"] = jax.tree_util.tree_map(
                lambda p: p.astype(self.jnp.float16), variables["params"])
        # the dropout key is committed to the device like the variables: an uncommitted key
        # on the train step's first call and a committed one (its output) on the second
        # would make jit compile the step twice, the second time inside a timed step
        model = _Model(module, spec, jax.device_put(variables, self._placement()),
                       jax.device_put(self_key, self._placement()))
        return model

    def _placement(self):
        return self.replicated if self.mesh is not None else self.devs[0]

    def param_count(self, model):
        leaves = self.jax.tree_util.tree_leaves(model.variables["params"])
        return int(sum(int(leaf.size) for leaf in leaves))

    def make_train_step(self, model, optimizer_cfg):
        jax, jnp, optax = self.jax, self.jnp, self.optax
        module = model.module
        name = optimizer_cfg.get("name", "sgd")
        loss_kind = optimizer_cfg.get("loss", "xent")
        if name == "sgd":
            momentum = optimizer_cfg.get("momentum", 0.0) or None
            tx = optax.sgd(optimizer_cfg.get("lr", 0.01), momentum=momentum)
        elif name == "none":
            tx = None
        else:
            raise Unsupported("optimizer %r not implemented" % name)
        loss_scale = self.loss_scale
        jmp = self.jmp if tx is not None else None  # no update, nothing to protect (as GradScaler)
        has_bn = "batch_stats" in model.variables

        def loss_fn(params, batch_stats, x, y, rng):
            variables = {"params": params}
            if has_bn:
                variables["batch_stats"] = batch_stats
                out, updates = module.apply(variables, x, train=True, rngs={"dropout": rng},
                                            mutable=["batch_stats"])
                new_stats = updates["batch_stats"]
            else:
                out = module.apply(variables, x, train=True, rngs={"dropout": rng})
                new_stats = batch_stats
            out = out.astype(jnp.float32)
            if loss_kind == "l2":
                loss = jnp.sum(jnp.square(out)) / 2
            else:
                loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))
            return loss * loss_scale, (loss, new_stats)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def dynamic_loss_fn(params, batch_stats, x, y, rng, scaler):
            _, aux = loss_fn(params, batch_stats, x, y, rng)
            return scaler.scale(aux[0]), aux

        dynamic_grad_fn = jax.value_and_grad(dynamic_loss_fn, has_aux=True)

        def train_step(state, x, y):
            params, batch_stats, opt_state, rng, scaler = state
            rng, sub = jax.random.split(rng)
            if jmp is not None:
                (_, (loss, new_stats)), grads = dynamic_grad_fn(params, batch_stats, x, y, sub, scaler)
                grads = scaler.unscale(grads)
                finite = jmp.all_finite(grads)
                scaler = scaler.adjust(finite)
                updates, new_opt_state = tx.update(grads, opt_state, params)
                new_params = optax.apply_updates(params, updates)
                # a step with non-finite gradients changes nothing but the scale
                params, opt_state = jmp.select_tree(finite, (new_params, new_opt_state),
                                                    (params, opt_state))
                return (params, new_stats, opt_state, rng, scaler), loss
            (_, (loss, new_stats)), grads = grad_fn(params, batch_stats, x, y, sub)
            if loss_scale != 1.0:
                grads = jax.tree_util.tree_map(lambda g: g / loss_scale, grads)
            if tx is None:
                # no update; the gradients are returned so XLA cannot drop them
                return (params, new_stats, grads, rng, scaler), loss
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, new_stats, opt_state, rng, scaler), loss

        jitted = jax.jit(train_step, donate_argnums=(0,))
        params = model.variables["params"]
        opt_state = tx.init(params) if tx is not None else \
            jax.tree_util.tree_map(jnp.zeros_like, params)
        # commit every part of the state where its outputs will live (see build): one compile
        scaler = jmp.DynamicLossScale(jnp.asarray(self.initial_loss_scale, jnp.float32)) \
            if jmp is not None else None
        state = list(jax.device_put((params, model.variables.get("batch_stats", {}), opt_state,
                                     model.rng, scaler), self._placement()))
        adapter = self
        self._loss_scale_state = state[4:] if jmp is not None else None

        def step(x, y):
            new_state, loss = jitted(tuple(state), x, y)
            state[:] = list(new_state)
            if jmp is not None:
                adapter._loss_scale_state = state[4:]
            model.variables["params"] = new_state[0]
            if has_bn:
                model.variables["batch_stats"] = new_state[1]
            model.rng = new_state[3]
            adapter._pending = (loss, new_state[0])
            return loss

        cache_size = getattr(jitted, "_cache_size", None)
        if cache_size is not None:
            step.compilations = cache_size  # how many times jit compiled the step (selftest)
        return step

    def make_forward(self, model):
        jax = self.jax
        module = model.module
        apply = jax.jit(lambda variables, x: module.apply(variables, x, train=False))
        adapter = self

        def forward(x):
            out = apply(model.variables, x)
            adapter._pending = out
            return out

        return forward

    def save(self, model, path):
        from flax import serialization
        state = self.jax.device_get(model.variables)
        with open(os.path.join(path, "variables.msgpack"), "wb") as f:
            f.write(serialization.to_bytes(state))

    def load(self, spec, path):
        from flax import serialization
        model = self.build(spec, training=False)
        with open(os.path.join(path, "variables.msgpack"), "rb") as f:
            restored = serialization.from_bytes(self.jax.device_get(model.variables), f.read())
        model.variables = dict(self.jax.device_put(restored, self._placement()))
        return model

    def rnn_uses_cudnn(self, model):
        if not any(n["op"] == "gru" for n in model.spec["nodes"]):
            return None
        return False  # lax.scan over the cell: XLA fusions, never cuDNN's RNN

    # --- data and device ----------------------------------------------------
    def to_device(self, array):
        jax, jnp = self.jax, self.jnp
        if array.ndim == 4:
            array = array.transpose(0, 2, 3, 1)   # NCHW -> NHWC
        if array.dtype.kind == "f":
            value = jnp.asarray(array, dtype=self.input_dtype) if self.compute_dtype \
                else array.astype("float32")
        else:
            value = array.astype("int32")   # JAX's default integer width (x64 off)
        if self.mesh is not None:
            if array.shape[0] % len(self.devs):
                raise Unsupported("batch of %d does not divide over %d GPUs (data parallel "
                                  "sharding needs equal shards)" % (array.shape[0], len(self.devs)))
            return jax.device_put(value, self.batch_sharding)
        return jax.device_put(value, self.devs[0])

    def to_numpy(self, value):
        import numpy as np
        out = np.asarray(self.jax.device_get(value))
        if out.ndim == 4:
            out = out.transpose(0, 3, 1, 2)   # NHWC feature maps back to the protocol's NCHW
        if out.dtype.kind == "f" and out.dtype != np.float64 and out.dtype.itemsize < 4:
            out = out.astype(np.float32)
        elif str(out.dtype) == "bfloat16":
            out = out.astype(np.float32)
        return out

    def synchronize(self):
        if self._pending is not None:
            self.jax.block_until_ready(self._pending)

    def peak_memory(self):
        if self.device != "gpu":
            return None
        total = 0
        for d in self.devs:
            stats = d.memory_stats() if hasattr(d, "memory_stats") else None
            if not stats or "peak_bytes_in_use" not in stats:
                return None
            total += int(stats["peak_bytes_in_use"])
        return total

    def is_oom(self, exc):
        return is_oom_error(type(exc).__name__, str(exc))


class _Model(object):
    def __init__(self, module, spec, variables, rng):
        self.module = module
        self.spec = spec
        self.variables = variables
        self.rng = rng
