"""Framework-neutral model specs and pure-Python shape inference.

Every adapter builds its model from the SAME spec, so parameter counts and
forward FLOPs are equal across frameworks by construction (tests check the
PyTorch count against `infer`).

A spec is a plain dict:

    {"name": str, "doc": str,
     "input": {"shape": (C, H, W) | (seq_len,), "dtype": "float32" | "int64"},
     "num_classes": int | None,       # None: the output is a feature vector
     "output": node name,
     "nodes": [node, ...]}            # topological order: inputs come first

A node is a dict {"name", "op", "inputs": [names], ...attributes}.  Shapes are
per sample, without the batch axis; images are CHW.  The ops (keep this set
small: every adapter interprets all of them):

  input      shape, dtype (the first node; exactly one)
  conv       filters, kernel (kh, kw), stride (sh, sw), pad (ph, pw), bias
             -- pad is explicit and symmetric (never 'same'); output size is
             floor((H + 2*ph - kh) / sh) + 1.  Weight (filters, C, kh, kw).
  sepconv    filters, kernel, stride, pad, bias -- depthwise conv (one kh x kw
             filter per input channel, depth multiplier 1, no bias) followed by
             a 1x1 pointwise conv to `filters` (bias on the pointwise only).
  bn         eps, momentum -- batch norm over channels (axis 0 of CHW, or the
             last axis of a 1-D vector).  `momentum` is the decay of the running
             averages, TF/Keras convention: running = m*running + (1-m)*batch.
             PyTorch's momentum argument is 1 - m.  gamma and beta are
             trainable params; running mean/var are not counted.
  relu
  maxpool    kernel, stride, pad (padding never wins: pad with -inf)
  avgpool    kernel, stride, pad, count_include_pad (bool)
  gap        global average pool: (C, H, W) -> (C,)
  flatten    (C, H, W) -> (C*H*W,)  (element order is framework-defined; only
             the size matters to the next dense layer)
  dense      units, bias -- input must be 1-D.  Weight (units, in).
  dropout    rate (identity at inference)
  lrn        radius, size, alpha, beta, bias -- local response normalisation
             across channels, TF semantics:
                 out = x / (bias + alpha * sum_{|j-c|<=radius} x_j^2) ** beta
             `size` = 2*radius + 1 is the window.  alpha is NOT divided by the
             window (PyTorch's LocalResponseNorm and MXNet/CNTK divide, so they
             take alpha * size).
  add        elementwise sum of 2+ inputs of equal shape
  concat     along the channel axis (axis 0 of CHW)
  embedding  vocab, dim: (seq_len,) int ids -> (seq_len, dim)
  gru        units: (seq_len, features) -> (units,), the last hidden state.
             Parameters follow the cuDNN layout (= Keras reset_after=True,
             = torch.nn.GRU): 3*(in*units + units*units) weights and two bias
             vectors of 3*units.

FLOPs: 2 x multiply-accumulates of conv, sepconv, dense and GRU matmuls, per
sample, forward only.  Elementwise ops, pooling, norms and biases are not
counted (the convention of most published "GFLOPs" figures).
"""

import copy

OPS = ("input", "conv", "sepconv", "bn", "relu", "maxpool", "avgpool", "gap",
       "flatten", "dense", "dropout", "lrn", "add", "concat", "embedding", "gru")


def _pair(value):
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[1]))
    return (int(value), int(value))


class SpecBuilder(object):
    """Appends nodes with unique names; each method returns the new node's name."""

    def __init__(self, name, input_shape, input_dtype="float32", doc=""):
        self.spec = {"name": name, "doc": doc,
                     "input": {"shape": tuple(input_shape), "dtype": input_dtype},
                     "num_classes": None, "output": None, "nodes": []}
        self._counts = {}
        self.input = self._add("input", [], name="input",
                               shape=tuple(input_shape), dtype=input_dtype)

    def _add(self, op, inputs, name=None, **attrs):
        if name is None:
            self._counts[op] = self._counts.get(op, 0) + 1
            name = "%s%d" % (op, self._counts[op])
        node = {"name": name, "op": op, "inputs": list(inputs)}
        node.update(attrs)
        self.spec["nodes"].append(node)
        return name

    def conv(self, x, filters, kernel, stride=1, pad=0, bias=True, name=None):
        return self._add("conv", [x], name, filters=int(filters), kernel=_pair(kernel),
                         stride=_pair(stride), pad=_pair(pad), bias=bool(bias))

    def sepconv(self, x, filters, kernel, stride=1, pad=0, bias=False, name=None):
        return self._add("sepconv", [x], name, filters=int(filters), kernel=_pair(kernel),
                         stride=_pair(stride), pad=_pair(pad), bias=bool(bias))

    def bn(self, x, eps=1e-5, momentum=0.9, name=None):
        return self._add("bn", [x], name, eps=float(eps), momentum=float(momentum))

    def relu(self, x, name=None):
        return self._add("relu", [x], name)

    def maxpool(self, x, kernel, stride, pad=0, name=None):
        return self._add("maxpool", [x], name, kernel=_pair(kernel), stride=_pair(stride),
                         pad=_pair(pad))

    def avgpool(self, x, kernel, stride, pad=0, count_include_pad=False, name=None):
        return self._add("avgpool", [x], name, kernel=_pair(kernel), stride=_pair(stride),
                         pad=_pair(pad), count_include_pad=bool(count_include_pad))

    def gap(self, x, name=None):
        return self._add("gap", [x], name)

    def flatten(self, x, name=None):
        return self._add("flatten", [x], name)

    def dense(self, x, units, bias=True, name=None):
        return self._add("dense", [x], name, units=int(units), bias=bool(bias))

    def dropout(self, x, rate, name=None):
        return self._add("dropout", [x], name, rate=float(rate))

    def lrn(self, x, radius, alpha, beta, bias, name=None):
        return self._add("lrn", [x], name, radius=int(radius), size=2 * int(radius) + 1,
                         alpha=float(alpha), beta=float(beta), bias=float(bias))

    def add(self, inputs, name=None):
        return self._add("add", inputs, name)

    def concat(self, inputs, name=None):
        return self._add("concat", inputs, name)

    def embedding(self, x, vocab, dim, name=None):
        return self._add("embedding", [x], name, vocab=int(vocab), dim=int(dim))

    def gru(self, x, units, name=None):
        return self._add("gru", [x], name, units=int(units))

    # composite helpers (expand to plain nodes)
    def conv_relu(self, x, filters, kernel, stride=1, pad=0, bias=True):
        return self.relu(self.conv(x, filters, kernel, stride, pad, bias))

    def conv_bn_relu(self, x, filters, kernel, stride=1, pad=0, eps=1e-5, momentum=0.9):
        return self.relu(self.bn(self.conv(x, filters, kernel, stride, pad, bias=False),
                                 eps, momentum))

    def finish(self, output, num_classes=None):
        self.spec["output"] = output
        self.spec["num_classes"] = num_classes
        validate(self.spec)
        return self.spec


# ---------------------------------------------------------------- inference

class SpecError(ValueError):
    pass


def _conv_out(size, kernel, stride, pad):
    out = (size + 2 * pad - kernel) // stride + 1
    if out < 1:
        raise SpecError("spatial size %d too small for kernel %d stride %d pad %d"
                        % (size, kernel, stride, pad))
    return out


def _node_info(node, in_shapes):
    """(output shape, trainable params, forward FLOPs) of one node, per sample."""
    op = node["op"]
    if op == "input":
        return tuple(node["shape"]), 0, 0
    x = in_shapes[0] if in_shapes else None
    if op in ("conv", "sepconv", "maxpool", "avgpool"):
        if len(x) != 3:
            raise SpecError("%s %s needs a CHW input, got %r" % (op, node["name"], x))
        c, h, w = x
        (kh, kw), (sh, sw), (ph, pw) = node["kernel"], node["stride"], node["pad"]
        ho, wo = _conv_out(h, kh, sh, ph), _conv_out(w, kw, sw, pw)
        if op == "conv":
            f = node["filters"]
            params = f * c * kh * kw + (f if node["bias"] else 0)
            return (f, ho, wo), params, 2 * f * c * kh * kw * ho * wo
        if op == "sepconv":
            f = node["filters"]
            params = c * kh * kw + f * c + (f if node["bias"] else 0)
            flops = 2 * c * kh * kw * ho * wo + 2 * f * c * ho * wo
            return (f, ho, wo), params, flops
        return (c, ho, wo), 0, 0
    if op == "bn":
        return x, 2 * x[0] if len(x) == 3 else 2 * x[-1], 0
    if op in ("relu", "dropout"):
        return x, 0, 0
    if op == "lrn":
        if len(x) != 3:
            raise SpecError("lrn needs CHW")
        return x, 0, 0
    if op == "gap":
        return (x[0],), 0, 0
    if op == "flatten":
        n = 1
        for d in x:
            n *= d
        return (n,), 0, 0
    if op == "dense":
        if len(x) != 1:
            raise SpecError("dense %s needs a 1-D input, got %r" % (node["name"], x))
        u = node["units"]
        return (u,), u * x[0] + (u if node["bias"] else 0), 2 * u * x[0]
    if op == "add":
        for s in in_shapes[1:]:
            if tuple(s) != tuple(x):
                raise SpecError("add %s: shapes differ %r" % (node["name"], in_shapes))
        return x, 0, 0
    if op == "concat":
        for s in in_shapes[1:]:
            if tuple(s[1:]) != tuple(x[1:]):
                raise SpecError("concat %s: shapes differ %r" % (node["name"], in_shapes))
        return (sum(s[0] for s in in_shapes),) + tuple(x[1:]), 0, 0
    if op == "embedding":
        if len(x) != 1:
            raise SpecError("embedding needs (seq_len,) ids")
        return (x[0], node["dim"]), node["vocab"] * node["dim"], 0
    if op == "gru":
        if len(x) != 2:
            raise SpecError("gru needs (seq_len, features)")
        t, i = x
        u = node["units"]
        params = 3 * (i * u + u * u) + 6 * u
        return (u,), params, 2 * 3 * (i * u + u * u) * t
    raise SpecError("unknown op %r" % op)


def validate(spec):
    names = set()
    for i, node in enumerate(spec["nodes"]):
        if node["op"] not in OPS:
            raise SpecError("unknown op %r in %s" % (node["op"], node["name"]))
        if (node["op"] == "input") != (i == 0):
            raise SpecError("exactly the first node must be the input")
        for name in node["inputs"]:
            if name not in names:
                raise SpecError("%s uses %s before it is defined" % (node["name"], name))
        if node["name"] in names:
            raise SpecError("duplicate node name %s" % node["name"])
        names.add(node["name"])
    if spec["output"] not in names:
        raise SpecError("output %r is not a node" % spec["output"])
    infer(spec)


def infer(spec):
    """Per-node shapes, params and FLOPs.

    Returns {"shapes": {name: shape}, "params": {name: n}, "flops": {name: n},
    "param_count": total, "flops_per_sample": total forward FLOPs,
    "output_shape": shape}.
    """
    shapes, params, flops = {}, {}, {}
    for node in spec["nodes"]:
        in_shapes = [shapes[n] for n in node["inputs"]]
        shape, p, f = _node_info(node, in_shapes)
        shapes[node["name"]], params[node["name"]], flops[node["name"]] = tuple(shape), p, f
    return {"shapes": shapes, "params": params, "flops": flops,
            "param_count": sum(params.values()), "flops_per_sample": sum(flops.values()),
            "output_shape": shapes.get(spec["output"])}


def param_count(spec):
    return infer(spec)["param_count"]


def flops_per_sample(spec):
    return infer(spec)["flops_per_sample"]


def last_use(spec):
    """name -> index of the last node that reads it (lets interpreters free tensors)."""
    last = {}
    for i, node in enumerate(spec["nodes"]):
        for name in node["inputs"]:
            last[name] = i
    return last


# ---------------------------------------------------------------- the models

def lenet(num_classes=10, input_shape=(1, 28, 28)):
    b = SpecBuilder("lenet", input_shape, doc=(
        "TensorFlow 'Deep MNIST' LeNet: conv5x5/32 (pad 2) relu pool2, conv5x5/64 "
        "(pad 2) relu pool2, dense 1024 relu, dropout 0.5, dense 10. "
        "3,274,634 params on 1x28x28."))
    x = b.maxpool(b.conv_relu(b.input, 32, 5, pad=2), 2, 2)
    x = b.maxpool(b.conv_relu(x, 64, 5, pad=2), 2, 2)
    x = b.dropout(b.relu(b.dense(b.flatten(x), 1024)), 0.5)
    return b.finish(b.dense(x, num_classes, name="logits"), num_classes)


def cifar10_vgg(num_classes=10, input_shape=(3, 32, 32)):
    b = SpecBuilder("cifar10-vgg", input_shape, doc=(
        "DeepLearningFrameworks (seed 003) CIFAR-10 CNN: [conv3x3/50 relu]x2 "
        "maxpool2 dropout.25, [conv3x3/100 relu]x2 maxpool2 dropout.25, "
        "dense 512 relu dropout.5, dense 10; all convs pad 1 ('same')."))
    x = b.conv_relu(b.conv_relu(b.input, 50, 3, pad=1), 50, 3, pad=1)
    x = b.dropout(b.maxpool(x, 2, 2), 0.25)
    x = b.conv_relu(b.conv_relu(x, 100, 3, pad=1), 100, 3, pad=1)
    x = b.dropout(b.maxpool(x, 2, 2), 0.25)
    x = b.dropout(b.relu(b.dense(b.flatten(x), 512)), 0.5)
    return b.finish(b.dense(x, num_classes, name="logits"), num_classes)


def cifar10_tutorial(num_classes=10, input_shape=(3, 24, 24)):
    b = SpecBuilder("cifar10-tutorial", input_shape, doc=(
        "TensorFlow tutorial cifar10 model on 24x24 crops: conv5x5/64 relu, "
        "maxpool3 s2, LRN(radius 4, alpha 0.001/9, beta 0.75, bias 1), conv5x5/64 "
        "relu, LRN, maxpool3 s2, dense 384 relu, dense 192 relu, dense 10. TF's "
        "'SAME' padding is written as symmetric pad 2 (conv) / pad 1 (pools): "
        "both pools then halve 24->12->6 as in the tutorial."))
    x = b.conv_relu(b.input, 64, 5, pad=2)
    x = b.lrn(b.maxpool(x, 3, 2, pad=1), 4, 0.001 / 9.0, 0.75, 1.0)
    x = b.conv_relu(x, 64, 5, pad=2)
    x = b.maxpool(b.lrn(x, 4, 0.001 / 9.0, 0.75, 1.0), 3, 2, pad=1)
    x = b.relu(b.dense(b.flatten(x), 384))
    x = b.relu(b.dense(x, 192))
    return b.finish(b.dense(x, num_classes, name="logits"), num_classes)


def gru_imdb(vocab_size=30000, seq_len=150, embed_dim=125, units=100, num_classes=2):
    b = SpecBuilder("gru-imdb", (seq_len,), input_dtype="int64", doc=(
        "DeepLearningFrameworks (seed 003) IMDB sentiment RNN: embedding "
        "vocab x 125, GRU 100 (last hidden state), dense 2. 3,818,302 params at "
        "vocab 30000 (cuDNN GRU layout with two bias vectors)."))
    x = b.gru(b.embedding(b.input, vocab_size, embed_dim), units)
    return b.finish(b.dense(x, num_classes, name="logits"), num_classes)


def _resnet50(b, x):
    eps, mom = 1e-5, 0.9  # torchvision defaults (PyTorch momentum 0.1)
    x = b.conv_bn_relu(x, 64, 7, stride=2, pad=3, eps=eps, momentum=mom)
    x = b.maxpool(x, 3, 2, pad=1)
    in_ch = 64
    for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        for i in range(blocks):
            stride = 2 if (i == 0 and stage > 0) else 1  # torchvision: stride on the 3x3
            out_ch = width * 4
            y = b.conv_bn_relu(x, width, 1, eps=eps, momentum=mom)
            y = b.conv_bn_relu(y, width, 3, stride=stride, pad=1, eps=eps, momentum=mom)
            y = b.bn(b.conv(y, out_ch, 1, bias=False), eps, mom)
            if i == 0 and (stride != 1 or in_ch != out_ch):
                shortcut = b.bn(b.conv(x, out_ch, 1, stride=stride, bias=False), eps, mom)
            else:
                shortcut = x
            x = b.relu(b.add([y, shortcut]))
            in_ch = out_ch
    return b.gap(x, name="features")


def resnet50(num_classes=1000, input_shape=(3, 224, 224)):
    b = SpecBuilder("resnet50", input_shape, doc=(
        "ResNet-50 v1.5 in torchvision's layout (stride on the 3x3 conv, no conv "
        "bias, BN eps 1e-5): 25,557,032 params with the 1000-way fc."))
    x = _resnet50(b, b.input)
    return b.finish(b.dense(x, num_classes, name="logits"), num_classes)


def resnet50_features(input_shape=(3, 224, 224)):
    b = SpecBuilder("resnet50-features", input_shape, doc=(
        "ResNet-50 without fc: the 2048-d globally pooled features "
        "(seed 003 feature extraction). 23,508,032 params."))
    return b.finish(_resnet50(b, b.input), None)


def _vgg_convs(b, x, cfg, use_bn=False):
    for item in cfg:
        if item == "M":
            x = b.maxpool(x, 2, 2)
        elif use_bn:
            x = b.conv_bn_relu(x, item, 3, pad=1)
        else:
            x = b.conv_relu(x, item, 3, pad=1)
    return x


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M")


def vgg16(num_classes=1000, input_shape=(3, 224, 224)):
    b = SpecBuilder("vgg16", input_shape, doc=(
        "VGG16 (configuration D) as in torchvision/Keras: 13 conv3x3 with bias, "
        "5 maxpools, fc 4096-4096-1000 with dropout 0.5: 138,357,544 params."))
    x = b.flatten(_vgg_convs(b, b.input, VGG16_CFG))
    x = b.dropout(b.relu(b.dense(x, 4096)), 0.5)
    x = b.dropout(b.relu(b.dense(x, 4096)), 0.5)
    return b.finish(b.dense(x, num_classes, name="logits"), num_classes)


def vgg19_mnist(num_classes=10, input_shape=(1, 28, 28)):
    b = SpecBuilder("vgg19-mnist", input_shape, doc=(
        "VGG19-style network for 1x28x28 inputs (seed 002 used a 'modified VGG19'; "
        "its exact layers are unpublished). Adaptation: the 16 conv3x3 layers of "
        "VGG19 (64x2, 128x2, 256x4, 512x4, 512x4), each conv + BN + ReLU (BN makes "
        "the deep stack trainable from scratch on MNIST), max pools after the first "
        "four blocks only (28->14->7->3->1; a fifth pool has nothing left to halve), "
        "global average pool, dense 256 relu, dropout 0.5, dense 10."))
    cfg = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
           512, 512, 512, 512)
    x = b.gap(_vgg_convs(b, b.input, cfg, use_bn=True))
    x = b.dropout(b.relu(b.dense(x, 256)), 0.5)
    return b.finish(b.dense(x, num_classes, name="logits"), num_classes)


def alexnet_tutorial(input_shape=(3, 224, 224)):
    b = SpecBuilder("alexnet-tutorial", input_shape, doc=(
        "AlexNet of TF models/tutorials/image/alexnet/alexnet_benchmark.py "
        "(seed 004): conv11x11/64 s4, pool3 s2, conv5x5/192, pool3 s2, conv3x3/384, "
        "conv3x3/256, conv3x3/256, pool3 s2 -> 256x6x6; no LRN, no classifier "
        "(the benchmark's fwd-bwd loss is l2_loss(pool5)). TF 'SAME' on conv1 is "
        "written as symmetric pad 4 (224 -> 56 as in the benchmark's log). "
        "2,469,696 params."))
    x = b.maxpool(b.conv_relu(b.input, 64, 11, stride=4, pad=4), 3, 2)
    x = b.maxpool(b.conv_relu(x, 192, 5, pad=2), 3, 2)
    x = b.conv_relu(x, 384, 3, pad=1)
    x = b.conv_relu(x, 256, 3, pad=1)
    x = b.conv_relu(x, 256, 3, pad=1)
    return b.finish(b.maxpool(x, 3, 2, name="pool5"), None)


def alexnet(num_classes=1000, input_shape=(3, 227, 227)):
    b = SpecBuilder("alexnet", input_shape, doc=(
        "tf_cnn_benchmarks AlexNet (one-tower variant) on 227x227: conv11x11/64 s4 "
        "valid, pool3 s2, conv5x5/192, pool3 s2, conv3x3/384, conv3x3/384, "
        "conv3x3/256, pool3 s2, fc 4096, dropout, fc 4096, dropout, fc classes. "
        "1000 classes here (tf_cnn_benchmarks uses 1001 with a background class)."))
    x = b.maxpool(b.conv_relu(b.input, 64, 11, stride=4), 3, 2)
    x = b.maxpool(b.conv_relu(x, 192, 5, pad=2), 3, 2)
    x = b.conv_relu(x, 384, 3, pad=1)
    x = b.conv_relu(x, 384, 3, pad=1)
    x = b.maxpool(b.conv_relu(x, 256, 3, pad=1), 3, 2)
    x = b.dropout(b.relu(b.dense(b.flatten(x), 4096)), 0.5)
    x = b.dropout(b.relu(b.dense(x, 4096)), 0.5)
    return b.finish(b.dense(x, num_classes, name="logits"), num_classes)


def inception3(num_classes=1000, input_shape=(3, 299, 299)):
    b = SpecBuilder("inception3", input_shape, doc=(
        "Inception v3 in torchvision's layout without the auxiliary head: every "
        "conv is conv (no bias) + BN (eps 1e-3) + ReLU, branch avg pools count "
        "padding. 23,834,568 params (= torchvision inception_v3 with "
        "aux_logits=False)."))

    def cbr(x, f, k, s=1, p=0):
        return b.conv_bn_relu(x, f, k, stride=s, pad=p, eps=1e-3, momentum=0.9)

    def pool_branch(x, f):
        return cbr(b.avgpool(x, 3, 1, pad=1, count_include_pad=True), f, 1)

    def block_a(x, pool_features):
        b1 = cbr(x, 64, 1)
        b5 = cbr(cbr(x, 48, 1), 64, 5, p=2)
        b3 = cbr(cbr(cbr(x, 64, 1), 96, 3, p=1), 96, 3, p=1)
        return b.concat([b1, b5, b3, pool_branch(x, pool_features)])

    def block_b(x):
        b3 = cbr(x, 384, 3, s=2)
        bd = cbr(cbr(cbr(x, 64, 1), 96, 3, p=1), 96, 3, s=2)
        return b.concat([b3, bd, b.maxpool(x, 3, 2)])

    def block_c(x, c7):
        b1 = cbr(x, 192, 1)
        b7 = cbr(cbr(cbr(x, c7, 1), c7, (1, 7), p=(0, 3)), 192, (7, 1), p=(3, 0))
        bd = cbr(x, c7, 1)
        bd = cbr(cbr(bd, c7, (7, 1), p=(3, 0)), c7, (1, 7), p=(0, 3))
        bd = cbr(cbr(bd, c7, (7, 1), p=(3, 0)), 192, (1, 7), p=(0, 3))
        return b.concat([b1, b7, bd, pool_branch(x, 192)])

    def block_d(x):
        b3 = cbr(cbr(x, 192, 1), 320, 3, s=2)
        b7 = cbr(cbr(cbr(x, 192, 1), 192, (1, 7), p=(0, 3)), 192, (7, 1), p=(3, 0))
        b7 = cbr(b7, 192, 3, s=2)
        return b.concat([b3, b7, b.maxpool(x, 3, 2)])

    def block_e(x):
        b1 = cbr(x, 320, 1)
        b3 = cbr(x, 384, 1)
        b3 = b.concat([cbr(b3, 384, (1, 3), p=(0, 1)), cbr(b3, 384, (3, 1), p=(1, 0))])
        bd = cbr(cbr(x, 448, 1), 384, 3, p=1)
        bd = b.concat([cbr(bd, 384, (1, 3), p=(0, 1)), cbr(bd, 384, (3, 1), p=(1, 0))])
        return b.concat([b1, b3, bd, pool_branch(x, 192)])

    x = cbr(b.input, 32, 3, s=2)
    x = cbr(x, 32, 3)
    x = cbr(x, 64, 3, p=1)
    x = b.maxpool(x, 3, 2)
    x = cbr(x, 80, 1)
    x = cbr(x, 192, 3)
    x = b.maxpool(x, 3, 2)
    x = block_a(x, 32)
    x = block_a(x, 64)
    x = block_a(x, 64)
    x = block_b(x)
    for c7 in (128, 160, 160, 192):
        x = block_c(x, c7)
    x = block_d(x)
    x = block_e(x)
    x = block_e(x)
    x = b.dropout(b.gap(x), 0.5)
    return b.finish(b.dense(x, num_classes, name="logits"), num_classes)


# NASNet-A cells (Zoph et al. 2018; TF-slim nasnet_utils): per combination
# (left op, right op) applied to (hidden state index left, right).
_NASNET_NORMAL = {
    "ops": ("sep5", "sep3", "sep5", "sep3", "avg3", "none", "avg3", "avg3", "sep3", "none"),
    "indices": (0, 1, 1, 1, 0, 1, 1, 1, 0, 0),
    "used": (1, 0, 0, 0, 0, 0, 0),
}
_NASNET_REDUCTION = {
    "ops": ("sep5", "sep7", "max3", "sep7", "avg3", "sep5", "none", "avg3", "sep3", "max3"),
    "indices": (0, 1, 0, 1, 0, 1, 3, 2, 2, 0),
    "used": (1, 1, 1, 0, 0, 0, 0),
}


def nasnet(num_classes=1000, input_shape=(3, 224, 224), num_cells=12, filters=44,
           stem_filters=32):
    b = SpecBuilder("nasnet", input_shape, doc=(
        "NASNet-A Mobile (4 @ 1056, 224x224) after TF-slim's nasnet.py: ImageNet "
        "stem (conv3x3/32 s2 + 2 reduction stem cells at 11 and 22 filters), 12 "
        "normal cells in three stacks of 4 (44, 88, 176 filters) with reduction "
        "cells between them, ReLU, global pool, dropout, fc. Simplifications, "
        "the same in every framework: BN eps 1e-3, no conv biases, no auxiliary "
        "head, no drop-path, 1000 classes, and the factorized reduction of the "
        "previous layer is one 1x1 stride-2 conv (same parameter count as TF's "
        "two half-width shifted paths). `infer` gives 5,287,076 params and "
        "1.115 GFLOPs (published: 5.3M params, 564M mult-adds)."))
    bn_kw = {"eps": 1e-3, "momentum": 0.9997}

    def bn(x):
        return b.bn(x, **bn_kw)

    def relu_conv_bn(x, f, stride=1):
        return bn(b.conv(b.relu(x), f, 1, stride=stride, bias=False))

    def separable(x, f, k, stride):
        x = bn(b.sepconv(b.relu(x), f, k, stride=stride, pad=k // 2))
        return bn(b.sepconv(b.relu(x), f, k, stride=1, pad=k // 2))

    def apply_op(x, op, f, stride):
        if op.startswith("sep"):
            return separable(x, f, int(op[3:]), stride)
        if op == "avg3":
            return b.avgpool(x, 3, stride, pad=1, count_include_pad=False)
        if op == "max3":
            return b.maxpool(x, 3, stride, pad=1)
        if stride > 1:  # identity that must downsample
            return relu_conv_bn(x, f, stride)
        return x

    def shape_of(name):
        return infer(b.spec)["shapes"][name]

    def cell(net, prev, f, kind, stride):
        # Match the previous layer to this cell's resolution and width.
        ns, ps = shape_of(net), shape_of(prev)
        if ps[1] != ns[1]:
            prev = relu_conv_bn(prev, f, stride=2)
        elif ps[0] != f:
            prev = relu_conv_bn(prev, f)
        hidden = [relu_conv_bn(net, f), prev]
        # TF-slim orders hidden states as [current, previous].
        for i in range(5):
            li, ri = kind["indices"][2 * i], kind["indices"][2 * i + 1]
            lo, ro = kind["ops"][2 * i], kind["ops"][2 * i + 1]
            left = apply_op(hidden[li], lo, f, stride if li < 2 else 1)
            right = apply_op(hidden[ri], ro, f, stride if ri < 2 else 1)
            hidden.append(b.add([left, right]))
        used = list(kind["used"]) + [0] * (len(hidden) - len(kind["used"]))
        outs = [h for h, u in zip(hidden, used) if not u]
        return b.concat(outs)

    net = bn(b.conv(b.input, stem_filters, 3, stride=2, bias=False))
    outputs = [None, net]
    scaling = 1.0 / 4  # filter_scaling_rate ** -num_stem_cells
    for _ in range(2):
        prev = outputs[-2] if outputs[-2] is not None else net
        net = cell(net, prev, int(filters * scaling), _NASNET_REDUCTION, 2)
        outputs.append(net)
        scaling *= 2
    scaling = 1.0
    reduction_at = (num_cells // 3, 2 * num_cells // 3)
    for i in range(num_cells):
        if i in reduction_at:
            scaling *= 2
            net = cell(net, outputs[-2], int(filters * scaling), _NASNET_REDUCTION, 2)
            outputs.append(net)
        net = cell(net, outputs[-2], int(filters * scaling), _NASNET_NORMAL, 1)
        outputs.append(net)
    x = b.dropout(b.gap(b.relu(net)), 0.5)
    return b.finish(b.dense(x, num_classes, name="logits"), num_classes)


SPEC_BUILDERS = {
    "lenet": lenet,
    "cifar10-vgg": cifar10_vgg,
    "cifar10-tutorial": cifar10_tutorial,
    "gru-imdb": gru_imdb,
    "resnet50": resnet50,
    "resnet50-features": resnet50_features,
    "vgg16": vgg16,
    "vgg19-mnist": vgg19_mnist,
    "alexnet-tutorial": alexnet_tutorial,
    "alexnet": alexnet,
    "inception3": inception3,
    "nasnet": nasnet,
}

_CACHE = {}


def get_spec(name, **kwargs):
    """The spec `name`, built with keyword overrides (e.g. vocab_size, num_classes).

    Returns a deep copy, so callers may annotate it freely.
    """
    if name not in SPEC_BUILDERS:
        raise KeyError("unknown model spec %r (known: %s)" % (name, ", ".join(sorted(SPEC_BUILDERS))))
    key = (name, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        _CACHE[key] = SPEC_BUILDERS[name](**kwargs)
    return copy.deepcopy(_CACHE[key])
