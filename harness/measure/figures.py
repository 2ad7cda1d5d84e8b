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
them, so pooling the samples of several worker processes (``--processes``) is pooling rows.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.measure.stats import Stats, median_ci
from harness.measure.timing import Timing, pooled

#: Columns this module fills, in report order (after the ``Stats`` columns).
FIGURE_COLUMNS: tuple[str, ...] = (
    "host_ms", "host_ci_low_ms", "host_ci_high_ms", "wall_ms", "wall_ci_low_ms", "wall_ci_high_ms", "bound",
    "overran", "wait_share", "disturbed", "remeasured", "processes",
)  # fmt: skip
#: Raw per-sample data kept in results.jsonl, left out of the CSV.
RAW_FIGURE_COLUMNS: tuple[str, ...] = ("host_samples_ms", "wall_samples_ms", "wait_shares", "process_medians_ms")


def _median_with_ci(samples: Sequence[float]) -> tuple[float, float, float]:
    x = np.asarray(samples, dtype=float)
    low, high = median_ci(x)
    return float(np.median(x)), low, high


def timing_columns(timing: Timing, wall: Timing | None, on_cuda: bool, batch: int, remeasured: bool = False,
                   processes: int = 1, process_medians_ms: Sequence[float] = ()) -> dict[str, Any]:
    """Every timing column of an ``ok`` row, raw samples included."""
    stats = Stats.from_samples(timing.samples_ms)
    row: dict[str, Any] = stats.as_dict() | {
        "throughput_img_s": batch / (stats.median_ms * 1e-3) if stats.median_ms > 0 else None,
        "calls_per_sample": timing.calls_per_sample,
        "warmup_calls": timing.warmup_calls,
        "stop_reason": timing.stop_reason,
        "samples_ms": list(timing.samples_ms),
        "processes": processes,
        "remeasured": remeasured,
    }
    if processes > 1:
        row["process_medians_ms"] = list(process_medians_ms)
    if on_cuda:
        host, host_low, host_high = _median_with_ci(timing.host_samples_ms or timing.samples_ms)
        wall_stats = _median_with_ci(wall.samples_ms) if wall is not None else (math.nan,) * 3
        row |= {
            "host_ms": host, "host_ci_low_ms": host_low, "host_ci_high_ms": host_high,
            "wall_ms": wall_stats[0], "wall_ci_low_ms": wall_stats[1], "wall_ci_high_ms": wall_stats[2],
            "bound": "host" if host > stats.median_ms else "device",
            "overran": timing.overran,
            "host_samples_ms": list(timing.host_samples_ms),
            "wall_samples_ms": list(wall.samples_ms) if wall is not None else [],
            "wait_share": None, "disturbed": None,
        }  # fmt: skip
    else:
        row |= {
            "host_ms": stats.median_ms, "host_ci_low_ms": stats.ci_low_ms, "host_ci_high_ms": stats.ci_high_ms,
            "wall_ms": stats.median_ms, "wall_ci_low_ms": stats.ci_low_ms, "wall_ci_high_ms": stats.ci_high_ms,
            "bound": None, "overran": None,
            "wait_share": timing.wait_share, "disturbed": timing.disturbed,
            "wait_shares": [None if math.isnan(s) else s for s in timing.wait_shares],
        }  # fmt: skip
    return row


def _floats(value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(math.nan if v is None else float(v) for v in value)


def timings_of(row: Mapping[str, Any]) -> tuple[Timing, Timing | None]:
    """The row's raw samples back as timings (the inverse of ``timing_columns``, for pooling)."""
    samples = _floats(row.get("samples_ms"))
    timing = Timing(
        samples_ms=samples,
        calls_per_sample=int(row.get("calls_per_sample") or 1),
        warmup_calls=int(row.get("warmup_calls") or 0),
        stop_reason=str(row.get("stop_reason")),
        host_samples_ms=_floats(row.get("host_samples_ms")),
        wait_shares=_floats(row.get("wait_shares")),
        overran=int(row.get("overran") or 0),
    )
    walls = _floats(row.get("wall_samples_ms"))
    wall = Timing(walls, 1, 0, "converged") if walls else None
    return timing, wall


def pool_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One row from the same case measured in several processes: their samples pooled.

    A row that is not ``ok`` (a mismatch, an error, a crash in one process) is returned as it is:
    one failing process is enough to distrust the case. Otherwise the first row's other columns
    (correctness, metrics) are kept, and every timing column is derived again from all samples.
    """
    for row in rows:
        if row.get("status") != "ok":
            return dict(row) | {"processes": len(rows)}
    pairs = [timings_of(r) for r in rows]
    timing = pooled([t for t, _ in pairs])
    walls = [w for _, w in pairs if w is not None]
    wall = pooled(walls) if walls else None
    on_cuda = str(rows[0].get("device", "")).startswith("cuda")
    medians = [float(np.median(t.samples_ms)) for t, _ in pairs]
    remeasured = any(bool(r.get("remeasured")) for r in rows)
    columns = timing_columns(timing, wall, on_cuda, int(rows[0]["batch"]), remeasured, len(rows), medians)
    if not on_cuda:  # a process that was re-measured and still disturbed taints the pool
        columns["disturbed"] = bool(columns["disturbed"]) or any(bool(r.get("disturbed")) for r in rows)
    return dict(rows[0]) | columns
