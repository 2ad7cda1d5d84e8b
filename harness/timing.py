"""Timers: calibrated, adaptively stopped measurement of one callable on CPU or CUDA.

One loop, two clocks. ``CpuClock`` times blocks of calls with ``perf_counter_ns``; ``CudaClock``
times with CUDA events on the current stream and, by default, flushes L2 before every call so
that a tensor smaller than the cache is not measured out of it. The adaptive loop
(``measure``) is clock-agnostic, which is what lets the tests drive it with a fake clock.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from harness.stats import ci_half_width

CACHE_MODES: tuple[str, ...] = ("cold", "hot")


class Clock(Protocol):
    """Times ``calls`` back-to-back calls of ``fn`` and returns the total in seconds."""

    #: The smallest block (seconds) whose timer overhead stays under 0.1% of it.
    min_block_s: float

    def time_block(self, fn: Callable[[], object], calls: int) -> float: ...

    def sync(self) -> None: ...


def timer_overhead_ns(repeats: int = 2000) -> float:
    """The median cost of one ``perf_counter_ns`` pair, measured here and now."""
    costs = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        t1 = time.perf_counter_ns()
        costs.append(t1 - t0)
    costs.sort()
    return float(costs[len(costs) // 2])


class CpuClock:
    """Wall time over blocks of calls; blocks are long enough that the timer costs < 0.1%."""

    def __init__(self) -> None:
        overhead_s = max(timer_overhead_ns(), 20.0) * 1e-9
        self.min_block_s = 1000 * overhead_s

    def time_block(self, fn: Callable[[], object], calls: int) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        return (time.perf_counter_ns() - t0) * 1e-9

    def sync(self) -> None:
        return None


class CudaClock:
    """CUDA events on the current stream.

    ``cache="cold"`` zeroes a buffer twice the size of L2 before every call, outside the event
    pair, as triton's do_bench and nvbench's cold mode do; each call then gets its own pair of
    events. ``cache="hot"`` times a block of back-to-back calls between one pair: data that fits
    in L2 stays there, as it would inside a network whose neighbouring layers just touched it.
    """

    #: cudaEventElapsedTime resolves about 0.5 µs; 1000x that keeps it under 0.1% of a block.
    EVENT_RESOLUTION_S = 0.5e-6

    def __init__(self, device: torch.device, cache: str = "cold", max_calls: int = 4096) -> None:
        if cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, not {cache!r}")
        self.device = device
        self.cache = cache
        self.min_block_s = 1000 * self.EVENT_RESOLUTION_S
        props = torch.cuda.get_device_properties(device)
        l2 = int(getattr(props, "L2_cache_size", 0) or 0) or 64 * 2**20
        self.flush_buffer = torch.empty(2 * l2, dtype=torch.int8, device=device) if cache == "cold" else None
        self._starts = [torch.cuda.Event(enable_timing=True) for _ in range(max_calls)]
        self._ends = [torch.cuda.Event(enable_timing=True) for _ in range(max_calls)]

    def time_block(self, fn: Callable[[], object], calls: int) -> float:
        stream = torch.cuda.current_stream(self.device)
        if self.flush_buffer is None:
            start, end = self._starts[0], self._ends[0]
            start.record(stream)
            for _ in range(calls):
                fn()
            end.record(stream)
            end.synchronize()
            return start.elapsed_time(end) * 1e-3
        total_ms, done = 0.0, 0
        while done < calls:  # chunks, so that the events can be reused
            chunk = min(calls - done, len(self._starts))
            for i in range(chunk):
                self.flush_buffer.zero_()
                self._starts[i].record(stream)
                fn()
                self._ends[i].record(stream)
            self._ends[chunk - 1].synchronize()
            total_ms += sum(self._starts[i].elapsed_time(self._ends[i]) for i in range(chunk))
            done += chunk
        return total_ms * 1e-3

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)


def make_clock(device: torch.device, cache: str = "cold") -> Clock:
    """The right clock for ``device``."""
    if device.type == "cuda":
        return CudaClock(device, cache)
    return CpuClock()


@dataclass(frozen=True)
class TimingPolicy:
    """When to stop measuring a case. The defaults favour a trustworthy median over speed."""

    warmup_s: float = 0.1
    min_samples: int = 10
    max_samples: int = 2000
    rel_ci: float = 0.01  # stop when the 95% CI of the median is within ±1% of it
    max_time_s: float = 2.0  # the case's time budget for timed samples
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.max_time_s <= 0 or self.rel_ci <= 0:
            raise ValueError("warm-up must be ≥ 0, the time budget and the CI target > 0")
        if not 1 <= self.min_samples <= self.max_samples:
            raise ValueError("need 1 ≤ min_samples ≤ max_samples")


@dataclass(frozen=True)
class Timing:
    """Raw per-call times (ms), each the mean over a calibrated block of calls, and how they were taken."""

    samples_ms: tuple[float, ...]
    calls_per_sample: int
    warmup_calls: int
    stop_reason: str  # "converged", "budget" or "max_samples"


Now = Callable[[], float]


def _warm_up(clock: Clock, fn: Callable[[], object], warmup_s: float, now: Now) -> tuple[int, float]:
    """Call ``fn`` until ``warmup_s`` has passed (at least twice); returns calls and the last call's time."""
    calls, last = 0, math.inf
    deadline = now() + warmup_s
    while True:
        last = clock.time_block(fn, 1)
        calls += 1
        if calls >= 2 and now() >= deadline:
            return calls, last


def measure(
    fn: Callable[[], object], clock: Clock, policy: TimingPolicy = TimingPolicy(), now: Now = time.perf_counter
) -> Timing:
    """Warm up by time, calibrate the block size, then sample until the median's CI is tight enough.

    ``min_samples`` are always taken. Then it stops at the first of: CI half-width ≤ ``rel_ci``
    (checked from ``min_samples`` on, then after every 10% more samples, since the interval costs a
    few ms to compute), the time budget spent, or ``max_samples``. ``now`` is the wall clock the
    budgets are kept by (a fake one in tests).
    """
    warmup_calls, per_call = _warm_up(clock, fn, policy.warmup_s, now)
    calls = max(1, math.ceil(clock.min_block_s / max(per_call, 1e-12)))
    samples: list[float] = []
    next_check = policy.min_samples
    start = now()
    while True:
        samples.append(clock.time_block(fn, calls) / calls * 1e3)
        n = len(samples)
        if n >= policy.max_samples:
            reason = "max_samples"
            break
        if n >= next_check:
            if ci_half_width(samples, policy.confidence) <= policy.rel_ci:
                reason = "converged"
                break
            next_check = max(n + 1, math.ceil(n * 1.1))
        if n >= policy.min_samples and now() - start >= policy.max_time_s:
            reason = "budget"
            break
    return Timing(tuple(samples), calls, warmup_calls, reason)
