"""CUDA paths of the core harness. Skipped without a GPU; run unchanged on a GPU machine (tox -e gpu)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from optional import require

import harness
from harness.measure.figures import Figures
from harness.measure.timing import TimingPolicy, measure
from harness.measure.torch_stream import make_cuda_clock
from harness.sweep.cases import Case
from harness.sweep.runner import time_step
from harness.sweep.subject import make_input, make_reference
from variants.registry import get_variant

pytestmark = pytest.mark.cuda


def test_cold_clock_flushes_twice_the_l2() -> None:
    device = torch.device("cuda")
    clock = make_cuda_clock(device, "cold")
    l2 = torch.cuda.get_device_properties(device).L2_cache_size
    assert clock.stream.flush_buffer.numel() == 2 * l2


@pytest.mark.parametrize("cache", ["cold", "hot"])
def test_cuda_events_time_a_known_sleep(cache: str) -> None:
    """torch.cuda._sleep spins for a number of cycles: the measured time must scale with it."""
    clock = make_cuda_clock(torch.device("cuda"), cache)
    policy = TimingPolicy(warmup_s=0.01, min_samples=5, max_time_s=0.2)
    short = measure(lambda: torch.cuda._sleep(100_000), clock, policy)
    long = measure(lambda: torch.cuda._sleep(1_000_000), clock, policy)
    ratio = sorted(long.samples_ms)[len(long.samples_ms) // 2] / sorted(short.samples_ms)[len(short.samples_ms) // 2]
    assert 5 < ratio < 15


def test_cold_cache_is_not_faster_than_hot_for_an_l2_sized_tensor() -> None:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    x = torch.randn(l2 // 4 // 4, device="cuda")  # a quarter of L2 in float32
    policy = TimingPolicy(warmup_s=0.05, min_samples=20, max_time_s=0.5)
    cold = measure(lambda: x.mul(2.0), make_cuda_clock(torch.device("cuda"), "cold"), policy)
    hot = measure(lambda: x.mul(2.0), make_cuda_clock(torch.device("cuda"), "hot"), policy)
    med = lambda t: sorted(t.samples_ms)[len(t.samples_ms) // 2]  # noqa: E731
    assert med(cold) >= med(hot)


def test_a_cuda_sweep_verifies_and_times(tmp_path: Path) -> None:
    frame = harness.run(device="cuda", variants="eager", shapes="32x64x64", batch_sizes="1,8",
                        dtypes="float32,float16,bfloat16", modes="forward,train", out=tmp_path / "run",
                        warmup_s=0.02, min_samples=5, max_time_s=0.2)
    assert (frame["status"] == "ok").all(), frame[["dtype", "mode", "reason"]]
    assert (frame["device"] == "cuda").all()
    assert frame["median_ms"].gt(0).all()
    assert frame["host_ms"].gt(0).all() and frame["wall_ms"].gt(0).all()
    assert frame["bound"].isin(["host", "device"]).all()
    assert (frame["overran"] == 0).all()
    env = (tmp_path / "run" / "env.json").read_text()
    assert torch.cuda.get_device_name(0) in env


def _forward(variant: str, batch: int, channels: int, size: int):
    """The variant's fp16 forward on its case's input, as the runner builds it."""
    case = Case(variant, "cuda", "float16", "forward", batch, channels, size, size, 2, "add")
    device = torch.device("cuda")
    fn = get_variant(variant).build(make_reference(case, 0), device, torch.float16)
    x = make_input(case, 0, device, torch.float16)
    return lambda: fn(x)


def _figures(step, clock) -> dict:
    policy = TimingPolicy(warmup_s=0.1, min_samples=20, max_time_s=1.0)
    with torch.no_grad():
        timing, wall, _ = time_step(step, clock, policy)
    return Figures.of(timing, wall, on_cuda=True, batch=32).as_row()


TIMED = [("eager", 64, 128), ("eager", 32, 256), ("triton_fused", 64, 128)]


@pytest.mark.parametrize(("variant", "channels", "size"), TIMED)
def test_gpu_time_agrees_with_do_bench_and_with_itself(variant: str, channels: int, size: int) -> None:
    """Device-bound: within 3% of triton's do_bench. Host-bound: do_bench includes the host's gaps,
    so the GPU time is below it. Two runs in one process agree within 2% either way."""
    triton_testing = require("triton.testing")
    step = _forward(variant, 32, channels, size)
    clock = make_cuda_clock(torch.device("cuda"), "cold")
    first, second = _figures(step, clock), _figures(step, clock)
    with torch.no_grad():
        reference = triton_testing.do_bench(step, warmup=25, rep=200, return_mode="median")
    assert second["median_ms"] == pytest.approx(first["median_ms"], rel=0.02)
    assert first["overran"] == 0
    if first["bound"] == "device":
        assert first["median_ms"] == pytest.approx(reference, rel=0.03)
    else:
        assert first["median_ms"] < reference
    assert first["wall_ms"] >= max(first["median_ms"], first["host_ms"]) * 0.97


def test_a_launch_bound_call_is_bound_by_the_host() -> None:
    x = torch.randn(64, device="cuda")

    def fifty_tiny_ops() -> None:
        y = x
        for _ in range(50):
            y = y + 1.0

    row = _figures(fifty_tiny_ops, make_cuda_clock(torch.device("cuda"), "cold"))
    assert row["bound"] == "host", row
    assert row["host_ms"] > row["median_ms"]
    assert row["wall_ms"] >= row["host_ms"] * 0.97


def test_a_call_longer_than_the_launch_queue_reports_its_own_host_time() -> None:
    """1500 launches a call, each slower on the GPU (64 MB read and written) than on the host, overflow
    CUDA's launch queue, as a network's training step does: the host waits for the GPU, and must not
    count a holding kernel's wait as its own (an H200 reported 0.5 s of host time for a 50 ms U-Net step)."""
    x = torch.randn(1 << 24, device="cuda")

    def fifteen_hundred_ops() -> None:
        y = x
        for _ in range(1500):
            y = y * 1.0001

    row = _figures(fifteen_hundred_ops, make_cuda_clock(torch.device("cuda"), "cold"))
    assert row["overran"] > 0, row
    assert row["host_ms"] <= row["wall_ms"] * 1.1, row
