"""Hand-written ResNet-50 training loops, one per framework, for benchmarks/bench_parity.py.

Runs inside a framework image (stdlib + numpy + the framework; nothing from bench/), the way a user would
write the loop from the framework's own performance guide: ResNet-50 v1.5 (stride on the 3x3, no conv bias,
BN eps 1e-5, 1000 classes), synthetic 224x224 batch already on the device, plain SGD lr 0.01 and softmax
cross-entropy (what the cnn-synthetic cell trains). Timing: `--warmup` steps, then `--steps` steps each
synchronised and timed alone; images/s = batch / median step time, the statistic the cell's headline uses.
Prints one JSON line: {"samples_per_s", "median_step_s", "step_times_s", "params", "framework_version"}.

    python parity_loops.py --framework pytorch|tensorflow|keras|mxnet|jax [--batch-size 16] [--warmup 3] [--steps 6]
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))


def pytorch_loop(batch, lr):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = width * 4
            self.c1, self.b1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.c2, self.b2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.c3, self.b3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            y = F.relu(self.b2(self.c2(y)))
            y = self.b3(self.c3(y))
            return F.relu(y + (self.proj(x) if self.proj is not None else x))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, (width, n) in enumerate(STAGES):
        for i in range(n):
            layers.append(Bottleneck(cin, width, 2 if (i == 0 and stage > 0) else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    # the PyTorch performance tuning guide: channels_last for convolutional networks
    model = nn.Sequential(*layers).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rng = np.random.RandomState(0)
    x = torch.from_numpy((rng.standard_normal((batch, 3, 224, 224)) * 0.1).astype(np.float32))
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(rng.randint(0, 1000, batch).astype(np.int64))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()   # synchronises (CPU: the step is done when it returns anyway)

    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return step, int(params), torch.__version__


def tensorflow_loop(batch, lr):
    import tensorflow as tf
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    # the tf_cnn_benchmarks-style model and tf.function step of benchmarks/bench_tf_resnet50.py (NHWC)
    from bench_tf_resnet50 import hand_tuned_resnet50, make_hand_step
    trainable, _, call = hand_tuned_resnet50(tf, tf.float32)
    rng = np.random.RandomState(0)
    x = tf.constant((rng.standard_normal((batch, 224, 224, 3)) * 0.1).astype(np.float32))
    y = tf.constant(rng.randint(0, 1000, batch).astype(np.int64))
    fn = make_hand_step(tf, trainable, call, lr, False)

    def step():
        return float(fn(x, y).numpy())

    params = sum(int(np.prod(v.shape)) for v in trainable)
    return step, params, tf.__version__


def keras_loop(batch, lr):
    """Keras 3 as its guide shows: a functional model, compile (jit_compile left to Keras), then fit on a
    dataset; each step is timed by a callback, so the loop is fit's own."""
    import keras
    from keras import layers

    def bn(x):
        return layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)

    def bottleneck(x, width, stride):
        cout = width * 4
        shortcut = x
        if stride != 1 or x.shape[-1] != cout:
            shortcut = bn(layers.Conv2D(cout, 1, strides=stride, use_bias=False)(x))
        y = layers.ReLU()(bn(layers.Conv2D(width, 1, use_bias=False)(x)))
        y = layers.ReLU()(bn(layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(y)))
        y = bn(layers.Conv2D(cout, 1, use_bias=False)(y))
        return layers.ReLU()(layers.Add()([y, shortcut]))

    inputs = keras.Input((224, 224, 3))
    x = layers.ZeroPadding2D(3)(inputs)
    x = layers.ReLU()(bn(layers.Conv2D(64, 7, strides=2, use_bias=False)(x)))
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for stage, (width, n) in enumerate(STAGES):
        for i in range(n):
            x = bottleneck(x, width, 2 if (i == 0 and stage > 0) else 1)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(1000)(x))
    model.compile(optimizer=keras.optimizers.SGD(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.RandomState(0)
    x = (rng.standard_normal((batch, 224, 224, 3)) * 0.1).astype(np.float32)
    y = rng.randint(0, 1000, batch).astype(np.int64)

    class StepTimes(keras.callbacks.Callback):
        def on_train_batch_begin(self, b, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, b, logs=None):
            times.append(time.perf_counter() - self.start)

    times = []

    def run(steps):
        """`steps` steps of fit (a Python generator of the one batch: no tf.data, so any backend works)."""
        def batches():
            while True:
                yield x, y
        del times[:]
        model.fit(batches(), steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[StepTimes()])
        return list(times)

    params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return run, params, keras.__version__


def mxnet_loop(batch, lr):
    """Gluon as MXNet's performance guide says: a HybridBlock hybridized with static_alloc/static_shape,
    autograd.record, Trainer.step; NCHW (MKL-DNN's layout on CPU)."""
    import mxnet as mx
    from mxnet import autograd, gluon
    from mxnet.gluon import nn

    def bn():
        return nn.BatchNorm(epsilon=1e-5, momentum=0.9)

    class Bottleneck(gluon.HybridBlock):
        def __init__(self, width, stride, project):
            super().__init__()
            cout = width * 4
            self.body = nn.HybridSequential()
            self.body.add(nn.Conv2D(width, 1, use_bias=False), bn(), nn.Activation("relu"),
                          nn.Conv2D(width, 3, strides=stride, padding=1, use_bias=False), bn(),
                          nn.Activation("relu"), nn.Conv2D(cout, 1, use_bias=False), bn())
            self.proj = None
            if project:
                self.proj = nn.HybridSequential()
                self.proj.add(nn.Conv2D(cout, 1, strides=stride, use_bias=False), bn())

        def hybrid_forward(self, F, x):
            return F.relu(self.body(x) + (self.proj(x) if self.proj is not None else x))

    net = nn.HybridSequential()
    net.add(nn.Conv2D(64, 7, strides=2, padding=3, use_bias=False), bn(), nn.Activation("relu"),
            nn.MaxPool2D(3, 2, 1))
    cin = 64
    for stage, (width, n) in enumerate(STAGES):
        for i in range(n):
            stride = 2 if (i == 0 and stage > 0) else 1
            net.add(Bottleneck(width, stride, stride != 1 or cin != width * 4))
            cin = width * 4
    net.add(nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dense(1000))
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    net.hybridize(static_alloc=True, static_shape=True)
    rng = np.random.RandomState(0)
    x = mx.nd.array((rng.standard_normal((batch, 3, 224, 224)) * 0.1).astype(np.float32))
    y = mx.nd.array(rng.randint(0, 1000, batch).astype(np.float32))
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    net(x).wait_to_read()                    # deferred initialisation: the shapes are known from here on
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})

    def step():
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(batch)
        return float(loss.mean().asscalar())   # waits for the step

    params = sum(int(np.prod(p.shape)) for p in net.collect_params().values() if p.grad_req != "null")
    return step, params, mx.__version__


def jax_loop(batch, lr):
    """JAX as its guide (and Flax's ResNet example) shows: a Flax linen module, optax SGD, one jax.jit'ed
    train step with the state donated; NHWC; block_until_ready to time it."""
    import functools
    import jax
    import jax.numpy as jnp
    import optax
    from flax import linen as nn

    class Bottleneck(nn.Module):
        width: int
        stride: int

        @nn.compact
        def __call__(self, x):
            bn = functools.partial(nn.BatchNorm, use_running_average=False, momentum=0.9, epsilon=1e-5)
            cout = self.width * 4
            y = nn.relu(bn()(nn.Conv(self.width, (1, 1), use_bias=False)(x)))
            y = nn.relu(bn()(nn.Conv(self.width, (3, 3), (self.stride, self.stride), padding=((1, 1), (1, 1)),
                                     use_bias=False)(y)))
            y = bn()(nn.Conv(cout, (1, 1), use_bias=False)(y))
            if self.stride != 1 or x.shape[-1] != cout:
                x = bn()(nn.Conv(cout, (1, 1), (self.stride, self.stride), use_bias=False)(x))
            return nn.relu(y + x)

    class ResNet50(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(64, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
            for stage, (width, n) in enumerate(STAGES):
                for i in range(n):
                    x = Bottleneck(width, 2 if (i == 0 and stage > 0) else 1)(x)
            return nn.Dense(1000)(jnp.mean(x, axis=(1, 2)))

    model = ResNet50()
    rng = np.random.RandomState(0)
    x = jnp.asarray((rng.standard_normal((batch, 224, 224, 3)) * 0.1).astype(np.float32))
    y = jnp.asarray(rng.randint(0, 1000, batch).astype(np.int32))
    variables = model.init(jax.random.PRNGKey(0), x)
    tx = optax.sgd(lr)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_step(state, x, y):
        params, stats, opt_state = state

        def loss_fn(p):
            logits, new = model.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    box = [state]

    def step():
        box[0], loss = train_step(box[0], x, y)
        return float(loss.block_until_ready())

    params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(variables["params"]))
    return step, params, jax.__version__


LOOPS = {"pytorch": pytorch_loop, "tensorflow": tensorflow_loop, "keras": keras_loop, "mxnet": mxnet_loop,
         "jax": jax_loop}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--framework", choices=sorted(LOOPS), required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()
    step, params, version = LOOPS[args.framework](args.batch_size, args.lr)
    if args.framework == "keras":       # fit's own loop: `step(n)` runs n steps and hands back their times
        step(args.warmup)
        times = step(args.steps)
    else:
        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(json.dumps({"samples_per_s": args.batch_size / median, "median_step_s": median, "step_times_s": times,
                      "params": params, "framework_version": version}))


if __name__ == "__main__":
    main()
