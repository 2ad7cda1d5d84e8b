"""A fake CUDA stream on a simulated timeline, for the CUDA clocks' logic (harness.measure.cuda_clock).

The host has a clock; the GPU runs what was queued, in order, each item starting when both the
GPU is free and the host has finished launching it. An event completes when everything queued
before it has. ``hold_scale`` makes the GPU's holding kernel run shorter than asked (a hold that
runs out); ``queue_limit`` makes the host wait when that many items are pending (a full launch
queue).
"""
from __future__ import annotations

import bisect


class FakeEvent:
    def __init__(self, gpu: FakeGpu) -> None:
        self.gpu = gpu
        self.t: float | None = None

    def query(self) -> bool:
        assert self.t is not None, "query of an event never recorded"
        return self.t <= self.gpu.host

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.t is not None and end.t is not None
        assert self.gpu.host >= end.t, "elapsed_time read before the end event completed"
        return (end.t - self.t) * 1e3


class FakeGpu:
    """Implements ``harness.measure.cuda_clock.Stream``; ``now`` is the host clock; ``kernel`` is a launch."""

    def __init__(self, flush_s: float = 30e-6, event_host_s: float = 1e-6, hold_scale: float = 1.0,
                 queue_limit: int | None = None) -> None:
        self.host = 0.0
        self.gpu_free = 0.0
        self.flush_s = flush_s
        self.event_host_s = event_host_s
        self.hold_scale = hold_scale
        self.queue_limit = queue_limit
        self.pending: list[float] = []  # completion times of queued items, sorted
        self.holds: list[float] = []
        self.kernels = 0

    def now(self) -> float:
        return self.host

    def _wait_for_queue_room(self) -> None:
        if self.queue_limit is None:
            return
        self.pending = self.pending[bisect.bisect_right(self.pending, self.host):]
        if len(self.pending) >= self.queue_limit:
            self.host = self.pending[len(self.pending) - self.queue_limit]
            self.pending = self.pending[bisect.bisect_right(self.pending, self.host):]

    def _enqueue(self, host_s: float, device_s: float) -> float:
        self._wait_for_queue_room()
        self.host += host_s
        start = max(self.host, self.gpu_free)
        self.gpu_free = start + device_s
        bisect.insort(self.pending, self.gpu_free)
        return self.gpu_free

    # --- the Stream interface
    def new_event(self) -> FakeEvent:
        return FakeEvent(self)

    def record(self, event: FakeEvent) -> None:
        event.t = self._enqueue(self.event_host_s, 0.0)

    def hold(self, seconds: float) -> None:
        self.holds.append(seconds)
        self._enqueue(2e-6, seconds * self.hold_scale)

    def flush(self) -> None:
        self._enqueue(3e-6, self.flush_s)

    def synchronize(self) -> None:
        self.host = max(self.host, self.gpu_free)

    # --- what a variant does
    def kernel(self, host_s: float, device_s: float) -> None:
        self.kernels += 1
        self._enqueue(host_s, device_s)

    def call(self, kernels: int, host_s: float, device_s: float):
        """A variant's call: ``kernels`` launches, each costing the host and the GPU the given time."""

        def fn() -> None:
            for _ in range(kernels):
                self.kernel(host_s, device_s)

        return fn
