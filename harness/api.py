"""``harness.run``: the whole pipeline, configuration → cases → runner → rows → results → reports."""
from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness import interrupts
from harness.measure import allocator, bandwidth, envinfo, metrics
from harness.measure.envinfo import torch_threads
from harness.results.report import (
    CASES_PLANNED,
    MERGE_WARNINGS,
    RESUME_WARNINGS,
    UNFINISHED,
    VARIANT_DESCRIPTIONS,
    write_reports,
    write_unfinished,
)
from harness.results.store import (
    OutputError,
    RowNotWritten,
    RunFolder,
    RunWriteError,
    default_run_dir,
    row_line,
    to_frame,
)
from harness.sweep import isolation, sharding
from harness.sweep import resume as resuming
from harness.sweep.cases import Case, expand
from harness.sweep.config import ConfigError, SweepConfig, read_toml
from harness.sweep.isolation import WORKERS_LOG
from harness.sweep.options import as_keywords, by_name
from harness.sweep.runner import TRACEBACK, clock_for
from variants.registry import Variant, variant_source, with_forms


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, a CI cancel, Slurm's time limit, which kills soon after): the case in
    progress is abandoned at once, as by a second Ctrl-C, and the finished rows get their report."""


class StopFlag:
    """Set by the first Ctrl-C: the sweep stops after the case in progress. A second one interrupts,
    as SIGTERM does at once (``Terminated``)."""

    def __init__(self) -> None:
        self.stop = False

    @contextlib.contextmanager
    def installed(self, console: Console | None) -> Iterator[StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if self.stop:
                interrupts.interrupt(KeyboardInterrupt)
                return
            self.stop = True
            if console is not None:
                console.print("[yellow]Ctrl-C: stopping after the current case (press again to abort it)[/]")

        def on_sigterm(signum: int, frame: Any) -> None:
            interrupts.interrupt(Terminated)

        previous = signal.signal(signal.SIGINT, on_sigint)
        previous_term = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            with interrupts.handled():
                yield self
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)


def run(config: str | Path | None = None, **kwargs: Any) -> pd.DataFrame:
    """``sweep`` for a Python caller: a bad option's error names it as the caller spelt it
    (``batch_sizes``, ``max_time``), not by its command-line flag (``--batch-sizes``)."""
    try:
        return sweep(config, **kwargs)
    except ConfigError as exc:
        raise ConfigError(as_keywords(str(exc), kwargs)) from None
    except OutputError as exc:  # "choose another --out, or give --overwrite" is the command line's advice
        raise OutputError(as_keywords(str(exc), kwargs)) from None


def sweep(
    config: str | Path | None = None,
    *,
    write: bool = True,
    progress: bool = False,
    console: Console | None = None,
    profile: bool = False,
    resume: str | Path | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Run a sweep and return its rows as a DataFrame (``frame.attrs["run_dir"]`` is the folder).

    ``options`` are the CLI's, with underscores: ``device``, ``variants``, ``shapes``,
    ``batch_sizes``, ``dtypes``, ``modes``, ``reductions``, ``fusions``, ``biases``, ``threads``,
    ``cache``, ``warmup_s``, ``min_samples``, ``max_samples``, ``rel_ci``, ``max_time_s``,
    ``seed``, ``out``, ``overwrite``, ``processes``. Each takes a list or a comma-separated string.
    As in a config file, the flag's spelling is accepted too (``max_time``, ``warmup``, ``bias``).
    ``config`` is a TOML file whose values the options override. Bad input raises ``harness.ConfigError``.
    ``profile`` also writes a torch.profiler Chrome trace per timed case to ``<run>/traces/``.
    ``isolate``, ``case_timeout``, ``oom_retry`` and ``shard`` (``"K/N"``) are options too;
    ``resume`` names a run folder whose sweep is finished in place (its done cases skipped).
    A folder that already holds a run is refused (``OutputError``) unless ``resume`` finishes it or
    ``overwrite=True`` removes that run's files first.
    """
    options = by_name(options)  # one name per option before the stored sweep or a config file is merged
    if resume is not None and options.get("overwrite"):
        raise ConfigError("--overwrite cannot be combined with --resume (which finishes the run in place)")
    if not write and resume is None and options.get("out") is not None:  # else the folder stays empty, unsaid
        raise ConfigError(f"out={options['out']!r} names a folder, but write=False keeps nothing on disk; "
                          "drop one of them")
    cfg = resuming.config_for(resume, config, options) if resume is not None else SweepConfig.build(config, **options)
    if resume is None and not cfg.device.startswith("cuda"):
        asked = options.get("cache", read_toml(config).get("cache") if config is not None else None)
        if asked == "cold":  # the default is not the user asking
            warnings.warn(f"--cache cold flushes a GPU's L2 only: on {cfg.device} calls are timed back to back, "
                          "with whatever they left in the caches (the rows say cache=hot)", RuntimeWarning,
                          stacklevel=2)  # fmt: skip
    registry = with_forms(cfg.variants)  # graphed_<name> forms too
    every = expand(cfg)
    cases = sharding.select(every, cfg.shard, registry)  # all cases without a shard
    if cfg.shard is not None and not cases and console is not None:  # else it ends saying nothing of why
        groups = len({sharding.group_key(c) for c in every})
        console.print(f"shard {cfg.shard} holds no case: the sweep's {groups} configuration(s) went to the "
                      "shards before it", soft_wrap=True)  # fmt: skip
    folder = RunFolder(cfg.out or default_run_dir(cfg.device)) if write or resume is not None else None
    if folder is None:
        return _sweep(cfg, cases, None, registry, progress, console, profile, resume)
    with folder.held():  # never two runs writing into one folder at once
        if resume is None:  # nor one run's rows after another's
            # the workers' log and the traces (profiling.trace_name) are the run's too
            folder.claim(overwrite=cfg.overwrite, also=(WORKERS_LOG, f"{metrics.TRACES_DIR}/*.trace.json"))
        return _sweep(cfg, cases, folder, registry, progress, console, profile, resume)


def _sweep(cfg: SweepConfig, cases: list[Case], folder: RunFolder | None, registry: Mapping[str, Variant],
           progress: bool, console: Console | None, profile: bool, resume: str | Path | None) -> pd.DataFrame:
    """``run``'s cases, each row appended to ``folder`` as it finishes, and the reports written at
    the end, whatever ends the sweep."""
    trace_dir = folder.path / metrics.TRACES_DIR if profile and folder is not None else None
    rows: list[dict[str, Any]] = []
    if resume is not None and folder is not None:  # keep the rows done, run the rest
        total = len(cases)
        rows, cases = resuming.split(folder, cases, cfg.device)
        if not cases and console is not None:  # else the run would end saying nothing of why
            console.print(f"nothing left to run: all {total} cases of {folder.path} are finished", soft_wrap=True)
    kept = len(rows)
    # what the run's report said of its rows before (merged runs, earlier resumes) still holds of them
    earlier = folder.read_env() if resume is not None and folder is not None else {}
    said = {key: [earlier[key]] if isinstance(earlier[key], str) else earlier[key]  # hand-edited to one line
            for key in (MERGE_WARNINGS, RESUME_WARNINGS) if isinstance(earlier.get(key), (list, str))}
    interrupted = False
    with torch_threads(cfg.threads):
        if resume is not None and not cases:  # nothing is measured now: the run's own environment stands
            env = {k: v for k, v in earlier.items() if k != UNFINISHED} | {CASES_PLANNED: kept}
            peak_bw = env.get(bandwidth.ENV_KEY)
        else:
            env = envinfo.collect(cfg.device) | {"config": cfg.as_dict(), CASES_PLANNED: kept + len(cases)} | said
            env["cpu_allocator"] = allocator.allocator_name()
            # which code each name ran: a plugin may replace a built-in (eager, what every speedup is over)
            env["variant_sources"] = {name: variant_source(name) for name in cfg.variants}
            # what each is, for report.md, which a plugin's absence must not blank
            env[VARIANT_DESCRIPTIONS] = {name: registry[name].description for name in cfg.variants
                                         if name in registry}  # fmt: skip
            env["steady_malloc"] = steady_allocator(cfg)
            env[bandwidth.ENV_KEY] = peak_bw = bandwidth.measure_copy_bandwidth(cfg.device)  # once per run
        if folder is not None:
            folder.write_env(env)
            if cases:
                write_unfinished(folder, kept + len(cases), str(env["date"]))  # until the report replaces it
        clock = clock_for(cfg.device, cfg.cache)
        cache = cfg.cache if cfg.device.startswith("cuda") else "hot"
        bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, disable=not progress or not cases, transient=False,
        )  # fmt: skip
        flag = StopFlag()
        refused: str | None = None  # a finished row results.jsonl refused
        try:
            executor = isolation.CaseExecutor(cfg, registry, clock, cache, trace_dir,  # crashes → rows
                                              folder.path if folder is not None else None, peak_bw)
            with bar, flag.installed(console if progress else None), executor:
                task = bar.add_task("starting", total=len(cases))
                for result in executor.run_all(cases, lambda: flag.stop,
                                               lambda label: bar.update(task, description=label)):
                    trace = result.extra.get(TRACEBACK)
                    if trace is not None:
                        result = replace(result, extra={k: v for k, v in result.extra.items() if k != TRACEBACK})
                    row = result.to_row()
                    # kept for the report and written to results.jsonl as one step: an interrupt
                    # between the two made the report count one case fewer than the file held; kept
                    # first, so a row the disk refuses (RowNotWritten) is still in the report
                    with interrupts.held():
                        rows.append(row)
                        if folder is not None:
                            folder.append(row)
                    if trace is not None and folder is not None:  # after its row: a side file costs no row
                        folder.append_error(result.case.label, str(trace))
                    bar.advance(task)
                interrupted = flag.stop and len(rows) - kept < len(cases)
        except KeyboardInterrupt as exc:  # a second Ctrl-C, or SIGTERM: say where the run can be finished
            raise type(exc)(*([str(folder.path)] if folder is not None else [])) from None
        except RowNotWritten as exc:  # the reports still get written below, with that row
            refused = row_line(row)  # ... and if they cannot be, the error carries it: no file holds it
            folder_path = folder.path if folder is not None else ""
            raise RowNotWritten(f"{exc}; the run stopped after {result.case.label}, whose row report.md keeps; once "
                                f"there is room, finish the run with: python -m harness run --resume "
                                f"{folder_path}") from None
        finally:  # on any exit, a second Ctrl-C included, the finished rows get their report
            try:  # and a Ctrl-C meanwhile (pressed twice, its prompt says) waits until they are written
                with flag.installed(None), interrupts.held():
                    frame = to_frame(rows)
                    if folder is not None:
                        left = len(cases) - (len(rows) - kept)
                        write_reports(folder, frame, final_env(folder, env, rows, kept, left))
            except KeyboardInterrupt as exc:  # then says where the run can be finished, as above
                raise type(exc)(*([str(folder.path)] if folder is not None else [])) from None
            except OSError as exc:  # a full disk: the rows in results.jsonl are the run, the reports derived
                kept_row = (f"; the last case's row, refused by results.jsonl too, is on stdout: once there is room, "
                            f"append it to {folder.path / 'results.jsonl'} and rebuild them with: "
                            if refused is not None else ": once there is room, rebuild them with: ")
                raise RunWriteError(f"the reports in {folder.path} could not be written ({exc.strerror or exc}); every "
                                    f"row written is in results.jsonl{kept_row}python -m harness report {folder.path}",
                                    refused) from None
    frame.attrs["run_dir"] = str(folder.path) if folder is not None else None
    frame.attrs["interrupted"] = interrupted
    return frame


def final_env(folder: RunFolder, env: dict[str, Any], rows: list[dict[str, Any]], kept: int,
              left: int) -> dict[str, Any]:
    """``env`` with what the report must say of how the run ended, rewritten to env.json when that
    is anything (so a report rebuilt later says it too): the ``left`` cases it did not run (a
    resume rewrites it), and a configuration split between the ``kept`` rows of earlier sessions
    and the rows added now (``resume.split_sessions``), beside those said before."""
    apart = resuming.split_sessions(rows[:kept], rows[kept:]) if kept else None
    if left:
        env = env | {UNFINISHED: left}
    if apart:
        env = env | {RESUME_WARNINGS: list(dict.fromkeys([*env.get(RESUME_WARNINGS, []), apart]))}
    if left or apart:
        folder.write_env(env)
    return env


def steady_allocator(cfg: SweepConfig) -> bool:
    """Make the CPU allocator steady when the run asks (``allocator.make_steady``), and say what is in
    effect: once made steady, a process stays so, and a run asking otherwise is told."""
    if cfg.device != "cpu":
        return False
    if cfg.steady_malloc:
        return allocator.make_steady()
    why = allocator.already_steady()
    if why:
        warnings.warn(f"--steady-malloc false: {why}; this run is steady too (env.json says so)", RuntimeWarning,
                      stacklevel=3)
        return True
    return False
