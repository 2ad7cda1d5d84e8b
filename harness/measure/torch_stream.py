"""The CUDA clocks' stream on real hardware: the current CUDA stream of a device, its holding
kernel (``torch.cuda._sleep``, calibrated in GPU cycles per second) and its L2 flush.

Kept apart from ``cuda_clock.py``, whose logic the tests drive with a fake stream on any machine:
this part runs only where there is a GPU, and the CUDA tests (``tests/test_cuda.py``) check it.
"""
from __future__ import annotations

import torch

from harness.measure.cuda_clock import CudaClock, Event


class TorchStream:
    """The current stream of ``device``; the hold is ``torch.cuda._sleep``, calibrated here."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.current_stream(device)
        props = torch.cuda.get_device_properties(device)
        l2 = int(getattr(props, "L2_cache_size", 0) or 0) or 64 * 2**20
        self.flush_buffer = torch.empty(2 * l2, dtype=torch.int8, device=device)
        self.cycles_per_s = self._calibrate()

    def _calibrate(self, cycles: int = 2_000_000) -> float:
        """Sleep cycles per second of GPU time (the second of two tries: the first wakes the clocks)."""
        start, end = self.new_event(), self.new_event()
        rate = 1e9
        for _ in range(2):
            self.synchronize()
            self.record(start)
            torch.cuda._sleep(cycles)
            self.record(end)
            end.synchronize()  # type: ignore[attr-defined]
            rate = cycles / max(start.elapsed_time(end) * 1e-3, 1e-9)
        return rate

    def new_event(self) -> Event:
        return torch.cuda.Event(enable_timing=True)

    def record(self, event: Event) -> None:
        event.record(self.stream)  # type: ignore[attr-defined]

    def hold(self, seconds: float) -> None:
        torch.cuda._sleep(max(1, int(seconds * self.cycles_per_s)))

    def flush(self) -> None:
        self.flush_buffer.zero_()

    def synchronize(self) -> None:
        self.stream.synchronize()


def make_cuda_clock(device: torch.device, cache: str = "cold") -> CudaClock:
    """The clock for ``device``'s current stream (its wall clock shares the stream)."""
    return CudaClock(TorchStream(device), cache)
