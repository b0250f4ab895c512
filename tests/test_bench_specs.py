"""Model specs: published parameter counts, and PyTorch builds equal to the spec."""

import os

import numpy as np
import pytest

from bench import specs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PUBLISHED = {
    "lenet": 3274634,
    "vgg16": 138357544,
    "resnet50": 25557032,
    "resnet50-features": 23508032,
    "inception3": 23834568,   # torchvision inception_v3(aux_logits=False)
    "alexnet-tutorial": 2469696,
    "gru-imdb": 3818302,
}


@pytest.mark.parametrize("name,count", sorted(PUBLISHED.items()))
def test_spec_param_count_matches_published(name, count):
    assert specs.param_count(specs.get_spec(name)) == count


def test_every_spec_validates_and_has_flops():
    for name in specs.SPEC_BUILDERS:
        spec = specs.get_spec(name)
        info = specs.infer(spec)
        assert info["param_count"] > 0 and info["flops_per_sample"] > 0, name
        assert all(n["op"] in specs.OPS for n in spec["nodes"])


def test_flops_of_known_layers():
    # conv 3->8 3x3 pad 1 on 4x4: 2 * 8*4*4 * 3*3*3 ; dense 128->10: 2*128*10
    b = specs.SpecBuilder("t", (3, 4, 4))
    x = b.flatten(b.conv(b.input, 8, 3, pad=1))
    spec = b.finish(b.dense(x, 10), 10)
    info = specs.infer(spec)
    assert info["flops_per_sample"] == 2 * 8 * 16 * 27 + 2 * 128 * 10
    assert info["param_count"] == 8 * 27 + 8 + 128 * 10 + 10


def test_resnet50_flops_about_4_gmacs():
    assert 8.0e9 < specs.flops_per_sample(specs.get_spec("resnet50")) < 8.4e9


def test_spec_errors_are_caught():
    b = specs.SpecBuilder("bad", (1, 4, 4))
    with pytest.raises(specs.SpecError):
        b.finish(b.dense(b.input, 3), 3)  # dense on a CHW input


def test_overrides_change_the_spec():
    small = specs.get_spec("gru-imdb", vocab_size=100, seq_len=7)
    assert small["input"]["shape"] == (7,)
    assert specs.param_count(small) == 100 * 125 + 68100 + 202


@pytest.mark.parametrize("name", sorted(specs.SPEC_BUILDERS))
def test_pytorch_model_param_count_equals_spec(name):
    import torch
    from bench.adapters.pytorch import Adapter
    adapter = Adapter("cpu", 0, "fp32", {})
    spec = specs.get_spec(name)
    model = adapter.build(spec, training=False)
    expected = specs.param_count(spec)
    assert adapter.param_count(model) == expected
    assert sum(p.numel() for p in model.module.parameters()) == expected
    if name in ("vgg16", "resnet50"):
        assert expected == PUBLISHED[name]
    # the forward output has the spec's inferred shape
    shape = spec["input"]["shape"]
    if spec["input"]["dtype"] == "int64":
        x = np.random.RandomState(0).randint(0, 50, size=(1,) + tuple(shape)).astype(np.int64)
    else:
        x = np.random.RandomState(0).rand(1, *shape).astype(np.float32)
    with torch.no_grad():
        out = adapter.to_numpy(adapter.make_forward(model)(adapter.to_device(x)))
    assert out.shape[1:] == specs.infer(spec)["output_shape"]
