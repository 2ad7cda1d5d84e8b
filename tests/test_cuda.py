"""CUDA paths of the core harness. Skipped without a GPU; run unchanged on a GPU machine (tox -e gpu)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import harness
from harness.timing import CudaClock, TimingPolicy, measure

pytestmark = pytest.mark.cuda


def test_cold_clock_flushes_twice_the_l2() -> None:
    device = torch.device("cuda")
    clock = CudaClock(device, "cold")
    l2 = torch.cuda.get_device_properties(device).L2_cache_size
    assert clock.flush_buffer is not None and clock.flush_buffer.numel() == 2 * l2


@pytest.mark.parametrize("cache", ["cold", "hot"])
def test_cuda_events_time_a_known_sleep(cache: str) -> None:
    """torch.cuda._sleep spins for a number of cycles: the measured time must scale with it."""
    clock = CudaClock(torch.device("cuda"), cache)
    policy = TimingPolicy(warmup_s=0.01, min_samples=5, max_time_s=0.2)
    short = measure(lambda: torch.cuda._sleep(100_000), clock, policy)
    long = measure(lambda: torch.cuda._sleep(1_000_000), clock, policy)
    ratio = sorted(long.samples_ms)[len(long.samples_ms) // 2] / sorted(short.samples_ms)[len(short.samples_ms) // 2]
    assert 5 < ratio < 15


def test_cold_cache_is_not_faster_than_hot_for_an_l2_sized_tensor() -> None:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    x = torch.randn(l2 // 4 // 4, device="cuda")  # a quarter of L2 in float32
    policy = TimingPolicy(warmup_s=0.05, min_samples=20, max_time_s=0.5)
    cold = measure(lambda: x.mul(2.0), CudaClock(torch.device("cuda"), "cold"), policy)
    hot = measure(lambda: x.mul(2.0), CudaClock(torch.device("cuda"), "hot"), policy)
    med = lambda t: sorted(t.samples_ms)[len(t.samples_ms) // 2]  # noqa: E731
    assert med(cold) >= med(hot)


def test_a_cuda_sweep_verifies_and_times(tmp_path: Path) -> None:
    frame = harness.run(device="cuda", variants="eager", shapes="32x64x64", batch_sizes="1,8",
                        dtypes="float32,float16,bfloat16", modes="forward,train", out=tmp_path / "run",
                        warmup_s=0.02, min_samples=5, max_time_s=0.2)
    assert (frame["status"] == "ok").all(), frame[["dtype", "mode", "reason"]]
    assert (frame["device"] == "cuda").all()
    assert frame["median_ms"].gt(0).all()
    env = (tmp_path / "run" / "env.json").read_text()
    assert torch.cuda.get_device_name(0) in env
