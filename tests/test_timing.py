"""The adaptive loop, driven by a fake clock so that its decisions are exact and repeatable."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from harness.timing import CpuClock, TimingPolicy, measure, timer_overhead_ns


class FakeClock:
    """Each call of ``fn`` "takes" the next duration; a fake wall clock advances by the same."""

    def __init__(self, durations, min_block_s: float = 1e-3) -> None:
        self.durations = iter(durations)
        self.min_block_s = min_block_s
        self.now = 0.0
        self.calls = 0
        self.blocks: list[int] = []

    def time_block(self, fn, calls: int) -> float:
        self.blocks.append(calls)
        total = 0.0
        for _ in range(calls):
            fn()
            self.calls += 1
            total += next(self.durations)
        self.now += total
        return total

    def sync(self) -> None:
        pass

    def wall(self) -> float:
        return self.now


def test_block_size_is_calibrated_to_the_clock_resolution() -> None:
    clock = FakeClock(itertools.repeat(1e-5))  # 10 µs calls, 1 ms blocks -> 100 calls a sample
    timing = measure(lambda: None, clock, TimingPolicy(warmup_s=0.0, min_samples=10, rel_ci=0.01), now=clock.wall)
    assert timing.calls_per_sample == 100
    assert set(clock.blocks[timing.warmup_calls:]) == {100}
    assert timing.samples_ms[0] == pytest.approx(0.01)


def test_constant_times_converge_at_the_minimum_sample_count() -> None:
    clock = FakeClock(itertools.repeat(2e-3))
    timing = measure(lambda: None, clock, TimingPolicy(warmup_s=0.0, min_samples=10), now=clock.wall)
    assert timing.stop_reason == "converged"
    assert len(timing.samples_ms) == 10
    assert timing.calls_per_sample == 1


def test_noisy_times_run_until_the_budget() -> None:
    rng = np.random.default_rng(0)
    clock = FakeClock(iter(rng.lognormal(np.log(2e-3), 0.5, 100_000)))  # too spread for ±1% in 0.5 s
    policy = TimingPolicy(warmup_s=0.0, min_samples=10, max_time_s=0.5, max_samples=10_000)
    timing = measure(lambda: None, clock, policy, now=clock.wall)
    assert timing.stop_reason == "budget"
    assert 0.5 <= sum(timing.samples_ms) / 1e3 <= 0.51


def test_max_samples_caps_the_loop() -> None:
    clock = FakeClock(itertools.cycle([1e-3, 2e-3]))
    policy = TimingPolicy(warmup_s=0.0, min_samples=5, max_samples=7, max_time_s=100)
    timing = measure(lambda: None, clock, policy, now=clock.wall)
    assert timing.stop_reason == "max_samples"
    assert len(timing.samples_ms) == 7


def test_warm_up_runs_for_its_time() -> None:
    clock = FakeClock(itertools.repeat(1e-3))
    timing = measure(lambda: None, clock, TimingPolicy(warmup_s=0.05), now=clock.wall)
    assert timing.warmup_calls in (50, 51)


def test_cpu_clock_overhead_is_under_a_thousandth_of_a_block() -> None:
    clock = CpuClock()
    assert timer_overhead_ns() * 1e-9 <= clock.min_block_s / 1000 * 1.5  # measured again: same order
    calls = []
    elapsed = clock.time_block(lambda: calls.append(time.sleep(0.001)), 5)
    assert len(calls) == 5
    assert elapsed >= 0.005


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TimingPolicy(min_samples=10, max_samples=5)
    with pytest.raises(ValueError):
        TimingPolicy(max_time_s=0)


def test_the_budget_never_cuts_below_min_samples() -> None:
    clock = FakeClock(itertools.cycle([1.0, 1.2, 0.9]))  # one second a call, budget 0.1 s
    policy = TimingPolicy(warmup_s=0.0, min_samples=6, max_time_s=0.1)
    timing = measure(lambda: None, clock, policy, now=clock.wall)
    assert timing.stop_reason == "budget"
    assert len(timing.samples_ms) == 6
