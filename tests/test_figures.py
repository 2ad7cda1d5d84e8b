"""The three time figures of a row, and pooling the same case measured in several processes."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sample_orders import without_drift

import harness
from harness.measure.figures import Figures
from harness.measure.timing import Timing
from harness.results.record import CaseResult, Status, pool
from harness.sweep.cases import Case


def cpu_figures(samples, waits=None, remeasured=False) -> Figures:
    timing = Timing(tuple(samples), 2, 3, "converged", tuple(samples), tuple(waits or [0.0] * len(samples)))
    return Figures.of(timing, None, on_cuda=False, batch=8, remeasured=remeasured)


def cpu_row(samples, waits=None) -> dict:
    return cpu_figures(samples, waits).as_row()


def cuda_row(gpu, host, wall) -> dict:
    timing = Timing(tuple(gpu), 5, 3, "converged", tuple(host), (), overran=1)
    wall_timing = Timing(tuple(wall), 1, 0, "converged")
    return Figures.of(timing, wall_timing, on_cuda=True, batch=8).as_row()


def result(figures: Figures, device: str = "cpu") -> CaseResult:
    case = Case("eager", device, "float32", "forward", 8, 16, 8, 8, 2, "add")
    return CaseResult(case, Status.OK, figures=figures)


def pool_rows(rows: list[dict], device: str = "cpu") -> dict:
    """Pool rows as the executor pools the results of ``--processes`` workers."""
    return pool([result(Figures.from_row(r), device) for r in rows]).to_row()


def test_cpu_rows_give_the_call_time_as_host_and_wall_and_no_bound() -> None:
    row = cpu_row(list(without_drift([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])))
    assert row["median_ms"] == row["host_ms"] == row["wall_ms"] == 4.0
    assert row["host_ci_low_ms"] == row["ci_low_ms"] and row["wall_ci_high_ms"] == row["ci_high_ms"]
    assert row["bound"] is None and row["disturbed"] is False and row["wait_share"] == 0.0
    assert row["throughput_img_s"] == pytest.approx(8 / 4e-3)


def test_cuda_rows_keep_three_figures_apart_and_name_the_larger_bound() -> None:
    row = cuda_row(gpu=[0.1] * 9 + [0.12], host=[0.3] * 10, wall=[0.42] * 10)
    assert row["median_ms"] == pytest.approx(0.1)
    assert row["host_ms"] == pytest.approx(0.3) and row["wall_ms"] == pytest.approx(0.42)
    assert row["bound"] == "host" and row["overran"] == 1
    assert row["disturbed"] is None
    assert cuda_row(gpu=[0.5] * 10, host=[0.3] * 10, wall=[0.55] * 10)["bound"] == "device"


def test_timings_round_trip_through_a_row() -> None:
    row = cuda_row(gpu=[0.1, 0.2, 0.3], host=[0.4, 0.5, 0.6], wall=[0.7, 0.8, 0.9])
    timing, wall = Figures.from_row(row).timings()
    assert timing.samples_ms == (0.1, 0.2, 0.3) and timing.host_samples_ms == (0.4, 0.5, 0.6)
    assert timing.calls_per_sample == 5 and timing.overran == 1
    assert wall is not None and wall.samples_ms == (0.7, 0.8, 0.9)


def test_pooling_concatenates_samples_and_derives_every_figure_again() -> None:
    fast, slow = [1.0 + 0.01 * i for i in range(20)], [1.3 + 0.01 * i for i in range(20)]
    pooled = pool_rows([cpu_row(fast), cpu_row(slow)])
    assert pooled["n_samples"] == 40 and pooled["processes"] == 2
    assert pooled["median_ms"] == pytest.approx(float(np.median(fast + slow)))
    assert pooled["process_medians_ms"] == pytest.approx([np.median(fast), np.median(slow)])
    assert pooled["iqr_ms"] > 0.2  # the processes' difference shows in the spread compare reads
    assert pooled["host_ms"] == pooled["median_ms"]
    assert len(pooled["samples_ms"]) == len(pooled["wait_shares"]) == 40


def test_pooling_keeps_a_failure_and_a_disturbance() -> None:
    bad = CaseResult(result(cpu_figures([1.0] * 10)).case, Status.MISMATCH, "output error")
    kept = pool([result(cpu_figures([1.0] * 10)), bad])
    assert kept.status is Status.MISMATCH and kept.to_row()["processes"] == 2
    still_starved = replace(cpu_figures([1.0] * 10, remeasured=True), disturbed=True)
    pooled = pool([result(cpu_figures([1.0] * 10)), result(still_starved)]).to_row()
    assert pooled["disturbed"] is True and pooled["remeasured"] is True


def test_pooled_cuda_rows_recompute_the_bound() -> None:
    rows = [cuda_row([0.1] * 10, [0.05] * 10, [0.2] * 10), cuda_row([0.1] * 10, [0.4] * 10, [0.5] * 10)]
    pooled = pool_rows(rows, "cuda")
    assert pooled["host_ms"] == pytest.approx(0.225) and pooled["bound"] == "host"
    assert pooled["overran"] == 2 and len(pooled["wall_samples_ms"]) == 20


def test_a_sweep_spread_over_two_processes_pools_them(tmp_path) -> None:
    frame = harness.run(device="cpu", variants="eager", shapes="16x16x16", batch_sizes=2, modes="forward",
                        threads=1, processes=2, warmup_s=0.01, min_samples=5, max_time_s=0.1, out=tmp_path / "run")
    row = frame.iloc[0]
    assert row["status"] == "ok", row["reason"]
    assert row["processes"] == 2 and len(row["process_medians_ms"]) == 2
    assert row["n_samples"] == len(row["samples_ms"])
    assert min(row["process_medians_ms"]) <= row["median_ms"] <= max(row["process_medians_ms"])
    # the rate is the pooled median's, not the first process's (each worker divides by its own)
    assert row["achieved_gbps"] == pytest.approx(row["bytes_min"] / (row["median_ms"] * 1e-3) / 1e9, rel=1e-9)


def test_pooling_derives_the_bandwidth_rates_again_from_the_pooled_median() -> None:
    """Each worker divides the case's bytes by its own median; the pooled row must use the pooled one,
    or its GB/s would be process 1's while its median and throughput are all processes'."""
    from harness.measure.bandwidth import bandwidth_columns

    fast, slow = [1.0 + 0.01 * i for i in range(20)], [1.3 + 0.01 * i for i in range(20)]
    results = [replace(result(cpu_figures(s)), metrics=bandwidth_columns(result(cpu_figures(s)).case,
                                                                       float(np.median(s)), 4e9))
               for s in (slow, fast)]  # fmt: skip
    row = pool(results).to_row()
    want = bandwidth_columns(results[0].case, row["median_ms"], 4e9)
    assert row["achieved_gbps"] == pytest.approx(want["achieved_gbps"], rel=1e-12)
    assert row["pct_of_peak_bw"] == pytest.approx(want["pct_of_peak_bw"], rel=1e-12)
    assert row["bytes_min"] == want["bytes_min"]
