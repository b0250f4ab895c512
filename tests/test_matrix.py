"""Matrix stage: expansion, include/exclude, profiles, and every bad-input case (message + exit 2)."""

import subprocess
import sys
import textwrap

import pytest

from runner import DEFAULT_MATRIX, ROOT
from runner.matrix import expand, load_matrix, resolve_profile

BASE = """\
frameworks:
  pytorch: {versions: ["2.15.0"]}
  tensorflow: {versions: ["2.21.0"]}
toolchains: [cpu, cuda13.0-cudnn9, cuda12.5-cudnn9.3]
workloads:
  vgg16-step: {batch_sizes: [16, 32], iterations: 100}
  cnn-synthetic: {models: [resnet50, alexnet], batch_sizes: [16], precisions: [fp32, fp16]}
profiles:
  cpu:
    workloads:
      vgg16-step: {iterations: 3}
  smoke:
    timeout_s: 60
    workloads:
      vgg16-step: {batch_sizes: [2], iterations: 2}
"""


def write(tmp_path, text, name="m.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def plan_of(tmp_path, text, device="cpu", profile=None, **kw):
    path = write(tmp_path, text)
    matrix, lines = load_matrix(path)
    prof = resolve_profile(matrix, profile, device == "gpu", path, lines)
    return expand(matrix, path=path, lines=lines, profile=prof, device=device, **kw)


def test_cpu_expansion_is_the_cartesian_product(tmp_path):
    plan = plan_of(tmp_path, BASE, device="cpu", profile="full")
    # 2 frameworks x (vgg16: 2 batches + cnn-synthetic: 2 models x 2 precisions)
    assert len(plan.cells) == 2 * (2 + 4)
    assert {c.toolchain for c in plan.cells} == {"cpu"}
    assert all(c.gpus == 0 and c.device == "cpu" for c in plan.cells)
    assert len({c.id for c in plan.cells}) == len(plan.cells)


def test_gpu_expansion_drops_unbuildable_toolchains_with_reasons(tmp_path):
    plan = plan_of(tmp_path, BASE, device="gpu", profile="full")
    images = {(i.framework, i.toolchain) for i in plan.images}
    assert ("pytorch", "cuda13.0-cudnn9") in images
    assert ("tensorflow", "cuda12.5-cudnn9.3") in images
    dropped = {(d.framework, d.toolchain): d.reason for d in plan.dropped}
    assert "has no build for cuda12.5-cudnn9.3" in dropped[("pytorch", "cuda12.5-cudnn9.3")]
    assert "has no build for cuda13.0-cudnn9" in dropped[("tensorflow", "cuda13.0-cudnn9")]
    # On a GPU host the default device list of a workload is [gpu]: no cpu cells.
    assert {c.device for c in plan.cells} == {"gpu"}
    assert all(c.gpus == 1 for c in plan.cells)


def test_exclude_and_include(tmp_path):
    text = BASE + textwrap.dedent("""\
        exclude:
          - {precision: fp16}
          - {framework: tensorflow, workload: vgg16-step, batch_size: 32}
        include:
          - {framework: pytorch, workload: vgg16-step, batch_size: 64}
        """)
    plan = plan_of(tmp_path, text, profile="full")
    assert not [c for c in plan.cells if c.precision == "fp16"]
    assert not [c for c in plan.cells if c.framework == "tensorflow" and c.batch_size == 32]
    added = [c for c in plan.cells if c.batch_size == 64]
    assert [(c.framework, c.workload) for c in added] == [("pytorch", "vgg16-step")]
    assert added[0].iterations == 100


def test_profiles_override_counts(tmp_path):
    smoke = plan_of(tmp_path, BASE, profile="smoke")
    vgg = [c for c in smoke.cells if c.workload == "vgg16-step"]
    assert {c.batch_size for c in vgg} == {2} and {c.iterations for c in vgg} == {2}
    assert {c.timeout_s for c in smoke.cells} == {60}
    full = plan_of(tmp_path, BASE, profile="full")
    assert {c.iterations for c in full.cells if c.workload == "vgg16-step"} == {100}


def test_repeats_come_from_the_profile_unless_the_workload_says(tmp_path):
    from runner.matrix import processes
    text = BASE.replace("profiles:\n", "profiles:\n  rep:\n    repeats: 3\n    workloads:\n"
                        "      vgg16-step: {repeats: 2}\n", 1)
    plan = plan_of(tmp_path, text, profile="rep")
    assert {c.repeats for c in plan.cells if c.workload == "vgg16-step"} == {2}
    assert {c.repeats for c in plan.cells if c.workload != "vgg16-step"} == {3}
    tasks = processes(plan.cells)
    assert len(tasks) == sum(c.repeats for c in plan.cells)
    assert len({t.name for t in tasks}) == len(tasks) and {t.repeat for t in tasks} == {1, 2, 3}
    assert {c.repeats for c in plan_of(tmp_path, BASE, profile="smoke").cells} == {1}


def test_auto_profile_follows_the_host(tmp_path):
    path = write(tmp_path, BASE)
    matrix, lines = load_matrix(path)
    assert resolve_profile(matrix, None, host_has_gpu=True, path=path, lines=lines) == "full"
    assert resolve_profile(matrix, None, host_has_gpu=False, path=path, lines=lines) == "cpu"


def test_gpu_counts_multiply_gpu_cells_only(tmp_path):
    text = BASE.replace("vgg16-step: {batch_sizes: [16, 32], iterations: 100}",
                        "vgg16-step: {batch_sizes: [16], gpus: [1, 2], devices: [gpu, cpu]}")
    plan = plan_of(tmp_path, text, device="gpu", profile="full", only=["pytorch"], workloads=["vgg16-step"])
    assert sorted((c.device, c.gpus) for c in plan.cells) == [("cpu", 0), ("gpu", 1), ("gpu", 2)]


def test_only_and_workload_filters(tmp_path):
    plan = plan_of(tmp_path, BASE, profile="full", only=["tensorflow"], workloads=["vgg16-step"])
    assert {(c.framework, c.workload) for c in plan.cells} == {("tensorflow", "vgg16-step")}


def test_python_comes_from_the_base_and_is_checked(tmp_path):
    plan = plan_of(tmp_path, BASE, device="gpu", profile="full")
    assert {c.python for c in plan.cells} == {"3.11"}
    text = BASE.replace("base: plain", "") + "base: registry\n"
    plan = plan_of(tmp_path, text, device="gpu", profile="full")
    assert {(c.framework, c.python) for c in plan.cells} == {("pytorch", "3.12"), ("tensorflow", "3.10")}


VARIANTS = BASE.replace("  vgg16-step: {batch_sizes: [16, 32], iterations: 100}\n", """\
  vgg16-step:
    batch_sizes: [16]
    options: {log_every: 10}
    variants:
      - {framework: tensorflow, options: {data_format: NHWC, xla: false}}
      - {framework: tensorflow, options: {data_format: NCHW, xla: true}}
      - {options: {threads: 2}}
""")


def test_variants_add_cells_with_their_options_and_ids(tmp_path):
    plan = plan_of(tmp_path, VARIANTS, device="cpu", profile="full")
    vgg = {(c.framework, c.variant): c for c in plan.cells if c.workload == "vgg16-step"}
    # tensorflow: its two variants + the one for every framework; pytorch: only the latter
    assert sorted(vgg) == [("pytorch", (("threads", 2),)),
                           ("tensorflow", (("data_format", "NCHW"), ("xla", True))),
                           ("tensorflow", (("data_format", "NHWC"), ("xla", False))),
                           ("tensorflow", (("threads", 2),))]
    nchw = vgg[("tensorflow", (("data_format", "NCHW"), ("xla", True)))]
    assert dict(nchw.options) == {"log_every": 10, "data_format": "NCHW", "xla": True}
    assert nchw.id.endswith("-b16-fp32-cpu-data_format-NCHW-xla-true")
    assert len({c.id for c in plan.cells}) == len(plan.cells)
    # a workload without variants keeps one cell per combination, and its id is unchanged
    assert all(c.variant == () and c.id.endswith("-cpu") for c in plan.cells if c.workload == "cnn-synthetic")
    # the smoke profile inherits the variants (profiles override only what they name)
    smoke = plan_of(tmp_path, VARIANTS, device="cpu", profile="smoke")
    assert len([c for c in smoke.cells if c.workload == "vgg16-step"]) == 4


def test_profile_can_replace_the_variants(tmp_path):
    text = VARIANTS.replace("      vgg16-step: {batch_sizes: [2], iterations: 2}",
                            "      vgg16-step: {batch_sizes: [2], iterations: 2, variants: "
                            "[{framework: tensorflow, options: {xla: true}}]}")
    plan = plan_of(tmp_path, text, device="cpu", profile="smoke")
    assert sorted((c.framework, c.variant) for c in plan.cells if c.workload == "vgg16-step") == \
        [("pytorch", ()), ("tensorflow", (("xla", True),))]


def test_default_matrix_plans_on_cpu_and_gpu():
    matrix, lines = load_matrix(DEFAULT_MATRIX)
    for device in ("cpu", "gpu"):
        prof = resolve_profile(matrix, None, device == "gpu", DEFAULT_MATRIX, lines)
        plan = expand(matrix, path=DEFAULT_MATRIX, lines=lines, profile=prof, device=device)
        assert plan.cells
        assert {c.framework for c in plan.cells} == {"pytorch", "tensorflow", "keras", "mxnet", "cntk", "jax"}
        # seed 001's table: TensorFlow's VGG16 step in NHWC/NCHW, with and without XLA
        tf_vgg = {c.variant for c in plan.cells if c.framework == "tensorflow" and c.workload == "vgg16-step"}
        assert (("data_format", "NHWC"), ("xla", True)) in tf_vgg and len(tf_vgg) >= 2
    # CNTK's only GPU build is CUDA 10.0 on Ubuntu 18.04 with Python 3.6.
    cntk = {(c.toolchain, c.python) for c in plan.cells if c.framework == "cntk" and c.device == "gpu"}
    assert cntk == {("cuda10.0-cudnn7", "3.6")}
    # resnet50-inference lists devices [gpu, cpu]: its CPU column is planned on GPU hosts too.
    assert {c.workload for c in plan.cells if c.device == "cpu"} == {"resnet50-inference"}


# ------------------------------------------------------------------ bad input

BAD = [
    ("yaml-syntax", "frameworks: [pytorch\n", ["YAML syntax error at line 2"]),
    ("empty", "", ["the matrix file is empty"]),
    ("not-a-mapping", "- pytorch\n", ["must be a mapping", "not a list"]),
    ("unknown-top-key", BASE + "colour: red\n", ["key `colour`", "unknown key `colour`", "allowed keys: base"]),
    ("unknown-framework", BASE.replace("tensorflow: {", "tensorfloo: {"),
     ["key `frameworks.tensorfloo`", "unknown framework", "Known frameworks: pytorch"]),
    ("unknown-version", BASE.replace('["2.15.0"]', '["2.15.0", "9.9"]'),
     ["key `frameworks.pytorch.versions[1]` (line 2)", "unknown pytorch version `9.9`", "images/compat.yaml"]),
    ("unknown-workload", BASE.replace("vgg16-step: {batch", "vgg99: {batch"),
     ["key `workloads.vgg99`", "Known workloads: lenet-mnist"]),
    ("unknown-toolchain", BASE.replace("cuda13.0-cudnn9,", "cuda99,"),
     ["key `toolchains[1]`", "unknown toolchain `cuda99`"]),
    ("unknown-model", BASE.replace("models: [resnet50, alexnet]", "models: [resnet50, lenet9]"),
     ["key `workloads.cnn-synthetic.models[1]`", "unknown model `lenet9`", "Allowed: resnet50"]),
    ("wrong-type", BASE.replace("iterations: 100", "iterations: lots"),
     ["key `workloads.vgg16-step.iterations` (line 6)", "valid integer", "'lots'"]),
    ("zero-batch", BASE.replace("batch_sizes: [16, 32]", "batch_sizes: [16, 0]"),
     ["key `workloads.vgg16-step.batch_sizes[1]`", "greater than 0"]),
    ("negative-iterations", BASE.replace("iterations: 100", "iterations: -5"),
     ["key `workloads.vgg16-step.iterations`", "greater than 0"]),
    ("duplicate-key", BASE + "toolchains: [cpu]\n", ["duplicate key 'toolchains'"]),
    ("duplicate-list-value", BASE.replace("batch_sizes: [16, 32]", "batch_sizes: [16, 16]"),
     ["key `workloads.vgg16-step.batch_sizes`", "duplicate batch_sizes: 16"]),
    ("unknown-profile", BASE + "profile: turbo\n", ["profile `turbo` is not defined", "known: auto, cpu, full, smoke"]),
    ("empty-after-exclude", BASE + "exclude: [{device: cpu}]\n", ["the matrix is empty after expansion"]),
    ("empty-rule", BASE + "exclude: [{}]\n", ["key `exclude[0]`", "an empty rule matches every cell"]),
    ("duplicate-cell", BASE + "include: [{framework: pytorch, workload: vgg16-step, batch_size: 16}]\n",
     ["key `include[0]`", "duplicate cell pytorch-2.15.0-cpu-py3.11-vgg16-step-b16"]),
    ("variant-unknown-framework", VARIANTS.replace("{framework: tensorflow, options: {data_format: NHWC",
                                                   "{framework: theano, options: {data_format: NHWC"),
     ["key `workloads.vgg16-step.variants[0].framework`", "variant for `theano`", "Use one of: pytorch"]),
    ("variant-twice", VARIANTS.replace("      - {options: {threads: 2}}\n",
                                       "      - {options: {threads: 2}}\n      - {options: {threads: 2}}\n"),
     ["key `workloads.vgg16-step.variants[3]`", "the same variant twice"]),
    ("variant-no-options", VARIANTS.replace("      - {options: {threads: 2}}\n", "      - {options: {}}\n"),
     ["key `workloads.vgg16-step.variants[2].options`"]),
    ("impossible-include", BASE + "include: [{framework: pytorch, toolchain: cuda12.5-cudnn9.3, "
                                  "workload: vgg16-step}]\n",
     ["key `include[0]`", "cannot run", "PyTorch 2.15.0 has no build for cuda12.5-cudnn9.3"]),
    ("impossible-python", BASE.replace('pytorch: {versions: ["2.15.0"]}',
                                       'pytorch: {versions: ["2.15.0"], python: "3.6"}')
     .replace('tensorflow: {versions: ["2.21.0"]}', ''),
     ["the matrix is empty after expansion", "provides Python 3.11, the matrix asks for Python 3.6"]),
]


@pytest.mark.parametrize("name,text,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_matrix_gives_message_and_exit_2(tmp_path, name, text, expected):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    device = "gpu" if name == "impossible-include" else "cpu"
    proc = subprocess.run([sys.executable, "-m", "runner", "plan", "--matrix", str(path), "--device", device,
                           "--profile", "full" if name != "unknown-profile" else "turbo"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert message.startswith("error: " + str(path)) or message.startswith("error: ")
    for fragment in expected:
        assert fragment in message, message
    # One paragraph: no blank lines in the message.
    assert "\n\n" not in proc.stderr.strip()


def test_missing_matrix_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    proc = subprocess.run([sys.executable, "-m", "runner", "plan", "--matrix", str(missing)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert f"{missing}: the matrix file does not exist" in " ".join(proc.stderr.split())


def test_unknown_cli_option_exits_2():
    proc = subprocess.run([sys.executable, "-m", "runner", "plan", "--frobnicate"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "unrecognized arguments: --frobnicate" in proc.stderr


def test_only_unknown_framework_exits_2():
    proc = subprocess.run([sys.executable, "-m", "runner", "plan", "--only", "caffe2"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "--only caffe2: not in" in " ".join(proc.stderr.split())


@pytest.mark.parametrize("stage", ["plan", "render", "base", "build", "run", "report", "clean"])
def test_every_stage_has_help(stage):
    proc = subprocess.run([sys.executable, "-m", "runner", stage, "--help"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0 and "usage:" in proc.stdout


def test_plan_prints_one_row_per_cell_and_the_dropped():
    proc = subprocess.run([sys.executable, "-m", "runner", "plan", "--only", "pytorch,mxnet", "--device", "gpu",
                           "--profile", "smoke"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "dlbench/pytorch:2.15.0-cuda13.0-cudnn9-py3.11-" in out
    assert "dropped: MXNet 1.9.1 has no build for cuda13.0-cudnn9" in out
    summary = [line for line in out.splitlines() if "cells in" in line][0]
    n_cells = int(summary.split()[0])
    rows = [line for line in out.splitlines() if line.startswith("│ pytorch") or line.startswith("│ mxnet")]
    n_dropped = int(summary.split(";")[1].split()[0])
    assert len(rows) == n_cells + n_dropped


def test_bench_never_imports_host_side_packages():
    forbidden = ("runner", "docker", "pandas", "jinja2", "jsonschema", "yaml", "pydantic")
    for path in (ROOT / "bench").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            for mod in forbidden:
                assert not stripped.startswith((f"import {mod}", f"from {mod} ", f"from {mod}.")), \
                    f"{path}: {stripped}"


# ---------------------------------------------------------------- batch sweeps

SWEEP = BASE.replace("vgg16-step: {batch_sizes: [16, 32], iterations: 100}",
                     "vgg16-step: {sweep: {start: 4, max: 40}, iterations: 100}")


def _batches(plan, framework="pytorch", workload="vgg16-step"):
    return [c.batch_size for c in plan.cells if c.framework == framework and c.workload == workload]


def test_a_sweep_expands_to_doubling_batches_marked_as_a_sweep(tmp_path):
    plan = plan_of(tmp_path, SWEEP, profile="full")
    assert _batches(plan) == [4, 8, 16, 32]
    assert all(c.sweep for c in plan.cells if c.workload == "vgg16-step")
    assert not any(c.sweep for c in plan.cells if c.workload == "cnn-synthetic")
    # the cells of one sweep share everything but the batch
    assert len({c.sweep_key for c in plan.cells if c.workload == "vgg16-step"}) == 2   # one per framework


def test_batch_sizes_auto_sweeps_from_the_workloads_default_batch(tmp_path):
    from bench.workloads import WORKLOADS
    text = BASE.replace("vgg16-step: {batch_sizes: [16, 32], iterations: 100}",
                        "vgg16-step: {batch_sizes: auto, iterations: 100}")
    batches = _batches(plan_of(tmp_path, text, profile="full"))
    start = WORKLOADS["vgg16-step"]["defaults"]["batch_size"]
    assert batches[0] == start and batches[-1] <= 1 << 16
    assert all(b == a * 2 for a, b in zip(batches, batches[1:]))


def test_a_profile_list_replaces_the_matrix_sweep_and_the_other_way_round(tmp_path):
    # BASE's smoke profile lists vgg16-step batches: the matrix's sweep gives way
    assert _batches(plan_of(tmp_path, SWEEP, profile="smoke")) == [2]
    text = BASE.replace("vgg16-step: {batch_sizes: [2], iterations: 2}",
                        "vgg16-step: {sweep: {start: 1, factor: 4, max: 16}, iterations: 2}")
    plan = plan_of(tmp_path, text, profile="smoke")
    assert _batches(plan) == [1, 4, 16] and all(c.sweep for c in plan.cells if c.workload == "vgg16-step")


def test_an_include_rule_names_one_batch_of_a_sweep_workload(tmp_path):
    text = SWEEP + "include:\n  - {framework: pytorch, workload: vgg16-step, batch_size: 12}\n"
    cells = [c for c in plan_of(tmp_path, text, profile="full").cells
             if c.workload == "vgg16-step" and c.framework == "pytorch"]
    extra = [c for c in cells if c.batch_size == 12]
    assert len(extra) == 1 and not extra[0].sweep


@pytest.mark.parametrize("sweep, needles", [
    ("{batch_sizes: [16], sweep: {start: 4}}", ["not both"]),
    ("{sweep: {start: 64, max: 32}}", ["sweep.start (64) is larger than sweep.max (32)"]),
    ("{sweep: {factor: 1}}", ["factor"]),
    ("{sweep: {start: 4, step: 2}}", ["step"]),
    ("{batch_sizes: automatic}", ["batch_sizes"]),
    ("{sweep: {max: 8}}", ["default start", "has no batch size"]),
])
def test_bad_sweeps_are_refused_with_the_key(tmp_path, sweep, needles):
    from runner.errors import UserError
    text = BASE.replace("{batch_sizes: [16, 32], iterations: 100}", sweep)
    with pytest.raises(UserError) as info:
        plan_of(tmp_path, text, profile="full")
    message = info.value.message
    assert "m.yaml" in message and "vgg16-step" in message, message
    for needle in needles:
        assert needle in message, message
