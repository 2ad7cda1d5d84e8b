"""Timers: calibrated, adaptively stopped measurement of one callable on CPU or CUDA.

One loop, several clocks. A clock times a block of calls and returns a :class:`Block`: the time
the calls took where they ran, the host's time issuing them, and how long the CPU threads waited
for a core. The adaptive loop (:func:`measure`) is clock-agnostic, which lets the tests drive it
with fake clocks, and :mod:`harness.measure.cuda_clock` drives the CUDA clocks with a fake stream.

- ``CpuClock``: ``perf_counter_ns`` around a block of calls; the CPU is the device, so its three
  figures are one. It reads the threads' run-queue wait (:mod:`harness.measure.cpu_wait`) around each
  block, so a sample taken while another process held a core is known as such.
- ``CudaClock`` (in :mod:`harness.measure.cuda_clock`): GPU time from CUDA events, with the calls queued
  behind a holding kernel so that the host's launch time never shows as GPU idle time; the
  host's enqueue time per call beside it; and ``WallClock``: sync, call, sync.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from harness.measure.cpu_wait import ThreadWait
from harness.measure.stats import ci_half_width, dependence_factor

CACHE_MODES: tuple[str, ...] = ("cold", "hot")

#: A sample whose threads waited for a core longer than this share of its wall time was starved
#: (counting only the wait that other processes can explain, not threads waiting for each other).
STARVED_SHARE = 0.05
#: A case is disturbed when fewer than this share of its samples ran unstarved, ...
MIN_CLEAN_SHARE = 0.5
#: ... or when the starved samples moved its median by more than this, relative to the clean ones.
MAX_MEDIAN_SHIFT = 0.02


@dataclass(frozen=True)
class Block:
    """What one block of ``calls`` calls cost, in seconds (totals over the block)."""

    #: Where the work ran: GPU time on CUDA (no host gaps), wall time on the CPU.
    device_s: float
    #: The host's time issuing the calls (CUDA: enqueue only, no sync). On the CPU, ``device_s``.
    host_s: float
    #: Run-queue wait summed over the process's threads (CPU), as much of it as other processes can
    #: explain (``ThreadWait.others_wait_s``); NaN where it cannot be read.
    wait_s: float = 0.0
    #: CUDA: tries whose holding kernel ran out before the host finished queuing (each was redone).
    overran: int = 0

    @staticmethod
    def total(blocks: Sequence[Block], overran: int = 0) -> Block:
        """The blocks of one sample added up (a batch measured in parts), plus ``overran`` more tries."""
        return Block(sum(b.device_s for b in blocks), sum(b.host_s for b in blocks),
                     sum(b.wait_s for b in blocks), overran + sum(b.overran for b in blocks))


class Clock(Protocol):
    """Times ``calls`` back-to-back calls of ``fn``."""

    #: The smallest block (seconds) whose timer overhead stays under 0.1% of it.
    min_block_s: float
    #: The clock of synchronous wall time where it differs from this one (CUDA), else None.
    wall: Clock | None

    def time_block(self, fn: Callable[[], object], calls: int) -> Block: ...

    def prepare(self) -> None:
        """Called after warm-up, before the first sample."""

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
    """Wall time over blocks of calls; blocks are long enough that the timer costs < 0.1%.

    The run-queue wait is read outside the ``perf_counter`` pair, so it costs the sample nothing.
    """

    wall: Clock | None = None  # the CPU's wall time is what this clock measures

    def __init__(self, wait: ThreadWait | None = None, pool_threads: Callable[[], int] = lambda: 1) -> None:
        overhead_s = max(timer_overhead_ns(), 20.0) * 1e-9
        self.min_block_s = 1000 * overhead_s
        self.wait = wait if wait is not None else ThreadWait()
        #: The intra-op pool's size now (``torch.get_num_threads``; a variant may change it): more
        #: threads than cores wait for each other, which is no disturbance (``ThreadWait.others_wait_s``).
        self.pool_threads = pool_threads

    def prepare(self) -> None:
        """Before the samples: re-list the threads, now that warm-up has started torch's intra-op pool."""
        self.wait.refresh()

    def time_block(self, fn: Callable[[], object], calls: int) -> Block:
        w0, b0 = self.wait.read_ns(), self.wait.busy_ns
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        elapsed = (time.perf_counter_ns() - t0) * 1e-9
        w1, b1 = self.wait.read_ns(), self.wait.busy_ns
        wait = (math.nan if w0 is None or w1 is None
                else self.wait.others_wait_s(w1 - w0, b1 - b0, elapsed, self.pool_threads()))  # fmt: skip
        return Block(elapsed, elapsed, wait)

    def sync(self) -> None:
        return None


#: The wall-time loop's CI target, as a multiple of the primary loop's (``TimingPolicy.for_wall``),
#: and its time budget, as a share of the case's.
WALL_CI_FACTOR = 2.0
WALL_BUDGET_SHARE = 0.25
#: The stop rule believes a tight interval only once the samples hold this many independent samples'
#: worth (``stats.dependence_factor``): a short window hides slow drift, and the factor, estimated from
#: the window itself, reads low. Simulated (400 runs each, log-AR(1) samples, ±2%): ρ = 0.8 covered the
#: median in 80% of runs without it, 84% with 20; ρ = 0.95 in 46% and 70%; independent samples and ρ ≤ 0.8 at
#: ±1% were unchanged (94–95%). Stable GPU samples then take 21 (the first look past 20), not 10:
#: about 2.5 s more in the H200's main job.
MIN_EFFECTIVE_SAMPLES = 20


@dataclass(frozen=True)
class TimingPolicy:
    """When to stop measuring a case. The defaults favour a trustworthy median over speed."""

    warmup_s: float = 0.1
    min_samples: int = 10
    max_samples: int = 2000
    rel_ci: float = 0.01  # stop when the median's CI (at stop_confidence) is within ±1% of it
    max_time_s: float = 2.0  # the case's time budget for timed samples
    confidence: float = 0.95

    def for_wall(self) -> TimingPolicy:
        """The policy of the synchronous wall-time loop that follows the primary one on CUDA.

        The step is already warm, so no warm-up; a quarter of the budget; and twice the CI target,
        since the wall figure is the host's, the least steady one (sync jitter, often bimodal, its
        samples dependent: a median lag-1 autocorrelation of 0.38 on an H200), and is only read for
        end-to-end claims, which need a few percent, not one. Replayed on the stored wall samples of
        the H200's default main job (88 loops, 48 s under the old rule), with intervals that count
        the dependence: ±1% with half the budget would take about 76 s, ±2% with a quarter about 39 s
        (``results/baselines/nvidia-h200/wall_stop_replay.py``); a loop that ends on its budget
        keeps the wider interval it reached.
        """
        return replace(self, warmup_s=0.0, max_time_s=self.max_time_s * WALL_BUDGET_SHARE,
                       rel_ci=self.rel_ci * WALL_CI_FACTOR)

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
    #: The host's time per call in each sample (CUDA: enqueue time; CPU: the same as ``samples_ms``).
    host_samples_ms: tuple[float, ...] = ()
    #: Per sample, the share of its wall time that the process's threads waited for a core (NaN: unknown).
    wait_shares: tuple[float, ...] = ()
    #: CUDA: holding-kernel tries that ran out before the host finished queuing (all redone).
    overran: int = 0

    @property
    def starved(self) -> np.ndarray:
        """Which samples were taken while the threads waited for a core beyond ``STARVED_SHARE``."""
        shares = np.asarray(self.wait_shares, dtype=float)
        return shares > STARVED_SHARE  # NaN (unknown) compares False

    @property
    def wait_share(self) -> float | None:
        """The median sample's share of time spent waiting for a core; None when unknown."""
        shares = np.asarray(self.wait_shares, dtype=float)
        if shares.size == 0 or np.isnan(shares).all():
            return None
        return float(np.nanmedian(shares))

    @property
    def disturbed(self) -> bool:
        """Too few samples ran with the CPU to themselves, or the starved ones moved the median."""
        if self.wait_share is None:
            return False
        starved = self.starved
        clean = np.asarray(self.samples_ms, dtype=float)[~starved]
        if clean.size < MIN_CLEAN_SHARE * starved.size or clean.size == 0:
            return True
        shift = float(np.median(self.samples_ms)) / float(np.median(clean)) - 1.0
        return abs(shift) > MAX_MEDIAN_SHIFT


#: How much less often than the stored interval misses the interval the stop rule looks at may miss.
#: Stopping at the first tight look of many picks the samples that happen to bunch: with the stop rule
#: at the stored 95%, the interval of a 49/51 bimodal case covered the true median in 82% of runs
#: (a run that stopped at 10 samples, 8 of them in the slow mode, read 1.30 ms ± 1% for 1.02). At
#: 99.5% it covered in 89–90% (4,000–5,000 simulated runs, modes 25% apart, ±1% and ±2%); smooth noise
#: at the nominal 95%. A factor of 50 (99.9%) gave 94% for a third more samples on smooth noise: not taken.
STOP_LOOK_FACTOR = 10.0


def stop_confidence(confidence: float) -> float:
    """The level the stop rule checks the median's interval at: ``confidence``'s miss rate divided
    by ``STOP_LOOK_FACTOR``; the interval stored is still at ``confidence``."""
    return 1.0 - (1.0 - confidence) / STOP_LOOK_FACTOR


Now = Callable[[], float]


def _warm_up(clock: Clock, fn: Callable[[], object], warmup_s: float, now: Now) -> tuple[int, float]:
    """Call ``fn`` until ``warmup_s`` has passed (at least twice); returns calls and the last call's time."""
    calls, last = 0, math.inf
    deadline = now() + warmup_s
    while True:
        last = clock.time_block(fn, 1).device_s
        calls += 1
        if calls >= 2 and now() >= deadline:
            return calls, last


def measure(
    fn: Callable[[], object], clock: Clock, policy: TimingPolicy | None = None, now: Now = time.perf_counter
) -> Timing:
    """Warm up by time, calibrate the block size, then sample until the median's CI is tight enough.

    ``min_samples`` are always taken. Then it stops at the first of: CI half-width ≤ ``rel_ci`` (at
    ``stop_confidence``, stricter than the interval stored, and with ``MIN_EFFECTIVE_SAMPLES``
    independent samples' worth; checked from ``min_samples`` on, then after every 10% more samples,
    since the interval costs a few ms to compute), the time budget spent, or ``max_samples``.
    ``now`` is the wall clock the budgets are kept by (a fake one in tests). Without a policy,
    ``TimingPolicy()``'s defaults.
    """
    policy = policy if policy is not None else TimingPolicy()
    clock.prepare()  # the last case's calls taught the clock nothing about this case's warm-up
    warmup_calls, per_call = _warm_up(clock, fn, policy.warmup_s, now)
    clock.prepare()  # nor do the warm-up's first calls (a compile, a JIT) about its samples
    calls = max(1, math.ceil(clock.min_block_s / max(per_call, 1e-12)))
    samples: list[float] = []
    hosts: list[float] = []
    waits: list[float] = []
    overran = 0
    next_check = policy.min_samples
    start = now()
    while True:
        block = clock.time_block(fn, calls)
        samples.append(block.device_s / calls * 1e3)
        hosts.append(block.host_s / calls * 1e3)
        waits.append(block.wait_s / block.device_s if block.device_s > 0 else math.nan)
        overran += block.overran
        n = len(samples)
        if n >= policy.max_samples:
            reason = "max_samples"
            break
        if n >= next_check:
            tight = ci_half_width(samples, stop_confidence(policy.confidence)) <= policy.rel_ci
            if tight and n / dependence_factor(samples) >= MIN_EFFECTIVE_SAMPLES:
                reason = "converged"
                break
            next_check = max(n + 1, math.ceil(n * 1.1))
        if n >= policy.min_samples and now() - start >= policy.max_time_s:
            reason = "budget"
            break
    return Timing(tuple(samples), calls, warmup_calls, reason, tuple(hosts), tuple(waits), overran)


def pooled(timings: Sequence[Timing]) -> Timing:
    """One timing from several (processes or attempts): samples concatenated, reasons joined."""
    reasons = list(dict.fromkeys(t.stop_reason for t in timings))
    return Timing(
        samples_ms=tuple(s for t in timings for s in t.samples_ms),
        calls_per_sample=max(t.calls_per_sample for t in timings),
        warmup_calls=sum(t.warmup_calls for t in timings),
        stop_reason=reasons[0] if len(reasons) == 1 else "+".join(reasons),
        host_samples_ms=tuple(s for t in timings for s in t.host_samples_ms),
        wait_shares=tuple(s for t in timings for s in t.wait_shares),
        overran=sum(t.overran for t in timings),
    )
