"""Hostile input on the backend side: the shell script `plan --commands` writes, and the result files a
cell (untrusted: it runs arbitrary framework code) leaves in its staging directory."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import plan_and_images
from runner.backends.script import shell_script
from runner.backends.staging import read_staged_result
from runner.results import MAX_RESULT_BYTES


@pytest.mark.parametrize("run_id", ["x$(touch pwned)", "x`touch pwned`", "x'; touch pwned; '", "x\"$(touch pwned)\""])
def test_script_quotes_what_it_interpolates(tmp_path, run_id):
    """Even a run id that slipped past the CLI's check cannot run a command when the script runs."""
    plan, _ = plan_and_images(only=["pytorch"], workload=["alexnet-fwd"])
    script = tmp_path / "cells.sh"
    script.write_text(shell_script(plan, run_id))
    env = {"PATH": os.environ["PATH"], "PYTHON": "true", "HOME": str(tmp_path)}
    proc = subprocess.run(["sh", str(script)], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=60)
    assert not (tmp_path / "pwned").exists(), proc.stdout + proc.stderr
    assert (tmp_path / "results" / run_id / "logs").is_dir()      # the literal name, as a directory


def test_cli_refuses_a_run_id_that_is_not_a_plain_name(run_cli):
    proc = run_cli("plan", "--commands", "--run-id", "x$(touch pwned)")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_staged_result_regular_file_is_read(tmp_path):
    path = tmp_path / "r.json"
    path.write_bytes(b'{"ok": 1}')
    assert read_staged_result(path) == (b'{"ok": 1}', None)
    assert read_staged_result(tmp_path / "none.json") == (None, None)


def test_staged_result_symlink_is_not_followed(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root's file")
    secret.chmod(0o600)
    for target in (secret, "/dev/zero"):
        link = tmp_path / "r.json"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        data, problem = read_staged_result(link)
        assert data is None and "symbolic link" in problem


def test_staged_result_fifo_and_directory_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    data, problem = read_staged_result(fifo)
    assert data is None and "not a regular file" in problem
    (tmp_path / "dir.json").mkdir()
    data, problem = read_staged_result(tmp_path / "dir.json")
    assert data is None and problem


def test_staged_result_over_the_cap_is_refused(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(MAX_RESULT_BYTES + 1)    # sparse: costs no disk
    data, problem = read_staged_result(big)
    assert data is None and "limit" in problem


def test_report_does_not_write_through_a_link_in_out(tmp_path, run_cli):
    from runner import ROOT
    fixture = ROOT / "tests" / "fixtures" / "results"
    run = next(p for p in sorted(fixture.iterdir()) if p.is_dir() and list(p.glob("*.json")))
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "results.csv").symlink_to(victim)
    proc = run_cli("report", "--results", run, "--out", out)
    assert proc.returncode == 2 and "symbolic links" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert victim.read_text() == "keep me"


def test_the_commands_script_stops_a_sweep_at_its_first_oom(tmp_path):
    """`plan --commands` keeps the runner's sweep rule: smallest batch first, the first out-of-memory (bench's
    exit 2) ends it, the larger batches are not run and are not failures; a rerun stays stopped."""
    import dataclasses
    plan, _ = plan_and_images(only=["pytorch"], workload=["alexnet-fwd"])
    base = plan.cells[0]
    cells = [dataclasses.replace(base, batch_size=b, sweep=True) for b in (4, 8, 16, 32)]
    plan = dataclasses.replace(plan, cells=cells)
    fake = tmp_path / "fake-python"
    # exits 2 (bench's out-of-memory) from batch 16 on; notes every batch it is asked to run
    fake.write_text('#!/bin/sh\nb=$(echo "$*" | sed -n "s/.*--batch-size \\([0-9]*\\).*/\\1/p")\n'
                    f'echo "$b" >> {tmp_path}/ran\n[ "$b" -lt 16 ]  || exit 2\n')
    fake.chmod(0o755)
    script = tmp_path / "cells.sh"
    script.write_text(shell_script(plan, "sw"))
    env = {"PATH": os.environ["PATH"], "PYTHON": str(fake), "HOME": str(tmp_path)}
    proc = subprocess.run(["sh", str(script)], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "ran").read_text().split() == ["4", "8", "16"]
    assert "b32" in proc.stdout and "not run: its batch sweep ran out of memory" in proc.stdout

    # a rerun after bench wrote the oom result of batch 16: 32 is still not run
    (tmp_path / "ran").unlink()
    run_dir = tmp_path / "results" / "sw"
    (run_dir / f"{cells[0].name}.json").write_text('{"status": "ok"}')
    (run_dir / f"{cells[1].name}.json").write_text('{"status": "ok"}')
    (run_dir / f"{cells[2].name}.json").write_text('{\n  "status": "oom"\n}')
    proc = subprocess.run(["sh", str(script)], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and not (tmp_path / "ran").exists(), proc.stdout + proc.stderr
