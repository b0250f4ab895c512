"""The report shows how sure each number is (± = 95 % CI half-width, ~ = target missed), compares runs by
their intervals, never publishes a broken measurement, and a partial or smoke run never wipes the README.

Golden files for the calibrated view: tests/golden/report/calibrated/ (UPDATE_GOLDEN=1 to rewrite; review
the diff)."""

import argparse
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from runner.report import (
    EMPTY_SECTION, build_frame, build_sections, compare_runs, comparison_section, latest_cells, load_frame,
    run_report,
)
from runner.report.frame import run_order
from runner.report.plots import _rate_err
from runner.results import load_run

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures" / "results"
BASE_RUN = FIXTURES / "20261121-090000-b0b0"
GPU_RUN = FIXTURES / "20261122-061500-ab12"
CPU_RUN = FIXTURES / "20261122-070000-cd34"
CI_RUN = FIXTURES / "20261123-080000-ef56"
SMOKE_RUN = FIXTURES / "20261123-090000-5a0e"
GOLDEN = HERE / "golden" / "report" / "calibrated"
CALIBRATED = ("resnet50-inference", "vgg16-step", "cnn-synthetic", "alexnet", "version-matrix", "settings")


@pytest.fixture(scope="module")
def view():
    return latest_cells(load_frame([GPU_RUN, CPU_RUN, CI_RUN]))


@pytest.fixture(scope="module")
def sections(view):
    return build_sections(view)


@pytest.mark.parametrize("name", CALIBRATED)
def test_calibrated_sections_match_golden(sections, name):
    text = (sections[name] or EMPTY_SECTION).strip("\n") + "\n"
    path = GOLDEN / f"{name}.md"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from {path} (UPDATE_GOLDEN=1 to accept)"


def test_how_each_framework_ran_comes_from_the_recorded_settings(sections):
    text = __import__("re").sub(r" +", " ", sections["settings"])
    assert "| PyTorch 2.15.0 | gpu | fp32 | NHWC (channels_last) | eager |" in text
    assert "| TensorFlow 2.21.0 | gpu | fp32 | NHWC | tf.function |" in text
    # the repeated resnet50-inference cell is one cell; vgg16 + cnn-synthetic + resnet50 = 3 PyTorch cells
    assert text.split("| PyTorch 2.15.0 |")[1].splitlines()[0].rstrip().endswith("| 3 |")
    assert "- `fp32`: fp32 weights and math" in text and "What is timed" in text


def test_values_carry_their_ci_half_width(sections):
    # vgg16: median 32.594 ms, CI +/- 0.4 % -> +/- 0.130 ms; the older TF rows keep span / N, no +/-
    vgg = " ".join(sections["vgg16-step"].split(" "))
    vgg = __import__("re").sub(r" +", " ", vgg)
    assert "| PyTorch 2.15.0 | 32.594 ± 0.130 ms |" in vgg
    assert "| TensorFlow 2.21.0 NCHW with XLA | 33.067 ms |" in vgg
    assert "Median time of one VGG16 training step" in vgg and "N = 100 consecutive" in vgg
    assert "±: half-width of the 95 % confidence interval of the median step time" in vgg
    # seed 004's +/- is the CI half-width now, and the footnote says so
    alex = sections["alexnet"]
    assert "Forward across 50 steps, 0.0131 +/- 0.0001 sec / batch" in alex
    assert "+/-: half-width of the 95 % confidence interval" in alex
    # a cell whose CI missed its +/- 2 % target is marked, with the footnote
    syn = sections["cnn-synthetic"]
    assert "~529.8 ± 19.6" in syn
    assert "~: the interval is wider than the target (±2 % of the value)" in syn
    # tables without any calibrated result render as before: no ±, no footnote
    cpu_block = [b for b in syn.split("Measured on ") if b.startswith("**cpu-box**")]
    assert cpu_block and all("±" not in b and "~" not in b for b in cpu_block)


def test_several_processes_of_a_cell_become_one_row(view, sections):
    rows = view[(view["workload"] == "resnet50-inference") & (view["device"] == "gpu")
                & (view["framework"] == "pytorch")]
    assert len(rows) == 1
    r = rows.iloc[0]
    assert r["head_s"] == pytest.approx((0.0455 + 0.0461) / 2)
    assert r["samples_per_s"] == pytest.approx(64 / r["head_s"])
    # two processes cannot give a 95 % interval of their median: min..max, marked ~
    assert (r["head_low_s"], r["head_high_s"]) == (0.0455, 0.0461) and bool(r["ci_missed"])
    assert r["repeat"] == 2
    assert "in 2 process(es) per cell" in sections["resnet50-inference"]
    assert "median of 160 timed samples (160 steps)" in sections["resnet50-inference"]


def test_error_bars_from_the_rate_ci(view):
    syn = view[(view["workload"] == "cnn-synthetic") & view["rate_low"].notna()]
    low, high = _rate_err(syn)
    assert (low > 0).all() and (high > 0).all()
    old = view[(view["workload"] == "cnn-synthetic") & view["rate_low"].isna()]
    assert (_rate_err(old)[0] == 0).all()


# ------------------------------------------------------------------ --baseline by intervals

def _result(median, rel_half, run_id, finished="2026-11-22T06:20:00Z"):
    low, high = median * (1 - rel_half), median * (1 + rel_half)
    batch = 32
    return {
        "schema_version": 1,
        "cell": {"id": "c", "run_id": run_id, "framework": "pytorch", "framework_version": "2.15.0",
                 "toolchain": "cuda12.8-cudnn9", "python": "3.11", "workload": "cnn-synthetic", "model": "resnet50",
                 "synthetic": True, "batch_size": batch, "precision": "fp32", "device": "gpu", "gpus": 1,
                 "iterations": 50, "warmup": 10, "options": {}},
        "status": "ok", "message": "",
        "metrics": {"step_time_s": {"n": 60, "mean": median, "median": median, "std": 0.0, "min": low,
                                    "max": high, "p95": high, "jitter": 0.0},
                    "timed_wall_s": median * 60, "samples_per_s": batch / median,
                    "samples_per_s_ci": [batch / high, batch / low],
                    "headline": {"metric": "step_time_s", "statistic": "median", "value": median, "ci_low": low,
                                 "ci_high": high, "confidence": 0.95, "n": 60, "rel_half_width": rel_half,
                                 "stop_reason": "target_met", "target_rel_half_width": 0.02}},
        "environment": {"machine": "m", "gpus": [{"name": "G"}]},
        "started_at": "", "finished_at": finished,
    }


@pytest.mark.parametrize("slowdown, rel_half, min_effect, verdict, test", [
    (1.20, 0.01, 0.05, "regression", "95 % CIs separate"),
    (1.20, 0.15, 0.05, "within noise", "95 % CIs overlap"),     # large, but the intervals overlap
    (1.03, 0.001, 0.05, "no change", "95 % CIs separate"),      # real, but under the minimum effect
    (1.03, 0.001, 0.02, "regression", "95 % CIs separate"),
    (1 / 1.2, 0.01, 0.05, "improvement", "95 % CIs separate"),
])
def test_a_change_needs_separate_intervals_and_the_minimum_effect(slowdown, rel_half, min_effect, verdict, test):
    base = build_frame([_result(0.1, rel_half, "r1")])
    cur = build_frame([_result(0.1 * slowdown, rel_half, "r2")])
    cmp = compare_runs(cur, base, min_effect)
    assert len(cmp) == 1
    r = cmp.iloc[0]
    assert (r["verdict"], r["test"]) == (verdict, test)
    text = comparison_section(cmp, "r1", min_effect)
    assert test in text and "95 % confidence intervals" in text and "±" in text


# ------------------------------------------------------------------ broken measurements

@pytest.mark.parametrize("rate_text", ["-5.0", "NaN", "Infinity", "-Infinity"])
def test_a_negative_nan_or_infinite_rate_cannot_reach_a_table(tmp_path, rate_text):
    run = tmp_path / "20261124-000000-dead"
    run.mkdir()
    good = json.loads((CPU_RUN / "pytorch-2.15.0-cpu-py3.11-resnet50-inference-b16-fp32-cpu.json").read_text())
    good["cell"]["run_id"] = run.name
    text = json.dumps(good, indent=2).replace('"samples_per_s": 20.0', '"samples_per_s": ' + rate_text)
    assert rate_text in text
    (run / "pytorch-2.15.0-cpu-py3.11-resnet50-inference-b16-fp32-cpu.json").write_text(text)
    (result,) = load_run(run)
    assert result["status"] == "error" and "unusable result file" in result["message"]
    sections = build_sections(latest_cells(load_frame([run])))
    published = "\n".join(sections.values())
    assert "error" in sections["resnet50-inference"]
    cells = {c.strip().lower() for line in published.splitlines() for c in line.split("|")}
    assert not cells & {rate_text.lower(), "nan", "inf", "-inf", "infinity", "-infinity", "-5.0"}
    assert "20.0" not in sections["resnet50-inference"]


def test_an_unreadable_file_does_not_replace_an_older_good_result(tmp_path):
    root = tmp_path / "results"
    shutil.copytree(CPU_RUN, root / CPU_RUN.name)
    later = root / "20261124-000000-beef"
    later.mkdir()
    name = "pytorch-2.15.0-cpu-py3.11-resnet50-inference-b16-fp32-cpu.json"
    (later / name).write_text((CPU_RUN / name).read_text().replace('"samples_per_s": 20.0', '"samples_per_s": NaN'))
    view = latest_cells(load_frame([root / CPU_RUN.name, later]))
    row = view[view["cell_id"] == name[:-5]]
    assert len(row) == 1 and row.iloc[0]["status"] == "ok" and row.iloc[0]["run_id"] == CPU_RUN.name


# ------------------------------------------------------------------ partial runs never wipe the README

README = """# Results

<!-- results:vgg16-step -->
<!-- /results:vgg16-step -->

<!-- results:lenet-mnist -->
<!-- /results:lenet-mnist -->

<!-- results:cifar10-cnn -->
<!-- /results:cifar10-cnn -->
"""


@pytest.fixture()
def root(tmp_path):
    root = tmp_path / "results"
    for run in (GPU_RUN, CPU_RUN, CI_RUN, SMOKE_RUN):
        shutil.copytree(run, root / run.name)
    return root


def _pipeline_report(run_dir, readme, out, root):
    """Exactly how runner/cli.py's cmd_run calls the report stage after a run."""
    return run_report(argparse.Namespace(results=[run_dir], readme=readme, out=out, baseline=None,
                                         min_effect=5.0, results_root=root))


def test_a_partial_run_replaces_only_the_rows_it_measured(root, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert _pipeline_report(root / CI_RUN.name, readme, tmp_path / "reports", root) == 0
    text = readme.read_text()
    vgg = text.split("<!-- results:vgg16-step -->")[1].split("<!-- /results:vgg16-step -->")[0]
    assert "32.594 ± 0.130 ms" in vgg                        # the partial run's row
    assert "TensorFlow 2.21.0 NCHW with XLA" in vgg           # the older run's rows stay
    assert CI_RUN.name in vgg and GPU_RUN.name in vgg         # the table names both runs
    assert "36.215" not in vgg                                # the replaced row is gone
    assert EMPTY_SECTION not in text                          # nothing wiped
    assert "Training: 88.41 s" in text and "77.5" in text
    assert SMOKE_RUN.name not in text


def test_a_smoke_run_never_touches_the_readme_unless_asked(root, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert _pipeline_report(root / SMOKE_RUN.name, readme, tmp_path / "reports", root) == 0
    assert readme.read_text() == README
    assert "left alone" in capsys.readouterr().out
    # and it is not merged into a later report's README either
    assert _pipeline_report(root / CI_RUN.name, readme, tmp_path / "reports", root) == 0
    assert SMOKE_RUN.name not in readme.read_text()
    # unless asked
    args = argparse.Namespace(results=[root / SMOKE_RUN.name], readme=readme, out=tmp_path / "reports",
                              baseline=None, min_effect=5.0, results_root=root, include_smoke=True)
    assert run_report(args) == 0
    assert SMOKE_RUN.name in readme.read_text()


def test_runs_selects_explicitly(root, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    args = argparse.Namespace(results=None, runs=CPU_RUN.name, readme=readme, out=tmp_path / "reports",
                              baseline=None, min_effect=5.0, results_root=root)
    assert run_report(args) == 0
    text = readme.read_text()
    assert CPU_RUN.name in text and GPU_RUN.name not in text and CI_RUN.name not in text
    args.runs = "no-such-run"
    assert run_report(args) == 2
    assert "--runs: no run `no-such-run`" in capsys.readouterr().err


def test_latest_means_latest_finished_not_the_name_that_sorts_last():
    frame = build_frame([_result(0.1, 0.01, "cpu-idle-1006", finished="2026-11-20T10:00:00Z"),
                         _result(0.2, 0.01, "20261122-000000-aaaa", finished="2026-11-22T00:00:00Z")])
    assert run_order(frame) == {"cpu-idle-1006": 0, "20261122-000000-aaaa": 1}
    (row,) = [r for _, r in latest_cells(frame).iterrows()]
    assert row["run_id"] == "20261122-000000-aaaa"


def _pairs(changes, rel_half=0.02):
    """A baseline and a current frame of len(changes) alexnet-like cells, the current one slower by `change`."""
    cur_rows, base_rows = [], []
    for i, change in enumerate(changes):
        for rows, step in ((base_rows, 0.1), (cur_rows, 0.1 * (1 + change))):
            rows.append(dict(machine="m", framework="pytorch", version="2.15.0", toolchain="cpu", python="3.11",
                             workload="alexnet-fwd", model=None, dataset=None, synthetic=False, batch=8 + i,
                             precision="fp32", device="cpu", gpus=0, options_key="{}", iterations=None,
                             epochs=None, warmup=None, status="ok", run_id="b" if rows is base_rows else "c",
                             cell_id=f"c{i}", samples_per_s=8 / step, rate_low=8 / step / (1 + rel_half),
                             rate_high=8 / step / (1 - rel_half), head_low_s=step * (1 - rel_half),
                             head_high_s=step * (1 + rel_half), step_median_s=step, step_jitter_s=0.0,
                             train_time_s=None, total_time_s=None, options={}, framework_label="PyTorch 2.15.0"))
    return pd.DataFrame(cur_rows), pd.DataFrame(base_rows)


def test_the_default_minimum_effect_is_the_runs_own_noise_floor():
    from runner.report.compare import noise_floor
    # twelve cells moved by process noise (±8 %), one really 40 % slower
    noise = [0.08, -0.07, 0.05, -0.08, 0.02, -0.03, 0.09, -0.06, 0.07, -0.05, 0.01, -0.02]
    cur, base = _pairs(noise + [0.40])
    cmp = compare_runs(cur, base)
    floor = cmp.attrs["min_effect"]
    assert floor == pytest.approx(noise_floor(cmp["change"]))
    assert 0.08 < floor < 0.25 and "noise floor of these two runs" in cmp.attrs["min_effect_how"]
    verdicts = dict(zip(cmp["cell_id"], cmp["verdict"]))
    assert verdicts.pop("c12") == "regression"
    assert set(verdicts.values()) == {"no change"}             # the ±8 % of noise is not a finding
    # with the old fixed 5 % the noise would be reported as regressions and improvements
    fixed = compare_runs(cur, base, 0.05)
    assert (fixed["verdict"] == "regression").sum() > 1
    assert "as given with --min-effect" in comparison_section(fixed, "b")
    assert f"{floor * 100:.3g} %" in comparison_section(cmp, "b")


def test_too_few_cells_for_a_floor_fall_back_to_5_percent():
    cur, base = _pairs([0.06, -0.01, 0.0])
    cmp = compare_runs(cur, base)
    assert cmp.attrs["min_effect"] == 0.05 and "fewer than 8 cells" in cmp.attrs["min_effect_how"]
    assert compare_runs(cur.iloc[0:0], base).attrs["min_effect"] == 0.05
