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
