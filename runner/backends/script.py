"""`plan --commands` and `--backend script`: the plan as a POSIX shell script of `python -m bench` commands.

For a host that has a framework but neither Docker nor the runner's own dependencies (a lent GPU machine
with no package index, say): copy the checkout there, run the script from its root, bring
`results/<run-id>/` back and `python -m runner report --results results/<run-id>` makes the tables.
`--backend script` runs each cell through its own lines of that same script (`sh -c`), so what the script
does is what the tests exercise. Every value that reaches the script is quoted with shlex.quote."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import ClassVar

from runner.backends.local import LocalBackend
from runner.contract import bench_args, cell_identity_env
from runner.matrix import processes
from runner.scheduler import work_items

q = shlex.quote


def script_header(plan, run_id: str) -> list[str]:
    return [
        "#!/bin/sh",
        f"# dlbench run {run_id}: {len(plan.cells)} cells of {plan.matrix_path.name} (profile {plan.profile}, "
        f"device {plan.device})".replace("\n", " "),
        "# written by `python -m runner plan --commands`; run from the checkout's root. Needs bench/, numpy",
        "# and each framework importable by $PYTHON; datasets under $DATA_DIR/<name>/",
        "# (the layout of ~/.cache/dlbench/datasets).",
        "set -u",
        'PYTHON="${PYTHON:-python3}"',
        f"RUN_DIR=${{RUN_DIR:-{q('results/' + run_id)}}}",
        'DATA_DIR="${DATA_DIR:-data}"',
        f"export DLBENCH_RUN_ID={q(run_id)} DLBENCH_PROFILE={q(plan.profile)}",
        'export DLBENCH_MACHINE="${DLBENCH_MACHINE:-$(hostname)}" PYTHONUNBUFFERED=1',
        'mkdir -p "$RUN_DIR/logs"',
        # coreutils' timeout where there is one: a hung cell must not stop the rest
        'if command -v timeout >/dev/null 2>&1; then LIMIT="timeout --kill-after=10"; else LIMIT=""; fi',
    ]


def cell_lines(cell, timeout_s: int, sweep_var: str = "") -> list[str]:
    """The lines that run one cell, skipped when its result exists; a failure counts in $failed. In a batch
    sweep (`sweep_var`, the sweep's flag variable), an out-of-memory (bench's exit 2, or SIGKILL: the kernel's
    OOM killer) sets the flag instead, and once it is set the sweep's larger batches are not run."""
    env = cell_identity_env(cell)   # the run-wide variables are exported once, in the header
    out = f'"$RUN_DIR"/{q(cell.name + ".json")}'
    log = f'"$RUN_DIR"/logs/{q(cell.name + ".log")}'
    args = " ".join(q(a) for a in bench_args(cell, "@DATA@", "@OUT@"))
    args = args.replace("@DATA@", '"$DATA_DIR"').replace("@OUT@", out)
    assign = " ".join(f"{k}={q(v)}" for k, v in env.items())
    limit = f"${{LIMIT:+$LIMIT {int(timeout_s)}}}"
    run = f'  {assign} {limit} "$PYTHON" -m bench {args} > {log} 2>&1'
    if not sweep_var:
        return [
            f"if [ ! -f {out} ]; then",
            f"  echo {q('[' + cell.name + ']')}",
            run + f' || {{ echo "  exit $? (see "{log}")"; failed=$((failed + 1)); }}',
            "fi",
        ]
    return [
        f'if [ -f {out} ] && grep -q \'"status": *"oom"\' {out}; then {sweep_var}=1',
        f"elif [ ! -f {out} ]; then",
        f'  if [ "${sweep_var}" = 1 ]; then',
        f"    echo {q('[' + cell.name + '] not run: its batch sweep ran out of memory at a smaller batch')}",
        "  else",
        f"    echo {q('[' + cell.name + ']')}",
        "  " + run + "; rc=$?",
        f'    if [ "$rc" -eq 2 ] || [ "$rc" -eq 137 ]; then {sweep_var}=1; echo "  out of memory: the sweep stops here"',
        f'    elif [ "$rc" -ne 0 ]; then echo "  exit $rc (see "{log}")"; failed=$((failed + 1)); fi',
        "  fi",
        "fi",
    ]


def shell_script(plan, run_id: str) -> str:
    lines = script_header(plan, run_id) + ["failed=0"]
    sweeps: dict = {}
    # a sweep's processes in batch order (the first out-of-memory ends it), the rest round-robin
    for cell in [c for item in work_items(processes(plan.cells)) for c in item]:
        sweep_var = ""
        if cell.sweep:
            if cell.sweep_key not in sweeps:
                sweeps[cell.sweep_key] = f"sweep{len(sweeps)}_oom"
                lines.append(f"{sweeps[cell.sweep_key]}=0")
            sweep_var = sweeps[cell.sweep_key]
        lines += cell_lines(cell, cell.timeout_s, sweep_var)
    lines += [
        'echo "done: $failed cell(s) exited non-zero; tables: python -m runner report --results $RUN_DIR"',
        '[ "$failed" -eq 0 ]',
    ]
    return "\n".join(lines) + "\n"


class ScriptBackend(LocalBackend):
    """Runs each cell with the script's own lines for it, under `sh`, with the run and staging
    directories given as the script's variables (the runner keeps its timeout and its logs)."""
    name: ClassVar[str] = "script"

    def command(self, ctx, cell, staging: Path) -> list[str]:
        lines = ["set -u", f"PYTHON={q(self.python)}", f"RUN_DIR={q(str(staging))}",
                 f"DATA_DIR={q(str(ctx.data_dir))}", "mkdir -p \"$RUN_DIR/logs\"", "LIMIT=\"\"", "failed=0"]
        lines += cell_lines(cell, ctx.timeout_of(cell))
        lines += ['cat "$RUN_DIR"/logs/*.log 2>/dev/null', '[ "$failed" -eq 0 ]']
        return ["sh", "-c", "\n".join(lines)]
