"""A case's three time figures as row columns, derived from raw samples (and pooled across processes).

- GPU time on CUDA, the call's time on CPU: ``median_ms``, ``ci_*_ms`` and the other ``Stats``
  columns. It is the primary latency that reports, plots and compare use.
- Host time per call, ``host_ms``: the time to issue one call without a sync (CUDA). A kernel that
  is fast on the GPU but slow to launch is slow for the user: end to end a host-bound call costs
  its host time.
- Synchronous wall latency, ``wall_ms``: sync, call, sync (CUDA). What a launch-bound program sees.
- ``bound``: ``host`` or ``device``, whichever of the first two is larger (CUDA only).

On CPU the device is the host: ``host_ms`` and ``wall_ms`` are the call's time (``median_ms``),
``bound`` is empty, and ``wait_share``/``disturbed`` say whether the case had its cores to itself.
The schema is the same on every device. Raw samples (``samples_ms``, ``host_samples_ms``,
``wall_samples_ms``, ``wait_shares``) go to results.jsonl only; every column here is derived from
them, so pooling the samples of several worker processes (``--processes``) is pooling ``Figures``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from harness.measure.stats import STATS_COLUMNS, Stats, median_ci
from harness.measure.timing import Timing
from harness.measure.timing import pooled as pooled_timing

#: Columns this module fills, in report order (after the ``Stats`` columns).
FIGURE_COLUMNS: tuple[str, ...] = (
    "host_ms", "host_ci_low_ms", "host_ci_high_ms", "wall_ms", "wall_ci_low_ms", "wall_ci_high_ms", "bound",
    "overran", "wait_share", "disturbed", "remeasured", "processes",
)  # fmt: skip
#: Raw per-sample data kept in results.jsonl (the CSV keeps only ``CSV_LIST_COLUMNS`` of them).
RAW_FIGURE_COLUMNS: tuple[str, ...] = ("host_samples_ms", "wall_samples_ms", "wait_shares", "process_medians_ms")
#: Lists short enough for the CSV, as JSON text: one median a process, which ``compare``'s
#: process gate needs, so a results.csv gets the verdict its results.jsonl gets.
CSV_LIST_COLUMNS: tuple[str, ...] = ("process_medians_ms",)
#: Every column holding a list of samples.
RAW_COLUMNS_ALL: tuple[str, ...] = ("samples_ms", *RAW_FIGURE_COLUMNS)


def _median_with_ci(samples: Sequence[float]) -> tuple[float, float, float]:
    x = np.asarray(samples, dtype=float)
    low, high = median_ci(x)
    return float(np.median(x)), low, high


def _floats(value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(math.nan if v is None else float(v) for v in value)


@dataclass(frozen=True)
class Figures:
    """Every timing figure of an ``ok`` case, with the raw samples they are derived from."""

    stats: Stats
    throughput_img_s: float | None
    calls_per_sample: int
    warmup_calls: int
    stop_reason: str
    samples_ms: tuple[float, ...]
    host_ms: float
    host_ci_low_ms: float
    host_ci_high_ms: float
    wall_ms: float
    wall_ci_low_ms: float
    wall_ci_high_ms: float
    #: ``host`` or ``device`` on CUDA; None on the CPU.
    bound: str | None
    #: CUDA: tries redone because the holding kernel ran out; None on the CPU.
    overran: int | None
    #: CPU: median share of a sample's time the threads waited for a core; None on CUDA.
    wait_share: float | None
    disturbed: bool | None
    remeasured: bool
    processes: int = 1
    #: Raw data: None where the device has none (host and wall samples on the CPU, waits on CUDA).
    host_samples_ms: tuple[float, ...] | None = None
    wall_samples_ms: tuple[float, ...] | None = None
    wait_shares: tuple[float, ...] | None = None
    process_medians_ms: tuple[float, ...] | None = None

    @classmethod
    def of(cls, timing: Timing, wall: Timing | None, on_cuda: bool, batch: int, remeasured: bool = False,
           processes: int = 1, process_medians_ms: Sequence[float] = ()) -> Figures:
        """The figures of one measurement (``wall``: CUDA's synchronous timing, if taken)."""
        stats = Stats.from_samples(timing.samples_ms)
        common: dict[str, Any] = {
            "stats": stats,
            "throughput_img_s": batch / (stats.median_ms * 1e-3) if stats.median_ms > 0 else None,
            "calls_per_sample": timing.calls_per_sample, "warmup_calls": timing.warmup_calls,
            "stop_reason": timing.stop_reason, "samples_ms": tuple(timing.samples_ms),
            "remeasured": remeasured, "processes": processes,
            "process_medians_ms": tuple(process_medians_ms) if processes > 1 else None,
        }  # fmt: skip
        if on_cuda:
            host, host_low, host_high = _median_with_ci(timing.host_samples_ms or timing.samples_ms)
            wall_stats = _median_with_ci(wall.samples_ms) if wall is not None else (math.nan,) * 3
            return cls(**common, host_ms=host, host_ci_low_ms=host_low, host_ci_high_ms=host_high,
                       wall_ms=wall_stats[0], wall_ci_low_ms=wall_stats[1], wall_ci_high_ms=wall_stats[2],
                       bound="host" if host > stats.median_ms else "device", overran=timing.overran,
                       wait_share=None, disturbed=None, host_samples_ms=tuple(timing.host_samples_ms),
                       wall_samples_ms=tuple(wall.samples_ms) if wall is not None else ())  # fmt: skip
        return cls(**common, host_ms=stats.median_ms, host_ci_low_ms=stats.ci_low_ms,
                   host_ci_high_ms=stats.ci_high_ms, wall_ms=stats.median_ms, wall_ci_low_ms=stats.ci_low_ms,
                   wall_ci_high_ms=stats.ci_high_ms, bound=None, overran=None, wait_share=timing.wait_share,
                   disturbed=timing.disturbed, wait_shares=tuple(timing.wait_shares))  # fmt: skip

    def as_row(self) -> dict[str, Any]:
        """The row's timing columns, raw samples included (NaN waits stored as null)."""
        row: dict[str, Any] = self.stats.as_dict()
        for f in fields(self):
            if f.name == "stats":
                continue
            value = getattr(self, f.name)
            if f.name in RAW_FIGURE_COLUMNS and value is None:
                continue
            if isinstance(value, tuple):
                value = [None if isinstance(v, float) and math.isnan(v) else v for v in value]
            row[f.name] = value
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Figures | None:
        """The figures stored in a row; None when it has no raw samples (not ``ok``, or a CSV)."""
        if not isinstance(row.get("samples_ms"), (list, tuple)):
            return None
        stats = Stats(**{name: row.get(name) for name in STATS_COLUMNS})
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "stats" or f.name not in row:
                continue
            value = row[f.name]
            values[f.name] = _floats(value) if f.name in RAW_COLUMNS_ALL else value
        return cls(stats=stats, **values)

    def timings(self) -> tuple[Timing, Timing | None]:
        """The raw samples back as timings (the inverse of ``of``, for pooling)."""
        timing = Timing(
            samples_ms=self.samples_ms, calls_per_sample=self.calls_per_sample, warmup_calls=self.warmup_calls,
            stop_reason=self.stop_reason, host_samples_ms=self.host_samples_ms or (),
            wait_shares=self.wait_shares or (), overran=self.overran or 0,
        )  # fmt: skip
        wall = Timing(self.wall_samples_ms, 1, 0, "converged") if self.wall_samples_ms else None
        return timing, wall


def pooled(figures: Sequence[Figures], on_cuda: bool, batch: int) -> Figures:
    """One case measured in several processes: every figure derived again from all their samples.

    On the CPU a process that was re-measured and still disturbed taints the pool.
    """
    pairs = [f.timings() for f in figures]
    timing = pooled_timing([t for t, _ in pairs])
    walls = [w for _, w in pairs if w is not None]
    wall = pooled_timing(walls) if walls else None
    medians = [float(np.median(t.samples_ms)) for t, _ in pairs]
    remeasured = any(f.remeasured for f in figures)
    out = Figures.of(timing, wall, on_cuda, batch, remeasured, len(figures), medians)
    if not on_cuda:
        out = replace(out, disturbed=bool(out.disturbed) or any(bool(f.disturbed) for f in figures))
    return out
