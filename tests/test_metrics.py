"""The runner's rows carry the metrics (FLOPs, bandwidth, memory, telemetry), and ``--profile`` writes traces."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from harness import api
from harness.measure.bandwidth import bytes_min
from harness.measure.flops import analytic_flops
from harness.measure.metrics import METRIC_COLUMNS, Flops, Timed, metric_set
from harness.measure.timing import CpuClock, TimingPolicy
from harness.sweep.cases import Case
from harness.sweep.runner import run_case
from variants.registry import get_variant

FAST = TimingPolicy(warmup_s=0.0, min_samples=3, max_samples=20, rel_ci=0.05, max_time_s=0.05)
FAST_RUN = {"warmup_s": 0, "min_samples": 3, "max_samples": 20, "max_time_s": 0.05, "rel_ci": 0.05}


def case(mode: str = "forward", variant: str = "eager", **kw: Any) -> Case:
    base: dict[str, Any] = dict(batch=2, channels=8, height=5, width=7, reduction=2, fusion="max", bias=True)
    return Case(variant, "cpu", "float32", mode, **{**base, **kw})


@pytest.mark.parametrize("mode", ["forward", "train"])
def test_timed_rows_have_every_metric(mode: str, tmp_path: Path) -> None:
    c = case(mode)
    row = run_case(c, get_variant("eager"), CpuClock(), FAST, seed=0, measures=metric_set(2e10, tmp_path)).to_row()
    assert row["status"] == "ok", row["reason"]
    assert set(METRIC_COLUMNS) <= set(row)
    assert row["analytic_flops"] == row["torch_flops"] == analytic_flops(2, 8, 5, 7, 2, "max", True, mode)
    assert row["fvcore_flops"] == analytic_flops(2, 8, 5, 7, 2, "max", True, "forward", "mac=1")
    moved = bytes_min(c)
    assert row["arithmetic_intensity"] == pytest.approx(row["analytic_flops"] / moved)
    assert row["bytes_min"] == moved
    assert row["achieved_gbps"] == pytest.approx(moved / (row["median_ms"] * 1e-3) / 1e9)
    assert row["pct_of_peak_bw"] == pytest.approx(100 * moved / (row["median_ms"] * 1e-3) / 2e10)
    x_bytes = 2 * 8 * 5 * 7 * 4
    assert row["peak_mem_bytes"] >= x_bytes and row["mem_source"] == "profiler"
    assert row["peak_reserved_bytes"] is None
    # CPU: the telemetry columns are there and empty.
    assert row["gpu_util_mean"] is None and row["throttled"] is None and row["throttle_reasons"] == ""
    trace = tmp_path / Path(row["trace_file"]).name
    assert json.loads(trace.read_text())["traceEvents"]


def test_train_peak_above_forward_peak() -> None:
    forward = run_case(case("forward"), get_variant("eager"), CpuClock(), FAST, seed=0).to_row()
    train = run_case(case("train"), get_variant("eager"), CpuClock(), FAST, seed=0).to_row()
    assert train["peak_mem_bytes"] > forward["peak_mem_bytes"]


def test_skipped_rows_still_have_their_flops(temp_variant: Any) -> None:
    name = temp_variant("h5_never", lambda ref, device, dtype: ref, available=lambda: "not here")
    row = run_case(case(variant=name), get_variant(name), CpuClock(), FAST, seed=0).to_row()
    assert row["status"] == "skipped"
    assert row["analytic_flops"] == analytic_flops(2, 8, 5, 7, 2, "max", True, "forward")
    assert "peak_mem_bytes" not in row and "trace_file" not in row


def test_config_columns_never_raise() -> None:
    bad = case(reduction=64)  # no hidden channel: ScSE refuses to build
    cols = Flops().configured(bad)
    assert cols["analytic_flops"] is None and "error" in str(cols["torch_uncounted"])


def test_no_telemetry_on_cpu_and_no_trace_unless_asked() -> None:
    measures = metric_set()
    measures.begin(torch.device("cpu"))
    cols = measures.measured(Timed(case(), lambda: torch.ones(8), torch.device("cpu"), calls=10, median_ms=1.0))
    assert cols["trace_file"] is None and cols["gpu_util_samples"] is None and cols["peak_mem_bytes"] == 32
    # between them, configured and measured fill every metric column
    assert set(cols) | set(measures.configured(case())) == set(METRIC_COLUMNS)


def test_run_with_profile_writes_traces_into_the_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    frame = api.run(device="cpu", variants="eager", shapes="8x4x4", batch_sizes="2", modes="forward,train",
                    out=str(out), profile=True, **FAST_RUN)
    assert list(frame["status"]) == ["ok", "ok"]
    traces = sorted(p.name for p in (out / "traces").iterdir())
    assert traces == sorted(Path(t).name for t in frame["trace_file"])
    assert len(traces) == 2
    report = (out / "report.md").read_text()  # where they are and how to open them
    assert "## Profiler traces" in report and "2 Chrome trace(s)" in report and "ui.perfetto.dev" in report
    csv = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"fvcore_flops", "torch_flops", "analytic_flops", "peak_mem_bytes", "gpu_util_mean"} <= set(csv)


def test_flops_are_counted_once_per_configuration_and_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Variants of a configuration share one count; a new mode or shape is counted; a new run starts empty."""
    from harness.measure import flops

    calls: list[str] = []
    for name in ("fvcore_forward", "torch_flops"):
        real = getattr(flops, name)
        monkeypatch.setattr(flops, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    measures = metric_set()

    def rows(mode: str, **kw: Any) -> list[dict[str, Any]]:
        return [run_case(case(mode, v, **kw), get_variant(v), CpuClock(), FAST, seed=0, measures=measures).to_row()
                for v in ("eager", "eager_factored", "mean_squeeze")]  # fmt: skip

    forward = rows("forward")
    assert calls == ["fvcore_forward", "torch_flops"]
    assert forward[0]["status"] == "ok"  # the others may skip this fusion or bias: their rows have FLOPs too
    assert len({tuple(r[c] for c in Flops.columns) for r in forward}) == 1
    assert forward[0]["torch_flops"] == analytic_flops(2, 8, 5, 7, 2, "max", True, "forward")
    train = rows("train")
    assert calls[2:] == ["torch_flops"]  # fvcore's forward trace serves both modes
    assert train[0]["torch_flops"] == analytic_flops(2, 8, 5, 7, 2, "max", True, "train")
    rows("forward", height=6)
    assert calls[3:] == ["fvcore_forward", "torch_flops"]
    metric_set().configured(case("forward"))  # another run's metrics remember nothing of this one
    assert calls[5:] == ["fvcore_forward", "torch_flops"]


def test_metric_set_reports_the_memory_pass_apart() -> None:
    measures = metric_set()
    spent: dict[str, float] = {}
    measures.begin(torch.device("cpu"))
    measures.measured(Timed(case(), lambda: torch.ones(8), torch.device("cpu"), calls=10, median_ms=1.0), spent)
    assert set(spent) == {"memory", "metrics"} and all(s >= 0 for s in spent.values())
