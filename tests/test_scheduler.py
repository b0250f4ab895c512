"""The backend-neutral run stage against a fake backend (runner/backends' protocol, registered under
"fake"): the state machine, the lock, --parallel, interrupts and resume, in seconds and without an engine.
The real backends run the same run_plan in test_docker_*.py, test_local_backend.py and test_slurm.py."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from conftest import plan_and_images
from runner import backends
from runner.contract import Execution, cell_record
from runner.errors import UserError
from runner.options import RunOptions
from runner.results import error_result, load_result
from runner.run import run_plan
from runner.scheduler import LOCK_NAME, take_lock


class FakeBackend:
    """Writes an ok result for each cell, unless `behaviour[cell.id]` says otherwise."""
    name = "fake"
    uses_images = False
    behaviour: dict = {}
    delay_s = 0.0
    running = 0
    max_running = 0
    executed: list = []
    guard = threading.Lock()

    def __init__(self, options, console):
        self.options = options

    def machine(self):
        return "fake machine"

    gpus: list = []
    cpus: list = []
    spans: list = []     # (cell name, device, gpu ids, cpus, start, end) of every execute

    def gpu_ids(self, plan):
        return list(FakeBackend.gpus)

    def cpu_ids(self):
        return list(FakeBackend.cpus)

    def default_parallel(self, plan, gpu_count):
        return 1

    def prepare(self, ctx, cells, image_of, fail):
        keep = []
        for cell in cells:
            if FakeBackend.behaviour.get(cell.name) == "unbuildable":
                fail(cell, "image could not be built (fake)", None)
            else:
                keep.append(cell)
        return keep

    def execute(self, ctx, cell, image, staging, log_path, gpu_ids, timeout, cpus=None):
        cls = FakeBackend
        start = time.monotonic()
        with cls.guard:
            cls.running += 1
            cls.max_running = max(cls.max_running, cls.running)
            cls.executed.append(cell.name)
        try:
            time.sleep(cls.delay_s)
            what = cls.behaviour.get(cell.name, "ok")
            if what == "interrupt":
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)
                return Execution(error="interrupted", seconds=0.5)
            if what == "crash":
                with open(log_path, "a") as log:
                    log.write("Segmentation fault (fake)\n")
                return Execution(exit_code=139, seconds=0.1)
            if what == "timeout":
                return Execution(timed_out=True, seconds=timeout)
            if what == "oom":
                return Execution(exit_code=137, oom_killed=True, seconds=0.1)
            if what == "garbage":
                return Execution(exit_code=0, result=b"{not json", seconds=0.1)
            obj = error_result(cell_record(cell, ctx.run_id, ctx.plan.profile), "error", "")
            obj["status"] = "ok"
            return Execution(exit_code=0, result=json.dumps(obj).encode(), seconds=0.1)
        finally:
            with cls.guard:
                cls.running -= 1
                cls.spans.append((cell.name, cell.device, list(gpu_ids), cpus, start, time.monotonic()))

    def stop_all(self, ctx):
        return 0

    @classmethod
    def clean(cls, console):
        return 0


@pytest.fixture
def fake(tmp_path):
    backends.register("fake", FakeBackend)
    FakeBackend.behaviour, FakeBackend.delay_s, FakeBackend.executed = {}, 0.0, []
    FakeBackend.running = FakeBackend.max_running = 0
    FakeBackend.gpus, FakeBackend.cpus, FakeBackend.spans = [], [], []
    plan, rendered = plan_and_images(only=["pytorch"], workload=["alexnet-fwd", "vgg16-step", "lenet-mnist"])
    assert len(plan.cells) >= 3
    console = Console(file=open(os.devnull, "w"))
    return plan, rendered, console, tmp_path / "results"


def _statuses(run_dir: Path) -> dict:
    return {p.stem: load_result(p)["status"] for p in run_dir.glob("*.json")}


def test_every_cell_gets_one_result(fake):
    plan, rendered, console, root = fake
    run_dir, code = run_plan(plan, rendered, RunOptions(backend="fake", results_dir=root), console)
    assert code == 0
    assert _statuses(run_dir) == {c.id: "ok" for c in plan.cells}
    assert not (run_dir / LOCK_NAME).exists() and not (run_dir / ".cells").exists()


def test_failures_become_results_and_exit_1(fake):
    plan, rendered, console, root = fake
    a, b, c = plan.cells[:3]
    FakeBackend.behaviour = {a.id: "crash", b.id: "timeout", c.id: "garbage"}
    run_dir, code = run_plan(plan, rendered, RunOptions(backend="fake", results_dir=root, timeout=7), console)
    assert code == 1
    results = {p.stem: load_result(p) for p in run_dir.glob("*.json")}
    assert results[a.id]["status"] == "error" and "code 139" in results[a.id]["message"]
    assert "Segmentation fault (fake)" in results[a.id]["log_tail"]
    assert results[b.id]["status"] == "timeout" and "7s" in results[b.id]["message"]
    assert results[c.id]["status"] == "error" and "not valid JSON" in results[c.id]["message"]
    assert (run_dir / "logs" / f"{c.id}.invalid.json").read_bytes() == b"{not json"


def test_prepare_failures_are_results(fake):
    plan, rendered, console, root = fake
    bad = plan.cells[0]
    FakeBackend.behaviour = {bad.id: "unbuildable"}
    run_dir, code = run_plan(plan, rendered, RunOptions(backend="fake", results_dir=root), console)
    assert code == 1 and bad.id not in FakeBackend.executed
    assert load_result(run_dir / f"{bad.id}.json")["message"] == "image could not be built (fake)"


@pytest.mark.parametrize("parallel,expect", [(1, 1), (3, 3)])
def test_parallel_runs_that_many_cells_at_a_time(fake, parallel, expect):
    """CPU cells side by side only when asked (--share-cpus); by default they run alone (below)."""
    plan, rendered, console, root = fake
    FakeBackend.delay_s = 0.4
    run_dir, code = run_plan(plan, rendered, RunOptions(backend="fake", results_dir=root, parallel=parallel,
                                                        share_cpus=True), console)
    assert code == 0 and FakeBackend.max_running == min(expect, len(plan.cells))


def test_cpu_cells_run_alone_by_default_even_with_parallel(fake):
    plan, rendered, console, root = fake
    FakeBackend.delay_s = 0.2
    run_dir, code = run_plan(plan, rendered, RunOptions(backend="fake", results_dir=root, parallel=3), console)
    assert code == 0 and FakeBackend.max_running == 1 and len(FakeBackend.spans) == len(plan.cells)


def test_interrupt_records_the_rest_and_resume_finishes(fake):
    plan, rendered, console, root = fake
    first, second = plan.cells[0], plan.cells[1]
    FakeBackend.behaviour = {second.id: "interrupt"}
    run_dir, code = run_plan(plan, rendered, RunOptions(backend="fake", results_dir=root, run_id="r1"), console)
    assert code == 130
    statuses = _statuses(run_dir)
    assert statuses[first.id] == "ok"
    assert all(statuses[c.id] == "interrupted" for c in plan.cells[1:])
    finished = (run_dir / f"{first.id}.json").read_bytes()

    FakeBackend.behaviour, FakeBackend.executed = {}, []
    run_dir2, code = run_plan(plan, rendered, RunOptions(backend="fake", results_dir=root, resume="r1"), console)
    assert run_dir2 == run_dir and code == 0
    assert first.id not in FakeBackend.executed and set(FakeBackend.executed) == {c.id for c in plan.cells[1:]}
    assert (run_dir / f"{first.id}.json").read_bytes() == finished          # never rewritten
    assert len(list((run_dir / "superseded").glob("*.json"))) == len(plan.cells) - 1
    assert set(_statuses(run_dir).values()) == {"ok"}


def test_a_live_lock_refuses_a_second_runner(fake):
    plan, rendered, console, root = fake
    run_dir = root / "locked"
    run_dir.mkdir(parents=True)
    take_lock(run_dir)           # this process: alive
    with pytest.raises(UserError, match="is in progress"):
        run_plan(plan, rendered, RunOptions(backend="fake", results_dir=root, resume="locked"), console)
    assert not FakeBackend.executed


def test_a_dead_runners_lock_is_taken_over(fake):
    plan, rendered, console, root = fake
    run_dir = root / "stale"
    run_dir.mkdir(parents=True)
    import socket
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": socket.gethostname()}))
    _, code = run_plan(plan, rendered, RunOptions(backend="fake", results_dir=root, resume="stale"), console)
    assert code == 0 and len(FakeBackend.executed) == len(plan.cells)


def test_unknown_backend_is_a_user_error():
    with pytest.raises(UserError, match="no such backend"):
        backends.get("kubernetes")


def test_no_runner_module_imports_a_backend_but_the_registry():
    """The seam: neutral modules name no backend; only runner/backends/__init__.py maps names to modules."""
    import ast
    from runner import ROOT
    for path in (ROOT / "runner").rglob("*.py"):
        if "backends" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            modules = [n.split(".")[2] for n in names if n.startswith("runner.backends.")]
            assert not any((ROOT / "runner" / "backends" / f"{m}.py").exists() for m in modules), (path, names)


def test_repeats_run_each_cell_in_that_many_processes_and_resume_only_the_missing(fake):
    import dataclasses
    from runner.matrix import processes
    plan, rendered, console, root = fake
    cells = [dataclasses.replace(c, repeats=3) for c in plan.cells[:2]]
    plan3 = dataclasses.replace(plan, cells=cells)
    tasks = processes(cells)
    # round-robin: each cell's first process, then each cell's second, ...
    assert [t.name for t in tasks] == [f"{c.id}.r{k}" for k in (1, 2, 3) for c in cells]
    victim = tasks[4]
    FakeBackend.behaviour = {victim.name: "interrupt"}
    run_dir, code = run_plan(plan3, rendered, RunOptions(backend="fake", results_dir=root, run_id="rep"), console)
    assert code == 130
    results = {p.stem: load_result(p) for p in run_dir.glob("*.json")}
    assert set(results) == {t.name for t in tasks}
    assert [results[t.name]["cell"]["repeat"] for t in tasks[::2]] == [1, 2, 3]
    assert all(results[t.name]["cell"]["id"] == t.id for t in tasks)

    FakeBackend.behaviour, FakeBackend.executed = {}, []
    _, code = run_plan(plan3, rendered, RunOptions(backend="fake", results_dir=root, resume="rep"), console)
    assert code == 0 and victim.name in FakeBackend.executed and tasks[0].name not in FakeBackend.executed


# ---------------------------------------------------------------- CPU placement of cells side by side

def test_cpusets_split_the_cores_per_gpu():
    from runner.scheduler import CpuSets
    sets = CpuSets(list(range(8)), [0, 1, 2, 3])
    assert sets.for_gpus([2]) == [4, 5] and sets.for_gpus([0, 1]) == [0, 1, 2, 3]
    assert sets.for_gpus([]) is None and sets.for_gpus([7]) is None      # unknown GPU: no pinning
    assert CpuSets([0], [0, 1]).for_gpus([1]) is None                    # fewer cores than GPUs: no share


def _overlap(a, b):
    return a[4] < b[5] and b[4] < a[5]


def _placement_run(fake, share_cpus):
    plan, rendered, console, root = fake
    FakeBackend.gpus, FakeBackend.cpus, FakeBackend.delay_s = [0, 1], [0, 1, 2, 3], 0.3
    # resnet50-inference runs on the GPUs and on the CPU (devices: [gpu, cpu]): both kinds of cell
    plan, rendered = plan_and_images(only=["pytorch"], workload=["resnet50-inference", "alexnet-fwd"],
                                     device="gpu")
    assert {c.device for c in plan.cells} == {"gpu", "cpu"}
    run_dir, code = run_plan(plan, rendered, RunOptions(backend="fake", results_dir=root, parallel=2,
                                                        share_cpus=share_cpus), console)
    assert code == 0
    return FakeBackend.spans


def test_gpu_cells_side_by_side_get_disjoint_cpusets_and_cpu_cells_run_alone(fake):
    spans = _placement_run(fake, share_cpus=False)
    gpu_spans = [s for s in spans if s[1] == "gpu"]
    assert any(_overlap(a, b) for a in gpu_spans for b in gpu_spans if a is not b)   # they did run side by side
    for a in gpu_spans:
        assert a[3] == {0: [0, 1], 1: [2, 3]}[a[2][0]]                  # the GPU's share of the cores
        for b in gpu_spans:
            if a is not b and _overlap(a, b):
                assert not set(a[3]) & set(b[3])
    for a in (s for s in spans if s[1] == "cpu"):
        assert a[3] is None                                               # alone, on every core
        assert not any(_overlap(a, b) for b in spans if b is not a), a[0]


def test_share_cpus_turns_placement_off(fake):
    spans = _placement_run(fake, share_cpus=True)
    assert all(s[3] is None for s in spans)
    assert any(_overlap(a, b) for a in spans for b in spans if a is not b and "cpu" in (a[1], b[1]))


# ---------------------------------------------------------------- batch sweeps

def _sweep(plan, batches):
    import dataclasses
    base = next(c for c in plan.cells if c.workload == "alexnet-fwd")
    return [dataclasses.replace(base, batch_size=b, sweep=True) for b in batches]


def test_a_sweep_runs_smallest_first_and_stops_at_the_first_oom(fake):
    import dataclasses
    plan, rendered, console, root = fake
    other = next(c for c in plan.cells if c.workload != "alexnet-fwd")
    cells = _sweep(plan, [64, 8, 16, 32]) + [other]          # out of order on purpose
    FakeBackend.behaviour = {cells[2].name: "oom"}            # batch 16
    run_dir, code = run_plan(dataclasses.replace(plan, cells=cells), rendered,
                             RunOptions(backend="fake", results_dir=root), console)
    assert code == 0                                          # out of memory is what a sweep is for
    swept = [n for n in FakeBackend.executed if n != other.name]
    assert swept == [cells[1].name, cells[2].name]            # 8, then 16; 32 and 64 never ran
    results = {p.stem: load_result(p) for p in run_dir.glob("*.json")}
    assert [results[c.name]["status"] for c in cells] == ["unsupported", "ok", "oom", "unsupported", "ok"]
    assert "ran out of memory at batch 16" in results[cells[3].name]["message"]
    assert results[cells[2].name]["metrics"]["oom_batch_size"] == 16


def test_an_oom_outside_a_sweep_still_fails_the_run(fake):
    import dataclasses
    plan, rendered, console, root = fake
    cells = [dataclasses.replace(c, sweep=False) for c in _sweep(plan, [8, 16])]
    FakeBackend.behaviour = {cells[0].name: "oom"}
    _, code = run_plan(dataclasses.replace(plan, cells=cells), rendered,
                       RunOptions(backend="fake", results_dir=root), console)
    assert code == 1 and FakeBackend.executed == [c.name for c in cells]


def test_resume_keeps_a_sweep_stopped_at_its_oom(fake):
    import dataclasses
    plan, rendered, console, root = fake
    cells = _sweep(plan, [8, 16, 32, 64])
    FakeBackend.behaviour = {cells[1].name: "oom"}
    # the first attempt got as far as the oom at 16 (the larger batches were not in it)
    run_plan(dataclasses.replace(plan, cells=cells[:2]), rendered,
             RunOptions(backend="fake", results_dir=root, run_id="sw"), console)
    FakeBackend.behaviour, FakeBackend.executed = {}, []
    run_dir, code = run_plan(dataclasses.replace(plan, cells=cells), rendered,
                             RunOptions(backend="fake", results_dir=root, resume="sw"), console)
    assert code == 0 and FakeBackend.executed == []
    assert [load_result(run_dir / f"{c.name}.json")["status"] for c in cells] == ["ok", "oom", "unsupported",
                                                                                   "unsupported"]


def test_work_items_group_each_sweep_in_batch_order():
    import dataclasses
    from runner.scheduler import work_items
    plan, _ = plan_and_images(only=["pytorch"], workload=["alexnet-fwd", "vgg16-step"])
    a = _sweep(plan, [32, 8, 16])
    b = [dataclasses.replace(c, precision="bf16") for c in _sweep(plan, [4, 2])]   # another sweep
    single = next(c for c in plan.cells if c.workload == "vgg16-step")
    items = work_items([a[0], b[0], single, a[1], b[1], a[2]])
    assert [[c.batch_size for c in item] for item in items] == [[8, 16, 32], [2, 4], [single.batch_size]]
