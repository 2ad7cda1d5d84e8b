"""The command line: ``python -m harness run | list | env``.

Bad input is one line on stderr naming the problem and exit status 2, never a traceback.
Each sub-command is a pair: a function adding its arguments and a handler returning the exit code.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import torch
from rich.console import Console
from rich.table import Table

from harness import api, envinfo, report
from harness.config import ConfigError
from harness.results import OutputError
from variants.registry import all_variants, list_variants

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Raised instead of argparse's exit, so that bad flags also get one line and status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="verify and time variants over a sweep; write a run folder",
                       description="Verify every case against float64, time it, and write results.jsonl, "
                                   "results.csv, report.md and env.json to the run folder.")
    p.add_argument("--config", help="TOML file with the same options (flags override it)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--variants", help="comma-separated names or globs, e.g. 'eager*,compile'")
    p.add_argument("--shapes", help="comma-separated CxHxW, e.g. 32x64x64,64x128x128")
    p.add_argument("--batch-sizes", dest="batch_sizes", help="comma-separated, e.g. 1,8,32")
    p.add_argument("--dtypes", help="float32, float16, bfloat16, float64 (comma-separated)")
    p.add_argument("--modes", help="forward (no autograd) and/or train (forward + backward)")
    p.add_argument("--reductions", help="channel reductions r (C//r hidden channels), e.g. 2,16")
    p.add_argument("--fusions", help="add, max, mul, gate, concat (comma-separated)")
    p.add_argument("--bias", dest="biases", help="false, true or both: false,true")
    p.add_argument("--threads", help="torch CPU threads for the run (default: torch's own)")
    p.add_argument("--cache", choices=("cold", "hot"), help="CUDA: flush L2 before each call (cold, default) or not")
    p.add_argument("--warmup", dest="warmup_s", help="warm-up seconds per case (default 0.1)")
    p.add_argument("--min-samples", dest="min_samples", help="samples before the CI test may stop (default 10)")
    p.add_argument("--max-samples", dest="max_samples", help="hard cap on samples per case (default 2000)")
    p.add_argument("--rel-ci", dest="rel_ci", help="stop when the median's 95%% CI is within ± this (default 0.01)")
    p.add_argument("--max-time", dest="max_time_s", help="time budget per case in seconds (default 2)")
    p.add_argument("--seed", help="seed for weights and inputs (default 0)")
    p.add_argument("--out", help="run folder (default results/runs/<time>-<device>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    options = {k: getattr(args, k) for k in (
        "device", "variants", "shapes", "batch_sizes", "dtypes", "modes", "reductions", "fusions", "biases",
        "threads", "cache", "warmup_s", "min_samples", "max_samples", "rel_ci", "max_time_s", "seed", "out")}  # fmt: skip
    frame = api.run(args.config, progress=not args.quiet, console=console, **options)
    if not args.quiet:
        report.print_summary(frame, console)
    console.print(f"results: {frame.attrs['run_dir']}")
    if frame.attrs.get("interrupted"):
        console.print("[yellow]interrupted: the report holds the cases finished so far[/]")
        return EXIT_INTERRUPTED
    return EXIT_OK


def add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered variants and whether they can run here")
    p.add_argument("pattern", nargs="?", default="*", help="glob filter, e.g. 'compile*'")
    p.add_argument("--device", default=None, help="judge availability for this device (default: cuda if any)")
    p.set_defaults(handler=cmd_list)


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    registry = all_variants()
    names = list_variants(args.pattern)
    if not names:
        raise ConfigError(f"no variant matches {args.pattern!r}")
    width = max(len(n) for n in names)
    for name in names:
        v = registry[name]
        reason = v.unavailable(device)
        where = ",".join(sorted(v.devices))
        state = "[green]ready[/]" if reason is None else f"[red]unavailable[/] ({reason})"
        console.print(f"[bold]{name:<{width}}[/]  {v.description}  [dim]\\[{where}][/]  {state}", highlight=False,
                      soft_wrap=True)
    return EXIT_OK


def add_env(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="show the environment record that every run stores in env.json")
    p.add_argument("--device", default=None, help="describe this device (default: cuda if any, else cpu)")
    p.set_defaults(handler=cmd_env)


def cmd_env(args: argparse.Namespace, console: Console) -> int:
    from harness.config import resolve_device

    record = envinfo.collect(resolve_device(args.device or "auto"))
    table = Table(title="environment", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in record.items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)
    return EXIT_OK


#: Sub-commands in help order; other modules add theirs here.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_run, add_list, add_env]


def build_parser() -> Parser:
    parser = Parser(prog="python -m harness", description="Benchmark and profile scSE variants.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    console = Console()
    errors = Console(stderr=True)
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args, console))
    except (UsageError, ConfigError, OutputError) as exc:
        errors.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        errors.print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
