"""runner.report: aggregation, the seed-format tables (golden files), plots, comparison, the CLI entry.

Regenerate the golden Markdown after an intended change:  UPDATE_GOLDEN=1 python -m pytest tests/test_report.py
(the test still compares afterwards; review the diff of tests/golden/report/ before committing).
"""

import argparse
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from runner.report import (
    EMPTY_SECTION, SECTION_NAMES, add_report_arguments, build_frame, build_sections, compare_runs, comparison_section,
    load_frame, run_report,
)
from runner.report.frame import framework_label, latest_cells, options_label
from runner.report.plots import make_plots
from runner.report.tables import SECTION_TITLES

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures" / "results"
BASE_RUN = FIXTURES / "20261121-090000-b0b0"
GPU_RUN = FIXTURES / "20261122-061500-ab12"
CPU_RUN = FIXTURES / "20261122-070000-cd34"
CI_RUN = FIXTURES / "20261123-080000-ef56"     # later, partial, calibrated (headline + 95 % CI)
SMOKE_RUN = FIXTURES / "20261123-090000-5a0e"  # latest of all, smoke profile
GOLDEN = HERE / "golden" / "report"


# ------------------------------------------------------------------ a small Markdown table parser

_SEP = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?$")


def split_row(line: str) -> list:
    cells = re.split(r"(?<!\\)\|", line.strip())
    if cells and cells[0].strip() == "":
        cells = cells[1:]
    if cells and cells[-1].strip() == "":
        cells = cells[:-1]
    return [c.strip() for c in cells]


def parse_tables(text: str) -> list:
    """[(line index of the header, header cells, [row cells])] of every pipe table in `text`."""
    lines = text.splitlines()
    tables, i = [], 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and _SEP.match(lines[i + 1].strip()):
            header = split_row(lines[i])
            sep = split_row(lines[i + 1])
            assert len(sep) == len(header), f"separator of the table at line {i + 1}: {lines[i + 1]!r}"
            rows, j = [], i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                rows.append(split_row(lines[j]))
                j += 1
            tables.append((i, header, rows))
            i = j
        else:
            assert not (lines[i].lstrip().startswith("|") and "---" in lines[i]), f"stray table line {lines[i]!r}"
            i += 1
    return tables


def test_parser_itself():
    (t,) = parse_tables("x\n\n| a | b \\| c |\n|:--|--:|\n| 1 | 2 |\n| 3 |\n")
    assert t[1] == ["a", "b \\| c"] and t[2] == [["1", "2"], ["3"]]


# ------------------------------------------------------------------ shared data

@pytest.fixture(scope="module")
def frame():
    return load_frame([GPU_RUN, CPU_RUN])


@pytest.fixture(scope="module")
def sections(frame, tmp_path_factory):
    df = latest_cells(frame)
    plots = make_plots(df, tmp_path_factory.mktemp("plots"))
    cmp = compare_runs(df, load_frame([BASE_RUN]), 0.05)
    return build_sections(df, plots, comparison_section(cmp, BASE_RUN.name, 0.05))


# ------------------------------------------------------------------ aggregation

def test_frame_has_one_row_per_result_file(frame):
    assert len(frame) == len(list(GPU_RUN.glob("*.json"))) + len(list(CPU_RUN.glob("*.json")))
    for col in ("run_id", "framework", "framework_label", "version", "toolchain", "python", "workload", "model",
                "dataset", "synthetic", "batch", "precision", "device", "gpus", "status", "message",
                "samples_per_s", "step_jitter_s", "test_accuracy", "mfu", "energy_j", "machine", "gpu_name",
                "cpu_model", "ram_bytes", "cuda", "cudnn"):
        assert col in frame.columns, col
    assert set(frame["machine"]) == {"gpu-box", "cpu-box"}
    assert set(frame["status"]) == {"ok", "oom", "error", "unsupported", "timeout", "interrupted"}
    assert build_frame([]).empty


def test_framework_labels():
    assert framework_label("pytorch", "2.15.0") == "PyTorch 2.15.0"
    assert framework_label("tensorflow", "2.21.0") == "TensorFlow 2.21.0"
    assert framework_label("keras", "3.12", {"backend": "tensorflow"}) == "Keras 3.12 (TF)"
    assert framework_label("keras", "3.12", {"backend": "jax"}) == "Keras 3.12 (JAX)"
    assert framework_label("mxnet", "1.9.1") == "MXNet 1.9.1"
    assert framework_label("mxnet", "1.9.1", {"api": "gluon"}) == "Gluon (MXNet 1.9.1)"
    assert framework_label("cntk", "2.7.post2") == "CNTK 2.7.post2"
    assert framework_label("jax", "0.10.2") == "JAX 0.10.2"
    assert options_label({"layout": "NCHW", "xla": True}) == "NCHW with XLA"
    assert options_label({"layout": "channels_last", "xla": False, "backend": "tensorflow"}) == "NHWC no XLA"


# ------------------------------------------------------------------ golden Markdown + table shape

@pytest.mark.parametrize("name", SECTION_NAMES)
def test_section_matches_golden(sections, name):
    text = (sections[name] or EMPTY_SECTION).strip("\n") + "\n"
    path = GOLDEN / f"{name}.md"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} missing: run UPDATE_GOLDEN=1 python -m pytest {__file__}"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from {path} (UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("name", SECTION_NAMES)
def test_every_table_round_trips_and_names_its_source(sections, name):
    text = sections[name]
    lines = text.splitlines()
    prev_end = 0
    for start, header, rows in parse_tables(text):
        assert rows, f"{name}: empty table at line {start}"
        for row in rows:
            assert len(row) == len(header), f"{name}: {row} vs header {header}"
        before = "\n".join(lines[prev_end:start])
        assert ("Measured on **" in before or "as reported by run" in before), \
            f"{name}: the table at line {start} is not preceded by its machine and run line"
        assert re.search(r"`\d{8}-\d{6}-[0-9a-f]{4}`", before), f"{name}: no run id before line {start}"
        prev_end = start + 2 + len(rows)


def _table_after(text: str, header0: str):
    return [t for t in parse_tables(text) if t[1][0] == header0]


def test_seed_formats(sections):
    # seed 003
    (_, h, rows), = [t for t in parse_tables(sections["cifar10-cnn"]) if len(t[2]) > 1]
    assert h == ["DL Library", "Test Accuracy (%)", "Training Time (s)"]
    assert rows[0] == ["TensorFlow 2.21.0", "77.5", "58.07"]  # sorted by time
    assert ["Keras 3.15.1 (TF)", "OOM at batch 64", "—"] in rows
    assert any(r[1].startswith("unsupported: MXNet 1.9.1 has no wheel") for r in rows)
    (_, h, rows), = [t for t in parse_tables(sections["gru-imdb"]) if len(t[2]) > 1]
    assert h[-1] == "Using CuDNN?" and ["Keras 3.15.1 (TF) (synthetic)", "50.1", "30.50", "No"] in rows
    gpu = parse_tables(sections["resnet50-inference"])[-1]
    assert gpu[1] == ["DL Library", "Images/s GPU", "Images/s CPU"]
    assert gpu[2] == [["PyTorch 2.15.0", "2,361.6", "33.2"], ["TensorFlow 2.21.0", "2,119.2", "error"]]
    # seed 001
    text = sections["vgg16-step"]
    assert "| TensorFlow 2.21.0 NCHW with XLA | 33.067 ms" in text
    assert "N = 100 consecutive VGG16" in text and "B = 16 images" in text and "N = 3 consecutive" in text
    # seed 004
    text = sections["cnn-synthetic"]
    assert "Precision: fp16<br />\nDataset: Synthetic" in text
    tables = parse_tables(text)
    assert all(t[1][0] == "Batchsize" and t[2][-1][0] == "Optimizer" for t in tables)
    assert any(t[1] == ["Batchsize", "InceptionV3", "ResNet-50", "VGG16"] and
               ["64", "—", "—", "OOM at batch 64"] in t[2] for t in tables)
    assert "Forward across 100 steps, 0.0131 +/- 0.0001 sec / batch" in sections["alexnet"]
    assert "Forward-backward: OOM at batch 128" in sections["alexnet"]
    # seed 000
    text = sections["lenet-mnist"]
    assert "___PyTorch 2.15.0___ <br />\n\ncpu-box, Fashion MNIST <br />\nTraining: 88.41 s <br />\n" \
           "Accuracy: 85.1 % <br />\nInference: 2.50 s <br />" in text
    text = sections["cifar10-tutorial"]
    assert "___Single GPU___ <br />" in text and "___Dual GPUs___ <br />\nTraining: timeout <br />" in text
    assert "___CPU___ <br />" in text
    # seed 002
    tables = parse_tables(sections["vgg19-mnist"])
    assert all(t[1] == ["Test", "Execution Time (s)", "Inference Time (s)", "Error"] for t in tables)
    rows = [r for t in tables for r in t[2]]
    assert ["Original MNIST", "3,553.40", "12.81", "No error"] in rows
    assert ["Fashion MNIST", "—", "—", "OOM at batch 64"] in rows
    assert any(r[3].startswith("error: unusable result file") for r in rows)  # the missing cell


def test_hardware_section(sections):
    text = sections["hardware"]
    assert "1x NVIDIA H100 80GB HBM3 (79.6 GiB)" in text and "580.65.06" in text
    assert "Intel(R) Core(TM) i7-10750H CPU @ 2.60GHz" in text and "16.0 GiB" in text
    assert "| PyTorch 2.15.0 | 2.15.0 | cpu | none (CPU build) | none (CPU build) |" in re.sub(r" +", " ", text)
    assert "| PyTorch 2.15.0 | 2.15.0 | cuda12.8-cudnn9 | 12.8 | 9.10.2 |" in re.sub(r" +", " ", text)


def test_beyond_the_seeds(sections):
    vm = sections["version-matrix"]
    assert "cuda12.5-cudnn9.3" in vm and "MFU (%)" in vm and "Images/s per W" in vm
    # columns that are unknown everywhere are left out
    vgg16 = [t for t in parse_tables(vm) if t[1][:2] == ["Framework", "Toolchain"] and
             any("compile" in r[0] for r in t[2])]
    assert vgg16 and "Peak memory" not in vgg16[0][1]
    fails = sections["failures"]
    for status in ("OOM at batch 64", "unsupported", "error", "timeout", "interrupted"):
        assert status in fails
    assert "not valid JSON" in fails
    assert sections["plots"].count("![") == 6


def test_failed_cells_are_never_dropped(frame, sections):
    all_text = "\n".join(sections.values())
    for cell_id in frame.loc[frame["status"] != "ok", "cell_id"]:
        assert cell_id in sections["failures"]
    assert all_text.count("timeout") >= 2  # tutorial block + version matrix (+ failures)


# ------------------------------------------------------------------ comparison

def test_fixture_baseline(sections):
    rows = {r[1]: r for t in parse_tables(sections["comparison"]) for r in t[2]}
    assert rows["PyTorch 2.15.0"][-1] == "regression"           # 20 % slower, 1 % jitter
    assert rows["TensorFlow 2.21.0 NCHW with XLA"][-1] == "within noise"  # 20 % slower, 30 % jitter
    assert rows["TensorFlow 2.21.0"][-1] == "no change"


def _result(step_median, jitter_rel, run_id, batch=32):
    n = 100
    return {
        "schema_version": 1,
        "cell": {"id": "c", "run_id": run_id, "framework": "pytorch", "framework_version": "2.15.0",
                 "toolchain": "cuda12.8-cudnn9", "python": "3.11", "workload": "cnn-synthetic", "model": "resnet50",
                 "synthetic": True, "batch_size": batch, "precision": "fp32", "device": "gpu", "gpus": 1,
                 "iterations": n, "warmup": 10, "options": {}},
        "status": "ok", "message": "",
        "metrics": {"step_time_s": {"n": n, "mean": step_median, "median": step_median, "std": 0.0,
                                    "min": step_median, "max": step_median, "p95": step_median,
                                    "jitter": step_median * jitter_rel},
                    "timed_wall_s": step_median * n, "samples_per_s": batch / step_median},
        "environment": {"machine": "m", "gpus": [{"name": "G"}]},
        "started_at": "", "finished_at": "",
    }


@pytest.mark.parametrize("slowdown, jitter, min_effect, verdict", [
    (1.20, 0.01, 0.05, "regression"),
    (1.20, 0.30, 0.05, "within noise"),
    (1.03, 0.001, 0.05, "no change"),
    (1.03, 0.001, 0.02, "regression"),
    (1 / 1.2, 0.01, 0.05, "improvement"),
])
def test_compare_runs_needs_both_noise_and_min_effect(slowdown, jitter, min_effect, verdict):
    base = build_frame([_result(0.1, jitter, "r1")])
    cur = build_frame([_result(0.1 * slowdown, jitter, "r2")])
    cmp = compare_runs(cur, base, min_effect)
    assert len(cmp) == 1
    r = cmp.iloc[0]
    assert r["verdict"] == verdict
    assert r["speedup"] == pytest.approx(1 / slowdown)
    assert r["baseline_run"] == "r1"


def test_compare_runs_matches_everything_but_the_run():
    base = build_frame([_result(0.1, 0.01, "r1", batch=64)])
    cur = build_frame([_result(0.12, 0.01, "r2", batch=32)])
    assert compare_runs(cur, base, 0.05).empty


# ------------------------------------------------------------------ the stage entry point

def _args(**kw):
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    argv = []
    for key, value in kw.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] + ([str(v) for v in value] if isinstance(value, list) else [str(value)])
    return parser.parse_args(argv)


def test_arguments_and_defaults():
    a = _args()
    assert a.results is None and a.readme is None and a.out == "reports" and a.baseline is None
    assert a.min_effect is None                  # the runs' own noise floor
    assert _args(min_effect=7.5).min_effect == 7.5


def test_run_report_end_to_end(tmp_path, capsys, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("# Mine\n\nHand-written.\n\n<!-- results:cifar10-cnn -->\nold\n<!-- /results:cifar10-cnn -->\n"
                      "\n<!-- results:plots -->\n<!-- /results:plots -->\n\nThe end.\n")
    out = tmp_path / "reports"
    rc = run_report(_args(results=[GPU_RUN, CPU_RUN], out=out, readme=readme, baseline=BASE_RUN.name))
    assert rc == 0, capsys.readouterr().err
    tables = (out / "README-tables.md").read_text()
    for name in SECTION_NAMES:
        assert f"## {SECTION_TITLES[name]}\n" in tables
    assert tables.count("\n## ") == len(SECTION_NAMES)
    assert "regression" in tables
    csv = pd.read_csv(out / "results.csv")
    # the runs given, merged over the other (non-smoke) runs of their results root
    assert len(csv) == sum(len(list(r.glob("*.json"))) for r in (GPU_RUN, CPU_RUN, CI_RUN))
    assert {"speedup", "verdict", "baseline_run", "framework_label", "machine"} <= set(csv.columns)
    assert (csv["verdict"] == "regression").sum() == 1
    text = readme.read_text()
    assert text.startswith("# Mine\n\nHand-written.\n\n<!-- results:cifar10-cnn -->\n") and "old" not in text
    assert "](reports/train-time-gpu-box.png)" in text and (out / "train-time-gpu-box.png").is_file()
    before = readme.read_bytes()
    # a second report changes no byte of the README (plots are not redrawn here, to keep the test fast)
    import runner.report.plots
    drawn = sorted(p.name for p in out.glob("*.png"))
    monkeypatch.setattr(runner.report.plots, "make_plots", lambda df, d: [
        (t, n) for t, n in _plot_list(tables) if n in drawn])
    assert run_report(_args(results=[GPU_RUN, CPU_RUN], out=out, readme=readme, baseline=BASE_RUN.name)) == 0
    assert readme.read_bytes() == before
    assert (out / "README-tables.md").read_text() == tables


def _plot_list(markdown):
    return re.findall(r"!\[([^\]]*)\]\(([^)]*)\)", markdown)


def test_run_report_default_is_the_latest_result_of_every_cell(tmp_path, capsys):
    args = _args(out=tmp_path / "out")
    args.results_root = FIXTURES
    assert run_report(args) == 0
    tables = (tmp_path / "out" / "README-tables.md").read_text()
    for run in (GPU_RUN, CPU_RUN, CI_RUN):   # every run that still holds a cell's latest result
        assert run.name in tables
    assert BASE_RUN.name not in tables       # each of its cells was measured again later
    assert SMOKE_RUN.name not in tables      # smoke runs only when asked


@pytest.mark.parametrize("kind", ["empty-dir", "missing-dir", "root-not-run", "unknown-baseline",
                                  "no-markers", "no-results-root"])
def test_run_report_bad_input_exits_2_without_traceback(tmp_path, capsys, kind):
    readme = None
    results = [GPU_RUN]
    baseline = None
    root = None
    if kind == "empty-dir":
        (tmp_path / "empty").mkdir()
        results = [tmp_path / "empty"]
    elif kind == "missing-dir":
        results = [tmp_path / "nope"]
    elif kind == "root-not-run":
        results = [FIXTURES]
    elif kind == "unknown-baseline":
        baseline = "20990101-000000-dead"
    elif kind == "no-markers":
        readme = tmp_path / "README.md"
        readme.write_text("# Title\n\nNo markers here; `<!-- results:hardware -->` inline is not one.\n")
    elif kind == "no-results-root":
        results = None
        root = tmp_path / "results"
    kw = {"out": tmp_path / "out"}
    if results:
        kw["results"] = results
    if readme:
        kw["readme"] = readme
    if baseline:
        kw["baseline"] = baseline
    args = _args(**kw)
    args.results_root = root
    before = readme.read_bytes() if readme else None
    assert run_report(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1
    if readme:
        assert readme.read_bytes() == before and str(readme) in err and "<!-- results:NAME -->" in err
    if kind == "unknown-baseline":
        assert "20990101-000000-dead" in err and "20261121-090000-b0b0" in err


def test_rows_are_labelled_with_the_version_that_ran():
    from runner.report.frame import ran_version
    assert ran_version("2.15.0", "2.15.0+cu132") == "2.15.0"      # the same release, a local build label
    assert ran_version("2.15.0", "2.13.0+cpu") == "2.13.0+cpu"    # --backend local met another version
    assert ran_version("2.15.0", None) == "2.15.0"                # never started: nothing reported
    assert ran_version(None, "0.10.2") == "0.10.2"


def test_option_values_group_and_label_alike_from_bench_and_runner():
    from runner.report.frame import build_frame
    base = {"schema_version": 1, "status": "ok", "metrics": {}, "environment": {}}
    from_bench = dict(base, cell={"framework": "tensorflow", "workload": "vgg16-step", "batch_size": 16,
                                  "precision": "fp32", "device": "cpu", "gpus": 0,
                                  "options": {"data_format": "NHWC", "xla": "true", "threads": "2"}})
    from_runner = dict(base, status="error",
                       cell=dict(from_bench["cell"], options={"data_format": "NHWC", "xla": True, "threads": 2}))
    df = build_frame([from_bench, from_runner])
    assert df["options_key"].nunique() == 1
    assert options_label(df["options"].iloc[0]) == "NHWC threads=2 with XLA"


def test_throughput_by_batch_is_plotted_for_a_sweep_and_only_then(frame, tmp_path):
    from runner.report.plots import plot_throughput_by_batch
    one = latest_cells(frame)
    one = one[(one["workload"] == "alexnet-fwd") & (one["status"] == "ok") & (one["device"] == "gpu")].head(1)
    assert len(one) == 1
    assert plot_throughput_by_batch(one, tmp_path) == []               # one batch: nothing to draw
    base = int(one["batch"].iloc[0])
    rows = [one.assign(batch=base * k, samples_per_s=one["samples_per_s"] * (1 + k / 10)) for k in (1, 2, 4)]
    rows.append(one.assign(batch=base * 8, status="oom", samples_per_s=float("nan")))
    plots = plot_throughput_by_batch(pd.concat(rows, ignore_index=True), tmp_path)
    assert len(plots) == 1
    title, name = plots[0]
    assert title.startswith("Throughput by batch size, alexnet-fwd") and (tmp_path / name).stat().st_size > 1000
