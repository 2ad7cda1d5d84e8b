"""Reports: speedups over eager from the same run, failures shown, one table per device/dtype/mode."""
from __future__ import annotations

import pandas as pd
from rich.console import Console

from harness.results.report import markdown, print_summary, with_speedup
from harness.results.store import to_frame


def row(variant: str, median: float, status: str = "ok", mode: str = "forward", batch: int = 8,
        device: str = "cpu", **kw) -> dict:
    return {"variant": variant, "device": device, "dtype": "float32", "mode": mode, "batch": batch, "channels": 32,
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


def cuda_row(variant: str, median: float, host: float, **kw) -> dict:
    return row(variant, median, device="cuda", host_ms=host, wall_ms=max(median, host) + 0.01,
               bound="host" if host > median else "device", **kw)


def test_marks_show_noisy_disturbed_and_host_bound_cells_with_a_legend() -> None:
    frame = to_frame([
        row("eager", 2.0, disturbed=True, wait_share=0.4), row("fast", 0.5, noisy=True),
        cuda_row("eager", 0.335, 0.288), cuda_row("fused", 0.118, 0.299),
    ])
    md = markdown(frame)
    assert "2 ± 0.1 !" in md and "0.5 ± 0.1 ~" in md
    assert "0.118 ± 0.1 (host-bound: host 0.299)" in md
    assert "0.335 ± 0.1 (host-bound" not in md  # device-bound: no host mark
    assert "- `!` disturbed" in md and "- `~` noisy" in md and "- `host-bound`" in md
    assert "0.299 / 0.309" in md  # the CUDA group's host / wall table
    console = Console(record=True, width=200)
    print_summary(frame, console)
    text = console.export_text()
    assert "host-bound: host 0.299" in text and "disturbed: the CPU was starved" in text


def test_no_marks_no_legend() -> None:
    md = markdown(FRAME)
    assert "disturbed" not in md and "host-bound" not in md and "Host time per call" not in md
