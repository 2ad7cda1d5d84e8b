"""``harness.run``: the whole pipeline, configuration → cases → runner → rows → results → reports."""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.measure import allocator, bandwidth, envinfo, metrics
from harness.results import report
from harness.results.store import REPORT_MD, RunFolder, default_run_dir, to_frame
from harness.sweep import isolation, sharding
from harness.sweep import resume as resuming
from harness.sweep.cases import expand
from harness.sweep.config import SweepConfig
from harness.sweep.runner import clock_for
from variants.registry import all_variants


class StopFlag:
    """Set by the first Ctrl-C: the sweep stops after the case in progress. A second one interrupts."""

    def __init__(self) -> None:
        self.stop = False

    @contextlib.contextmanager
    def installed(self, console: Console | None) -> Iterator[StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if self.stop:
                raise KeyboardInterrupt
            self.stop = True
            if console is not None:
                console.print("[yellow]Ctrl-C: stopping after the current case (press again to abort it)[/]")

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the run and put it back after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_outputs(folder: RunFolder, frame: pd.DataFrame, env: dict[str, Any]) -> None:
    """The derived files: results.csv, report.md, env.json (results.jsonl is written row by row)."""
    folder.write_env(env)
    folder.write_csv(frame)
    (folder.path / REPORT_MD).write_text(report.markdown(frame, env), encoding="utf-8")


def run(
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
    ``seed``, ``out``, ``processes``. Each takes a list or a comma-separated string. ``config`` is a TOML file
    whose values the options override. Bad input raises ``harness.ConfigError``.
    ``profile`` also writes a torch.profiler Chrome trace per timed case to ``<run>/traces/``.
    Issue 7: ``isolate``, ``case_timeout``, ``oom_retry`` and ``shard`` (``"K/N"``) are options too;
    ``resume`` names a run folder whose sweep is finished in place (its done cases skipped).
    """
    cfg = resuming.config_for(resume, config, options) if resume is not None else SweepConfig.build(config, **options)
    registry = all_variants()
    cases = sharding.select(expand(cfg), cfg.shard, registry, cfg.timing)  # issue 7: all cases without a shard
    folder = RunFolder(cfg.out or default_run_dir(cfg.device)) if write or resume is not None else None
    trace_dir = folder.path / metrics.TRACES_DIR if profile and folder is not None else None
    rows: list[dict[str, Any]] = []
    if resume is not None and folder is not None:  # issue 7: keep the rows done, run the rest
        rows, cases = resuming.split(folder, cases, cfg.device)
    interrupted = False
    with torch_threads(cfg.threads):
        env = envinfo.collect(cfg.device) | {"config": cfg.as_dict()}
        env["cpu_allocator"] = allocator.allocator_name()
        env["steady_malloc"] = cfg.device == "cpu" and cfg.steady_malloc and allocator.make_steady()
        env[bandwidth.ENV_KEY] = peak_bw = bandwidth.measure_copy_bandwidth(cfg.device)  # once per run
        if folder is not None:
            folder.write_env(env)
        clock = clock_for(cfg.device, cfg.cache)
        cache = cfg.cache if cfg.device.startswith("cuda") else "hot"
        bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, disable=not progress, transient=False,
        )  # fmt: skip
        flag = StopFlag()
        try:
            executor = isolation.CaseExecutor(cfg, registry, clock, cache, trace_dir,  # issue 7: crashes → rows
                                              folder.path if folder is not None else None)
            with bar, flag.installed(console if progress else None), executor:
                task = bar.add_task("starting", total=len(cases))
                for case in cases:
                    if flag.stop:
                        interrupted = True
                        break
                    bar.update(task, description=case.label)
                    row = executor.run(case)
                    median = row.get("median_ms") if row.get("status") == "ok" else None
                    row |= bandwidth.bandwidth_columns(case, median, peak_bw)
                    if folder is not None:
                        folder.append(row)
                    rows.append(row)
                    bar.advance(task)
        finally:  # on any exit, a second Ctrl-C included, the finished rows get their report
            frame = to_frame(rows)
            if folder is not None:
                write_outputs(folder, frame, env)
    frame.attrs["run_dir"] = str(folder.path) if folder is not None else None
    frame.attrs["interrupted"] = interrupted
    return frame
