"""The command line with hostile or misplaced arguments: exit 2 and one paragraph, never a traceback,
and options mean the same before and after the stage."""

import os
from pathlib import Path

import pytest

from conftest import runner_cli
from runner.cli import build_parser, parse_args
from support import MINIMAL_MATRIX

MINIMAL = MINIMAL_MATRIX


def refused(*args, needles=()):
    proc = runner_cli(*args, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    text = " ".join(proc.stderr.split())
    assert "error:" in text, proc.stderr
    for needle in needles:
        assert needle in text, proc.stderr
    return text


# ------------------------------------------------------------------ options before or after the stage

@pytest.mark.parametrize("argv", [
    ["--only", "pytorch", "plan"], ["plan", "--only", "pytorch"],
    ["--only", "pytorch", "render"], ["render", "--only", "pytorch"],
])
def test_selection_options_work_before_and_after_the_stage(argv):
    args = parse_args(build_parser(), argv)
    assert args.only == ["pytorch"]


def test_top_level_value_is_not_overwritten_by_the_stage_default(tmp_path):
    args = parse_args(build_parser(), ["--matrix", str(tmp_path / "m.yaml"), "--profile", "smoke", "plan"])
    assert args.matrix == tmp_path / "m.yaml" and args.profile == "smoke"
    args = parse_args(build_parser(), ["--readme", str(tmp_path / "R.md"), "report"])
    assert str(args.readme) == str(tmp_path / "R.md")


def test_stage_defaults_still_apply():
    args = parse_args(build_parser(), ["report"])
    assert args.readme is None and args.out == "reports"  # report writes no README unless asked
    args = parse_args(build_parser(), [])
    assert args.readme.name == "README.md" and args.parallel == "auto"


def test_only_before_the_stage_is_not_dropped():
    refused("--only", "caffe", "plan", needles=["--only caffe: not in"])


def test_matrix_before_the_stage_is_used(tmp_path):
    refused("--matrix", tmp_path / "missing.yaml", "plan", needles=[str(tmp_path / "missing.yaml")])


def test_option_the_stage_does_not_take_is_refused():
    text = refused("--rebuild", "plan", needles=["--rebuild", "stage `plan`"])
    assert text.count("error:") == 1


def test_dry_run_without_a_stage_prints_the_plan(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MINIMAL)
    proc = runner_cli("--dry-run", "--matrix", path, "--device", "cpu", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "vgg16-step" in proc.stdout and "1 cells" in proc.stdout


# ------------------------------------------------------------------ argument types

@pytest.mark.parametrize("argv, needles", [
    (["run", "--timeout", "-5"], ["--timeout", "out of range"]),
    (["run", "--timeout", "0"], ["--timeout"]),
    (["run", "--timeout", "soon"], ["--timeout", "whole number"]),
    (["run", "--parallel", "0"], ["--parallel"]),
    (["run", "--parallel", "many"], ["--parallel"]),
    (["run", "--run-id", "../../etc"], ["--run-id", "run id"]),
    (["--run-id", "../../etc"], ["--run-id"]),
    (["run", "--resume", ".."], ["--resume"]),
    (["run", "--run-id", "a/b"], ["--run-id"]),
    (["run", "--run-id", ".hidden"], ["--run-id"]),
    (["run", "--run-id", "x\ny"], ["--run-id"]),
    (["plan", "--commands", "--run-id", "../x"], ["--run-id"]),
    (["plan", "--only", "../pytorch"], ["--only"]),
    (["plan", "--profile", "smoke\nx"], ["--profile"]),
])
def test_bad_argument_values_exit_2_with_one_paragraph(argv, needles, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(build_parser(), argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    message = [line for line in err.splitlines() if "error:" in line]
    assert len(message) == 1, err
    for needle in needles:
        assert needle in message[0], err


def test_run_id_over_the_cli_exits_2_without_traceback():
    refused("run", "--run-id", "../../etc", needles=["--run-id", "run id"])


def test_check_run_id_accepts_generated_ids_and_refuses_traversal():
    from runner.errors import UserError
    from runner.results import check_run_id, new_run_id
    run_id = new_run_id()
    assert check_run_id(run_id) == run_id
    for bad in ("..", ".", "../x", "a/b", "", "-rf", "x" * 101, "a\x00b", None):
        with pytest.raises(UserError):
            check_run_id(bad)


# ------------------------------------------------------------------ render --out and --readme

def _render(out, *extra):
    return runner_cli("render", "--only", "pytorch", "--device", "cpu", "--profile", "smoke", "--out", out, *extra,
                      timeout=300)


def test_render_out_onto_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    refused("render", "--only", "pytorch", "--device", "cpu", "--out", target, needles=[str(target), "--out"])
    assert target.read_text() == "keep me"


def test_render_out_below_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    refused("render", "--only", "pytorch", "--device", "cpu", "--out", target / "sub", needles=["--out"])


def test_render_does_not_write_through_a_symlink(tmp_path):
    out = tmp_path / "out"
    proc = _render(out)
    assert proc.returncode == 0, proc.stderr
    written = sorted(out.glob("*.Dockerfile"))
    assert written
    victim = tmp_path / "victim"
    victim.write_text("precious")
    written[0].unlink()
    written[0].symlink_to(victim)
    refused("render", "--only", "pytorch", "--device", "cpu", "--profile", "smoke", "--out", out,
            needles=["symbolic link", written[0].name])
    assert victim.read_text() == "precious" and written[0].is_symlink()


def test_render_out_that_is_read_only(tmp_path):
    if os.geteuid() == 0:
        target = Path("/proc/self/dlbench-out")  # not writable even for root
    else:
        target = tmp_path / "ro" / "out"
        target.parent.mkdir()
        target.parent.chmod(0o500)
    refused("render", "--only", "pytorch", "--device", "cpu", "--out", target, needles=["--out"])


@pytest.mark.parametrize("before", [True, False])
def test_symlinked_readme_is_refused_and_left_alone(tmp_path, before):
    real = tmp_path / "README.real.md"
    real.write_text("# x\n<!-- results:hardware -->\n<!-- /results:hardware -->\n")
    link = tmp_path / "README.md"
    link.symlink_to(real)
    argv = ["--readme", link, "report"] if before else ["report", "--readme", link]
    refused(*argv, "--results", "tests/fixtures/results/20261122-070000-cd34", "--out", tmp_path / "rep",
            needles=["symbolic link", str(real)])
    assert link.is_symlink()


def test_atomic_write_refuses_a_symlink(tmp_path):
    """The library path (report.regenerate_readme, write_result) refuses too, not only the CLI."""
    from runner.errors import UserError
    from runner.results import atomic_write_text
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "README.md"
    link.symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"):
        atomic_write_text(link, "new", mode=0o644)
    assert victim.read_text() == "precious" and link.is_symlink()


def test_plan_prints_option_values_literally(tmp_path):
    """Rich would read `[/x]` in a value as markup (and raise on a closing tag that opens nothing)."""
    path = tmp_path / "m.yaml"
    path.write_text(MINIMAL.replace("{batch_sizes: [16]}",
                                    "{batch_sizes: [16], variants: [{options: {mode: '[/x] [bold]y'}}]}"))
    proc = runner_cli("plan", "--matrix", path, "--device", "cpu", timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "mode=[/x] [bold]y" in proc.stdout
