"""The command line: ``python -m harness run | list | env | compare | report | merge``.

Bad input is one line on stderr naming the problem and exit status 2, never a traceback.
Each sub-command is a pair: a function adding its arguments and a handler returning the exit code.
Building the parser imports nothing heavy (no torch, pandas or scipy), so ``--help`` answers at
once; each handler imports what it needs.
"""
from __future__ import annotations

import argparse
import errno
import fnmatch
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from harness.sweep.options import FAULTS, OPTION_NAMES, OPTIONS, ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from harness import list_cache

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
#: Errors of a path that are the machine's, not the user's: exit 1, as ``run`` gives for them.
DISK_FAILURES: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


class UsageError(Exception):
    """Raised instead of argparse's exit, so that bad flags also get one line and status 2."""


class Parser(argparse.ArgumentParser):
    #: The sub-commands' parsers by name (``build_parser`` fills it in on the top one).
    commands: dict[str, argparse.ArgumentParser]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # a flag is spelt one way: `--max-t 5` in a CI script would break when a flag `--max-threads` came
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """As argparse's, but a flag the sub-command does not know points to that sub-command's
        help (argparse leaves it to the top parser, whose help does not list it)."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = getattr(self, "commands", {}).get(getattr(parsed, "command", None), self)
            command.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="verify and time variants over a sweep; write a run folder",
                       description="Verify every case against float64, time it, and write results.jsonl, "
                                   "results.csv, report.md and env.json to the run folder.")
    p.add_argument("--config", help="TOML file with the same options (flags override it)")
    groups = {None: p}
    for option in OPTIONS:
        if option.group not in groups:
            groups[option.group] = p.add_argument_group(option.group)
        kind: dict[str, object] = ({"action": "store_true", "default": None} if option.switch
                                   else {"metavar": option.metavar, "choices": option.choices})  # fmt: skip
        groups[option.group].add_argument(option.flag, dest=option.name, help=option.help, **kind)  # type: ignore
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    p.add_argument("--save-baseline", dest="save_baseline", action="store_true",
                   help="also store the run as this device's baseline under results/baselines/ (a baseline of "
                        "more cases is kept unless --replace-baseline)")
    p.add_argument("--replace-baseline", dest="replace_baseline", action="store_true",
                   help="with --save-baseline: replace the device's baseline even if it holds more cases")
    p.add_argument("--baselines-dir", dest="baselines_dir", default=None, metavar="DIR",
                   help="with --save-baseline: the folder of baselines (default: results/baselines, which must "
                        "be in the current directory: the repository's root)")
    p.add_argument("--profile", action="store_true",
                   help="also write a torch.profiler Chrome trace per timed case to <run>/traces/")
    add_launch_arguments(groups[FAULTS])
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from harness import api
    from harness.results import report

    options = {name: getattr(args, name) for name in OPTION_NAMES}
    if args.replace_baseline and not args.save_baseline:
        raise UsageError("--replace-baseline only goes with --save-baseline")
    if args.baselines_dir is not None and not args.save_baseline:
        raise UsageError("--baselines-dir only goes with --save-baseline")
    root = baselines_root(args.baselines_dir) if args.save_baseline else None
    if check_launch_arguments(args):  # the shards go to Slurm (or local processes) instead
        return cmd_launch(args, options, console)
    if root is not None and not args.replace_baseline and args.resume is None:
        check_baseline_room(args.config, options, root)
    frame = api.sweep(args.config, progress=not args.quiet, console=console, profile=args.profile,
                    resume=args.resume, **options)  # fmt: skip
    if not args.quiet:
        report.print_summary(frame, console)
    console.print(f"results: {frame.attrs['run_dir']}", soft_wrap=True)  # a path stays whole, to copy
    if frame.attrs.get("interrupted"):
        console.print("[yellow]interrupted: the report holds the cases finished so far; finish the run with:[/] "
                      f"python -m harness run --resume {frame.attrs['run_dir']}", soft_wrap=True)
        return EXIT_INTERRUPTED
    if root is not None:  # never from an interrupted run, whose cases are incomplete
        save_baseline_of(frame.attrs["run_dir"], console, root, force=args.replace_baseline)
    return exit_for_failures(frame, frame.attrs["run_dir"], console)


def exit_for_failures(frame: pd.DataFrame, run_dir: str, console: Console) -> int:
    """``EXIT_FAIL`` and one line naming them when cases failed or none was timed, said with --quiet too
    (a CI job must not pass a wrong variant, or a sweep that measured nothing, in silence); else ``EXIT_OK``."""
    from pathlib import Path

    from harness.results.report import failure_line
    from harness.results.store import ERRORS_LOG

    failed = failure_line(frame)
    if not failed:
        return EXIT_OK
    errors = Path(run_dir) / ERRORS_LOG
    if errors.is_file():
        failed += f"; tracebacks in {errors}"
    console.print(f"[bold red]{failed}[/]", soft_wrap=True)
    return EXIT_FAIL


def add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered variants and contexts, and whether they can run here")
    p.add_argument("pattern", nargs="?", default="*", help="glob filter on variants and contexts, e.g. 'compile*'")
    p.add_argument("--device", default=None, help="judge availability for this device (default: cuda if any)")
    p.add_argument("--refresh", action="store_true",
                   help="ask every variant again instead of showing the saved answer (see harness/list_cache.py)")
    p.set_defaults(handler=cmd_list)


#: Devices ``list`` may answer from its cache; anything else is checked by torch (and refused if unknown).
CACHED_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    """The saved answer when nothing it depends on changed (no torch import: well under a second),
    else a fresh one. A process that already registered variants itself is always answered fresh."""
    from harness import list_cache

    fresh = "variants.registry" not in sys.modules  # nothing registered in-process that a saved answer lacks
    cacheable = fresh and (args.device is None or CACHED_DEVICE.fullmatch(args.device) is not None)
    key = list_cache.key(args.device) if cacheable else None  # before torch, which changes the environment
    listing = list_cache.load(key) if key is not None and not args.refresh else None
    if listing is None:
        listing = current_listing(args.device)
        # a broken plugin is asked again next time: installing what it lacked changes nothing the key reads
        if key is not None and not listing.problems:
            list_cache.save(key, listing)
    else:  # a broken plugin is said to be broken however the answer was found
        import warnings

        for problem in listing.problems:
            warnings.warn(problem, RuntimeWarning, stacklevel=1)
    show_listing(listing, args.pattern, console)
    return EXIT_OK


def current_listing(device_arg: str | None) -> list_cache.Listing:
    """Every variant and context, and whether it can run on the device (asked of each)."""
    import warnings

    import torch

    from harness.list_cache import Entry, Listing
    from variants.contexts import all_contexts
    from variants.registry import all_variants, list_variants

    device = (device_arg or ("cuda" if torch.cuda.is_available() else "cpu")).strip().lower()  # as run reads it
    try:  # cuda may be asked about on a CPU machine (all unavailable), but not a typo, nor a device run refuses
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device: unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"--device: unsupported device {device!r}; use cpu, cuda or cuda:N")
    absent = "no CUDA GPU here" if kind == "cuda" and not torch.cuda.is_available() else None
    with warnings.catch_warnings(record=True) as caught:  # the plugins that fail to load, kept with the answer
        warnings.simplefilter("always")
        registry, found = all_variants(), all_contexts()
    problems = tuple(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)))
    for problem in problems:
        warnings.warn(problem, RuntimeWarning, stacklevel=1)
    variants = tuple(Entry(name, registry[name].description, ",".join(sorted(registry[name].devices)),
                           registry[name].unavailable(device) or absent)
                     for name in list_variants("*"))  # fmt: skip
    # asked as ``run`` asks (importing the network's library): a library that is installed but
    # fails to import (torchvision built for another torch) must not be listed as installed
    contexts = tuple(Entry(name, c.description, ",".join(sorted(c.devices)), c.unavailable())
                     for name, c in sorted(found.items()))
    return Listing(device, variants, contexts, problems)


#: The prefix of a variant's graphed form, which ``list`` does not list (``variants.cuda_graph``).
GRAPHED_PREFIX = "graphed_"


def show_listing(listing: list_cache.Listing, pattern: str, console: Console) -> None:
    """The variants and the contexts whose names match ``pattern`` (globs, comma-separated)."""
    from rich.markup import escape  # a reason may hold brackets: pip install 'scse-harness[unet]'

    include = [p.strip() for p in pattern.split(",") if p.strip()] or ["*"]
    matches = lambda e: any(fnmatch.fnmatchcase(e.name, p) for p in include)  # noqa: E731
    picked = [v for v in listing.variants if matches(v)]
    contexts = [c for c in listing.contexts if matches(c)]
    if not picked and not contexts:
        inner = pattern.removeprefix(GRAPHED_PREFIX)
        if pattern.startswith(GRAPHED_PREFIX) and any(v.name == inner for v in listing.variants):
            from variants.registry import find_variant  # imports torch: only on this path

            try:
                find_variant(pattern)
            except ValueError as exc:  # a variant that has no graphed form: what run would say
                raise ConfigError(str(exc)) from None
            raise ConfigError(f"{pattern} is not listed, but asked for by name it is {inner} captured in CUDA graphs: "
                              f"run --variants {pattern}")  # fmt: skip
        raise ConfigError(f"no variant or context matches {pattern!r}")

    def show(entries: list[list_cache.Entry], ready: str) -> None:
        width = max(len(e.name) for e in entries)
        for e in entries:
            state = f"[green]{ready}[/]" if e.state is None else f"[red]unavailable[/] ({escape(e.state)})"
            console.print(f"[bold]{e.name:<{width}}[/]  {escape(e.description)}  [dim]\\[{e.devices}][/]  {state}",
                          highlight=False, soft_wrap=True)

    if picked:
        show(picked, "ready")
        console.print(f"[dim]and {GRAPHED_PREFIX}NAME for any variant NAME that runs on CUDA and replays no graph of "
                      f"its own: NAME captured in CUDA graphs (run --variants {GRAPHED_PREFIX}NAME)[/]",
                      highlight=False, soft_wrap=True)  # fmt: skip
    if contexts:
        console.print(("\n" if picked else "") + "[bold]contexts[/] (run --context NAME: every scSE block of the "
                      "network swapped)", highlight=False)  # fmt: skip
        show(contexts, "installed")


def add_env(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="show the environment record that every run stores in env.json")
    p.add_argument("--device", default=None, help="describe this device (default: cuda if any, else cpu)")
    p.set_defaults(handler=cmd_env)


def cmd_env(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from harness.measure import envinfo
    from harness.sweep.config import resolve_device

    record = envinfo.collect(resolve_device(args.device or "auto"))
    table = Table(title="environment", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in record.items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)
    return EXIT_OK


# --- compare, report, baselines --------------------------------------------------------------------


def baselines_root(given: str | None) -> Path:
    """Where ``--save-baseline`` stores the run: ``given``, or the repository's results/baselines,
    which must be found from here: run from elsewhere (a plugin's own folder), the relative default
    started a new tree there, unseen by compare and CI, and the committed baseline stayed as it was."""
    from harness.results.baselines import DEFAULT_ROOT

    if given is not None:
        if not given.strip():  # Path("") is the current directory: the baseline landed among the sources
            raise UsageError("--baselines-dir is empty; name the folder of baselines, e.g. results/baselines")
        if Path(given).exists() and not Path(given).is_dir():  # else found only after the whole sweep
            raise UsageError(f"--baselines-dir {given}: is a file, not a folder")
        return Path(given)
    if not DEFAULT_ROOT.is_dir():
        raise UsageError(f"--save-baseline: there is no {DEFAULT_ROOT} folder in {Path.cwd()}: run from the "
                         "repository's root, or give --baselines-dir DIR")
    return DEFAULT_ROOT


def check_baseline_room(config: str | None, options: dict[str, Any], root: Path) -> None:
    """Refuse ``--save-baseline`` before the sweep when the device's baseline times more cases than
    the sweep holds: it would be kept, and the sweep run for nothing."""
    import torch

    from harness.measure.envinfo import device_name
    from harness.results.baselines import BaselineError, check_room
    from harness.sweep.cases import expand
    from harness.sweep.config import SweepConfig
    from harness.sweep.options import by_name

    cfg = SweepConfig.build(config, **by_name(options))
    device = torch.device(cfg.device)
    model = "gpu_name" if device.type == "cuda" else "cpu_model"
    try:
        check_room({"device": cfg.device, model: device_name(device)}, len(expand(cfg)), root)
    except BaselineError as exc:
        raise UsageError(f"cannot save the baseline: {exc}") from None


def save_baseline_of(run_dir: str, console: Console, root: Path, force: bool = False) -> None:
    """Save the run as its device's baseline, saying what it replaces: a committed baseline is
    never swapped silently, nor for one of fewer cases unless ``force`` (``--replace-baseline``)."""
    from harness.results.baselines import BaselineError, replacement, save_baseline

    try:
        replaced = replacement(run_dir, root)
        path = save_baseline(run_dir, root, force=force)
    except (BaselineError, OSError) as exc:
        raise UsageError(f"cannot save the baseline: {exc}") from None
    console.print(f"baseline: {path}" + (f" (replaced: {replaced})" if replaced is not None else ""), soft_wrap=True)


def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare a run with a baseline; exit 1 on a regression",
        description="Match cases by their key columns and judge each: ratio of medians and a Mann-Whitney U "
                    "test on the raw samples. Exit 0: no regression; 1: a case is slower beyond the threshold "
                    "and significant, or turned wrong (or is new and wrong); 2: bad input, or nothing judged "
                    "(no case timed on both sides, every one AMBIGUOUS, or the runs' settings such as "
                    "--threads differ).",
    )  # fmt: skip
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="BASELINE CURRENT (run folders or results files); only CURRENT with --baseline")  # fmt: skip
    p.add_argument("--baseline", dest="use_baseline", action="store_true",
                   help="compare CURRENT with the committed baseline of the device it ran on")  # fmt: skip
    p.add_argument("--threshold", type=float, default=None, help="smallest slowdown that counts (default 0.05)")
    p.add_argument("--metric", choices=("median", "host", "wall"), default="median",
                   help="what to compare: median latency (GPU time on CUDA, default), host time per call, "
                        "or synchronous wall time")
    p.add_argument("--alpha", type=float, default=None, help="significance level of the test (default 0.01)")
    p.add_argument("--relative-to", dest="relative_to", metavar="VARIANT", default=None,
                   help="divide each case by VARIANT's at its configuration in the same run before judging it, so "
                        "that a machine slower or faster that day cancels; VARIANT's own cases are shown, not "
                        "judged (e.g. --relative-to eager)")  # fmt: skip
    p.add_argument("--markdown", metavar="FILE", help="also write Markdown for a PR comment or a CI job summary")
    p.add_argument("--strict-env", dest="strict_env", action="store_true",
                   help="any environment difference compare warns of (GPU or CPU model, torch or CUDA version, "
                        "host, threads, processes, allocator, L2 cache mode) is an error, not a warning")  # fmt: skip
    p.add_argument("--fail-on-missing", dest="fail_on_missing", action="store_true",
                   help="a case the baseline timed that CURRENT lacks or did not time (skipped) fails, exit 1: "
                        "a sweep that lost a variant no longer passes on the rest")  # fmt: skip
    p.add_argument("--baselines-dir", dest="baselines_dir", default=None, metavar="DIR",
                   help="where --baseline looks for <device>/ (default results/baselines, from the current "
                        "directory)")  # fmt: skip
    p.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    """Differences of environment are shown as ``environment.env_advice`` words them: what differs and how
    to make a comparable run ("torch threads differ: baseline 1, this run 2; rerun with --threads 1")."""
    from pathlib import Path

    from harness.results import compare as cmp
    from harness.results import compare_render, compare_stats
    from harness.results.baselines import DEFAULT_ROOT, BaselineError, find_baseline_for

    try:
        if args.use_baseline:
            if len(args.runs) != 1:
                raise UsageError("with --baseline give only the current run")
            current = args.runs[0]
            if args.baselines_dir is not None and not args.baselines_dir.strip():  # "" fell back to the default
                raise UsageError("--baselines-dir is empty; name the folder of baselines, e.g. results/baselines")
            baseline: str | Path = find_baseline_for(current, args.baselines_dir or DEFAULT_ROOT)
        elif len(args.runs) != 2:
            raise UsageError("give BASELINE and CURRENT (or --baseline CURRENT)")
        else:
            baseline, current = args.runs
        result = cmp.compare(
            baseline, current,
            threshold=compare_stats.DEFAULT_THRESHOLD if args.threshold is None else args.threshold,
            alpha=compare_stats.DEFAULT_ALPHA if args.alpha is None else args.alpha,
            strict_env=args.strict_env, metric=args.metric, fail_on_missing=args.fail_on_missing,
            relative_to=args.relative_to,
        )  # fmt: skip
    except (cmp.CompareError, BaselineError) as exc:
        raise UsageError(str(exc)) from None
    if args.markdown:  # before the terminal's verdict: "OK: no regression", then an error, read as a pass
        try:
            Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)  # as run --out makes its folder
            Path(args.markdown).write_text(compare_render.to_markdown(result), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {args.markdown}: {exc.strerror or exc}") from None
    compare_render.render(result, console)
    if result.nothing_judged:  # after the tables, which say what became of each case
        raise UsageError(result.nothing_judged)
    return EXIT_FAIL if result.failed else EXIT_OK


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild report.md and results.csv from a run's results.jsonl",
                       description="Rebuild report.md and results.csv from results.jsonl; with --plots, "
                                   "also write PNG figures into the run folder and embed them.")  # fmt: skip
    p.add_argument("run", metavar="RUN", help="a run folder (or its results.jsonl)")
    p.add_argument("--plots", action="store_true", help="write speedup, latency and roofline figures (PNG)")
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from harness.results.report import write_reports
    from harness.results.store import REPORT_MD, OutputError, RunFolder, run_folder_of, to_frame

    path = run_folder_of(args.run)  # RUN/results.jsonl means RUN
    if path.is_file():
        raise UsageError(f"{path}: give the run folder, not a file in it")
    if not path.exists():
        raise UsageError(f"{path}: no such run folder")
    if not (path / "results.jsonl").is_file():
        csv = path / "results.csv"
        if csv.is_file() and len(csv.read_text(encoding="utf-8", errors="replace").splitlines()) > 1:
            raise UsageError(f"{path}: holds results.csv but no results.jsonl; report rebuilds from results.jsonl's "
                             "raw rows (compare reads a results.csv)")  # fmt: skip
        if (path / "env.json").is_file():  # a run stopped before its first case finished
            raise UsageError(f"{path}: no case of this run has finished yet; finish it with: "
                             f"python -m harness run --resume {path}")  # fmt: skip
        raise UsageError(f"{path}: not a run folder (no results.jsonl)")
    folder = RunFolder(path, create=False)
    rows = folder.rows()
    if not rows:
        raise UsageError(f"{folder.jsonl}: holds no results")
    try:
        env = folder.read_env()
    except OutputError as exc:  # as compare reads it: the rows are the run, env.json only its header
        import warnings

        warnings.warn(f"{exc}; the report is rebuilt without the run's environment", RuntimeWarning, stacklevel=1)
        env = {}
    written = write_reports(folder, to_frame(rows), env, plots=args.plots)
    console.print(f"rebuilt: {folder.path / REPORT_MD}, {folder.path / 'results.csv'}"
                  + "".join(f", {p}" for p in written), soft_wrap=True)  # paths stay whole, to copy
    return EXIT_OK


# --- resume, shards, merge, Slurm ------------------------------------------------------------------


def add_launch_arguments(g: argparse._ArgumentGroup) -> None:
    """Resuming a run, and launching its shards through Slurm or local processes."""
    g.add_argument("--resume", metavar="RUN",
                   help="finish the sweep stored in RUN (or RUN/results.jsonl), skipping the cases it holds")
    g.add_argument("--launcher", choices=("slurm", "local"),
                   help="submit --shards N shards through submitit (Slurm job array, or local processes), "
                        "then merge them into --out")
    g.add_argument("--shards", type=int, metavar="N", help="with --launcher: how many shards")
    g.add_argument("--slurm-partition", dest="slurm_partition", metavar="P", help="Slurm partition")
    g.add_argument("--slurm-time", dest="slurm_time", type=int, metavar="MIN", help="time limit per task (240)")
    g.add_argument("--slurm-gpus", dest="slurm_gpus", type=int, metavar="N", help="GPUs per task (1; 0 on cpu)")
    g.add_argument("--slurm-cpus", dest="slurm_cpus", type=int, metavar="N", help="CPUs per task")


def check_launch_arguments(args: argparse.Namespace) -> bool:
    """Whether ``run`` launches shards; launcher flags without ``--launcher`` (or the reverse) are usage errors."""
    slurm_flags = [f for f, v in (("--shards", args.shards), ("--slurm-partition", args.slurm_partition),
                                  ("--slurm-time", args.slurm_time), ("--slurm-gpus", args.slurm_gpus),
                                  ("--slurm-cpus", args.slurm_cpus)) if v is not None]  # fmt: skip
    if args.launcher is None:
        if slurm_flags:
            raise UsageError(f"{slurm_flags[0]} needs --launcher slurm (for one shard of a sweep use --shard K/N)")
        return False
    if args.shards is None:
        raise UsageError("--launcher needs --shards N")
    for flag, value in (("--shard", args.shard), ("--resume", args.resume)):
        if value is not None:
            raise UsageError(f"--launcher cannot be combined with {flag} (shards resume by themselves)")
    if args.overwrite:
        raise UsageError("--launcher cannot be combined with --overwrite; launch into a new --out folder")
    return True


def cmd_launch(args: argparse.Namespace, options: dict[str, object], console: Console) -> int:

    from harness.sweep import slurm

    settings = slurm.SlurmOptions(
        shards=args.shards, launcher=args.launcher, partition=args.slurm_partition,
        time_min=args.slurm_time if args.slurm_time is not None else 240,
        gpus_per_task=args.slurm_gpus, cpus_per_task=args.slurm_cpus,
    )  # fmt: skip
    result, failed = slurm.launch(options, settings, args.config, console)
    if result is not None:
        console.print(f"merged {result.rows} rows from {len(result.runs)} shard(s) into {result.out}")
    for line in failed:
        console.print(f"[red]failed:[/] {line}", highlight=False)
    if failed or result is None:
        if args.save_baseline:  # a sweep with shards missing is no baseline
            console.print("[yellow]baseline not saved: not every shard ran[/]")
        return EXIT_FAIL
    if args.save_baseline:
        save_baseline_of(str(result.out), console, baselines_root(args.baselines_dir), force=args.replace_baseline)
    from harness.results.store import RunFolder, to_frame

    merged = to_frame(RunFolder(result.out, create=False).rows())
    return exit_for_failures(merged, str(result.out), console)  # as a run without shards


def add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge", help="join run folders (shards) into one; refuse duplicate or conflicting cases",
        description="Join run folders into a new one (results.jsonl, results.csv, report.md, env.json). "
                    "A case in two runs, or runs of different settings, is refused.",
    )  # fmt: skip
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folders (or their results.jsonl), e.g. the shards of one sweep")
    p.add_argument("--out", required=True, metavar="MERGED", help="the new run folder")
    p.add_argument("--allow-mixed-env", dest="allow_mixed_env", action="store_true",
                   help="merge runs from different GPUs or torch versions (warn instead of refusing)")
    p.set_defaults(handler=cmd_merge)


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    from harness.results.merge import merge

    result = merge(args.runs, args.out, allow_mixed_env=args.allow_mixed_env)
    console.print(f"merged {result.rows} rows from {len(result.runs)} run(s) into {result.out}")
    return EXIT_OK



#: Sub-commands in help order; other modules add theirs here.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_run, add_list, add_env, add_compare, add_report, add_merge,
]


def build_parser() -> Parser:
    parser = Parser(prog="python -m harness", description="Benchmark and profile scSE variants.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for add in COMMANDS:
        add(sub)
    parser.commands = dict(sub.choices)
    return parser


def is_bad_input(exc: Exception) -> bool:
    """Whether ``exc`` is the user's mistake (one line, exit 2) rather than the harness's."""
    if isinstance(exc, (UsageError, ConfigError)):
        return True
    from harness.results.record import SchemaError  # imported once something failed, not for --help
    from harness.results.store import OutputError

    return isinstance(exc, (OutputError, SchemaError))


def plain_warnings(errors: Console) -> Callable[..., None]:
    """A ``warnings.showwarning`` that shows the harness's own warnings (a cut-off row dropped, a
    shard missing, a plugin that failed to load or replaces a built-in name, though that one points
    at the plugin's line) as one line, ``warning: ...``, not as Python's file:line and source line;
    any other warning is shown as Python shows it."""
    import warnings
    from pathlib import Path

    from rich.markup import escape

    shown = warnings.showwarning
    ours = (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1] / "variants")  # a plugin's, too

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:  # fmt: skip
        where = Path(filename).resolve()
        registry = sys.modules.get("variants.registry")  # imported by whatever warned of a plugin
        plugin = registry is not None and issubclass(category, registry.PluginWarning)
        if plugin or (issubclass(category, RuntimeWarning) and any(where.is_relative_to(p) for p in ours)):
            errors.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
        else:
            shown(message, category, filename, lineno, file, line)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    from rich.console import Console
    from rich.markup import escape

    console = Console()
    errors = Console(stderr=True)
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings():  # restores Python's own display when main returns
            warnings.showwarning = plain_warnings(errors)
            return int(args.handler(args, console))
    except KeyboardInterrupt as exc:  # a second Ctrl-C or SIGTERM: the run's folder, when it has one, rides on it
        hint = f"; finish the run with: python -m harness run --resume {exc.args[0]}" if exc.args else ""
        api = sys.modules.get("harness.api")  # whatever raised Terminated imported it
        terminated = api is not None and isinstance(exc, api.Terminated)
        errors.print(f"[yellow]{'terminated' if terminated else 'interrupted'}[/]{escape(hint)}", soft_wrap=True)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except Exception as exc:
        said = failure_line(exc)
        if said is None:
            raise
        text, code = said
        errors.print(f"[red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)  # "[slurm]" is no markup
        unwritten = getattr(exc, "unwritten", None)
        if unwritten:  # a finished row no file holds: stdout keeps it (``> row.jsonl``), whole and unwrapped
            print(unwritten, flush=True)
        return code


def failure_line(exc: Exception) -> tuple[str, int] | None:
    """The one line and exit status for a failure that is not the harness's bug, or None (a traceback):
    a run that failed writing (exit 1), bad input (exit 2), a path the system refuses (2; a full disk 1)."""
    store = sys.modules.get("harness.results.store")  # imported by whatever wrote a row
    if store is not None and isinstance(exc, store.RunWriteError):  # a run that failed, not bad input
        return str(exc), EXIT_FAIL
    if isinstance(exc, RuntimeError) and str(exc).startswith("Symlink loop from"):  # Path.resolve, Python < 3.13
        return str(exc), EXIT_USAGE
    if isinstance(exc, OSError) and exc.filename is not None and not is_bad_input(exc):
        # a path the user gave that the system refuses (permission, a name too long): one line, as for a
        # missing file; whatever wrote or read it last left every finished row in results.jsonl
        where = exc.filename if exc.filename2 is None else f"{exc.filename} → {exc.filename2}"
        return f"{where}: {exc.strerror or exc}", EXIT_FAIL if exc.errno in DISK_FAILURES else EXIT_USAGE
    return (str(exc), EXIT_USAGE) if is_bad_input(exc) else None


if __name__ == "__main__":
    sys.exit(main())
