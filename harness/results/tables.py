"""A run's rows as tables: variants down, configurations across, one table per device · dtype · mode.

Shared by the report (latency, speedup, the recommendation) and the profiling tables (FLOPs, memory,
telemetry): the grouping, the configuration labels, the marks a timed cell may carry, and how a
latency is written (a median with its interval, never "± IQR", which reads as symmetric error bars).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.results.compare_stats import Timing
from harness.results.record import truthy

#: The variant every speedup is over: the seed's module as written, measured in the same run.
BASELINE_VARIANT = "eager"
#: The A/A control (``variants.builtin``): eager again, as a variant of its own. The answer table
#: never ranks it, and reads how far it lies from eager as the run's own noise (``recommend``).
CONTROL_VARIANT = "control"
GROUP_COLUMNS: tuple[str, ...] = ("device", "dtype", "mode")
CONFIG_COLUMNS: tuple[str, ...] = ("context", "channels", "height", "width", "batch", "reduction", "fusion", "bias")

#: The marks a timed cell may carry, and what they mean (the legend under the tables).
MARKS: dict[str, str] = {
    "~": "noisy: IQR above 10% of the median (in a speedup: on either side); compare such cells with care",
    "!": "disturbed: the CPU was starved while this case ran (other processes kept its threads waiting for a core, "
         "and it stayed so "
         "when measured again; in a speedup: on either side); the number says how busy the machine was: "
         "measure again on a quiet machine",
    "host-bound": "the host's time to issue one call (shown) exceeds the GPU time; end to end, a program that "
                  "does not overlap it pays the host time",
    "batch": "measured at a smaller batch (shown) than its column's: the batch asked for ran out of memory "
             "(--oom-retry); its latency is of that batch, so it is never ranked, divided into a speedup, "
             "compared or plotted against the others",
}


def escape_md(text: str) -> str:
    """Keep ``|``, ``<`` and line breaks (an error's reason may hold all three) from breaking a
    Markdown table or starting an HTML tag."""
    return " ".join(text.splitlines()).replace("|", "\\|").replace("<", "&lt;")


def md_table(frame: pd.DataFrame, **kwargs: Any) -> str:
    """``frame.to_markdown`` with every text cell escaped (``escape_md``)."""
    return frame.map(lambda v: escape_md(v) if isinstance(v, str) else v).to_markdown(**kwargs)


def marks(row: Mapping[str, Any]) -> list[str]:
    """The ``MARKS`` keys that apply to a timed row."""
    found = []
    if truthy(row.get("noisy")):
        found.append("~")
    if truthy(row.get("disturbed")):
        found.append("!")
    if row.get("bound") == "host":
        found.append("host-bound")
    if smaller_batch(row) is not None:
        found.append("batch")
    return found


def mark_text(mark: str, row: Mapping[str, Any]) -> str:
    """How a mark follows a latency in a table cell: `` ~``, or its figure for the two that have one."""
    if mark == "host-bound":
        return f" (host-bound: host {number(row.get('host_ms')):.4g})"
    if mark == "batch":
        return f" (at batch {smaller_batch(row)})"
    return f" {mark}"


def smaller_batch(row: Mapping[str, Any]) -> int | None:
    """The batch a row was measured at when ``--oom-retry`` had to halve the one asked for, else None."""
    run, asked = number(row.get("batch_run")), number(row.get("batch"))
    return int(run) if math.isfinite(run) and math.isfinite(asked) and run < asked else None


def at_batch_asked(frame: pd.DataFrame) -> pd.Series:
    """Which rows were measured at the batch their key names: all but ``--oom-retry``'s halved ones,
    whose latency no other row of their column can be ranked or divided against."""
    if "batch_run" not in frame.columns:
        return pd.Series(True, index=frame.index)
    run = pd.to_numeric(frame["batch_run"], errors="coerce")
    return run.isna() | (run >= pd.to_numeric(frame["batch"], errors="coerce"))


def number(value: Any) -> float:
    """A stored figure as a float; NaN when it is empty (None, NaN, "") or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def raw_samples(value: Any) -> np.ndarray:
    """A row's raw samples (a list from results.jsonl, or its JSON text) as finite floats; empty when absent."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return np.array([], dtype=float)
    if not isinstance(value, (list, tuple, np.ndarray)):
        return np.array([], dtype=float)
    x = np.asarray(value, dtype=float)
    return x[np.isfinite(x)]


@dataclass(frozen=True)
class TimeColumns:
    """Where a row keeps one of its time figures: median, raw samples, CI and IQR."""

    median: str
    samples: str
    ci_low: str
    ci_high: str
    iqr: str | None


#: ``median``: the primary latency (GPU time on CUDA, the call's time on CPU); ``host``: the host's
#: time to issue a call; ``wall``: sync, call, sync. On CPU all three are the call's time.
METRICS: dict[str, TimeColumns] = {
    "median": TimeColumns("median_ms", "samples_ms", "ci_low_ms", "ci_high_ms", "iqr_ms"),
    "host": TimeColumns("host_ms", "host_samples_ms", "host_ci_low_ms", "host_ci_high_ms", None),
    "wall": TimeColumns("wall_ms", "wall_samples_ms", "wall_ci_low_ms", "wall_ci_high_ms", None),
}


def timing_of(row: Mapping[str, Any], metric: str = "median") -> Timing:
    """Samples (none in results.csv), median, CI and IQR of ``metric`` in ``row``. A CPU row keeps one
    set of samples, which is all three figures': the device is the host there."""
    fig = METRICS["median" if str(row.get("device", "")).startswith("cpu") else metric]
    iqr = number(row.get(fig.iqr)) if fig.iqr else math.nan
    return Timing(raw_samples(row.get(fig.samples)), number(row.get(fig.median)), number(row.get(fig.ci_low)),
                  number(row.get(fig.ci_high)), iqr)  # fmt: skip


def decimals(value: float, digits: int = 3) -> int:
    """Decimals that write ``value`` to ``digits`` significant figures: 0.864 → 3, 12.3 → 1, 1234 → 0."""
    if not math.isfinite(value) or value == 0:
        return digits - 1
    return max(0, digits - 1 - math.floor(math.log10(abs(value))))


def ratio_text(value: float) -> str:
    """A speedup: two decimals (``1.55``), or two significant figures below 0.1, where two decimals
    would read ``0.00`` for a variant 250 times slower (``0.004``)."""
    return f"{value:.2f}" if not math.isfinite(value) or abs(value) >= 0.1 else f"{value:.2g}"


def latency_text(row: Mapping[str, Any]) -> str:
    """``0.864 [0.851, 0.881]``: the median and the 95% CI of the median, in ms, to the median's precision.

    Without a CI (under 6 samples), ``(IQR 0.85–0.88)``: the samples' 25th and 75th percentiles; a
    row without raw samples (results.csv) gives the IQR's width, ``(IQR 0.03)``; one sample, ``(1 sample)``.
    """
    median = number(row.get("median_ms"))
    d = decimals(median)
    text = f"{median:.{d}f}"
    low, high = number(row.get("ci_low_ms")), number(row.get("ci_high_ms"))
    if math.isfinite(low) and math.isfinite(high):
        return f"{text} [{low:.{d}f}, {high:.{d}f}]"
    samples = raw_samples(row.get("samples_ms"))
    if samples.size >= 2:
        q1, q3 = np.percentile(samples, [25, 75])
        return f"{text} (IQR {q1:.{d}f}–{q3:.{d}f})"
    iqr = number(row.get("iqr_ms"))
    if number(row.get("n_samples")) < 2:  # one sample has no spread: "(IQR 0)" read as a steady time
        return f"{text} (1 sample)"
    return f"{text} (IQR {iqr:.2g})" if math.isfinite(iqr) else text


#: What ``latency_text``'s cells mean, for the captions above the tables.
LATENCY_CAPTION = (
    "median latency in ms [95% confidence interval of the median]; a case with too few (independent) samples "
    "for an interval shows (IQR p25–p75), the middle half of its samples, instead (or the IQR's width alone where "
    "the raw samples are not at hand)"
)


def config_label(frame: pd.DataFrame) -> pd.Series:
    """``CxHxW b<batch>``, plus ``r<reduction>``, the fusion and bias where the frame has several;
    inside a network, its context first (``unet 3x128x128 b1``: the network's input)."""
    label = (
        frame["channels"].astype(str) + "x" + frame["height"].astype(str) + "x" + frame["width"].astype(str)
        + " b" + frame["batch"].astype(str)
    )  # fmt: skip
    if "context" in frame:
        label = frame["context"].fillna("").astype(str).map(lambda c: f"{c} " if c else "") + label
    if frame["reduction"].nunique() > 1:
        label = label + " r" + frame["reduction"].astype(str)
    if frame["fusion"].nunique() > 1:
        label = label + " " + frame["fusion"].astype(str)
    if "bias" in frame and frame["bias"].nunique() > 1:
        label = label + frame["bias"].map({True: " bias", False: ""}).fillna("")
    return label


def groups(frame: pd.DataFrame) -> list[tuple[tuple[str, str, str], pd.DataFrame]]:
    """(device, dtype, mode) groups in a stable order."""
    present = frame.dropna(subset=["status"])
    return [(tuple(map(str, k)), g) for k, g in present.groupby(list(GROUP_COLUMNS), sort=True)]


def last_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Each case's last row: a resumed or merged run may hold a case twice, and its last row is the
    one every table, ratio, count and the recommendation use (``compare`` too)."""
    keys = [c for c in (*GROUP_COLUMNS, *CONFIG_COLUMNS, "variant") if c in frame.columns]
    return frame.drop_duplicates(keys, keep="last")


def pivot(group: pd.DataFrame, value: str) -> pd.DataFrame:
    """Variants × configurations of one column; the configuration order is the sweep's. A case that
    appears more than once (a resumed run) shows its last row, the one the recommendation and
    ``compare`` use."""
    last = last_rows(group)
    g = last.assign(config=config_label(last))
    table = g.pivot_table(index="variant", columns="config", values=value, aggfunc="first", sort=False)
    order = [v for v in dict.fromkeys(g["variant"]) if v in table.index]
    return table.loc[order]
