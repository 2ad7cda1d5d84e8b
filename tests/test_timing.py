"""The adaptive loop, driven by a fake clock so that its decisions are exact and repeatable."""
from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from sample_orders import log_ar1, without_drift

from harness.measure.cpu_wait import ThreadWait
from harness.measure.stats import ci_half_width, median_ci
from harness.measure.timing import (
    MIN_EFFECTIVE_SAMPLES,
    Block,
    CpuClock,
    Timing,
    TimingPolicy,
    measure,
    pooled,
    stop_confidence,
    timer_overhead_ns,
)
from harness.sweep.runner import time_step


class FakeClock:
    """Each call of ``fn`` "takes" the next duration; a fake wall clock advances by the same.

    ``waits`` gives each block's run-queue wait as a share of its time (default: none).
    """

    wall = None

    def __init__(self, durations, min_block_s: float = 1e-3, waits=None) -> None:
        self.durations = iter(durations)
        self.waits = iter(waits) if waits is not None else itertools.repeat(0.0)
        self.min_block_s = min_block_s
        self.now = 0.0
        self.calls = 0
        self.blocks: list[int] = []
        self.prepared = 0

    def time_block(self, fn, calls: int) -> Block:
        self.blocks.append(calls)
        total = 0.0
        for _ in range(calls):
            fn()
            self.calls += 1
            total += next(self.durations)
        self.now += total
        return Block(total, total, total * next(self.waits))

    def prepare(self) -> None:
        self.prepared += 1

    def sync(self) -> None:
        pass

    def elapsed(self) -> float:
        return self.now


def test_block_size_is_calibrated_to_the_clock_resolution() -> None:
    clock = FakeClock(itertools.repeat(1e-5))  # 10 µs calls, 1 ms blocks -> 100 calls a sample
    timing = measure(lambda: None, clock, TimingPolicy(warmup_s=0.0, min_samples=10, rel_ci=0.01), now=clock.elapsed)
    assert timing.calls_per_sample == 100
    assert set(clock.blocks[timing.warmup_calls:]) == {100}
    assert timing.samples_ms[0] == pytest.approx(0.01)


def test_constant_times_converge_once_they_hold_enough_independent_samples() -> None:
    """Ten identical samples give a zero-width interval, but the stop rule waits for
    ``MIN_EFFECTIVE_SAMPLES`` samples' worth: a short window hides slow drift."""
    clock = FakeClock(itertools.repeat(2e-3))
    timing = measure(lambda: None, clock, TimingPolicy(warmup_s=0.0, min_samples=10), now=clock.elapsed)
    assert timing.stop_reason == "converged"
    assert MIN_EFFECTIVE_SAMPLES == 20
    assert len(timing.samples_ms) == 21  # the first look at 20 or more: 10, 11, 13, 15, 17, 19, 21
    assert timing.calls_per_sample == 1


def test_noisy_times_run_until_the_budget() -> None:
    rng = np.random.default_rng(0)
    clock = FakeClock(iter(rng.lognormal(np.log(2e-3), 0.5, 100_000)))  # too spread for ±1% in 0.5 s
    policy = TimingPolicy(warmup_s=0.0, min_samples=10, max_time_s=0.5, max_samples=10_000)
    timing = measure(lambda: None, clock, policy, now=clock.elapsed)
    assert timing.stop_reason == "budget"
    assert 0.5 <= sum(timing.samples_ms) / 1e3 <= 0.51


def test_max_samples_caps_the_loop() -> None:
    clock = FakeClock(itertools.cycle([1e-3, 2e-3]))
    policy = TimingPolicy(warmup_s=0.0, min_samples=5, max_samples=7, max_time_s=100)
    timing = measure(lambda: None, clock, policy, now=clock.elapsed)
    assert timing.stop_reason == "max_samples"
    assert len(timing.samples_ms) == 7


def test_warm_up_runs_for_its_time() -> None:
    clock = FakeClock(itertools.repeat(1e-3))
    timing = measure(lambda: None, clock, TimingPolicy(warmup_s=0.05), now=clock.elapsed)
    assert timing.warmup_calls in (50, 51)


def test_cpu_clock_overhead_is_under_a_thousandth_of_a_block() -> None:
    clock = CpuClock()
    assert timer_overhead_ns() * 1e-9 <= clock.min_block_s / 1000 * 1.5  # measured again: same order
    calls = []
    block = clock.time_block(lambda: calls.append(time.sleep(0.001)), 5)
    assert len(calls) == 5
    assert block.device_s >= 0.005
    assert block.host_s == block.device_s


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TimingPolicy(min_samples=10, max_samples=5)
    with pytest.raises(ValueError):
        TimingPolicy(max_time_s=0)


@pytest.mark.parametrize("limits", [{"warmup_s": 0.0}, {"min_samples": 1, "max_samples": 1},
                                    {"min_samples": 7, "max_samples": 7}, {"max_time_s": 1e-9}, {"rel_ci": 1e-9}])
def test_policy_limits_are_exact_allowed(limits: dict) -> None:
    TimingPolicy(**limits)


@pytest.mark.parametrize("limits", [{"warmup_s": -1e-9}, {"max_time_s": 0.0}, {"max_time_s": -1.0}, {"rel_ci": 0.0},
                                    {"min_samples": 0}, {"min_samples": 8, "max_samples": 7}])
def test_policy_limits_are_exact_refused(limits: dict) -> None:
    with pytest.raises(ValueError, match="warm-up must be|min_samples ≤ max_samples"):
        TimingPolicy(**limits)


def test_the_budget_never_cuts_below_min_samples() -> None:
    clock = FakeClock(itertools.cycle([1.0, 1.2, 0.9]))  # one second a call, budget 0.1 s
    policy = TimingPolicy(warmup_s=0.0, min_samples=6, max_time_s=0.1)
    timing = measure(lambda: None, clock, policy, now=clock.elapsed)
    assert timing.stop_reason == "budget"
    assert len(timing.samples_ms) == 6


def timing_with(samples, waits) -> Timing:
    return Timing(tuple(samples), 1, 2, "converged", tuple(samples), tuple(waits))


def test_a_clean_timing_is_not_disturbed() -> None:
    assert not timing_with([1.0] * 20, [0.0] * 20).disturbed
    assert not timing_with([1.0] * 20, [float("nan")] * 20).disturbed  # unknown is not disturbed
    assert timing_with([1.0] * 20, [float("nan")] * 20).wait_share is None


def test_mostly_starved_samples_make_a_disturbed_timing() -> None:
    waits = [0.5] * 11 + [0.0] * 9  # fewer than half the samples had the cores to themselves
    assert timing_with([1.0] * 20, waits).disturbed


def test_a_few_starved_samples_that_leave_the_median_alone_do_not_disturb() -> None:
    samples = [1.0] * 18 + [30.0] * 2
    assert not timing_with(samples, [0.0] * 18 + [0.6] * 2).disturbed


def test_starved_samples_that_move_the_median_disturb() -> None:
    clean = [1.0 + 0.01 * i for i in range(12)]
    samples = clean + [2.0] * 8  # the starved 40% pull the median up the clean ones' spread
    timing = timing_with(samples, [0.0] * 12 + [0.3] * 8)
    assert float(np.median(samples)) / float(np.median(clean)) > 1.03
    assert timing.disturbed
    assert not timing_with(samples, [0.0] * 20).disturbed  # the same times, unstarved: a slow tail


def test_the_loop_takes_the_prepare_hook_before_and_after_warm_up_and_keeps_per_sample_figures() -> None:
    """Before: the last case's lessons (a call that syncs, a short launch queue) left the clock
    holding nothing in this case's warm-up, whose per-call time then set too few calls a sample.
    After: the warm-up's first calls (a compile) teach nothing about the samples."""

    class Watching(FakeClock):
        def prepare(self) -> None:
            super().prepare()
            self.prepared_at = [*getattr(self, "prepared_at", []), len(self.blocks)]

    clock = Watching(itertools.repeat(2e-3), waits=itertools.repeat(0.01))
    timing = measure(lambda: None, clock, TimingPolicy(warmup_s=0.0, min_samples=10), now=clock.elapsed)
    assert clock.prepared_at == [0, timing.warmup_calls]  # before the first block, and after the warm-up's
    assert len(timing.host_samples_ms) == len(timing.wait_shares) == len(timing.samples_ms)
    assert timing.wait_share == pytest.approx(0.01)


def test_a_starved_case_is_measured_again_once_and_flagged_only_if_still_starved() -> None:
    policy = TimingPolicy(warmup_s=0.0, min_samples=10, max_samples=10)
    # 12 blocks per measurement (2 warm-up + 10 samples): starved first, then clean
    clock = FakeClock(itertools.repeat(2e-3), waits=itertools.chain([0.5] * 12, itertools.repeat(0.0)))
    timing, wall, remeasured = time_step(lambda: None, clock, policy)
    assert remeasured and not timing.disturbed and wall is None
    clock = FakeClock(itertools.repeat(2e-3), waits=itertools.repeat(0.5))
    timing, _, remeasured = time_step(lambda: None, clock, policy)
    assert remeasured and timing.disturbed
    clock = FakeClock(itertools.repeat(2e-3))
    timing, _, remeasured = time_step(lambda: None, clock, policy)
    assert not remeasured and not timing.disturbed
    assert clock.prepared == 2  # one measurement: before and after its warm-up


def test_pooled_timings_concatenate_in_order_and_add_up() -> None:
    a = Timing((1.0, 2.0), 4, 10, "converged", (0.5, 0.6), (0.0, 0.1), overran=1)
    b = Timing((3.0,), 8, 5, "budget", (0.7,), (0.2,), overran=2)
    both = pooled([a, b])
    assert both == Timing((1.0, 2.0, 3.0), 8, 15, "converged+budget", (0.5, 0.6, 0.7), (0.0, 0.1, 0.2), overran=3)
    assert pooled([a, a]).stop_reason == "converged"  # one reason, not "converged+converged"
    assert pooled([b, a]).stop_reason == "budget+converged" and pooled([b, a]).samples_ms == (3.0, 1.0, 2.0)


class FakeWait:
    """A run-queue wait counter that reads the given nanoseconds in turn (None: unreadable)."""

    busy_ns = 0  # on-CPU time: none, so the cores were the other processes' and all the wait counts
    cores = 1

    def __init__(self, *reads: int | None) -> None:
        self.reads = iter(reads)

    def read_ns(self) -> int | None:
        return next(self.reads)

    def others_wait_s(self, wait_ns: int, busy_ns: int, wall_s: float, pool_threads: int = 1) -> float:
        return ThreadWait.others_wait_s(self, wait_ns, busy_ns, wall_s, pool_threads)  # type: ignore[arg-type]

    def refresh(self) -> None:
        pass


def test_timer_overhead_is_the_median_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    # five pairs costing 10, 50, 30, 20 and 40 ns: the median is 30
    ticks = iter([0, 10, 100, 150, 200, 230, 300, 320, 400, 440])
    monkeypatch.setattr(time, "perf_counter_ns", lambda: next(ticks))
    assert timer_overhead_ns(5) == 30.0


@pytest.mark.parametrize(("overhead_ns", "min_block_s"), [(5.0, 20e-6), (50.0, 50e-6)])
def test_cpu_blocks_are_a_thousand_timer_costs_at_least_20_ns_each(
    monkeypatch: pytest.MonkeyPatch, overhead_ns: float, min_block_s: float
) -> None:
    monkeypatch.setattr("harness.measure.timing.timer_overhead_ns", lambda: overhead_ns)
    wait = FakeWait()
    clock = CpuClock(wait=wait)
    assert clock.min_block_s == pytest.approx(min_block_s, rel=1e-12)
    assert clock.wait is wait


@pytest.mark.parametrize(("reads", "wait_s"), [((5_000_000, 5_500_000), 0.0005), ((None, 5_500_000), None),
                                               ((5_000_000, None), None)])  # fmt: skip
def test_a_cpu_block_is_its_wall_time_in_seconds_and_the_wait_between_two_reads(
    monkeypatch: pytest.MonkeyPatch, reads: tuple, wait_s: float | None
) -> None:
    clock = CpuClock(wait=FakeWait(*reads))
    ticks = iter([7_000_000_000, 7_003_000_000])  # 3 ms between the two perf_counter_ns reads
    monkeypatch.setattr(time, "perf_counter_ns", lambda: next(ticks))
    calls = []
    block = clock.time_block(lambda: calls.append(1), 4)
    assert len(calls) == 4
    assert block.device_s == block.host_s == pytest.approx(0.003, rel=1e-12)
    if wait_s is None:
        assert math.isnan(block.wait_s)
    else:
        assert block.wait_s == pytest.approx(wait_s, rel=1e-12)


class BusyFakeWait(FakeWait):
    """As ``FakeWait``, and each read also moves the process's on-CPU time to the next of ``busy``."""

    cores = 2

    def __init__(self, reads: tuple[int, ...], busy: tuple[int, ...]) -> None:
        super().__init__(*reads)
        self.busy = iter(busy)
        self.busy_ns = 0

    def read_ns(self) -> int | None:
        self.busy_ns = next(self.busy)
        return super().read_ns()


@pytest.mark.parametrize(("pool_threads", "wait_s"), [(1, 0.0005), (3, 0.0)])
def test_a_cpu_blocks_wait_is_only_what_the_cores_left_to_others_explains(
    monkeypatch: pytest.MonkeyPatch, pool_threads: int, wait_s: float
) -> None:
    """3 ms on 2 cores, 5.5 ms of it on this process's CPU clock (1 ms before the block, 6.5 ms after):
    others had 0.5 ms, so of a 1.5 ms wait only 0.5 ms is theirs. A pool of 3 threads on 2 cores queues
    behind itself, so none is."""
    wait = BusyFakeWait((5_000_000, 6_500_000), (1_000_000, 6_500_000))
    clock = CpuClock(wait=wait, pool_threads=lambda: pool_threads)
    ticks = iter([7_000_000_000, 7_003_000_000])
    monkeypatch.setattr(time, "perf_counter_ns", lambda: next(ticks))
    block = clock.time_block(lambda: None, 1)
    assert block.wait_s == pytest.approx(wait_s, abs=1e-12)


def test_warm_up_with_no_time_makes_exactly_two_calls_and_counts_them() -> None:
    clock = FakeClock(itertools.repeat(2e-3))
    timing = measure(lambda: None, clock, TimingPolicy(warmup_s=0.0, min_samples=10), now=clock.elapsed)
    assert timing.warmup_calls == 2
    assert clock.blocks[:2] == [1, 1]
    assert clock.calls == 2 + timing.calls_per_sample * len(timing.samples_ms)


def test_the_stop_rule_uses_the_policys_confidence_and_accepts_a_ci_exactly_at_the_target() -> None:
    first = list(without_drift([1.0 + 0.01 * k for k in range(20)]))
    at_half = ci_half_width(first, stop_confidence(0.5))  # the stop rule looks at 95% for a 50% CI
    assert not ci_half_width(first, stop_confidence(0.95)) <= at_half
    durations = itertools.chain([1e-3, 1e-3], [v * 1e-3 for v in first], itertools.repeat(5e-3))
    clock = FakeClock(durations)
    policy = TimingPolicy(warmup_s=0.0, min_samples=20, rel_ci=at_half, confidence=0.5, max_time_s=1e9)
    timing = measure(lambda: None, clock, policy, now=clock.elapsed)
    assert timing.stop_reason == "converged" and len(timing.samples_ms) == 20


class OverrunClock(FakeClock):
    """Every block reports one overrun try, and blocks of zero time (a clock too coarse to see them)."""

    def time_block(self, fn, calls: int) -> Block:
        block = super().time_block(fn, calls)
        return Block(block.device_s, block.host_s, block.wait_s, overran=1)


def test_overruns_add_up_over_the_samples() -> None:
    clock = OverrunClock(itertools.repeat(2e-3))
    timing = measure(lambda: None, clock, TimingPolicy(warmup_s=0.0, min_samples=10), now=clock.elapsed)
    assert len(timing.samples_ms) == 21 and timing.overran == 21  # warm-up blocks are not samples


def test_a_zero_time_block_has_an_unknown_wait_share_not_a_crash() -> None:
    clock = FakeClock(itertools.chain([1e-3, 1e-3], itertools.repeat(0.0)), waits=itertools.repeat(0.0))
    policy = TimingPolicy(warmup_s=0.0, min_samples=3, max_samples=5, max_time_s=1e9)
    timing = measure(lambda: None, clock, policy, now=clock.elapsed)
    assert timing.stop_reason == "max_samples"
    assert all(math.isnan(w) for w in timing.wait_shares)


def test_without_a_policy_the_defaults_apply() -> None:
    clock = FakeClock(itertools.repeat(2e-3))
    timing = measure(lambda: None, clock, now=clock.elapsed)
    assert timing.stop_reason == "converged" and len(timing.samples_ms) == 21  # looks from 10 on: the first past 20
    assert timing.warmup_calls in (50, 51)  # 0.1 s of 2 ms calls


def test_warm_up_stops_once_its_time_is_reached_exactly() -> None:
    clock = FakeClock(itertools.repeat(0.25))  # binary fractions: the fake clock adds them exactly
    timing = measure(lambda: None, clock, TimingPolicy(warmup_s=1.0, min_samples=3), now=clock.elapsed)
    assert timing.warmup_calls == 4


def test_the_budget_stops_once_it_is_spent_exactly() -> None:
    clock = FakeClock(itertools.cycle([0.25, 0.5]))  # warm-up takes 0.25 + 0.5; then 0.25 + 0.5 + 0.25 = 1.0
    policy = TimingPolicy(warmup_s=0.0, min_samples=2, rel_ci=1e-9, max_time_s=1.0)
    timing = measure(lambda: None, clock, policy, now=clock.elapsed)
    assert timing.stop_reason == "budget" and len(timing.samples_ms) == 3


def test_ten_samples_bunched_in_one_mode_do_not_stop_the_loop() -> None:
    """A case half in a 1.3× slower mode: its first ten samples, nine of them slow and within
    ±0.2%, gave a 95% interval of ±0.15%, and the loop stopped there reading 1.30 ms ± 1% for a
    median near 1.0. The stop rule looks at a stricter level (``stop_confidence``): not at ten."""
    first_ten = [1.30, 1.301, 1.299, 1.0, 1.302, 1.298, 1.3015, 1.3005, 1.2995, 1.30]
    assert ci_half_width(first_ten, 0.95) <= 0.01  # the old rule's stop
    rest = itertools.cycle([1.0, 1.3, 1.0005, 1.2995])
    clock = FakeClock(itertools.chain([1e-3, 1e-3], [v * 1e-3 for v in first_ten], (v * 1e-3 for v in rest)))
    policy = TimingPolicy(warmup_s=0.0, min_samples=10, max_samples=200, rel_ci=0.01, max_time_s=1e9)
    timing = measure(lambda: None, clock, policy, now=clock.elapsed)
    assert len(timing.samples_ms) > 10 and timing.stop_reason != "converged"


def test_the_stored_interval_covers_the_median_at_its_level_after_the_stop_rule() -> None:
    """Stopping at the first tight look picks samples that bunch: with the stop rule at the stored
    95%, a 49/51 bimodal case's interval covered the true median in 82% of 600 runs. Over 300 runs
    it must cover at least 90% (95% nominal; 0.94 measured at 300 runs)."""
    import math

    from scipy import stats as sps

    from harness.measure.stats import median_ci

    rng = np.random.default_rng(5)
    slow_share = 0.49
    truth = math.exp(0.01 * sps.norm.ppf(0.5 / (1 - slow_share)))  # the fast mode's quantile that is the median
    covered = 0
    for _ in range(300):
        draws = ((1.3 if rng.random() < slow_share else 1.0) * rng.lognormal(0, 0.01) * 1e-3 for _ in itertools.count())
        clock = FakeClock(draws, min_block_s=1e-4)  # a call a sample: a sample is one draw
        timing = measure(lambda: None, clock, TimingPolicy(warmup_s=0.0), now=clock.elapsed)
        low, high = median_ci(np.asarray(timing.samples_ms))
        covered += low <= truth <= high
    assert covered / 300 >= 0.90, covered / 300


class WallFakeClock(FakeClock):
    """A primary clock with a second, synchronous one behind it, as on CUDA."""

    def __init__(self, durations, wall_durations) -> None:
        super().__init__(durations)
        self.wall = FakeClock(wall_durations, min_block_s=0.0)


def test_the_wall_loop_stops_at_twice_the_primary_ci_target_with_a_quarter_of_the_budget() -> None:
    rng = np.random.default_rng(7)
    noisy = (1e-3 * rng.lognormal(0.0, 0.05) for _ in itertools.count())  # ±5% sync jitter a sample
    clock = WallFakeClock(itertools.repeat(1e-3), noisy)
    policy = TimingPolicy(warmup_s=0.0, rel_ci=0.01, max_time_s=10.0)
    timing, wall, _ = time_step(lambda: None, clock, policy)
    assert timing.stop_reason == "converged"
    assert wall is not None and wall.stop_reason == "converged"
    width = ci_half_width(wall.samples_ms, stop_confidence(policy.confidence))
    assert 0.01 < width <= 0.02  # the primary's ±1% would have taken several times as many samples
    assert policy.for_wall() == TimingPolicy(warmup_s=0.0, rel_ci=0.02, max_time_s=2.5)  # the budget by real time


def test_a_tight_interval_stops_the_loop_only_with_enough_independent_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant times give a zero-width interval at once; when every 4 samples count as one
    independent sample, the loop goes on to the first look past 4 × 20 = 80 samples."""
    import harness.measure.timing as timing_module

    monkeypatch.setattr(timing_module, "dependence_factor", lambda samples: 4.0)
    clock = FakeClock(itertools.repeat(2e-3))
    timing = measure(lambda: None, clock, TimingPolicy(warmup_s=0.0, min_samples=10, max_time_s=1e9),
                     now=clock.elapsed)  # fmt: skip
    assert timing.stop_reason == "converged" and len(timing.samples_ms) == 85  # looks: ..., 70, 77, 85


def test_samples_that_come_in_pairs_count_as_fewer_independent_samples() -> None:
    """Each time repeated once (a pair of neighbours alike, as a block that straddles one state of the
    machine): the interval is tight at once, but 21 samples hold only about 12 independent ones
    (``dependence_factor`` ≈ 1.7), so the loop goes on until they hold 20, not stopping at 21."""
    from harness.measure.stats import dependence_factor

    values = np.repeat(1 + 0.001 * np.random.default_rng(3).standard_normal(200), 2) * 2e-3
    clock = FakeClock(itertools.chain([2e-3, 2e-3], values, itertools.repeat(2e-3)))
    timing = measure(lambda: None, clock, TimingPolicy(warmup_s=0.0, min_samples=10, max_time_s=1e9),
                     now=clock.elapsed)  # fmt: skip
    n = len(timing.samples_ms)
    assert timing.stop_reason == "converged" and timing.calls_per_sample == 1
    assert n > 21
    assert n / dependence_factor(timing.samples_ms) >= MIN_EFFECTIVE_SAMPLES


def test_the_stop_rule_looks_at_a_tenth_of_the_stored_miss_rate() -> None:
    assert stop_confidence(0.95) == pytest.approx(0.995, abs=1e-12)  # the README's "checked at 99.5%"
    assert stop_confidence(0.5) == pytest.approx(0.95, abs=1e-12)


def test_the_wall_loop_never_warms_up_again() -> None:
    """The wall loop follows the primary loop on a step already warm: a warm-up there is time lost."""
    wall = TimingPolicy(warmup_s=0.3, max_time_s=2.0, rel_ci=0.01).for_wall()
    assert (wall.warmup_s, wall.max_time_s, wall.rel_ci) == (0.0, 0.5, 0.02)


def test_drifting_samples_take_longer_to_stop_than_the_same_samples_shuffled() -> None:
    """Samples that carry on from their neighbours (correlation 0.9) know less about the median than
    their count says: the loop runs over twice as long as on the same values shuffled, and the interval
    it stops with still holds their true median, 1 ms."""
    drifting = list(log_ar1(2000, 0.9, 0.02, seed=11) * 1e-3)
    policy = TimingPolicy(warmup_s=0.0, min_samples=10, rel_ci=0.01, max_time_s=1e9)
    runs = {}
    shuffled = list(np.random.default_rng(0).permutation(drifting))
    for name, values in (("drifting", drifting), ("shuffled", shuffled)):
        clock = FakeClock(itertools.chain([1e-3, 1e-3], values, itertools.repeat(1e-3)), min_block_s=0.0)
        runs[name] = measure(lambda: None, clock, policy, now=clock.elapsed)
    assert runs["drifting"].stop_reason == runs["shuffled"].stop_reason == "converged"
    assert len(runs["drifting"].samples_ms) > 2 * len(runs["shuffled"].samples_ms)
    low, high = median_ci(runs["drifting"].samples_ms)
    assert low <= 1.0 <= high
