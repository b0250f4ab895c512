"""The workload procedures: framework-neutral, calling only the adapter protocol.

One function per workload in bench.workloads.WORKLOADS, each taking a Context
and filling ctx.metrics as it goes (so a failure half-way still reports what
was measured).  Batch sizes are per GPU: with --gpus N > 1 the global batch is
N x batch_size, as in tf_cnn_benchmarks and the TF multi-GPU CIFAR-10 tutorial.
"""

import datetime
import os
import shutil
import tempfile

import numpy as np

from bench import datasets, measure, png, specs
from bench.measure import clock


class ModelMismatch(Exception):
    """The adapter's built model is not the spec's (its trainable parameter count differs)."""


class Context(object):
    """What a procedure needs: the adapter, the resolved parameters, logging."""

    def __init__(self, adapter, workload, params, log, data_dir=None, synthetic=False,
                 peak_tflops=None, gpu_indices=None, seed=0):
        self.adapter = adapter
        self.workload = workload
        self.params = params
        self.log = log
        self.data_dir = data_dir
        self.synthetic = synthetic
        self.peak_tflops = peak_tflops   # summed dense peak of the devices used, or None
        self.gpu_indices = gpu_indices or []
        self.seed = seed
        self.metrics = {}
        self.rng = np.random.RandomState(seed)

    @property
    def batch_size(self):
        return int(self.params["batch_size"])

    @property
    def global_batch(self):
        return self.batch_size * max(1, self.adapter.gpus)

    def dataset(self, name, **kwargs):
        if self.synthetic:
            data = datasets.synthetic(name, seed=self.seed, **kwargs)
            self.log("dataset %s: SYNTHETIC random data (--synthetic), %d train / %d test"
                     % (name, len(data["y_train"]), len(data["y_test"])))
        else:
            check = str(self.params.get("verify_checksums", "1")) not in ("0", "false")
            data = datasets.load(name, self.data_dir, check=check, **kwargs)
            self.log("dataset %s from %s: %d train / %d test"
                     % (name, data["source"], len(data["y_train"]), len(data["y_test"])))
            self.metrics["dataset_files"] = data["files"]
        return data

    def build(self, spec, training=True):
        model = self.adapter.build(spec, training)
        info = specs.infer(spec)
        built, expected = int(self.adapter.param_count(model)), int(info["param_count"])
        self.metrics["param_count"] = built
        self.metrics["spec_param_count"] = expected
        self.metrics["flops_per_sample"] = float(info["flops_per_sample"])
        if built != expected:
            # a different model would publish a number for something else: the cell fails instead
            raise ModelMismatch("%s built %s with %d trainable parameters, but its spec has %d: the "
                                "adapter does not build the spec's model, so nothing is measured"
                                % (self.adapter.display or self.adapter.name, spec.get("name", "the model"),
                                   built, expected))
        return model

    def train_steps(self, n_train, batch):
        """Steps to run: epochs x steps-per-epoch and/or the iterations cap,
        whichever is smaller (profiles cap epoch workloads with iterations)."""
        per_epoch = max(1, n_train // batch)
        limits = []
        if self.params.get("epochs"):
            limits.append(int(self.params["epochs"]) * per_epoch)
        if self.params.get("iterations"):
            limits.append(int(self.params["iterations"]))
        if not limits:
            raise ValueError("neither epochs nor iterations given")
        return min(limits), per_epoch

    def throughput(self, samples, seconds, training):
        self.metrics["samples_per_s"] = samples / seconds if seconds > 0 else 0.0
        self.metrics.update(measure.flops_metrics(self.metrics.get("flops_per_sample"),
                                                  samples, seconds, training, self.peak_tflops))


# ------------------------------------------------------------------ helpers

def scale_images(batch):
    return batch.astype(np.float32) / np.float32(255.0)


def batch_indices(rng, n, batch, steps, per_epoch):
    """Index arrays for `steps` batches, reshuffled every epoch."""
    done = 0
    while done < steps:
        order = rng.permutation(n)
        for b in range(per_epoch):
            if done >= steps:
                return
            yield order[b * batch:(b + 1) * batch]
            done += 1


def train_loop(ctx, step, x, y, steps, per_epoch, batch, preprocess, log_every=100):
    """Run `steps` SGD steps over shuffled batches; returns the wall seconds
    (feeding included, as in the seeds; synchronized at the end)."""
    adapter = ctx.adapter
    adapter.synchronize()
    start = clock()
    last_log, last_step = start, 0
    for i, idx in enumerate(batch_indices(ctx.rng, len(x), batch, steps, per_epoch)):
        loss = step(adapter.to_device(preprocess(x[idx])), adapter.to_device(y[idx]))
        done = i + 1
        if log_every and (done % log_every == 0 or done == steps):
            value = float(adapter.to_numpy(loss))
            now = clock()
            per_batch = (now - last_log) / max(1, done - last_step)
            ctx.log("%s: step %d, loss = %.4f (%.1f examples/sec; %.3f sec/batch)"
                    % (datetime.datetime.now(), done, value, batch / per_batch, per_batch))
            last_log, last_step = now, done
    adapter.synchronize()
    return clock() - start


def evaluate(ctx, forward, x, y, batch, max_batches=None, preprocess=scale_images):
    """Top-1 accuracy over the first max_batches batches (all when None)."""
    n_batches = len(x) // batch
    if max_batches:
        n_batches = min(n_batches, int(max_batches))
    n_batches = max(1, n_batches)
    correct = total = 0
    for b in range(n_batches):
        xb, yb = x[b * batch:(b + 1) * batch], y[b * batch:(b + 1) * batch]
        out = ctx.adapter.to_numpy(forward(ctx.adapter.to_device(preprocess(xb))))
        correct += int((out.argmax(axis=1) == yb).sum())
        total += len(yb)
    return correct / float(total) if total else 0.0


def sgd(ctx, momentum=None):
    p = ctx.params
    return {"name": "sgd", "lr": float(p.get("lr", 0.01)),
            "momentum": float(p.get("momentum", 0.0) if momentum is None else momentum),
            "loss": "xent"}


def synthetic_images(rng, batch, shape, scale=0.1):
    """Gaussian images (tf_cnn_benchmarks / alexnet_benchmark style synthetic data)."""
    return (rng.standard_normal((batch,) + tuple(shape)) * scale).astype(np.float32)


def one_per_class(labels, classes=10):
    """Index of the first test sample of each class (fewer if a class is absent)."""
    picks = []
    for c in range(classes):
        where = np.nonzero(labels == c)[0]
        if len(where):
            picks.append(int(where[0]))
    return picks


# ------------------------------------------------------------------ workloads

def lenet_mnist(ctx):
    """Seed 000: SGD LeNet, test accuracy over eval_batches x 100, save, reload in
    a separate inference step and classify 10 PNG digits written from the test set."""
    p, adapter = ctx.params, ctx.adapter
    data = ctx.dataset(p["dataset"])
    spec = specs.get_spec("lenet")
    model = ctx.build(spec)
    step = adapter.make_train_step(model, sgd(ctx))
    batch = ctx.global_batch
    steps, per_epoch = ctx.train_steps(len(data["y_train"]), batch)
    ctx.log("training LeNet: %d steps of batch %d, SGD lr %g" % (steps, batch, float(p["lr"])))
    seconds = train_loop(ctx, step, data["x_train"], data["y_train"], steps, per_epoch, batch,
                         scale_images, log_every=int(p.get("log_every", 100)))
    ctx.metrics["train_time_s"] = seconds
    ctx.metrics["train_steps"] = steps
    ctx.throughput(steps * batch, seconds, training=True)
    ctx.log("Training: %.2f s" % seconds)

    forward = adapter.make_forward(model)
    acc = evaluate(ctx, forward, data["x_test"], data["y_test"], 100, p.get("eval_batches"))
    ctx.metrics["test_accuracy"] = acc
    ctx.log("Accuracy: %.2f %%" % (100 * acc))

    workdir = tempfile.mkdtemp(prefix="dlbench-lenet-")
    try:
        model_dir = os.path.join(workdir, "model")
        os.mkdir(model_dir)
        adapter.save(model, model_dir)
        del model, forward, step
        files = []
        for i in one_per_class(data["y_test"]):
            path = os.path.join(workdir, "digit_%d.png" % int(data["y_test"][i]))
            png.write(path, data["x_test"][i, 0])
            files.append((path, int(data["y_test"][i])))
        # the separate inference step: load the saved model, read PNGs, predict
        start = clock()
        loaded = adapter.load(spec, model_dir)
        predict = adapter.make_forward(loaded)
        predictions = []
        for path, label in files:
            pixels = png.read(path)
            x = scale_images(pixels[None, None, :, :])
            out = adapter.to_numpy(predict(adapter.to_device(x)))
            predictions.append({"file": os.path.basename(path), "label": label,
                                "predicted": int(out.argmax(axis=1)[0])})
        ctx.metrics["inference_time_s"] = clock() - start
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ctx.metrics["predictions"] = predictions
    right = sum(1 for q in predictions if q["label"] == q["predicted"])
    ctx.log("Inference (load + %d PNGs): %.3f s, %d/%d correct"
            % (len(predictions), ctx.metrics["inference_time_s"], right, len(predictions)))


def cifar10_cnn(ctx):
    """Seed 003: the VGG-style CNN, SGD momentum 0.9, epochs; test accuracy."""
    p, adapter = ctx.params, ctx.adapter
    data = ctx.dataset("cifar10")
    model = ctx.build(specs.get_spec("cifar10-vgg"))
    step = adapter.make_train_step(model, sgd(ctx))
    batch = ctx.global_batch
    steps, per_epoch = ctx.train_steps(len(data["y_train"]), batch)
    ctx.log("training cifar10-vgg: %d steps (%.2f epochs) of batch %d"
            % (steps, steps / float(per_epoch), batch))
    seconds = train_loop(ctx, step, data["x_train"], data["y_train"], steps, per_epoch, batch,
                         scale_images, log_every=int(p.get("log_every", 100)))
    ctx.metrics.update({"train_time_s": seconds, "train_steps": steps})
    ctx.throughput(steps * batch, seconds, training=True)
    acc = evaluate(ctx, adapter.make_forward(model), data["x_test"], data["y_test"], batch,
                   p.get("eval_batches"))
    ctx.metrics["test_accuracy"] = acc
    ctx.log("Training: %.2f s; test accuracy %.2f %%" % (seconds, 100 * acc))


def _standardize(images):
    """tf.image.per_image_standardization on a float batch (N, C, H, W)."""
    flat = images.reshape(len(images), -1)
    mean = flat.mean(axis=1, keepdims=True)
    adjusted_std = np.maximum(flat.std(axis=1, keepdims=True), 1.0 / np.sqrt(flat.shape[1]))
    return ((flat - mean) / adjusted_std).reshape(images.shape).astype(np.float32)


def _tutorial_train_batch(rng, size=24):
    def preprocess(batch):
        n, _, h, w = batch.shape
        out = np.empty((n, batch.shape[1], size, size), dtype=np.float32)
        tops = rng.randint(0, h - size + 1, n)
        lefts = rng.randint(0, w - size + 1, n)
        flips = rng.randint(0, 2, n)
        for i in range(n):
            crop = batch[i, :, tops[i]:tops[i] + size, lefts[i]:lefts[i] + size]
            out[i] = crop[:, :, ::-1] if flips[i] else crop
        return _standardize(out)
    return preprocess


def _tutorial_eval_batch(batch, size=24):
    h, w = batch.shape[2:]
    top, left = (h - size) // 2, (w - size) // 2
    return _standardize(batch[:, :, top:top + size, left:left + size].astype(np.float32))


def cifar10_tutorial(ctx):
    """Seed 000: TF tutorial CIFAR-10 model (24x24 random crops + flips, per-image
    standardization), SGD, 1 or 2 GPUs; accuracy over eval_batches x batch."""
    p, adapter = ctx.params, ctx.adapter
    name = p.get("dataset") or "cifar10"
    data = ctx.dataset(name)
    spec = specs.get_spec("cifar10-tutorial", num_classes=data["num_classes"])
    model = ctx.build(spec)
    step = adapter.make_train_step(model, sgd(ctx))
    batch = ctx.global_batch
    steps, per_epoch = ctx.train_steps(len(data["y_train"]), batch)
    ctx.log("training cifar10-tutorial on %s: %d steps of batch %d (%d per GPU x %d)"
            % (name, steps, batch, ctx.batch_size, max(1, adapter.gpus)))
    seconds = train_loop(ctx, step, data["x_train"], data["y_train"], steps, per_epoch, batch,
                         _tutorial_train_batch(ctx.rng), log_every=int(p.get("log_every", 100)))
    ctx.metrics.update({"train_time_s": seconds, "train_steps": steps, "global_batch_size": batch})
    ctx.throughput(steps * batch, seconds, training=True)
    acc = evaluate(ctx, adapter.make_forward(model), data["x_test"], data["y_test"], batch,
                   p.get("eval_batches"), preprocess=_tutorial_eval_batch)
    ctx.metrics["test_accuracy"] = acc
    ctx.log("Training: %.2f s; Accuracy: %.2f %%" % (seconds, 100 * acc))


def gru_imdb(ctx):
    """Seed 003: embedding + GRU + dense on IMDB; reports whether cuDNN's GRU ran."""
    p, adapter = ctx.params, ctx.adapter
    vocab, seq_len = int(p["vocab_size"]), int(p["seq_len"])
    data = ctx.dataset("imdb", vocab_size=vocab, seq_len=seq_len)
    model = ctx.build(specs.get_spec("gru-imdb", vocab_size=vocab, seq_len=seq_len))
    ctx.metrics["cudnn_rnn"] = adapter.rnn_uses_cudnn(model)
    step = adapter.make_train_step(model, sgd(ctx))
    batch = ctx.global_batch
    steps, per_epoch = ctx.train_steps(len(data["y_train"]), batch)
    ctx.log("training GRU: %d steps of batch %d, cuDNN GRU: %s"
            % (steps, batch, ctx.metrics["cudnn_rnn"]))

    def ids(b):
        return b
    seconds = train_loop(ctx, step, data["x_train"], data["y_train"], steps, per_epoch, batch,
                         ids, log_every=int(p.get("log_every", 100)))
    ctx.metrics.update({"train_time_s": seconds, "train_steps": steps})
    ctx.throughput(steps * batch, seconds, training=True)
    acc = evaluate(ctx, adapter.make_forward(model), data["x_test"], data["y_test"], batch,
                   p.get("eval_batches"), preprocess=ids)
    ctx.metrics["test_accuracy"] = acc
    ctx.log("Training: %.2f s; test accuracy %.2f %%; cuDNN: %s"
            % (seconds, 100 * acc, ctx.metrics["cudnn_rnn"]))


def calibration(params):
    """The Calibration for a timed workload from its resolved parameters (CLI flags)."""
    def num(key, default, kind=float):
        value = params.get(key)
        return default if value is None else kind(value)
    min_samples = max(int(params["iterations"]), num("min_samples", 1, int))
    return measure.Calibration(
        min_samples, target=num("target_ci", 0.02) or None,
        budget_s=num("time_budget", 30.0), max_steps=num("max_steps", 10000, int),
        warmup_min=int(params.get("warmup") or 0), warmup_max=num("max_warmup", 100, int),
        warmup_budget_s=num("warmup_budget", 30.0),
        tolerance=num("steady_tolerance", 0.10))


def _timed(ctx, run_step, training, on_step=None, on_warmup_done=None):
    p, adapter = ctx.params, ctx.adapter
    energy = measure.EnergyMeter(ctx.gpu_indices)
    adapter.reset_peak_memory()

    def started():
        energy.start()
        if on_warmup_done is not None:
            on_warmup_done()

    cal = calibration(p)
    result = measure.time_steps(run_step, cal.warmup_min, cal.min_samples,
                                adapter.synchronize, ctx.global_batch, on_step=on_step,
                                on_warmup_done=started, calibration=cal)
    joules = energy.joules()
    ctx.metrics.update(result.metrics())
    ctx.metrics["energy_j"] = joules
    ctx.metrics["peak_memory_bytes"] = adapter.peak_memory()
    ctx.metrics["global_batch_size"] = ctx.global_batch
    h = ctx.metrics.get("headline")
    # the headline rate (batch / median step time), and FLOPs over the same time
    if h is not None:
        ctx.throughput(ctx.global_batch, h["value"], training)
    ctx.log("warmup: %d steps, %.3f s (first step %.3f s), %s; timed: %d samples x %d step(s), "
            "median %.4g s, 95 %% CI [%.4g, %.4g] s, stopped: %s"
            % (len(result.warmup_times), result.warmup_s,
               result.warmup_times[0] if result.warmup_times else 0.0, result.warmup_reason,
               len(result.times), result.loops, h["value"] if h else 0.0,
               h["ci_low"] if h else 0.0, h["ci_high"] if h else 0.0, result.stop_reason))
    return result


def resnet50_inference(ctx):
    """Seed 003: ResNet-50 feature extraction (2048-d pooled features), images/s."""
    adapter = ctx.adapter
    spec = specs.get_spec("resnet50-features")
    model = ctx.build(spec, training=False)
    forward = adapter.make_forward(model)
    x = adapter.to_device(synthetic_images(ctx.rng, ctx.global_batch, spec["input"]["shape"]))
    features = adapter.to_numpy(forward(x))
    ctx.metrics["feature_shape"] = list(features.shape)
    if features.shape != (ctx.global_batch, 2048):
        raise RuntimeError("features of shape %r, expected (%d, 2048)"
                           % (features.shape, ctx.global_batch))
    result = _timed(ctx, lambda i: forward(x), training=False)
    ctx.log("ResNet-50 feature extraction: %.1f images/s (batch %d, %d steps)"
            % (result.samples_per_s, ctx.global_batch, len(result.times)))


def vgg16_step(ctx):
    """Seed 001: VGG16 forward + backward + update; the timer starts before the
    first trial and stops after the last; mean = span / trials."""
    adapter = ctx.adapter
    spec = specs.get_spec("vgg16")
    model = ctx.build(spec)
    step = adapter.make_train_step(model, sgd(ctx))
    x = adapter.to_device(synthetic_images(ctx.rng, ctx.global_batch, spec["input"]["shape"]))
    y = adapter.to_device(ctx.rng.randint(0, 1000, ctx.global_batch).astype(np.int64))
    result = _timed(ctx, lambda i: step(x, y), training=True)
    ctx.metrics["span_mean_step_s"] = result.span / result.steps
    h = result.headline()
    ctx.log("Mean time per trial over %d trials (batch %d): %.3f ms; median %.3f +/- %.3f ms"
            % (result.steps, ctx.global_batch, 1000 * result.span / result.steps,
               1000 * h["value"], 1000 * (h["ci_high"] - h["ci_low"]) / 2))


def _alexnet(ctx, backward):
    """Seed 004: TF tutorial AlexNet benchmark, forward or forward-backward
    (gradients of l2_loss(pool5), no update), sec / batch +/- the 95 % CI half-width of the
    median (the seed printed a population std of the steps)."""
    adapter = ctx.adapter
    spec = specs.get_spec("alexnet-tutorial")
    model = ctx.build(spec, training=backward)
    x = adapter.to_device(synthetic_images(ctx.rng, ctx.global_batch, spec["input"]["shape"]))
    if backward:
        step = adapter.make_train_step(model, {"name": "none", "loss": "l2"})

        def run(i):
            return step(x, None)
    else:
        forward = adapter.make_forward(model)

        def run(i):
            return forward(x)

    def on_step(i, seconds, result):
        if i % 10 == 0:
            ctx.log("%s: step %d, duration = %.3f" % (datetime.datetime.now(), i, seconds))

    result = _timed(ctx, run, training=backward, on_step=on_step)
    mean, std = measure.mean_std(result.times)
    h = result.headline()
    half = (h["ci_high"] - h["ci_low"]) / 2
    ctx.log("%s: %s across %d steps, %.3f +/- %.3f sec / batch"
            % (datetime.datetime.now(), "Forward-backward" if backward else "Forward",
               len(result.times), h["value"], half))
    ctx.metrics["sec_per_batch"] = {"mean": mean, "std": std, "median": h["value"],
                                    "ci_half_width": half}


def alexnet_fwd(ctx):
    _alexnet(ctx, backward=False)


def alexnet_fwdbwd(ctx):
    _alexnet(ctx, backward=True)


def cnn_synthetic(ctx):
    """Seed 004: tf_cnn_benchmarks-style training on synthetic images, images/s
    with tf_cnn_benchmarks' per-10-step lines."""
    p, adapter = ctx.params, ctx.adapter
    name = p.get("model")
    from bench.workloads import SYNTHETIC_MODELS
    if name not in SYNTHETIC_MODELS:
        raise ValueError("cnn-synthetic needs --model, one of %s (got %r)"
                         % (", ".join(SYNTHETIC_MODELS), name))
    spec = specs.get_spec(name)
    model = ctx.build(spec)
    step = adapter.make_train_step(model, sgd(ctx))
    batch = ctx.global_batch
    x = adapter.to_device(synthetic_images(ctx.rng, batch, spec["input"]["shape"]))
    y = adapter.to_device(ctx.rng.randint(0, spec["num_classes"], batch).astype(np.int64))
    ctx.log("Model: %s, batch size %d per device, %d device(s), %s"
            % (name, ctx.batch_size, max(1, adapter.gpus), adapter.precision))
    times = []

    def on_step(i, seconds, loss):
        times.append(seconds)
        if i == 0 or (i + 1) % 10 == 0:
            speeds = [batch / t for t in times]
            mean, std = measure.mean_std(speeds)
            ctx.log("%i\timages/sec: %.1f +/- %.1f (jitter = %.1f)\t%.3f"
                    % (i + 1, mean, std / np.sqrt(len(speeds)), measure.jitter(speeds),
                       float(adapter.to_numpy(loss))))

    def warm():
        ctx.log("Done warm up")
        ctx.log("Step\tImg/sec\ttotal_loss")

    result = _timed(ctx, lambda i: step(x, y), training=True, on_step=on_step,
                    on_warmup_done=warm)
    ctx.log("-" * 64)
    ctx.log("total images/sec: %.2f" % result.samples_per_s)
    ctx.log("-" * 64)


def vgg19_mnist(ctx):
    """Seed 002: total execution time = training + validation (every epoch);
    inference time = model loading + prediction on the test set."""
    p, adapter = ctx.params, ctx.adapter
    data = ctx.dataset(p["dataset"])
    spec = specs.get_spec("vgg19-mnist")
    model = ctx.build(spec)
    step = adapter.make_train_step(model, sgd(ctx))
    forward = adapter.make_forward(model)
    batch = ctx.global_batch
    steps, per_epoch = ctx.train_steps(len(data["y_train"]), batch)
    train_seconds = val_seconds = 0.0
    done, epoch, acc = 0, 0, None
    while done < steps:
        chunk = min(per_epoch, steps - done)
        epoch += 1
        train_seconds += train_loop(ctx, step, data["x_train"], data["y_train"], chunk,
                                    per_epoch, batch, scale_images,
                                    log_every=int(p.get("log_every", 100)))
        done += chunk
        start = clock()
        acc = evaluate(ctx, forward, data["x_test"], data["y_test"], batch,
                       p.get("eval_batches"))
        val_seconds += clock() - start
        ctx.log("epoch %d: %d steps, val accuracy %.4f" % (epoch, done, acc))
    ctx.metrics.update({"train_time_s": train_seconds, "validation_time_s": val_seconds,
                        "total_time_s": train_seconds + val_seconds, "train_steps": steps,
                        "test_accuracy": acc})
    ctx.throughput(steps * batch, train_seconds, training=True)
    ctx.log("Execution time (training + validation): %.2f s" % (train_seconds + val_seconds))

    workdir = tempfile.mkdtemp(prefix="dlbench-vgg19-")
    try:
        adapter.save(model, workdir)
        del model, forward, step
        start = clock()
        loaded = adapter.load(spec, workdir)
        evaluate(ctx, adapter.make_forward(loaded), data["x_test"], data["y_test"], batch,
                 p.get("eval_batches"))
        ctx.metrics["inference_time_s"] = clock() - start
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ctx.log("Inference time (model loading + prediction): %.2f s"
            % ctx.metrics["inference_time_s"])


PROCEDURES = {
    "lenet-mnist": lenet_mnist,
    "cifar10-cnn": cifar10_cnn,
    "cifar10-tutorial": cifar10_tutorial,
    "gru-imdb": gru_imdb,
    "resnet50-inference": resnet50_inference,
    "vgg16-step": vgg16_step,
    "alexnet-fwd": alexnet_fwd,
    "alexnet-fwdbwd": alexnet_fwdbwd,
    "cnn-synthetic": cnn_synthetic,
    "vgg19-mnist": vgg19_mnist,
}
