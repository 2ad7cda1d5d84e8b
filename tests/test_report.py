"""Reports: speedups over eager from the same run, failures shown, one table per device/dtype/mode."""
from __future__ import annotations

import pandas as pd
from rich.console import Console

from harness.report import markdown, print_summary, with_speedup
from harness.results import to_frame


def row(variant: str, median: float, status: str = "ok", mode: str = "forward", batch: int = 8, **kw) -> dict:
    return {"variant": variant, "device": "cpu", "dtype": "float32", "mode": mode, "batch": batch, "channels": 32,
            "height": 64, "width": 64, "reduction": 2, "fusion": "add", "bias": False, "status": status,
            "reason": None if status == "ok" else "output error 0.3 > tolerance 1e-05",
            "median_ms": median if status == "ok" else None, "iqr_ms": 0.1 if status == "ok" else None,
            "noisy": False, **kw}


FRAME = to_frame([
    row("eager", 2.0), row("fast", 0.5), row("wrong", None, status="mismatch"),
    row("eager", 4.0, batch=16), row("fast", 2.0, batch=16),
    row("eager", 10.0, mode="train"), row("fast", 5.0, mode="train"),
])


def test_speedup_is_eager_over_variant_for_the_same_configuration() -> None:
    s = with_speedup(FRAME).set_index(["variant", "mode", "batch"])["speedup_vs_eager"]
    assert s[("fast", "forward", 8)] == 4.0
    assert s[("fast", "forward", 16)] == 2.0
    assert s[("fast", "train", 8)] == 2.0
    assert s[("eager", "forward", 8)] == 1.0
    assert pd.isna(s[("wrong", "forward", 8)])


def test_markdown_has_a_table_per_mode_and_lists_failures() -> None:
    md = markdown(FRAME, {"device": "cpu", "cpu_model": "Test CPU", "torch": "2.x"})
    assert "## cpu · float32 · forward" in md and "## cpu · float32 · train" in md
    assert "| fast      | 0.5 ± 0.1" in md
    assert "MISMATCH" in md and "output error 0.3" in md
    assert "4.00" in md  # the speedup table
    assert "Test CPU" in md


def test_rich_summary_marks_mismatches() -> None:
    console = Console(record=True, width=200)
    print_summary(FRAME, console)
    text = console.export_text()
    assert "MISMATCH wrong" in text
    assert "4.00×" in text
