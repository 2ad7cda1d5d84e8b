"""Report tables for the profiling metrics: FLOPs, peak memory, GPU telemetry.

Called by :func:`harness.results.report.markdown` for each device · dtype · mode group. Frames without the
metric columns (older runs) get no tables, not an error.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from harness.results.tables import at_batch_asked, config_label, mark_text, pivot, smaller_batch

MiB = float(1 << 20)


def si(value: object) -> str:
    """``4.94 k``, ``1.23 G``: counts of FLOPs at a glance; "" for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    v = float(value)  # type: ignore[arg-type]
    shown = abs(float(f"{v:.3g}"))  # the scale of the rounded count: 999,779 is "1 M", never "1e+03 k"
    for scale, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if shown >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _num(value: object, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(float(value), fmt)  # type: ignore[arg-type]


def _has(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and frame[column].notna().any()


def _at_batch(row: Mapping[str, Any]) -> str:
    """`` (at batch 4)`` for a row that --oom-retry measured at a halved batch: its figures are that
    batch's, not its column's."""
    return mark_text("batch", row) if smaller_batch(row) is not None else ""


def flop_table(group: pd.DataFrame) -> list[str]:
    """One row per configuration: the three FLOP counts and the arithmetic intensity."""
    if not _has(group, "analytic_flops"):
        return []
    # a configuration's FLOPs from a row at the batch asked; where only --oom-retry's halved batch
    # ran, that batch's, and the label says so
    g = group.assign(config=config_label(group), asked=at_batch_asked(group).to_numpy(), order=range(len(group)))
    g = g.sort_values("asked", ascending=False, kind="stable").drop_duplicates("config").sort_values("order")
    g["config"] = [c + _at_batch(r) for c, r in zip(g["config"], g.to_dict("records"), strict=True)]
    table = pd.DataFrame({
        "configuration": g["config"],
        "analytic (2/MAC)": g["analytic_flops"].map(si),
        "torch (2/MAC)": g["torch_flops"].map(si) if "torch_flops" in g else "",
        "fvcore (1/MAC, forward)": g["fvcore_flops"].map(si) if "fvcore_flops" in g else "",
        "flop/byte": g["arithmetic_intensity"].map(lambda v: _num(v, ".3g")) if "arithmetic_intensity" in g else "",
    })
    lines = ["FLOPs per call (analytic_flops / bytes_min = flop/byte):", "", table.to_markdown(index=False), ""]
    uncounted = {
        str(v) for c in ("fvcore_uncounted", "torch_uncounted") if c in g for v in g[c].dropna() if str(v)
    }
    if uncounted:
        lines += [f"Not counted: {'; '.join(sorted(uncounted))}", ""]
    return lines


def _known(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _mib(value: object) -> str:
    """Bytes as MiB to 3 significant figures, whole MiB from 1000 up: ``.3g`` wrote 1530 MiB as
    ``1.53e+03``."""
    mib = float(value) / MiB  # type: ignore[arg-type]
    return f"{mib:.0f}" if abs(mib) >= 1000 else f"{mib:.3g}"


def memory_table(group: pd.DataFrame) -> list[str]:
    """Variants × configurations: peak MiB above the baseline (reserved in brackets on CUDA; what a
    CUDA graph holds in its pool after a plus, since a replay's own peak reads 0)."""
    ok = group[group["status"] == "ok"] if "status" in group else group
    if not _has(ok, "peak_mem_bytes"):
        return []

    def cell(row: dict[str, object]) -> str:
        peak = row.get("peak_mem_bytes")
        text = _mib(peak) if _known(peak) else ""
        reserved, pooled = row.get("peak_reserved_bytes"), row.get("graph_pool_bytes")
        if text and _known(reserved):
            text += f" ({_mib(reserved)})"
        if text and _known(pooled) and float(pooled) > 0:  # type: ignore[arg-type]
            text += f" +{_mib(pooled)} held"
        return text + _at_batch(row) if text else text

    cells = ok.assign(mem_cell=[cell(r) for r in ok.to_dict("records")])
    title = "Peak memory during one call, MiB above what was live before it"
    if _has(ok, "peak_reserved_bytes"):
        title += " (in brackets: reserved by the caching allocator)"
    if "graph_pool_bytes" in ok and (pd.to_numeric(ok["graph_pool_bytes"], errors="coerce") > 0).any():
        title += "; +N held: MiB a CUDA graph keeps in its own pool between calls, allocated when it was captured"
    return [title + ":", "", pivot(cells, "mem_cell").fillna("").to_markdown(disable_numparse=True), ""]


def telemetry_table(group: pd.DataFrame) -> list[str]:
    """One row per timed case with GPU telemetry; nothing when no case has any."""
    ok = group[group["status"] == "ok"] if "status" in group else group
    cols = ("gpu_util_mean", "sm_clock_mean_mhz", "power_mean_w", "energy_per_call_j", "temperature_c", "throttled")
    if not any(_has(ok, c) for c in cols):
        return []
    g = ok.assign(config=[c + _at_batch(r) for c, r in zip(config_label(ok), ok.to_dict("records"), strict=True)])

    def col(name: str, fmt: str) -> pd.Series:
        return g[name].map(lambda v: _num(v, fmt)) if name in g else pd.Series("", index=g.index)

    def span(lo: str, mean: str) -> pd.Series:
        a, b = col(lo, ".0f"), col(mean, ".0f")
        return pd.Series([f"{x}–{y}" if x and y else (x or y) for x, y in zip(a, b, strict=True)], index=g.index)

    table = pd.DataFrame({
        "variant": g["variant"],
        "configuration": g["config"],
        "util % (mean/max)": [f"{m}/{x}" if m else "" for m, x in zip(col("gpu_util_mean", ".0f"),
                                                                     col("gpu_util_max", ".0f"), strict=True)],
        "SM MHz (min–mean)": span("sm_clock_min_mhz", "sm_clock_mean_mhz"),
        "mem MHz (min–mean)": span("mem_clock_min_mhz", "mem_clock_mean_mhz"),
        "W": col("power_mean_w", ".0f"),
        "mJ/call": g["energy_per_call_j"].map(lambda v: _num(v * 1e3 if v is not None else None, ".3g"))
        if "energy_per_call_j" in g else "",
        "°C": col("temperature_c", ".0f"),
        "throttled": g["throttle_reasons"].fillna("").astype(str) if "throttle_reasons" in g else "",
    })
    return [
        "GPU telemetry over the timed loop (NVML; utilization = share of time any kernel ran, not SM occupancy):",
        "",
        table.to_markdown(index=False, disable_numparse=True),
        "",
    ]


def profiling_markdown(group: pd.DataFrame) -> list[str]:
    """The profiling tables of one device · dtype · mode group, as Markdown lines."""
    return flop_table(group) + memory_table(group) + telemetry_table(group)
