"""Out of memory: recognised on every device, memory given back, and optionally a smaller batch.

A case that runs out of memory is a fact about the variant at that size, not a bug: it gets
``status=oom`` and the sweep goes on. With ``--oom-retry`` the case is tried again at half the
batch until it fits or the batch is 1. The row keeps the requested ``batch`` (its key, so resume,
merge, shards and compare still match it) and records the batch actually measured in ``batch_run``;
latency, throughput and FLOPs are those of ``batch_run``, and ``reason`` says what did not fit.
"""
from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable

import torch

from harness.measure.bandwidth import weight_count
from harness.measure.memory import available_host_bytes
from harness.results.record import CaseResult, Status
from harness.sweep.cases import Case

#: Messages of allocation failures that are not ``torch.OutOfMemoryError``: the CPU allocator
#: raises a plain RuntimeError ("DefaultCPUAllocator: can't allocate memory: you tried to allocate
#: …" on Linux, "… not enough memory …" on Windows), and so does MPS.
OOM_MESSAGES: tuple[str, ...] = ("DefaultCPUAllocator", "can't allocate memory", "MPS backend out of memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure on any device, whatever type the backend raised it as."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in OOM_MESSAGES)


def host_bytes_needed(case: Case) -> int:
    """A lower bound on the host memory a case takes: its float32 draw (and cotangent) and the
    float32 reference's weights; on the CPU also the input in its dtype, its copy, and the float64
    reference's input. Any real run takes more."""
    elements = case.batch * case.channels * case.height * case.width
    itemsize = getattr(torch, case.dtype).itemsize
    per_element = 4 * (2 if case.mode == "train" else 1)
    if case.device.split(":")[0] == "cpu":
        per_element += 2 * itemsize + 8
    weights = 0 if case.context else weight_count(case.channels, case.reduction, case.fusion, case.bias)
    return elements * per_element + 4 * weights


def check_host_memory(case: Case, available: int | None = None) -> None:
    """Refuse, as an out-of-memory failure, a case that cannot fit in the host's memory before anything
    is allocated: Linux overcommits, so the allocation succeeded and touching it had the kernel kill
    the whole sweep (24 GB VM, ``--shapes 100000x100000x100000``: no row, no report)."""
    available = available_host_bytes() if available is None else available
    needed = host_bytes_needed(case)
    if available is not None and needed > available:
        raise MemoryError(f"the case needs at least {needed / 2**30:,.1f} GiB of host memory; "
                          f"{available / 2**30:,.1f} GiB is available")


def release_memory(device: str) -> None:
    """Drop what the failed attempt left behind, so the next case starts from the same free memory."""
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


RunOnce = Callable[[Case], CaseResult]


def run_with_retry(run_once: RunOnce, case: Case) -> CaseResult:
    """``run_once(case)``; while that is ``oom`` and the batch above 1, again at half the batch."""
    current = case
    result = run_once(current)
    failed: list[int] = []
    while result.status is Status.OOM and current.batch > 1:
        failed.append(current.batch)
        release_memory(case.device)
        current = dataclasses.replace(current, batch=current.batch // 2)
        result = run_once(current)
    reason = result.reason
    if failed:
        note = f"out of memory at batch {', '.join(map(str, failed))}"
        if result.status is Status.OOM:
            failed.append(current.batch)
            reason = f"out of memory at batch {', '.join(map(str, failed))}: {result.reason}"
        else:
            tail = f": {result.reason}" if result.reason else ""
            reason = f"{note}; ran at batch {current.batch}{tail}"
    return dataclasses.replace(result, case=case, batch_run=current.batch, reason=reason)
