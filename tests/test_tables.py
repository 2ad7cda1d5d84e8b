"""The table helpers every report shares: configuration labels, latency cells, grouping and pivots.

Each test pins what a reader sees: a column label that hides the one setting two columns differ in,
or a latency cell that shows an interval it does not have, misleads every table built on it.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness.results.tables import (
    at_batch_asked,
    config_label,
    decimals,
    groups,
    latency_text,
    md_table,
    pivot,
)


def cases(**columns: list) -> pd.DataFrame:
    """Rows of one shape (32x64x64 b8, r16, add) but for the columns given."""
    n = len(next(iter(columns.values())))
    base = {"channels": [32] * n, "height": [64] * n, "width": [64] * n, "batch": [8] * n,
            "reduction": [16] * n, "fusion": ["add"] * n}  # fmt: skip
    return pd.DataFrame({**base, **columns})


def test_a_label_names_only_the_settings_its_rows_differ_in() -> None:
    assert list(config_label(cases(variant=["a", "b"]))) == ["32x64x64 b8"] * 2
    assert list(config_label(cases(reduction=[2, 16]))) == ["32x64x64 b8 r2", "32x64x64 b8 r16"]
    assert list(config_label(cases(fusion=["add", "max"]))) == ["32x64x64 b8 add", "32x64x64 b8 max"]
    assert list(config_label(cases(bias=[True, False]))) == ["32x64x64 b8 bias", "32x64x64 b8"]
    assert list(config_label(cases(bias=[True, True]))) == ["32x64x64 b8"] * 2


def test_three_reductions_and_an_unknown_bias_are_labelled_too() -> None:
    assert list(config_label(cases(reduction=[2, 4, 16]))) == [f"32x64x64 b8 r{r}" for r in (2, 4, 16)]
    # a row from before the bias column existed says nothing, never "nan" or "None"
    assert list(config_label(cases(bias=[True, False, None]))) == ["32x64x64 b8 bias", "32x64x64 b8", "32x64x64 b8"]


def test_a_label_inside_a_network_starts_with_its_context() -> None:
    frame = cases(context=["unet", None, ""], channels=[3, 32, 32])
    assert list(config_label(frame)) == ["unet 3x64x64 b8", "32x64x64 b8", "32x64x64 b8"]


def test_at_batch_asked_keeps_rows_without_a_readable_halved_batch() -> None:
    frame = pd.DataFrame({"batch": [8, 8, 8, 8, "?"], "batch_run": [None, 8, 4, "?", 4]}, dtype=object)
    # no batch_run, or one that is no number, is no halved batch; 4 of 8 is; against an unreadable batch it is not asked
    assert list(at_batch_asked(frame)) == [True, True, False, True, False]
    assert list(at_batch_asked(pd.DataFrame({"batch": [8, 2]}))) == [True, True]


@pytest.mark.parametrize(("value", "places"), [(0.864, 3), (12.3, 1), (1234.0, 0), (98765.0, 0), (0.0, 2),
                                               (math.nan, 2), (math.inf, 2), (-0.05, 4)])  # fmt: skip
def test_decimals_write_three_significant_figures(value: float, places: int) -> None:
    assert decimals(value) == places
    assert decimals(value, digits=2) == max(0, places - 1)


def test_groups_come_sorted_whatever_the_rows_order() -> None:
    frame = pd.DataFrame({"device": ["cuda:0", "cpu", "cpu", "cpu"],
                          "dtype": ["float16", "float32", "float32", "bfloat16"],
                          "mode": ["forward", "train", "forward", "forward"],
                          "status": ["ok", "ok", "ok", None]})  # a row without a status is no case
    assert [key for key, _ in groups(frame)] == [("cpu", "float32", "forward"), ("cpu", "float32", "train"),
                                                 ("cuda:0", "float16", "forward")]  # fmt: skip


def row(median: float = 0.864, **fields: object) -> dict[str, object]:
    return {"median_ms": median, **fields}


def test_a_latency_cell_gives_its_interval_only_when_it_has_both_ends() -> None:
    assert latency_text(row(ci_low_ms=0.851, ci_high_ms=0.881)) == "0.864 [0.851, 0.881]"
    samples = [0.80, 0.84, 0.86, 0.90, 1.00]  # quartiles 0.84 and 0.90
    assert latency_text(row(ci_low_ms=0.851, ci_high_ms=None, samples_ms=samples, n_samples=5)) == (
        "0.864 (IQR 0.840–0.900)")


def test_a_latency_cell_without_an_interval_gives_its_samples_quartiles() -> None:
    two = [0.80, 1.00]  # quartiles 0.85 and 0.95 by linear interpolation
    assert latency_text(row(samples_ms=two, n_samples=2)) == "0.864 (IQR 0.850–0.950)"
    spread = list(np.linspace(0.0, 1.0, 101))  # quartiles 0.25 and 0.75 exactly
    assert latency_text(row(0.5, samples_ms=spread, n_samples=101)) == "0.500 (IQR 0.250–0.750)"


def test_a_latency_cell_without_samples_gives_the_iqr_width_or_says_one_sample() -> None:
    assert latency_text(row(n_samples=1, iqr_ms=0.0)) == "0.864 (1 sample)"
    assert latency_text(row(samples_ms=[0.864], n_samples=1, iqr_ms=0.0)) == "0.864 (1 sample)"
    assert latency_text(row(n_samples=2, iqr_ms=0.031)) == "0.864 (IQR 0.031)"
    assert latency_text(row(n_samples=3, iqr_ms=None)) == "0.864"


def test_md_table_escapes_text_cells_and_leaves_numbers_as_numbers() -> None:
    frame = pd.DataFrame({"reason": ["a | b\n<c>"], "ms": [0.5]})
    text = md_table(frame, index=False)
    assert "a \\| b &lt;c>" in text and "0.5" in text


def test_a_pivot_keeps_the_sweeps_order_of_configurations_and_variants() -> None:
    frame = pd.DataFrame({
        "variant": ["b", "b", "a", "a"], "channels": [64, 32, 64, 32], "height": [32, 64, 32, 64],
        "width": [32, 64, 32, 64], "batch": [8, 1, 8, 1], "reduction": [16] * 4, "fusion": ["add"] * 4,
        "median_ms": [1.0, 2.0, 3.0, 4.0],
    })  # fmt: skip
    table = pivot(frame, "median_ms")
    assert list(table.columns) == ["64x32x32 b8", "32x64x64 b1"] and list(table.index) == ["b", "a"]
    assert table.loc["a", "32x64x64 b1"] == 4.0 and table.loc["b", "64x32x32 b8"] == 1.0
