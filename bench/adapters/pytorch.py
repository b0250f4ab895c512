"""PyTorch adapter: the reference implementation of bench.adapters.base.

Interprets a bench.specs spec with a DAG-walking nn.Module.  Written to run on
old and new torch alike (the matrix spans torch 1.x to 2.x): features newer
than torch 1.4 are looked up with getattr and used only when present.

Options (--option KEY=VALUE):
  channels_last=0|1 model and 4-D inputs in torch.channels_last (NHWC).  Default 1
                    (where torch has it, >= 1.5): PyTorch's performance tuning guide
                    recommends it for convolutional networks, and on this project's CPU
                    host a ResNet-50 training step is ~25 % faster with it; 0 keeps
                    the NCHW (contiguous) layout.
  compile=1         wrap the model with torch.compile (torch >= 2.0)
  cudnn_benchmark=0 disable torch.backends.cudnn.benchmark (on by default on GPU,
                    as in the seeds' frameworks, which autotune convolutions)
  threads=N         torch.set_num_threads(N) on CPU
  initial_loss_scale=N  amp: GradScaler's initial scale (default 2**16)
  cpu_amp=1        testing aid: allow precision amp on CPU (float16 CPU autocast and
                    GradScaler("cpu"), torch >= 2.3), to exercise the loss-scaler path
"""

import contextlib
import os

from bench.adapters.base import Adapter as BaseAdapter
from bench.adapters.base import Unsupported
from bench.adapters.base import loss_scaler_text


def _cudnn_version_string(torch):
    try:
        v = torch.backends.cudnn.version()
    except Exception:  # a CPU build raises or returns None
        return None
    if not v:
        return None
    v = int(v)
    # cuDNN 9 encodes major*10000 + minor*100 + patch; earlier major*1000 + ...
    if v >= 90000:
        return "%d.%d.%d" % (v // 10000, (v % 10000) // 100, v % 100)
    return "%d.%d.%d" % (v // 1000, (v % 1000) // 100, v % 100)


def _has_cpu_grad_scaler(torch):
    try:
        torch.amp.GradScaler("cpu")
    except (AttributeError, TypeError, RuntimeError, ValueError):
        return False
    return True


def _build_module_class(torch):
    nn = torch.nn
    F = torch.nn.functional
    from bench import specs

    class SpecModule(nn.Module):
        """Runs the spec's nodes in order, keeping each value until its last use."""

        def __init__(self, spec):
            super(SpecModule, self).__init__()
            info = specs.infer(spec)
            shapes = info["shapes"]
            last = specs.last_use(spec)
            self.layers = nn.ModuleDict()
            plan = []
            for index, node in enumerate(spec["nodes"]):
                op, name = node["op"], node["name"]
                in_shape = shapes[node["inputs"][0]] if node["inputs"] else None
                module = self._make(node, in_shape)
                if module is not None:
                    self.layers[name] = module
                # values no later node reads are dropped right after this node
                release = tuple(n for n in node["inputs"] if last.get(n) == index
                                and n != spec["output"])
                plan.append((name, op, tuple(node["inputs"]), release))
            self.plan = plan
            self.output_name = spec["output"]

        @staticmethod
        def _make(node, in_shape):
            op = node["op"]
            if op == "conv":
                return nn.Conv2d(in_shape[0], node["filters"], node["kernel"], node["stride"],
                                 node["pad"], bias=node["bias"])
            if op == "sepconv":
                c = in_shape[0]
                return nn.Sequential(
                    nn.Conv2d(c, c, node["kernel"], node["stride"], node["pad"], groups=c,
                              bias=False),
                    nn.Conv2d(c, node["filters"], 1, bias=node["bias"]))
            if op == "bn":
                # spec momentum is the running-average decay; torch's is 1 - decay
                cls = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
                return cls(in_shape[0], eps=node["eps"], momentum=1.0 - node["momentum"])
            if op == "maxpool":
                return nn.MaxPool2d(node["kernel"], node["stride"], node["pad"])
            if op == "avgpool":
                return nn.AvgPool2d(node["kernel"], node["stride"], node["pad"],
                                    count_include_pad=node["count_include_pad"])
            if op == "dense":
                return nn.Linear(in_shape[0], node["units"], bias=node["bias"])
            if op == "dropout":
                return nn.Dropout(node["rate"])
            if op == "lrn":
                # torch divides alpha by the window size; the spec (TF) does not
                return nn.LocalResponseNorm(node["size"], alpha=node["alpha"] * node["size"],
                                            beta=node["beta"], k=node["bias"])
            if op == "embedding":
                return nn.Embedding(node["vocab"], node["dim"])
            if op == "gru":
                return nn.GRU(in_shape[1], node["units"], batch_first=True)
            return None

        def forward(self, x):
            values = {}
            layers = self.layers
            for name, op, inputs, release in self.plan:
                if op == "input":
                    out = x
                elif op in ("relu",):
                    out = F.relu(values[inputs[0]])
                elif op == "add":
                    out = values[inputs[0]]
                    for other in inputs[1:]:
                        out = out + values[other]
                elif op == "concat":
                    out = torch.cat([values[n] for n in inputs], 1)
                elif op == "flatten":
                    out = torch.flatten(values[inputs[0]], 1)
                elif op == "gap":
                    out = torch.flatten(F.adaptive_avg_pool2d(values[inputs[0]], 1), 1)
                elif op == "gru":
                    _, h_n = layers[name](values[inputs[0]])
                    out = h_n[-1]
                else:
                    out = layers[name](values[inputs[0]])
                values[name] = out
                for n in release:
                    del values[n]
            return values[self.output_name]

    return SpecModule


class Adapter(BaseAdapter):
    name = "pytorch"
    display = "PyTorch"
    framework_module = "torch"
    unsupported = {}
    precisions = ("fp32", "fp16", "bf16", "amp")
    max_gpus = 16

    def __init__(self, device="cpu", gpus=0, precision="fp32", options=None):
        super(Adapter, self).__init__(device, gpus, precision, options)
        import torch
        self.torch = torch
        if device == "gpu":
            if not torch.cuda.is_available():
                raise RuntimeError("device gpu requested but torch.cuda.is_available() is False "
                                   "(torch %s, built with CUDA %s)"
                                   % (torch.__version__, torch.version.cuda))
            count = torch.cuda.device_count()
            self.gpus = max(1, self.gpus)
            if self.gpus > count:
                raise Unsupported("%d GPUs requested, %d visible" % (self.gpus, count))
            self.dev = torch.device("cuda:0")
            torch.backends.cudnn.benchmark = self.option_bool("cudnn_benchmark", True)
        else:
            if self.gpus > 1:
                raise Unsupported("data parallel over %d GPUs needs device gpu" % self.gpus)
            cpu_amp = precision == "amp" and self.option_bool("cpu_amp")
            if cpu_amp and not _has_cpu_grad_scaler(torch):
                raise Unsupported("cpu_amp=1 with amp needs torch >= 2.3 (GradScaler('cpu')), "
                                  "torch %s" % torch.__version__)
            if precision in ("fp16", "amp") and not cpu_amp:
                raise Unsupported("precision %s needs CUDA in the PyTorch adapter (fp16 "
                                  "autocast/GradScaler and half kernels are GPU paths); "
                                  "use bf16 on CPU" % precision)
            self.dev = torch.device("cpu")
            threads = self.option_int("threads")
            if threads:
                torch.set_num_threads(threads)
        self.channels_last = self.option_bool("channels_last", hasattr(torch, "channels_last"))
        if self.channels_last and not hasattr(torch, "channels_last"):
            raise Unsupported("channels_last=1 needs torch >= 1.5 (torch %s)" % torch.__version__)
        self.compile = self.option_bool("compile")
        self.initial_loss_scale = self.option_positive_float("initial_loss_scale", 2.0 ** 16)
        self.loss_scaler = None
        if self.compile and not hasattr(torch, "compile"):
            raise Unsupported("compile=1 needs torch >= 2.0 (torch %s)" % torch.__version__)
        if precision == "bf16" and not hasattr(torch, "autocast"):
            raise Unsupported("bf16 autocast needs torch >= 1.10 (torch %s)" % torch.__version__)
        if precision == "amp" and not hasattr(torch.cuda, "amp"):
            raise Unsupported("amp needs torch >= 1.6 (torch %s)" % torch.__version__)
        self._module_class = None

    # --- environment --------------------------------------------------------
    def versions(self):
        torch = self.torch
        return {"framework_version": torch.__version__,
                "cuda": torch.version.cuda,
                "cudnn": _cudnn_version_string(torch)}

    def devices(self):
        torch = self.torch
        if self.dev.type == "cuda":
            return ["cuda:%d %s" % (i, torch.cuda.get_device_name(i)) for i in range(self.gpus)]
        return ["cpu (%d threads)" % torch.get_num_threads()]

    def peak_precision(self):
        torch = self.torch
        if self.precision == "fp32" and self.dev.type == "cuda":
            # Ampere+ runs fp32 convolutions as TF32 unless disabled
            major = torch.cuda.get_device_capability(0)[0]
            if major >= 8 and getattr(torch.backends.cudnn, "allow_tf32", False):
                return "tf32"
        return super(Adapter, self).peak_precision()

    def settings(self):
        torch = self.torch
        out = super(Adapter, self).settings()
        cuda = self.dev.type == "cuda"
        out.update({
            "layout": "NHWC (channels_last)" if self.channels_last else "NCHW",
            "graph": "torch.compile" if self.compile else "eager",
            "loss_scaler": loss_scaler_text("torch.amp.GradScaler", self.initial_loss_scale)
            if self.precision == "amp" else None,
            "threads": None if cuda else int(torch.get_num_threads()),
            "grads": "set to None before each step",
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if cuda else None,
            "data_parallel": "torch.nn.DataParallel" if self.gpus > 1 else None,
        })
        if cuda:
            matmul = getattr(getattr(torch.backends, "cuda", None), "matmul", None)
            out["tf32"] = bool(getattr(torch.backends.cudnn, "allow_tf32", False)
                               or getattr(matmul, "allow_tf32", False))
        return out

    def current_loss_scale(self):
        return float(self.loss_scaler.get_scale()) if self.loss_scaler is not None else None

    def seed(self, n):
        self.torch.manual_seed(n)
        if self.dev.type == "cuda":
            self.torch.cuda.manual_seed_all(n)

    # --- models -------------------------------------------------------------
    def _module(self, spec):
        if self._module_class is None:
            self._module_class = _build_module_class(self.torch)
        return self._module_class(spec)

    def build(self, spec, training=True):
        torch = self.torch
        module = self._module(spec).to(self.dev)
        if self.precision == "fp16":
            module = module.half()
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        module.train(training)
        model = _Model(module)
        if self.gpus > 1:
            model.runner = torch.nn.DataParallel(module, device_ids=list(range(self.gpus)))
        if self.compile:
            model.runner = torch.compile(model.runner)
        return model

    def param_count(self, model):
        return int(sum(p.numel() for p in model.module.parameters() if p.requires_grad))

    def _autocast(self):
        torch = self.torch
        if self.precision == "amp":
            if hasattr(torch, "autocast"):
                return torch.autocast(self.dev.type, dtype=torch.float16)
            return torch.cuda.amp.autocast()
        if self.precision == "bf16":
            return torch.autocast(self.dev.type, dtype=torch.bfloat16)
        return contextlib.suppress()

    def _grad_scaler(self):
        torch = self.torch
        if self.precision != "amp":
            return None
        amp = getattr(torch, "amp", None)
        init = self.initial_loss_scale
        if amp is not None and hasattr(amp, "GradScaler"):
            return amp.GradScaler(self.dev.type, init_scale=init)
        return torch.cuda.amp.GradScaler(init_scale=init)

    def make_train_step(self, model, optimizer_cfg):
        torch = self.torch
        F = torch.nn.functional
        module, runner = model.module, model.runner
        name = optimizer_cfg.get("name", "sgd")
        if name == "sgd":
            optimizer = torch.optim.SGD(module.parameters(), lr=optimizer_cfg.get("lr", 0.01),
                                        momentum=optimizer_cfg.get("momentum", 0.0))
        elif name == "none":
            optimizer = None
        else:
            raise Unsupported("optimizer %r not implemented" % name)
        loss_kind = optimizer_cfg.get("loss", "xent")
        scaler = self._grad_scaler() if optimizer is not None else None
        self.loss_scaler = scaler
        autocast = self._autocast
        params = [p for p in module.parameters() if p.requires_grad]

        def zero_grad():
            for p in params:
                p.grad = None

        def step(x, y):
            if not module.training:
                module.train()
            zero_grad()
            with autocast():
                out = runner(x)
                if loss_kind == "l2":
                    loss = out.float().pow(2).sum() / 2
                else:
                    loss = F.cross_entropy(out.float(), y)
            if scaler is not None and optimizer is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                # fp32/bf16/fp16, or gradients only: GradScaler.update() without
                # a step() would raise, and with no update there is nothing to protect
                loss.backward()
                if optimizer is not None:
                    optimizer.step()
            return loss.detach()

        return step

    def make_forward(self, model):
        torch = self.torch
        module, runner = model.module, model.runner
        autocast = self._autocast

        def forward(x):
            if module.training:
                module.eval()
            with torch.no_grad():
                with autocast():
                    return runner(x)

        return forward

    def save(self, model, path):
        self.torch.save(model.module.state_dict(), os.path.join(path, "model.pt"))

    def load(self, spec, path):
        model = self.build(spec, training=False)
        state = self.torch.load(os.path.join(path, "model.pt"), map_location=self.dev)
        model.module.load_state_dict(state)
        return model

    def rnn_uses_cudnn(self, model):
        torch = self.torch
        grus = [m for m in model.module.modules() if isinstance(m, torch.nn.RNNBase)]
        if not grus:
            return None
        # nn.GRU dispatches to cuDNN exactly when cuDNN is enabled and usable
        # and its weights are CUDA tensors of a cuDNN dtype
        on_cuda = all(p.is_cuda for m in grus for p in m.parameters())
        return bool(on_cuda and torch.backends.cudnn.enabled and
                    torch.backends.cudnn.is_available())

    # --- data and device ----------------------------------------------------
    def to_device(self, array):
        torch = self.torch
        t = torch.from_numpy(array)
        if self.dev.type == "cuda":
            t = t.pin_memory().to(self.dev, non_blocking=True)
        if self.precision == "fp16" and t.is_floating_point():
            t = t.half()
        if self.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def to_numpy(self, value):
        value = value.detach()
        if value.is_floating_point():
            value = value.float()
        return value.cpu().numpy()

    def synchronize(self):
        if self.dev.type == "cuda":
            for i in range(self.gpus):
                self.torch.cuda.synchronize(i)

    def reset_peak_memory(self):
        if self.dev.type == "cuda":
            cuda = self.torch.cuda
            # reset_peak_memory_stats is torch >= 1.4
            reset = getattr(cuda, "reset_peak_memory_stats", None) or cuda.reset_max_memory_allocated
            for i in range(self.gpus):
                reset(i)

    def peak_memory(self):
        if self.dev.type != "cuda":
            return None
        return int(sum(self.torch.cuda.max_memory_allocated(i) for i in range(self.gpus)))

    def is_oom(self, exc):
        torch = self.torch
        oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
        if oom_type is not None and isinstance(exc, oom_type):
            return True
        if isinstance(exc, MemoryError):
            return True
        if isinstance(exc, RuntimeError):
            text = str(exc)
            # CUDA caching allocator (old torch) and the CPU allocator
            return ("CUDA out of memory" in text or "can't allocate memory" in text
                    or "DefaultCPUAllocator: not enough memory" in text)
        return False


class _Model(object):
    """A built model: `module` holds the parameters; `runner` is what is called
    (the module itself, a DataParallel wrapper, or a torch.compile'd one)."""

    def __init__(self, module):
        self.module = module
        self.runner = module
