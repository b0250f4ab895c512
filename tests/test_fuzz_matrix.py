"""Property-based fuzzing of the matrix loader and expansion (hypothesis).

Whatever a matrix file holds — arbitrary YAML/JSON documents, mutated copies of the real matrix.yaml,
random bytes — loading and expanding it ends in a valid plan or a UserError with a one-paragraph
message: never another exception, and never a hang (each example has a deadline).
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import DEFAULT_MATRIX
from runner.errors import UserError
from runner.matrix import Plan, expand, load_matrix, resolve_profile
from support import json_paths

FUZZ = settings(max_examples=200, deadline=5000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REAL_TEXT = DEFAULT_MATRIX.read_text(encoding="utf-8")
REAL = yaml.safe_load(REAL_TEXT)
WORKDIR = Path(tempfile.mkdtemp(prefix="dlbench-fuzz-matrix-"))

# Names the loader knows, so that mutations reach the deeper checks, not only "unknown key".
WORDS = sorted({"pytorch", "tensorflow", "keras", "mxnet", "cntk", "jax", "cpu", "gpu", "cuda13.0-cudnn9",
                "vgg16-step", "lenet-mnist", "cnn-synthetic", "resnet50", "mnist", "fp16", "fp32", "smoke",
                "full", "auto", "options", "variants", "framework", "batch_sizes", "versions", "extra_pip", "sweep",
                "start", "factor", "max",
                "2.15.0", "../x", "a b", "a\nRUN id", "--index-url=x", "requests", "true", ""})
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(WORDS))
keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=12))
values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=5)), max_leaves=30)


def outcome(text_or_bytes) -> Plan | UserError:
    """load + expand on cpu and gpu; returns the gpu plan or the UserError. Any other exception fails."""
    path = WORKDIR / "m.yaml"
    if isinstance(text_or_bytes, bytes):
        path.write_bytes(text_or_bytes)
    else:
        path.write_text(text_or_bytes, encoding="utf-8", errors="surrogatepass")
    try:
        matrix, lines = load_matrix(path)
        plan = None
        for device in ("cpu", "gpu"):
            profile = resolve_profile(matrix, None, device == "gpu", path, lines)
            plan = expand(matrix, path=path, lines=lines, profile=profile, device=device)
            assert plan.cells
            ids = [c.id for c in plan.cells]
            assert len(set(ids)) == len(ids)
            assert all("/" not in i and not i.startswith(".") for i in ids)
        return plan
    except UserError as exc:
        assert isinstance(exc.message, str) and exc.message.strip(), repr(exc)
        assert "\n" not in exc.message.strip(), exc.message
        return exc


def dump(doc) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return json.dumps(doc, allow_nan=True)


@FUZZ
@given(values)
def test_arbitrary_documents(doc):
    outcome(dump(doc))


@FUZZ
@given(values)
def test_arbitrary_documents_as_json(doc):
    outcome(json.dumps(doc, allow_nan=True))


REAL_PATHS = [p for p in json_paths(REAL) if p]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(REAL_PATHS), st.sampled_from(["replace", "delete", "rename"]), values),
                min_size=1, max_size=3))
def test_mutated_real_matrix(mutations):
    doc = copy.deepcopy(REAL)
    for path, how, value in mutations:
        parent = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            last = path[-1]
            if how == "replace":
                parent[last] = value
            elif how == "delete":
                del parent[last]
            elif isinstance(parent, dict) and last in parent:
                parent[value if isinstance(value, (str, int, float, bool)) or value is None else str(value)] = \
                    parent.pop(last)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed the path
    outcome(dump(doc))


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(REAL_TEXT)),
                          st.text(alphabet=st.sampled_from(list("[]{}:,-&*!|>'\"\n #?%@`\t\\")), max_size=4)
                          | st.text(max_size=3)), min_size=1, max_size=4))
def test_text_mutations_of_the_real_matrix(edits):
    text = REAL_TEXT
    for pos, insert in edits:
        text = text[:pos] + insert + text[pos:]
    outcome(text)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data):
    outcome(data)


def test_the_real_matrix_still_plans():
    assert isinstance(outcome(REAL_TEXT), Plan)
