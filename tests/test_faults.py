"""Fault injection on the real engine, in real containers: whatever breaks, every finished result stays
intact, the cells the fault hit get a result saying what happened, and `--resume` completes the run.
The table of faults and outcomes is docs/faults.md."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from rich.console import Console

from conftest import containers_with_label, plan_and_images
from runner import ROOT
from support import wait_until

pytestmark = pytest.mark.docker

SMOKE = ["--profile", "smoke", "--device", "cpu", "--only", "pytorch"]
WORKLOADS = ["alexnet-fwd", "alexnet-fwdbwd", "resnet50-inference"]


def _quiet():
    return Console(file=open(os.devnull, "w"))


def _results(run_dir):
    from runner.results import load_result
    return {p.stem: load_result(p) for p in run_dir.glob("*.json")}


def test_a_container_killed_mid_cell_is_an_error_and_the_others_finish(torch_image, docker_client, tmp_path,
                                                                       monkeypatch):
    import runner.backends.docker as docker_backend
    from runner.options import RunOptions
    from runner.run import run_plan
    plan, rendered = plan_and_images(only=["pytorch"], workload=WORKLOADS)
    victim = plan.cells[1]
    original = docker_backend.container_spec

    def victim_sleeps(ctx, cell, *args, **kwargs):
        spec = original(ctx, cell, *args, **kwargs)
        if cell.id == victim.id:
            spec.update(entrypoint=["sleep", "600"], command=[])
        return spec

    monkeypatch.setattr(docker_backend, "container_spec", victim_sleeps)

    def running_victim():
        for container in containers_with_label(docker_client, f"dlbench.cell-id={victim.id}"):
            container.reload()
            if container.status == "running":
                return container
        return None

    def kill_victim():
        wait_until(running_victim, 600, "the victim's container").kill(signal="SIGKILL")

    threading.Thread(target=kill_victim, daemon=True).start()
    run_dir, code = run_plan(plan, rendered, RunOptions(results_dir=tmp_path / "results"), _quiet())
    assert code == 1
    results = _results(run_dir)
    assert len(results) == len(plan.cells)
    assert results[victim.id]["status"] == "error" and "code 137 (killed: SIGKILL)" in results[victim.id]["message"]
    assert all(r["status"] == "ok" for cid, r in results.items() if cid != victim.id)


def test_the_runner_killed_mid_run_then_resumed(torch_image, docker_client, tmp_path):
    """SIGKILL leaves no chance to clean up: a stale lock, a leftover container, a cell without a result."""
    root = tmp_path / "results"
    cmd = [sys.executable, "-m", "runner", "run", *SMOKE, "--workload", ",".join(WORKLOADS),
           "--results-dir", str(root), "--run-id", "killed"]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = root / "killed"
    try:
        wait_until(lambda: list(run_dir.glob("*.json")), 600, "a first result")
        wait_until(lambda: containers_with_label(docker_client, "dlbench.run-id=killed"), 300, "a second cell")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first = {p.name: p.read_bytes() for p in run_dir.glob("*.json")}
    assert (run_dir / ".runner.lock").exists()                 # stale: its runner is dead
    again = subprocess.run([sys.executable, "-m", "runner", "run", *SMOKE, "--workload", ",".join(WORKLOADS),
                            "--results-dir", str(root), "--resume", "killed"], cwd=str(ROOT),
                           capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {r["status"] for r in _results(run_dir).values()} == {"ok"} and len(_results(run_dir)) == 3
    for name, data in first.items():
        assert (run_dir / name).read_bytes() == data            # finished results never rewritten
    assert not containers_with_label(docker_client, "dlbench.run-id=killed")


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs for the results: small enough to fill."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here (root is needed): {proc.stderr.strip()}", pytrace=False)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_results_filesystem_loses_nothing_and_resume_completes(torch_image, docker_client, small_fs):
    from runner.options import RunOptions
    from runner.run import run_plan
    import io
    plan, rendered = plan_and_images(only=["pytorch"], workload=["alexnet-fwd"])
    filler = small_fs / "filler"

    def fill_when_the_run_starts():
        wait_until(lambda: (small_fs / "results" / "full" / ".runner.lock").exists(), 300, "the run to start")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass

    threading.Thread(target=fill_when_the_run_starts, daemon=True).start()
    out = io.StringIO()
    options = RunOptions(results_dir=small_fs / "results", run_id="full")
    run_dir, code = run_plan(plan, rendered, options, Console(file=out, width=300))
    text = out.getvalue()
    assert code == 1
    assert "cannot write the result of" in text and "No space left on device" in text
    assert "--resume full" in text
    assert not list(run_dir.glob("*.json")) and not list(run_dir.glob(".*.tmp"))   # nothing half-written
    filler.unlink()
    resumed = RunOptions(results_dir=small_fs / "results", resume="full")
    run_dir, code = run_plan(plan, rendered, resumed, _quiet())
    assert code == 0 and [r["status"] for r in _results(run_dir).values()] == ["ok"]


def test_a_second_runner_on_the_same_run_is_refused(torch_image, tmp_path):
    root = tmp_path / "results"
    cmd = [sys.executable, "-m", "runner", "run", *SMOKE, "--workload", "alexnet-fwd", "--results-dir", str(root),
           "--run-id", "twice"]
    first = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (root / "twice" / ".runner.lock").exists(), 300, "the first runner's lock")
        second = subprocess.run([sys.executable, "-m", "runner", "run", *SMOKE, "--workload", "alexnet-fwd",
                                 "--results-dir", str(root), "--resume", "twice"], cwd=str(ROOT),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "is in progress" in second.stderr, second.stdout + second.stderr
    finally:
        assert first.wait(timeout=900) == 0


class EngineProxy:
    """A unix socket that forwards to the real engine's: stopping it is, for the runner, the engine dying
    (connections reset, then refused) without stopping the engine every other test on this host uses."""

    def __init__(self, path, target="/var/run/docker.sock"):
        self.path, self.target = str(path), target
        self.server = None
        self.conns = []

    def start(self):
        import socket
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(64)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()
        return f"unix://{self.path}"

    def _accept(self, server):
        import socket
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        import socket
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        import socket
        self.server.close()
        os.unlink(self.path)
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass
        self.conns = []


def test_the_engine_dying_mid_run_interrupts_the_cells_and_resume_completes(torch_image, docker_client, tmp_path):
    proxy = EngineProxy(tmp_path / "engine.sock")
    env = dict(os.environ, DOCKER_HOST=proxy.start())
    root = tmp_path / "results"
    cmd = [sys.executable, "-m", "runner", "run", *SMOKE, "--workload", ",".join(WORKLOADS),
           "--results-dir", str(root)]
    proc = subprocess.Popen(cmd + ["--run-id", "engine-lost"], cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    run_dir = root / "engine-lost"
    try:
        wait_until(lambda: list(run_dir.glob("*.json")), 600, "a first result")
        wait_until(lambda: containers_with_label(docker_client, "dlbench.run-id=engine-lost"), 300, "a second cell")
    finally:
        proxy.stop()                                   # the engine "dies"
        out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out
    results = _results(run_dir)
    assert len(results) == len(WORKLOADS), out
    lost = [r for r in results.values() if r["status"] == "interrupted"]
    assert lost and all("Docker engine stopped answering" in r["message"] and "--resume" in r["message"]
                        for r in lost), out
    finished = {p.name: p.read_bytes() for p in run_dir.glob("*.json") if _results(run_dir)[p.stem]["status"] == "ok"}
    assert finished

    env["DOCKER_HOST"] = proxy.start()                 # `make engine`
    again = subprocess.run(cmd + ["--resume", "engine-lost"], cwd=str(ROOT), env=env, capture_output=True,
                           text=True, timeout=1200)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {r["status"] for r in _results(run_dir).values()} == {"ok"}
    for name, data in finished.items():
        assert (run_dir / name).read_bytes() == data
    proxy.stop()
    wait_until(lambda: not containers_with_label(docker_client, "dlbench.run-id=engine-lost"), 120,
               "the run's containers to go")
