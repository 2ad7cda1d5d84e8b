"""CUDA clocks: GPU time with no host gaps, the host's enqueue time, and synchronous wall time.

A CUDA event pair around a call measures the GPU's time between the two events, and that
includes any time the GPU sat idle waiting for Python to launch the call's next kernel. On an
H100 that was most of a 0.12 ms fused kernel's reported 0.29 ms. So, as nvbench does, each batch
of (L2 flush, start event, call, end event) is queued while the stream is held by a kernel that
sleeps on the GPU; the queue is full before the GPU reaches the first start event, and the event
pairs then see only GPU work. The hold is sized from the host time the previous batch took to
queue. If the hold ran out before the host had queued the whole batch (its end event has already
completed when the host finishes), the GPU may have waited for the host: the batch is measured
again with a hold twice as long and, if it keeps running out, in halves (the launch queue holds
about a thousand kernels; beyond that the host waits for the GPU, and no hold helps). Every
such try is counted in the row (``overran``).

The host's time per call, without a sync, is read around each ``fn()`` while it is queued; the
flush and the events are outside it. ``WallClock`` is what a launch-bound program sees: sync,
call, sync.

The stream is a small interface (``Stream``) so that the tests drive the clocks with a fake
stream and a fake host clock; ``torch_stream.py`` binds it to a real CUDA stream.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from harness.measure.timing import CACHE_MODES, Block

Now = Callable[[], float]

#: The hold is this many times the host time the batch is expected to take to queue, ...
HOLD_MARGIN = 2.0
#: ... plus this much, and never shorter than ``MIN_HOLD_S``.
HOLD_SLACK_S = 200e-6
MIN_HOLD_S = 1e-3
#: Longest hold.
MAX_HOLD_S = 0.5
#: Tries for a one-call batch before keeping its last (overran) measurement.
MAX_TRIES = 4
#: The first batch's calls: the launch queue holds about 1024 kernels, and a call may launch 20.
START_BATCH_CALLS = 32


class Event(Protocol):
    def query(self) -> bool: ...

    def elapsed_time(self, end: Event) -> float: ...  # ms, as torch.cuda.Event


class Stream(Protocol):
    """What the clocks need of a CUDA stream."""

    def new_event(self) -> Event: ...

    def record(self, event: Event) -> None: ...

    def hold(self, seconds: float) -> None:
        """Queue a kernel that keeps the stream busy for about ``seconds``."""

    def flush(self) -> None:
        """Queue the L2 flush (a memset twice the size of L2)."""

    def synchronize(self) -> None: ...


class CudaClock:
    """GPU time per block of calls, queued behind a hold (see the module docstring).

    ``cache="cold"``: before every call an L2 flush, outside that call's own event pair.
    ``cache="hot"``: the calls back to back between one pair, so data that fits in L2 stays there.
    """

    #: cudaEventElapsedTime resolves about 0.5 µs; 1000x that keeps it under 0.1% of a block.
    EVENT_RESOLUTION_S = 0.5e-6

    def __init__(self, stream: Stream, cache: str = "cold", now: Now = time.perf_counter) -> None:
        if cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, not {cache!r}")
        self.stream = stream
        self.cache = cache
        self.now = now
        self.min_block_s = 1000 * self.EVENT_RESOLUTION_S
        self.max_batch = START_BATCH_CALLS
        self.hold_useless = False
        #: Host seconds per call to queue everything (flush, events, the call) in the last batch.
        self.queue_s_per_call = math.nan
        self._gate = stream.new_event()
        self._starts: list[Event] = []
        self._ends: list[Event] = []
        self.wall: WallClock | None = WallClock(stream, cache, now)

    def _events(self, n: int) -> tuple[list[Event], list[Event]]:
        while len(self._starts) < n:
            self._starts.append(self.stream.new_event())
            self._ends.append(self.stream.new_event())
        return self._starts[:n], self._ends[:n]

    def hold_for(self, calls: int) -> float:
        """The hold for a batch of ``calls``: twice the host time it should take to queue them."""
        per_call = self.queue_s_per_call if math.isfinite(self.queue_s_per_call) else 1e-3
        return min(MAX_HOLD_S, max(MIN_HOLD_S, HOLD_MARGIN * per_call * calls + HOLD_SLACK_S))

    def _queue(self, fn: Callable[[], object], calls: int, hold_s: float) -> tuple[Block, bool]:
        """One try: hold, queue the batch, check that the hold outlasted the queuing, sync, read."""
        cold = self.cache == "cold"
        starts, ends = self._events(calls if cold else 1)
        now = self.now
        if hold_s > 0:
            self.stream.hold(hold_s)
        self.stream.record(self._gate)
        host = 0.0
        t_queue = now()
        if cold:
            for i in range(calls):
                self.stream.flush()
                self.stream.record(starts[i])
                t0 = now()
                fn()
                host += now() - t0
                self.stream.record(ends[i])
        else:
            self.stream.record(starts[0])
            t0 = now()
            for _ in range(calls):
                fn()
            host = now() - t0
            self.stream.record(ends[0])
        queued = now() - t_queue
        ran_out = self._gate.query()  # the GPU got past the hold before the host was done
        self.stream.synchronize()
        self.queue_s_per_call = queued / calls
        device_ms = sum(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))
        return Block(device_ms * 1e-3, host), ran_out

    def _batch(self, fn: Callable[[], object], calls: int) -> Block:
        """One batch, measured again while its hold runs out: first with a longer hold, then in halves.

        A hold that ran out twice, the second time sized from the host time just measured, was
        not too short: the host was stopped (a full launch queue, a pause), so the batch is split.
        A single call that outruns every hold synchronises inside (``.item()``, a copy to the
        host) or launches more kernels than the launch queue holds (a network's training step):
        no hold can help it. For the rest of the case it is queued with no hold at all, one try a
        batch, so its GPU time includes the host's gaps (``overran`` says so) and its host time is
        the host's own, never the hold it waited out.
        """
        if self.hold_useless:
            block, _ = self._queue(fn, calls, 0.0)
            return replace(block, overran=1)
        hold_s = self.hold_for(calls)
        overran = 0
        for attempt in range(MAX_TRIES):
            block, ran_out = self._queue(fn, calls, hold_s)
            if not ran_out:
                return replace(block, overran=overran)
            overran += 1
            if attempt >= 1 and calls > 1:
                self.max_batch = half = calls // 2
                return Block.total([self._batch(fn, half), self._batch(fn, calls - half)], overran)
            hold_s = min(MAX_HOLD_S, max(2 * hold_s, self.hold_for(calls)))
        # only a single call gets here (a larger batch is split after its second try): no hold helps it
        self.hold_useless = True
        block, _ = self._queue(fn, calls, 0.0)  # the tries' host times include the holds they waited out
        return replace(block, overran=overran + 1)

    def prepare(self) -> None:
        """After warm-up, before a case's samples: what was learnt of the last case's calls is forgotten."""
        self.max_batch = START_BATCH_CALLS
        self.hold_useless = False

    def time_block(self, fn: Callable[[], object], calls: int) -> Block:
        blocks = []
        done = 0
        while done < calls:
            n = min(calls - done, self.max_batch)
            blocks.append(self._batch(fn, n))
            done += n
        return Block.total(blocks)

    def sync(self) -> None:
        self.stream.synchronize()


class WallClock:
    """Synchronous wall time: sync, call, sync, on the host's clock (after an L2 flush when cold)."""

    def __init__(self, stream: Stream, cache: str = "cold", now: Now = time.perf_counter) -> None:
        self.stream = stream
        self.cache = cache
        self.now = now
        self.min_block_s = 0.0  # one call per sample: each is its own synchronous measurement
        self.wall: WallClock | None = None

    def prepare(self) -> None:
        return None

    def time_block(self, fn: Callable[[], object], calls: int) -> Block:
        total = 0.0
        for _ in range(calls):
            if self.cache == "cold":
                self.stream.flush()
            self.stream.synchronize()
            t0 = self.now()
            fn()
            self.stream.synchronize()
            total += self.now() - t0
        return Block(total, total)

    def sync(self) -> None:
        self.stream.synchronize()
