"""A run's rows as tables: variants down, configurations across, one table per device · dtype · mode.

Shared by the report (latency, speedup) and the profiling tables (FLOPs, memory, telemetry).
"""
from __future__ import annotations

import pandas as pd

GROUP_COLUMNS: tuple[str, ...] = ("device", "dtype", "mode")
CONFIG_COLUMNS: tuple[str, ...] = ("channels", "height", "width", "batch", "reduction", "fusion", "bias")


def config_label(frame: pd.DataFrame) -> pd.Series:
    """``CxHxW b<batch>``, plus ``r<reduction>``, the fusion and bias where the frame has several."""
    label = (
        frame["channels"].astype(str) + "x" + frame["height"].astype(str) + "x" + frame["width"].astype(str)
        + " b" + frame["batch"].astype(str)
    )  # fmt: skip
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


def pivot(group: pd.DataFrame, value: str) -> pd.DataFrame:
    """Variants × configurations of one column; the configuration order is the sweep's."""
    g = group.assign(config=config_label(group))
    table = g.pivot_table(index="variant", columns="config", values=value, aggfunc="first", sort=False)
    order = [v for v in dict.fromkeys(g["variant"]) if v in table.index]
    return table.loc[order]
