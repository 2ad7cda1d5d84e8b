"""Report tables for FLOPs, peak memory and GPU telemetry."""
from __future__ import annotations

from typing import Any

from harness.results.profile_report import MiB, memory_table, profiling_markdown, si
from harness.results.report import markdown
from harness.results.store import to_frame


def row(variant: str, median: float, gpu: bool = False, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "variant": variant, "device": "cuda" if gpu else "cpu", "dtype": "float32", "mode": "forward", "batch": 8,
        "channels": 32, "height": 64, "width": 64, "reduction": 2, "fusion": "add", "bias": False, "status": "ok",
        "reason": None, "median_ms": median, "iqr_ms": 0.01, "noisy": False,
        "analytic_flops": 6_400_000, "torch_flops": 6_400_000, "fvcore_flops": 3_500_000, "fvcore_scope": "forward",
        "fvcore_uncounted": "", "torch_uncounted": "", "arithmetic_intensity": 0.76,
        "peak_mem_bytes": 3 << 20, "peak_reserved_bytes": (20 << 20) if gpu else None,
    }
    if gpu:
        base |= {"gpu_util_mean": 97.2, "gpu_util_max": 100.0, "sm_clock_min_mhz": 1755.0,
                 "sm_clock_mean_mhz": 1980.0, "mem_clock_min_mhz": 2619.0, "mem_clock_mean_mhz": 2619.0,
                 "power_mean_w": 412.0, "energy_per_call_j": 0.0123, "temperature_c": 55.0,
                 "throttled": True, "throttle_reasons": "sw_power_cap"}
    return base | kw


def test_cpu_group_gets_flop_and_memory_tables_but_no_telemetry() -> None:
    frame = to_frame([row("eager", 1.0), row("fast", 0.5, peak_mem_bytes=1 << 20)])
    md = markdown(frame)
    flops = [line for line in md.splitlines() if line.startswith("| 32x64x64 b8") and "M" in line]
    assert len(flops) == 1
    assert [c.strip() for c in flops[0].strip("|").split("|")] == ["32x64x64 b8", "6.4 M", "6.4 M", "3.5 M", "0.76"]
    table = "\n".join(memory_table(frame)).splitlines()
    memory = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table if line.startswith("| ")}
    memory.pop("variant")
    assert memory == {"eager": "3", "fast": "1"}
    assert "GPU telemetry" not in md


def test_gpu_group_gets_telemetry_and_reserved() -> None:
    frame = to_frame([row("eager", 1.0, gpu=True), row("fast", 0.5, gpu=True, throttled=False, throttle_reasons="")])
    lines = profiling_markdown(frame)
    md = "\n".join(lines)
    assert "3 (20)" in md  # allocated MiB (reserved MiB)
    assert "GPU telemetry" in md and "not SM occupancy" in md
    assert "97/100" in md and "1755–1980" in md and "12.3" in md and "sw_power_cap" in md


def test_what_a_cuda_graph_holds_is_shown_beside_its_zero_peak() -> None:
    """A replay allocates nothing, so its peak reads 0: the pool its capture holds is shown beside it."""
    frame = to_frame([row("eager", 1.0, gpu=True, graph_pool_bytes=0),
                      row("cuda_graph", 0.5, gpu=True, peak_mem_bytes=0, peak_reserved_bytes=0,
                          graph_pool_bytes=6 << 20)])
    lines = "\n".join(memory_table(frame)).splitlines()
    memory = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in lines if line.startswith("| ")}
    assert memory["eager"] == "3 (20)" and memory["cuda_graph"] == "0 (0) +6 held"
    assert "+N held: MiB a CUDA graph keeps in its own pool" in lines[0]
    assert "+N held" in "\n".join(profiling_markdown(frame))
    plain = "\n".join(memory_table(to_frame([row("eager", 1.0, gpu=True, graph_pool_bytes=0)])))
    assert "held" not in plain  # no graph, no note


def test_uncounted_ops_are_listed() -> None:
    frame = to_frame([row("eager", 1.0, torch_uncounted="aten.tanh")])
    assert "Not counted: aten.tanh" in "\n".join(profiling_markdown(frame))


def test_si() -> None:
    assert si(4940) == "4.94 k" and si(1.234e9) == "1.23 G" and si(12) == "12" and si(None) == ""
    # a count that rounds up to the next scale is written in it: 999,779 FLOPs read "1e+03 k"
    assert si(999_779) == "1 M" and si(999.6) == "1 k" and si(999_499) == "999 k" and si(999_999_999) == "1 G"
    assert si(-999_779) == "-1 M" and si(999.4) == "999"


def test_a_halved_batch_gives_neither_its_flops_nor_its_memory_as_the_batch_asked() -> None:
    """--oom-retry ran one variant at batch 1 for batch 4: the FLOPs table showed batch 1's count
    under b4 when that row came first, and its memory cell read as batch 4's."""
    halved = row("oom", 0.1, batch=4, batch_run=1, analytic_flops=100_000, peak_mem_bytes=1 << 20)
    frame = to_frame([halved, row("eager", 0.4, batch=4, batch_run=4, analytic_flops=400_000)])
    md = "\n".join(profiling_markdown(frame))
    assert "400 k" in md and "100 k" not in md, md
    table = "\n".join(memory_table(frame)).splitlines()
    memory = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table if line.startswith("| ")}
    assert memory["oom"] == "1 (at batch 1)" and memory["eager"] == "3"
    alone = "\n".join(profiling_markdown(to_frame([halved])))
    assert "32x64x64 b4 (at batch 1)" in alone and "100 k" in alone
    gpu = "\n".join(profiling_markdown(to_frame([row("oom", 0.1, gpu=True, batch=4, batch_run=1)])))
    assert "32x64x64 b4 (at batch 1)" in gpu.split("GPU telemetry")[1]


def test_peak_memory_of_a_gib_and_more_is_whole_mib_never_an_exponent() -> None:
    """``.3g`` wrote 1530 MiB as ``1.53e+03``; below 1000 MiB three significant figures stay."""
    frame = to_frame([row("eager", 1.0, gpu=True, peak_mem_bytes=int(1530.4 * MiB), peak_reserved_bytes=2048 * MiB),
                      row("fast", 0.5, gpu=True, peak_mem_bytes=int(999.4 * MiB),
                          peak_reserved_bytes=12 * MiB + MiB // 3, graph_pool_bytes=1500 * MiB)])  # fmt: skip
    lines = "\n".join(memory_table(frame)).splitlines()
    memory = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in lines if line.startswith("| ")}
    assert memory["eager"] == "1530 (2048)" and memory["fast"] == "999 (12.3) +1500 held"
