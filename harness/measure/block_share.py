"""The share of a network's time spent in its scSE blocks, read from torch.profiler.

Whether a faster block matters depends on how much of the network it is. This is measured in a
separate pass after the timed loop: forward hooks open a ``scse_block:<i>`` range around the forward
of block ``i`` only while profiling, so the timed calls carry nothing extra, and one trace tells
the blocks apart.

Attribution: each CPU-side profiler event has a self time (CPU time, and on CUDA the device time
of the kernels it launched), and self times add up to the whole without counting anything twice
(the kernels' own device-side events are left out: they would count each kernel again). An event
belongs to the blocks when it runs inside a block's range on that thread (the forward), or when it
is, or runs inside, the backward of an autograd node made inside a block's range (train mode;
matched by the node's sequence number). The share is the blocks' self time over everyone's: device
time on CUDA (what the blocks cost once their launches hide behind other layers' kernels), CPU time
on the CPU. The profiler's own overhead inflates small CPU ops a little; it is a share, not a time.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import profile, record_function

from harness import interrupts
from harness.measure.profiling import activities_for, quiet_kineto

RANGE = "scse_block"
#: A range's name: ``RANGE`` and the block's index among those profiled.
RANGE_OF = RANGE + ":{}"
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "


@contextlib.contextmanager
def block_ranges(blocks: Sequence[torch.nn.Module]) -> Iterator[None]:
    """A ``RANGE_OF`` profiler range (the block's index) around every forward of ``blocks``, while
    the context is open."""
    open_ranges: list[Any] = []
    index = {id(b): i for i, b in enumerate(blocks)}

    def enter(module: torch.nn.Module, args: object) -> None:
        r = record_function(RANGE_OF.format(index[id(module)]))
        r.__enter__()
        open_ranges.append(r)

    def leave(module: torch.nn.Module, args: object, output: object) -> None:
        if open_ranges:
            open_ranges.pop().__exit__(None, None, None)

    handles = [h for b in blocks for h in (b.register_forward_pre_hook(enter), b.register_forward_hook(leave))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _self_time(event: Any, device: bool) -> float:
    if device:
        # the older name only where the newer is missing: reading it warns of its deprecation
        name = "self_device_time_total" if hasattr(event, "self_device_time_total") else "self_cuda_time_total"
        return float(getattr(event, name, 0.0))
    return float(event.self_cpu_time_total)


def is_range(event: Any) -> bool:
    return event.name.startswith(RANGE + ":")


def block_events(events: Sequence[Any], which: Collection[int] | None = None) -> set[int]:
    """The ids of the events that are the blocks' work (forward inside a range, and its backward):
    every profiled block's, or those of the blocks indexed ``which``."""
    ranges = [(e.thread, e.time_range.start, e.time_range.end) for e in events
              if is_range(e) and (which is None or int(e.name.rsplit(":", 1)[1]) in which)]
    inside: set[int] = set()
    sequence: set[int] = set()
    for e in events:
        if is_range(e):
            continue
        start, end = e.time_range.start, e.time_range.end
        if any(t == e.thread and s <= start and end <= f for t, s, f in ranges):
            inside.add(id(e))
            if getattr(e, "sequence_nr", -1) >= 0:
                sequence.add(e.sequence_nr)

    def with_children(e: Any) -> None:
        inside.add(id(e))
        for child in e.cpu_children:
            with_children(child)

    for e in events:
        if e.name.startswith(BACKWARD_PREFIX) and getattr(e, "sequence_nr", -1) in sequence:
            with_children(e)
    return inside


def share_of(events: Sequence[Any], device: bool, which: Collection[int] | None = None) -> float | None:
    """The blocks' share of all self time in ``events`` (of the blocks indexed ``which``, or all);
    None when nothing was recorded.

    Device time is read from the CPU-side events only: each holds the kernels it launched (matched by
    correlation id), and a kernel's own device-side event would count them twice, at the time the GPU
    ran them, which a GPU running behind the host puts in another layer's range. A block's range
    holds the kernels launched directly in it (Triton's, a graph's replay): those are the block's."""
    ours = block_events(events, which)
    total = blocks = 0.0
    for e in events:
        if device and getattr(e, "device_type", DeviceType.CPU) != DeviceType.CPU:
            continue
        t = _self_time(e, device)
        if is_range(e):
            if device:  # on the CPU its own time is the hooks' and the profiler's
                total += t
                blocks += t if which is None or int(e.name.rsplit(":", 1)[1]) in which else 0.0
            continue
        total += t
        if id(e) in ours:
            blocks += t
    return blocks / total if total > 0 else None


def block_share(step: Callable[[], object], blocks: Sequence[torch.nn.Module], device: torch.device,
                calls: int = 3) -> float | None:
    """The share of ``step``'s time (a network's forward, or training step) spent in ``blocks``."""
    step()  # warm: a first call's one-off work is not the network's steady state
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    with interrupts.held(), block_ranges(blocks), quiet_kineto(), profile(activities=activities_for(device)) as prof:
        for _ in range(calls):
            step()
        if cuda:
            torch.cuda.synchronize(device)
    return share_of(list(prof.events()), cuda)
