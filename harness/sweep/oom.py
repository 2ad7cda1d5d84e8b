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
import math
from collections.abc import Callable

import torch

from harness.measure import allocator
from harness.measure.bandwidth import weight_count
from harness.measure.memory import available_host_bytes
from harness.results.record import CaseResult, Status
from harness.sweep.cases import Case
from variants.contexts import get_context

#: Messages of allocation failures that are not ``torch.OutOfMemoryError``: the CPU allocator
#: raises a plain RuntimeError ("DefaultCPUAllocator: can't allocate memory: you tried to allocate
#: …" on Linux, "… not enough memory …" on Windows), and so does MPS.
OOM_MESSAGES: tuple[str, ...] = ("DefaultCPUAllocator", "can't allocate memory", "MPS backend out of memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure on any device, whatever type the backend raised it as."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in OOM_MESSAGES)


#: Bytes per element of a CPU case's input at the case's peak, as ``fixed + per_byte × itemsize`` of
#: its dtype: an estimate, from measured peaks of runner cases (``run_case`` with the run's metrics,
#: in a fresh process: VmHWM above the RSS just before the case, the PeakMemory metric kept from
#: resetting it; glibc, 2 threads) of eager with every fusion and of eager_factored, mean_squeeze,
#: linear_excite, channels_last, smp, amp_fp16 and amp_bf16 (add), on 4/8/16×64×128×128. With every
#: full-size tensor mmapped, at 16×64×128×128 (about 2 B of it the 33 MiB a case adds whatever its
#: size): forward 68 B (eager, max, amp_fp16) to 76 B (channels_last) per element in float32, 56 in
#: float16 and bfloat16, 76–79 in float64 (8×); train 89 (eager, smp) to 98 (max; 99 at 8×) in
#: float32, 75–87 in float16 and bfloat16, 110 in float64 (8×). The peak is the check: alive at once
#: are the float32 draw, the input, its copy ``x_before``, the first output and its clone, the
#: mirrored input's copy and the mirrored output, the float64 reference output (kept for the
#: configuration's other variants) and, in the comparison, both outputs in float64, their difference
#: and its absolute value; the float64 reference's own run holds its input, the two branches ``x·cSE``
#: and ``x·sSE`` and their sum. Train adds the cotangent's draw and copy, the input's gradient and its
#: float64 reference, and the runs' saved activations. The estimate, 78 B forward and 106 B train per
#: float32 element (60 and 92 in 16 bits, 114 and 134 in float64), is above every case measured.
#: torch.compile's ``compile`` (2026-11-28, float32, 4 and 16×64×128×128, VmHWM reset by
#: /proc/self/clear_refs just before the case, so with no mmapped tensor held from before): forward
#: 57 and 22.5 B per element, train 101 and 36, beside eager's 42 and 27, 75 and 40 measured the
#: same way; its compiler's own ~110 MB weighs at small sizes only, where ``HEADROOM_MIN`` covers
#: it. Networks (``--context``) have their own figures (``Context.host_peak``).
CPU_PEAK_BYTES: dict[str, tuple[int, int]] = {"forward": (42, 9), "train": (78, 7)}
#: How much higher the peak is where the allocator serves the case's tensors from its heap, whose
#: freed blocks stay resident (fragmentation): glibc made steady (``allocator.make_steady``, the CPU
#: default) below ``allocator.STEADY_BYTES``, glibc otherwise below its largest dynamic mmap
#: threshold, any other allocator always. Measured steady at 4/8/16×64×128×128: forward 72–80 B per
#: element in float32 (64 in float16), train 114–117 (eager add), 129 (channels_last) and up to 158
#: (max) in float32, 110–121 in float16.
HEAP_FACTOR: dict[str, float] = {"forward": 1.15, "train": 1.6}
#: How much more a float64 network case holds per input element than a float32 one.
FLOAT64_FACTOR = 2
#: glibc's largest dynamic mmap threshold (64-bit): after a freed mmapped block up to this size,
#: blocks of that size come from the heap.
GLIBC_MMAP_THRESHOLD_MAX = 32 * 2**20
#: The host memory a case may not take: this share of what is available, and at least
#: ``HEADROOM_MIN`` bytes. The estimate is not a bound, and the rest of the system moves too.
HEADROOM_SHARE = 0.10
HEADROOM_MIN = 2**30


def heap_served(nbytes: int) -> bool:
    """Whether this process's allocator serves a block of ``nbytes`` from its heap, where freed
    memory stays resident (``HEAP_FACTOR``)."""
    if allocator.allocator_name() != "glibc":
        return True  # jemalloc, tcmalloc, mimalloc keep freed memory; others are unknown
    threshold = allocator.STEADY_BYTES if allocator.already_steady() else GLIBC_MMAP_THRESHOLD_MAX
    return nbytes < threshold


def host_bytes_needed(case: Case) -> int:
    """An estimate of the host memory a case takes at its peak. On the CPU, everything: measured
    peaks per element of the input (``CPU_PEAK_BYTES``; ``HEAP_FACTOR`` more when its tensors come
    from the allocator's heap), and the float32 reference's weights; for a network (``--context``)
    its own figures per input element and its weights (``Context.peak``). On another device,
    only what the host holds: the float32 draw (and cotangent) and the reference's weights, or the
    network's float32 weights, built on the CPU."""
    elements = case.batch * case.channels * case.height * case.width
    itemsize = getattr(torch, case.dtype).itemsize
    network = get_context(case.context).peak if case.context else None
    weights = network.parameters if network else weight_count(case.channels, case.reduction, case.fusion, case.bias)
    if case.device.split(":")[0] != "cpu":
        return elements * 4 * (2 if case.mode == "train" else 1) + 4 * weights
    if network is not None:
        return network.bytes(case.mode, elements * (FLOAT64_FACTOR if itemsize > 4 else 1))
    fixed, per_byte = CPU_PEAK_BYTES[case.mode]
    per_element = fixed + per_byte * itemsize
    if heap_served(elements * min(itemsize, 4)):  # the smallest full-size tensor: the case's input, or the draw
        per_element *= HEAP_FACTOR[case.mode]
    return math.ceil(elements * per_element) + 4 * weights


def headroom(available: int) -> int:
    """The host memory a case must leave free (``HEADROOM_SHARE``, ``HEADROOM_MIN``)."""
    return max(int(available * HEADROOM_SHARE), HEADROOM_MIN)


def check_host_memory(case: Case, available: int | None = None) -> None:
    """Refuse, as an out-of-memory failure, a case that would not fit in the host's memory, before
    anything is allocated: Linux overcommits, so the allocations succeed and touching them has the
    kernel's OOM killer end the whole sweep (no row, no report). A case fits when its estimate
    (``host_bytes_needed``) leaves ``headroom`` of the available memory free. A lower bound let
    64×1024×1024 at batch 16 through ("needs at least 20 GiB", 22.5 available) on a 24 GB VM, and
    the sweep was killed at 24 GB resident."""
    available = available_host_bytes() if available is None else available
    if available is None:  # unknown (no /proc/meminfo): nothing to hold it against
        return
    needed = host_bytes_needed(case)
    keep = headroom(available)
    if needed > available - keep:
        raise MemoryError(f"the case needs about {needed / 2**30:,.1f} GiB of host memory (an estimate); "
                          f"{available / 2**30:,.1f} GiB is available, of which {keep / 2**30:,.1f} GiB is kept free")


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
