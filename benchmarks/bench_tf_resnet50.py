"""ResNet-50 synthetic training images/s: dlbench's TensorFlow adapter against a
tf_cnn_benchmarks-style hand-written loop, in one process on one machine.

Both sides train ResNet-50 v1.5 (torchvision layout: stride on the 3x3, no conv
bias, BN eps 1e-5, 1000-way fc) on the same synthetic batch (NHWC), with plain
SGD at the same learning rate and precision.  The hand-tuned side is written
directly here, without bench/: tf.Variables, tf.nn.conv2d, fused batch norm,
one tf.function doing forward + backward + update.  Rounds alternate between
the two sides and the median images/s of each is reported, so machine noise
hits both alike.

    python benchmarks/bench_tf_resnet50.py --device cpu --batch-size 16 --steps 5
    python benchmarks/bench_tf_resnet50.py --device gpu --batch-size 64 --steps 50 \
        --precision fp16 --xla

The ratio printed is adapter / hand-tuned (1.0 = no overhead).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def hand_tuned_resnet50(tf, compute_dtype, num_classes=1000, seed=0):
    """(variables, nontrainable, call(x, training)) of ResNet-50 v1.5, NHWC."""
    rng = np.random.RandomState(seed)
    trainable, stats = [], []

    def var(shape, fan_in, fan_out):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        v = tf.Variable(rng.uniform(-limit, limit, shape).astype(np.float32))
        trainable.append(v)
        return v

    def conv_w(k, cin, cout):
        return var((k, k, cin, cout), k * k * cin, k * k * cout)

    def bn_vars(c):
        g, b = tf.Variable(tf.ones([c])), tf.Variable(tf.zeros([c]))
        m, v = tf.Variable(tf.zeros([c]), trainable=False), tf.Variable(tf.ones([c]),
                                                                        trainable=False)
        trainable.extend([g, b])
        stats.extend([m, v])
        return g, b, m, v

    layers = {"stem": (conv_w(7, 3, 64), bn_vars(64))}
    blocks = []
    cin = 64
    for stage, (width, n) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        for i in range(n):
            stride = 2 if (i == 0 and stage > 0) else 1
            cout = width * 4
            block = {"stride": stride,
                     "c1": (conv_w(1, cin, width), bn_vars(width)),
                     "c2": (conv_w(3, width, width), bn_vars(width)),
                     "c3": (conv_w(1, width, cout), bn_vars(cout))}
            if i == 0:
                block["proj"] = (conv_w(1, cin, cout), bn_vars(cout))
            blocks.append(block)
            cin = cout
    fc_w, fc_b = var((2048, num_classes), 2048, num_classes), tf.Variable(tf.zeros([num_classes]))
    trainable.append(fc_b)

    def cast(v):
        return tf.cast(v, compute_dtype)

    def conv_bn(x, params, stride, pad, training, relu=True):
        w, (g, b, m, v) = params
        if pad:
            x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        x = tf.nn.conv2d(x, cast(w), stride, "VALID")
        if training:
            x, mean, var_ = tf.compat.v1.nn.fused_batch_norm(x, g, b, epsilon=1e-5,
                                                              is_training=True)
            m.assign(m * 0.9 + mean * 0.1)
            v.assign(v * 0.9 + var_ * 0.1)
        else:
            x, _, _ = tf.compat.v1.nn.fused_batch_norm(x, g, b, m, v, epsilon=1e-5,
                                                        is_training=False)
        return tf.nn.relu(x) if relu else x

    def call(x, training):
        x = tf.cast(x, compute_dtype)
        x = conv_bn(x, layers["stem"], 2, 3, training)
        x = tf.nn.max_pool2d(x, 3, 2, "SAME")  # 112 -> 56: SAME == symmetric pad 1 here
        for blk in blocks:
            s = blk["stride"]
            y = conv_bn(x, blk["c1"], 1, 0, training)
            y = conv_bn(y, blk["c2"], s, 1, training)
            y = conv_bn(y, blk["c3"], 1, 0, training, relu=False)
            sc = conv_bn(x, blk["proj"], s, 0, training, relu=False) if "proj" in blk else x
            x = tf.nn.relu(y + sc)
        x = tf.reduce_mean(x, axis=[1, 2])
        return tf.cast(tf.matmul(x, cast(fc_w)) + cast(fc_b), tf.float32)

    return trainable, stats, call


def make_hand_step(tf, trainable, call, lr, xla):
    @tf.function(jit_compile=xla)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=call(x, True)))
        grads = tape.gradient(loss, trainable)
        for v, g in zip(trainable, grads):
            v.assign_sub(lr * g)
        return loss
    return step


def time_steps(step, x, y, warmup, steps, sync):
    for _ in range(warmup):
        loss = step(x, y)
    float(np.asarray(loss))
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(x, y)
    float(np.asarray(loss))
    sync()
    return time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--xla", action="store_true")
    args = ap.parse_args(argv)

    from bench import specs
    from bench.adapters.tensorflow import Adapter
    options = {"xla": "1"} if args.xla else {}
    adapter = Adapter(args.device, 1 if args.device == "gpu" else 0, args.precision, options)
    tf = adapter.tf
    adapter.seed(0)
    dtype = {"fp32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}[args.precision]
    rng = np.random.RandomState(0)
    images = (rng.standard_normal((args.batch_size, 3, 224, 224)) * 0.1).astype(np.float32)
    labels = rng.randint(0, 1000, args.batch_size).astype(np.int64)

    spec = specs.get_spec("resnet50")
    model = adapter.build(spec)
    ours = adapter.make_train_step(model, {"name": "sgd", "lr": args.lr, "momentum": 0.0,
                                           "loss": "xent"})
    ox, oy = adapter.to_device(images), adapter.to_device(labels)

    device = "/GPU:0" if args.device == "gpu" else "/CPU:0"
    with tf.device(device):
        trainable, _, call = hand_tuned_resnet50(tf, dtype)
        hx = tf.identity(tf.constant(images.transpose(0, 2, 3, 1)))
        hy = tf.identity(tf.constant(labels))
    hand = make_hand_step(tf, trainable, call, args.lr, args.xla)
    hand_params = sum(int(np.prod(v.shape)) for v in trainable)
    print("ResNet-50: adapter %d params, hand-tuned %d params (spec %d)"
          % (adapter.param_count(model), hand_params, specs.param_count(spec)))
    print("TensorFlow %s, %s, batch %d, %s%s, %d timed steps x %d rounds"
          % (tf.__version__, ", ".join(adapter.devices()), args.batch_size, args.precision,
             ", XLA" if args.xla else "", args.steps, args.rounds))

    ours_ips, hand_ips = [], []
    for r in range(args.rounds):
        warm = args.warmup if r == 0 else 1
        t = time_steps(ours, ox, oy, warm, args.steps, adapter.synchronize)
        ours_ips.append(args.batch_size * args.steps / t)
        t = time_steps(hand, hx, hy, warm, args.steps, adapter.synchronize)
        hand_ips.append(args.batch_size * args.steps / t)
        print("round %d: adapter %.2f images/s, hand-tuned %.2f images/s"
              % (r + 1, ours_ips[-1], hand_ips[-1]))
    a, h = statistics.median(ours_ips), statistics.median(hand_ips)
    print("adapter     %.2f images/s" % a)
    print("hand-tuned  %.2f images/s" % h)
    print("ratio (adapter / hand-tuned) %.3f" % (a / h))
    return 0


if __name__ == "__main__":
    sys.exit(main())
