"""`python -m runner`: the whole pipeline (plan -> base -> build -> run -> report), or one stage.

Exit codes: 0 all good, 1 some cells failed, 2 usage or matrix error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from runner import DEFAULT_MATRIX, ROOT
from runner.errors import EXIT_OK, EXIT_USAGE, UserError
from runner.gpus import host_gpus
from runner.matrix import Plan, expand, load_matrix, resolve_profile
from runner.render import RenderedImage, host_ca_bundle, render_all, write_dockerfiles
from runner.results import check_run_id
from runner.validate import check_name, printable

# Wide when piped, so plans in logs and CI keep one line per cell.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 250)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 250)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; this keeps its one-paragraph message."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {printable(message).rstrip('.')}. "
                              f"Run `{self.prog} --help` for the options.\n")


def _checked(check, name: str):
    """An argparse `type=` from a validator that raises UserError/ValueError: argparse then reports the
    validator's message as a usage error (exit 2) instead of a traceback."""
    def convert(value):
        try:
            return check(value)
        except UserError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = name
    return convert


def _csv_names(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ValueError("expected a comma-separated list, e.g. pytorch,tensorflow")
    return [check_name(item) for item in items]


def _positive_int(limit: int):
    def check(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"expected a whole number, not {value!r}") from None
        if not 1 <= n <= limit:
            raise ValueError(f"{n} is out of range: give a number from 1 to {limit}")
        return n
    return check


def _parallel(value: str) -> str:
    if value != "auto":
        _positive_int(1024)(value)
    return value


def _not_a_symlink(value: str) -> Path:
    path = Path(value)
    if path.is_symlink():
        # the README is replaced atomically: that would turn the link into a plain file
        raise ValueError(f"{path} is a symbolic link; dlbench does not replace or write through links. Pass the "
                         f"file it points at ({Path(value).resolve()}) instead")
    return path


_csv = _checked(_csv_names, "list")
_name = _checked(lambda v: check_name(v, "profile"), "name")
_run_id = _checked(check_run_id, "run id")
_timeout = _checked(_positive_int(7 * 24 * 3600), "seconds")
_parallel_arg = _checked(_parallel, "N|auto")
_readme = _checked(_not_a_symlink, "path")


def _registry_value(value: str) -> str:
    import re
    from runner.matrix import REGISTRY_PATTERN
    if not re.fullmatch(REGISTRY_PATTERN, value):
        raise ValueError(f"{printable(value)[:80]!r} is not a registry: expected host[:port][/prefix], e.g. "
                         f"127.0.0.1:5000/dlbench")
    return value


_registry = _checked(_registry_value, "registry")
_slurm_name = _checked(lambda v: check_name(v, "Slurm partition/account"), "name")


def _selection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--matrix", type=Path, default=DEFAULT_MATRIX, help="matrix file (default: matrix.yaml)")
    p.add_argument("--only", type=_csv, metavar="FW[,FW...]", help="only these frameworks")
    p.add_argument("--workload", type=_csv, metavar="W[,W...]", help="only these workloads")
    p.add_argument("--profile", type=_name,
                   help="full, cpu, smoke or another profile in the matrix (default: the matrix's, "
                        "auto = full on GPU hosts, cpu otherwise)")
    p.add_argument("--device", choices=["gpu", "cpu", "auto"], help="run GPU cells, the CPU variants, or decide "
                                                                     "by the host (default: the matrix's, auto)")


def _run_options(p: argparse.ArgumentParser) -> None:
    from runner import backends
    p.add_argument("--backend", choices=backends.names(), default="docker",
                   help="docker: one container per cell (default); local: `python -m bench` in a subprocess "
                        "of this interpreter, for hosts without Docker; script: each cell through its lines of "
                        "the `plan --commands` script; slurm: each cell a Slurm job running its container on a "
                        "node (see the README's \"Running on a cluster\")")
    p.add_argument("--rebuild", action="store_true", help="build images even when their tag exists")
    p.add_argument("--resume", type=_run_id, metavar="RUN_ID",
                   help="continue a run: skip cells that have a valid result")
    p.add_argument("--parallel", type=_parallel_arg, default="auto", metavar="N|auto",
                   help="cells at a time (auto: one per free GPU, 1 on CPU)")
    p.add_argument("--share-cpus", action="store_true", default=None,
                   help="with --parallel above 1: let cells share every CPU (default: GPU cells get disjoint "
                        "cpusets, the host's cores split per GPU, and CPU cells run alone)")
    p.add_argument("--results-dir", type=Path, default=ROOT / "results", help="where runs are kept")
    p.add_argument("--data-dir", type=Path, help="a directory that already holds the datasets "
                                                 "(default: ~/.cache/dlbench/datasets)")
    p.add_argument("--timeout", type=_timeout, metavar="SECONDS",
                   help="per-cell time limit for every cell (default: the profile's timeout_s)")
    p.add_argument("--run-id", type=_run_id, metavar="RUN_ID",
                   help="name a new run (default: UTC time + random suffix)")
    p.add_argument("--registry", type=_registry, metavar="HOST:PORT/PREFIX",
                   help="slurm: push the built images there and have jobs pull them by digest (default: the "
                        "matrix's `registry`)")
    p.add_argument("--shared-dir", type=Path, metavar="DIR",
                   help="slurm: a directory every node sees (default: --results-dir, which must then be shared)")
    p.add_argument("--slurm-partition", type=_slurm_name, metavar="NAME", help="slurm: the partition to submit to")
    p.add_argument("--slurm-account", type=_slurm_name, metavar="NAME", help="slurm: the account to charge")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m runner", description=__doc__.split("\n")[0],
                     epilog="Stages: plan, render, base, build, run, report, clean. "
                            "Without a stage the whole pipeline runs.")
    _selection_options(parser)
    _run_options(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    parser.add_argument("--readme", type=_readme, default=ROOT / "README.md",
                        help="README whose results sections the pipeline regenerates")
    sub = parser.add_subparsers(dest="stage", parser_class=_Parser, metavar="STAGE")

    p = sub.add_parser("plan", help="print every cell and why any combination was dropped")
    _selection_options(p)
    p.add_argument("--all-dropped", action="store_true", help="list every dropped combination (default: all)")
    p.add_argument("--commands", action="store_true",
                   help="print the plan as a shell script of `python -m bench` commands, for a host without "
                        "Docker or the runner's dependencies; `report --results` reads what it writes")
    p.add_argument("--run-id", type=_run_id, metavar="RUN_ID",
                   help="with --commands: the run's name (default: UTC time + random suffix)")

    p = sub.add_parser("render", help="write the Dockerfiles")
    _selection_options(p)
    p.add_argument("--out", type=Path, default=ROOT / "build" / "dockerfiles", help="output directory")

    p = sub.add_parser("base", help="pull or bootstrap the base images the plan needs")
    _selection_options(p)

    p = sub.add_parser("build", help="build the images (skips tags that exist)")
    _selection_options(p)
    p.add_argument("--rebuild", action="store_true", help="build even when the tag exists")

    p = sub.add_parser("run", help="run every cell (builds what is missing first)")
    _selection_options(p)
    _run_options(p)

    p = sub.add_parser("report", help="aggregate results into tables, plots and the README")
    from runner.report import add_report_arguments
    add_report_arguments(p)
    for action in p._actions:
        if action.dest == "readme":
            action.type = _readme

    p = sub.add_parser("clean", help="remove containers left behind by crashed runs; with --images also the "
                                     "framework images the matrix no longer renders to")
    from runner import backends
    p.add_argument("--backend", choices=backends.names(), default="docker",
                   help="whose leftovers to remove (default: docker's containers)")
    p.add_argument("--images", action="store_true",
                   help="also remove dlbench/<framework> image tags that no device or profile of the matrix "
                        "renders to (old bench/ or template versions); base images are kept")
    p.add_argument("--matrix", type=Path, default=DEFAULT_MATRIX, help="matrix file (default: matrix.yaml)")
    p.add_argument("--only", type=_csv, metavar="FW[,FW...]", help="only these frameworks' images")
    parser._stages = dict(sub.choices)
    for each in (parser, *parser._stages.values()):
        _defaults_apart(each)
    return parser


def _defaults_apart(p: argparse.ArgumentParser) -> None:
    """Take every default out of argparse (kept in p._filled). Options are accepted before or after the
    stage; argparse would let a subparser's default silently overwrite a value given before the stage
    (`--only caffe plan` planned everything), so parse_args fills defaults once, afterwards."""
    p._filled = {}
    p._option_of = {}
    for action in p._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        default = action.default
        if isinstance(default, str) and callable(action.type):
            default = action.type(default)  # what argparse does with a string default
        p._filled[action.dest] = default
        p._option_of[action.dest] = action.option_strings[0] if action.option_strings else action.dest
        if action.help and "%(default)" in action.help:  # argparse cannot expand a suppressed default
            action.help = action.help.replace("%(default)s", str(default)).replace("%(default)r", repr(default))
        action.default = argparse.SUPPRESS


def parse_args(parser: argparse.ArgumentParser, argv: Optional[list[str]] = None) -> argparse.Namespace:
    """parse_args with one set of defaults: the stage's own, then the top level's. An option given before
    the stage that the stage does not take is refused (exit 2), not silently ignored."""
    args = parser.parse_args(argv)
    given = set(vars(args)) - {"stage"}
    stage = getattr(args, "stage", None)
    layers = []
    if stage is not None:
        stage_parser = parser._stages[stage]
        stray = sorted(given - set(stage_parser._filled))
        if stray:
            options = ", ".join(parser._option_of.get(d, d) for d in stray)
            parser.error(f"{options} cannot be used with stage `{stage}`; run `python -m runner {stage} --help` "
                         f"for the options it takes, or drop the stage to run the whole pipeline")
        layers.append(stage_parser._filled)
    else:
        if getattr(args, "dry_run", False):
            layers.append(parser._stages["plan"]._filled)  # --dry-run is `plan`
        layers.append(parser._filled)
    for layer in layers:
        for dest, default in layer.items():
            if not hasattr(args, dest):
                setattr(args, dest, default)
    if stage is None:
        args.stage = None
    return args


def make_plan(args) -> Plan:
    matrix, lines = load_matrix(args.matrix)
    device = args.device or matrix.device
    gpus_present = bool(host_gpus())
    if device == "auto":
        device = "gpu" if gpus_present else "cpu"
    profile = resolve_profile(matrix, args.profile, device == "gpu", args.matrix, lines)
    return expand(matrix, path=args.matrix, lines=lines, profile=profile, device=device,
                  only=args.only, workloads=args.workload)


def render_plan(plan: Plan) -> dict[tuple, RenderedImage]:
    rendered = render_all(plan.images, host_ca_bundle())
    return {(r.choice.framework, r.choice.version, r.choice.toolchain): r for r in rendered}


def image_of(rendered: dict, cell) -> RenderedImage:
    return rendered[(cell.framework, cell.version, cell.toolchain)]


def print_plan(plan: Plan, rendered: dict, cached: Optional[set]) -> None:
    table = Table(title=f"{plan.matrix_path.name}: profile {plan.profile}, device {plan.device}",
                  show_lines=False)
    for col in ("framework", "version", "toolchain", "Python", "workload", "batch", "precision", "GPUs",
                "image", "state"):
        table.add_column(col, overflow="fold")
    for cell in plan.cells:
        image = image_of(rendered, cell)
        if cached is None:
            state = "to build (engine not reachable)"
        else:
            state = "cached" if image.tag in cached else "to build"
        workload = cell.workload + (f" {cell.model}" if cell.model else "") + \
            (f" {cell.dataset}" if cell.dataset else "") + (" (synthetic)" if cell.synthetic else "") + \
            "".join(f" {k}={v}" for k, v in cell.variant) + \
            (f" x{cell.repeats} processes" if cell.repeats > 1 else "")
        # Text, not str: a value such as `[/x]` must print as itself, not as Rich markup
        table.add_row(*(Text(printable(v)) for v in (
            cell.framework, cell.version, cell.toolchain, cell.python, workload,
            f"{cell.batch_size} (sweep)" if cell.sweep else str(cell.batch_size),
            cell.precision, str(cell.gpus), image.tag, state)))
    for d in plan.dropped:
        table.add_row(d.framework, d.version, d.toolchain, "-", "*", "-", "-", "-", "-", escape(f"dropped: {d.reason}"))
    console.print(table)
    console.print(Text(f"{len(plan.cells)} cells in {len(rendered)} images; {len(plan.dropped)} combinations "
                       f"dropped." + (f" Note: {plan.skipped_note}." if plan.skipped_note else "") +
                       (" (sweep): a batch sweep, run smallest batch first; the first out-of-memory ends it and "
                        "its larger batches are not run." if any(c.sweep for c in plan.cells) else "")))


def _cached_tags(rendered: dict) -> Optional[set]:
    from runner.engine import existing_tags
    return existing_tags([r.tag for r in rendered.values()])


def cmd_plan(args) -> int:
    plan = make_plan(args)
    if args.commands:
        from runner.backends import script_for
        from runner.results import new_run_id
        sys.stdout.write(script_for(plan, args.run_id or new_run_id()))
        return EXIT_OK
    rendered = render_plan(plan)
    print_plan(plan, rendered, _cached_tags(rendered))
    return EXIT_OK


def cmd_render(args) -> int:
    plan = make_plan(args)
    rendered = render_plan(plan)
    for path in write_dockerfiles(list(rendered.values()), args.out):
        console.print(Text(f"wrote {path}"))  # a path is not Rich markup
    return EXIT_OK


def cmd_base(args) -> int:
    from runner.build import ensure_bases
    plan = make_plan(args)
    problems = ensure_bases({img.base_name for img in plan.images}, console=console)
    return EXIT_OK if not problems else 1


def cmd_build(args) -> int:
    from runner.build import build_images, ensure_bases
    plan = make_plan(args)
    rendered = render_plan(plan)
    problems = ensure_bases({img.base_name for img in plan.images}, console=console)
    buildable = [r for r in rendered.values() if r.choice.base_name not in problems]
    outcomes = build_images(buildable, rebuild=args.rebuild, console=console)
    return EXIT_OK if not problems and all(o.ok for o in outcomes.values()) else 1


def cmd_run(args, with_report: bool = False) -> int:
    from runner.options import RunOptions
    from runner.run import run_plan
    plan = make_plan(args)
    rendered = render_plan(plan)
    run_dir, code = run_plan(plan, rendered, RunOptions.from_args(args, registry=plan.registry), console=console)
    if with_report and run_dir is not None and code != 130:
        from runner.report import run_report
        report_args = argparse.Namespace(results=[run_dir], readme=args.readme, out=ROOT / "reports",
                                         baseline=None, min_effect=None, results_root=args.results_dir)
        report_code = run_report(report_args)
        code = max(code, report_code)
    return code


def cmd_report(args) -> int:
    from runner.report import run_report
    return run_report(args)


def current_tags(args) -> tuple[set[str], set[str]]:
    """Every image tag the matrix renders to on either device, and the frameworks concerned."""
    matrix, lines = load_matrix(args.matrix)
    tags, frameworks = set(), set()
    for device in ("cpu", "gpu"):
        plan = expand(matrix, path=args.matrix, lines=lines, profile="full", device=device, only=args.only)
        tags.update(r.tag for r in render_plan(plan).values())
    frameworks.update(args.only or matrix.frameworks)
    return tags, frameworks


def cmd_clean(args) -> int:
    from runner import backends
    code = backends.get(args.backend).clean(console=console)
    if args.images:
        from runner.build import prune_images
        keep, frameworks = current_tags(args)
        prune_images(keep, frameworks, console=console)
    return code


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        if args.stage is None:
            if args.dry_run:
                return cmd_plan(args)
            return cmd_run(args, with_report=True)
        handler = {"plan": cmd_plan, "render": cmd_render, "base": cmd_base, "build": cmd_build,
                   "run": cmd_run, "report": cmd_report, "clean": cmd_clean}[args.stage]
        return handler(args)
    except UserError as exc:
        err_console.print(Text("error: ", style="bold red") + Text(printable(exc.message)), soft_wrap=True)
        return exc.exit_code
    except OSError as exc:
        # a file or directory the checks above did not foresee: still one paragraph, not a traceback
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        err_console.print(Text("error: ", style="bold red") +
                          Text(printable(f"{where}{exc.strerror or exc}. Check that the paths given to "
                                         f"--matrix, --out, --readme, --results-dir and --data-dir exist and "
                                         f"are writable where they must be.")), soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err_console.print("interrupted.")
        return 130
