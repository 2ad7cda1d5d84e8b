"""The CUDA clocks' blocking and batching logic, on a fake stream with a simulated timeline."""
from __future__ import annotations

import pytest
from fake_gpu import FakeGpu

from harness.measure import cuda_clock
from harness.measure.cuda_clock import MIN_HOLD_S, CudaClock, WallClock
from harness.measure.figures import Figures
from harness.measure.timing import TimingPolicy, measure

# A launch-bound variant: 10 kernels a call, 30 µs of host time and 10 µs of GPU time each.
KERNELS, HOST_S, DEVICE_S = 10, 30e-6, 10e-6
GPU_PER_CALL = KERNELS * DEVICE_S
HOST_PER_CALL = KERNELS * HOST_S


def launch_bound(gpu: FakeGpu):
    return gpu.call(KERNELS, HOST_S, DEVICE_S)


@pytest.mark.parametrize("cache", ["cold", "hot"])
def test_held_batches_see_only_gpu_time(cache: str) -> None:
    gpu = FakeGpu()
    clock = CudaClock(gpu, cache, now=gpu.now)
    block = clock.time_block(launch_bound(gpu), 8)
    assert block.device_s / 8 == pytest.approx(GPU_PER_CALL, rel=1e-9)
    assert block.host_s / 8 == pytest.approx(HOST_PER_CALL, rel=1e-9)
    assert block.overran == 0


def test_without_a_hold_the_event_pairs_would_include_host_gaps() -> None:
    """The fake is faithful: a hold that ends at once lets the GPU wait for the host, as on a real GPU,
    and the clock sees that the hold ran out."""
    gpu = FakeGpu(hold_scale=0.0)
    clock = CudaClock(gpu, "cold", now=gpu.now)
    block = clock.time_block(launch_bound(gpu), 4)
    per_call = block.device_s / 4
    assert per_call > 2.5 * GPU_PER_CALL  # the GPU idled between launches inside the pair
    assert block.overran >= cuda_clock.MAX_TRIES  # every try ran out, and was counted


def test_a_hold_sized_too_short_is_detected_and_the_batch_measured_again() -> None:
    gpu = FakeGpu()
    clock = CudaClock(gpu, "cold", now=gpu.now)
    clock.queue_s_per_call = 1e-6  # a wrong estimate: the first hold is MIN_HOLD_S, far too short for 32 calls
    block = clock.time_block(launch_bound(gpu), 32)
    assert gpu.holds[0] == MIN_HOLD_S
    assert block.overran == 1
    assert gpu.holds[1] >= cuda_clock.HOLD_MARGIN * 32 * HOST_PER_CALL  # sized from the measured queuing
    assert block.device_s / 32 == pytest.approx(GPU_PER_CALL, rel=1e-9)


def test_the_hold_is_sized_from_the_last_batch_host_time() -> None:
    gpu = FakeGpu()
    clock = CudaClock(gpu, "cold", now=gpu.now)
    clock.time_block(launch_bound(gpu), 4)
    queued = clock.queue_s_per_call
    assert HOST_PER_CALL < queued < HOST_PER_CALL * 1.1  # the call plus the flush and two events
    assert clock.hold_for(10) == pytest.approx(cuda_clock.HOLD_MARGIN * queued * 10 + cuda_clock.HOLD_SLACK_S)
    assert clock.hold_for(1) == MIN_HOLD_S


def test_a_host_stall_in_one_try_is_redone() -> None:
    gpu = FakeGpu()
    clock = CudaClock(gpu, "cold", now=gpu.now)
    clock.time_block(launch_bound(gpu), 4)  # sizes the hold
    stalls = [0.05]  # the first call of the next batch is preempted for 50 ms

    def stalling() -> None:
        if stalls:
            gpu.host += stalls.pop()
        launch_bound(gpu)()

    block = clock.time_block(stalling, 4)
    assert block.overran == 1
    assert block.device_s / 4 == pytest.approx(GPU_PER_CALL, rel=1e-9)


def test_a_full_launch_queue_splits_the_batch() -> None:
    """Beyond the launch queue's depth the host waits for the GPU and no hold helps: halve the batch."""
    gpu = FakeGpu(queue_limit=60)
    clock = CudaClock(gpu, "cold", now=gpu.now)
    block = clock.time_block(launch_bound(gpu), 32)  # 32 x 13 queued items, 60 fit
    assert block.overran >= 2
    assert clock.max_batch < 32
    assert clock.max_batch * (KERNELS + 3) + 2 <= 60 * 2  # small enough to nearly fit
    assert block.device_s / 32 == pytest.approx(GPU_PER_CALL, rel=1e-9)
    clock.prepare()
    assert clock.max_batch == cuda_clock.START_BATCH_CALLS


def test_wall_clock_sees_what_a_synchronous_caller_sees() -> None:
    gpu = FakeGpu()
    block = WallClock(gpu, "hot", now=gpu.now).time_block(launch_bound(gpu), 3)
    # each call: the host launches for 300 µs; the last kernel then runs 10 µs
    assert block.device_s / 3 == pytest.approx(HOST_PER_CALL + DEVICE_S, rel=1e-9)


def test_measure_gives_gpu_host_and_wall_figures_and_the_bound() -> None:
    gpu = FakeGpu()
    clock = CudaClock(gpu, "cold", now=gpu.now)
    policy = TimingPolicy(warmup_s=0.001, min_samples=10, max_time_s=0.05)
    fn = launch_bound(gpu)
    timing = measure(fn, clock, policy, now=gpu.now)
    wall = measure(fn, clock.wall, policy, now=gpu.now)
    row = Figures.of(timing, wall, on_cuda=True, batch=8).as_row()
    assert row["median_ms"] == pytest.approx(GPU_PER_CALL * 1e3)
    assert row["host_ms"] == pytest.approx(HOST_PER_CALL * 1e3)
    assert row["wall_ms"] > row["host_ms"] > row["median_ms"]
    assert row["bound"] == "host"
    assert row["overran"] == 0
    assert timing.calls_per_sample == 5  # 0.5 ms blocks of 0.1 ms calls


def test_a_device_bound_call_is_bound_by_the_device() -> None:
    gpu = FakeGpu()
    clock = CudaClock(gpu, "cold", now=gpu.now)
    fn = gpu.call(2, 5e-6, 200e-6)
    policy = TimingPolicy(warmup_s=0.001, min_samples=10, max_time_s=0.05)
    timing = measure(fn, clock, policy, now=gpu.now)
    row = Figures.of(timing, measure(fn, clock.wall, policy, now=gpu.now), on_cuda=True, batch=8).as_row()
    assert row["bound"] == "device"
    assert row["median_ms"] == pytest.approx(0.4)
    assert row["host_ms"] == pytest.approx(0.01)
    assert row["wall_ms"] == pytest.approx(0.405, rel=1e-6)  # launch of the first kernel, then the GPU


def test_cache_mode_is_checked() -> None:
    with pytest.raises(ValueError):
        CudaClock(FakeGpu(), "lukewarm")


def test_a_call_that_synchronises_gets_one_try_a_batch_once_no_hold_helps() -> None:
    gpu = FakeGpu()
    clock = CudaClock(gpu, "cold", now=gpu.now)

    def syncing() -> None:
        launch_bound(gpu)()
        gpu.synchronize()  # .item(): the host waits for the hold and everything before

    first = clock.time_block(syncing, 1)
    assert first.overran == cuda_clock.MAX_TRIES + 1 and clock.hold_useless  # every try, then one unheld
    holds = len(gpu.holds)
    later = clock.time_block(syncing, 1)
    assert later.overran == 1 and len(gpu.holds) == holds  # queued with no hold at all
    clock.prepare()
    assert not clock.hold_useless


def test_a_call_longer_than_the_launch_queue_reports_its_own_host_time_not_the_hold() -> None:
    """A network's training step launches more kernels than the queue holds, so the host waits for the
    GPU, and behind a hold it would wait out the hold too: an H200 reported 0.5 s of host time for a
    U-Net step of 50 ms wall. Unheld, the host time is launching plus waiting for the GPU's own work."""
    gpu = FakeGpu(queue_limit=60)
    clock = CudaClock(gpu, "cold", now=gpu.now)
    kernels, host_s, device_s = 200, 5e-6, 50e-6  # the GPU is the slower: the host must wait for room
    policy = TimingPolicy(warmup_s=0.001, min_samples=10, max_time_s=0.05)
    timing = measure(gpu.call(kernels, host_s, device_s), clock, policy, now=gpu.now)
    assert clock.hold_useless and timing.overran > 0
    gpu_time = kernels * device_s
    host = sorted(timing.host_samples_ms)[len(timing.host_samples_ms) // 2] * 1e-3
    assert host < gpu_time * 1.05  # at most the GPU's time (it waited for room), never a hold's 0.5 s
    assert max(gpu.holds) < 2 * cuda_clock.MAX_HOLD_S
    assert sorted(timing.samples_ms)[len(timing.samples_ms) // 2] == pytest.approx(gpu_time * 1e3, rel=0.05)


class CountingGpu(FakeGpu):
    """A fake stream that counts the L2 flushes and events recorded."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.flushes = 0
        self.records = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()

    def record(self, event) -> None:
        self.records += 1
        super().record(event)


def test_cold_flushes_before_every_call_and_pairs_each_hot_pairs_the_batch() -> None:
    cold = CountingGpu()
    block = CudaClock(cold, now=cold.now).time_block(launch_bound(cold), 6)  # "cold" is the default
    assert cold.flushes == 6 and cold.records == 1 + 2 * 6  # the gate, then a pair per call
    assert block.device_s / 6 == pytest.approx(GPU_PER_CALL, rel=1e-9)  # the flushes are outside the pairs
    hot = CountingGpu()
    block = CudaClock(hot, "hot", now=hot.now).time_block(launch_bound(hot), 6)
    assert hot.flushes == 0 and hot.records == 1 + 2
    assert block.device_s / 6 == pytest.approx(GPU_PER_CALL, rel=1e-9)
    with pytest.raises(ValueError, match="cache must be one of"):
        CudaClock(FakeGpu(), "lukewarm")


def test_the_wall_clock_keeps_the_cache_mode() -> None:
    for cache, flushes in (("cold", 3), ("hot", 0)):
        gpu = CountingGpu()
        clock = CudaClock(gpu, cache, now=gpu.now)
        assert clock.wall is not None and clock.wall.cache == cache
        clock.wall.time_block(launch_bound(gpu), 3)
        assert gpu.flushes == flushes


def test_a_hold_that_ran_out_is_doubled() -> None:
    gpu = FakeGpu(hold_scale=0.4)  # holds run 40% of what was asked: the first is too short
    clock = CudaClock(gpu, "cold", now=gpu.now)
    clock.queue_s_per_call = HOST_PER_CALL
    block = clock.time_block(launch_bound(gpu), 8)
    assert gpu.holds[1] == pytest.approx(2 * gpu.holds[0])
    assert block.overran == 1 and len(gpu.holds) == 2
    assert block.device_s / 8 == pytest.approx(GPU_PER_CALL, rel=1e-9)


def test_a_batch_is_split_in_halves_after_its_second_try() -> None:
    gpu = FakeGpu(queue_limit=60)
    clock = CudaClock(gpu, "cold", now=gpu.now)
    clock.time_block(launch_bound(gpu), 32)
    assert len(gpu.holds) >= 3 and clock.max_batch in (4, 8, 16)  # 32 halved until a batch fits
    two = FakeGpu(queue_limit=20)  # a batch of two calls (2 x 13 items) overflows it, one call fits
    clock = CudaClock(two, "cold", now=two.now)
    block = clock.time_block(launch_bound(two), 2)
    assert clock.max_batch == 1 and block.overran >= 2
    assert block.device_s / 2 == pytest.approx(GPU_PER_CALL, rel=1e-9)


def test_the_first_split_halves_the_batch() -> None:
    gpu = FakeGpu(queue_limit=60)
    clock = CudaClock(gpu, "cold", now=gpu.now)
    seen: list[int] = []
    original = clock._batch

    holds_before: list[int] = []

    def batch(fn, calls):
        seen.append(calls)
        holds_before.append(len(gpu.holds))
        return original(fn, calls)

    clock._batch = batch  # type: ignore[method-assign]
    clock.time_block(launch_bound(gpu), 32)
    assert seen[:2] == [32, 16] and all(c in (32, 16, 8, 4, 2, 1) for c in seen)
    assert holds_before[1] == 2  # the whole batch was tried twice, then split


def test_blocks_larger_than_a_batch_are_queued_batch_by_batch() -> None:
    gpu = FakeGpu()
    clock = CudaClock(gpu, "cold", now=gpu.now)
    holds = len(gpu.holds)
    block = clock.time_block(launch_bound(gpu), 2 * cuda_clock.START_BATCH_CALLS + 6)
    assert len(gpu.holds) - holds == 3  # 32, 32 and 6 calls
    assert block.device_s / (2 * cuda_clock.START_BATCH_CALLS + 6) == pytest.approx(GPU_PER_CALL, rel=1e-9)
    assert gpu.kernels == KERNELS * (2 * cuda_clock.START_BATCH_CALLS + 6)


def test_the_queue_time_per_call_is_measured_late_in_a_run_too() -> None:
    gpu = FakeGpu()
    gpu.host = 100.0  # a clock far from zero: the queue time is a difference of two readings
    clock = CudaClock(gpu, "cold", now=gpu.now)
    clock.time_block(launch_bound(gpu), 4)
    assert HOST_PER_CALL < clock.queue_s_per_call < HOST_PER_CALL * 1.1


def test_the_wall_clock_is_synchronous_call_by_call_and_cold_by_default() -> None:
    gpu = CountingGpu()
    wall = WallClock(gpu, now=gpu.now)
    assert wall.wall is None  # a wall clock has no wall clock of its own: the runner times wall once
    policy = TimingPolicy(warmup_s=0.0, min_samples=5, max_time_s=0.01)
    timing = measure(launch_bound(gpu), wall, policy, now=gpu.now)
    assert timing.calls_per_sample == 1  # each sample is one synchronous call
    assert gpu.flushes == timing.warmup_calls + len(timing.samples_ms)
