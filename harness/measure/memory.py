"""Peak memory of one call, measured after warm-up, above what was live before it.

* CUDA: the caching allocator's own peak counters. After warm-up (cuBLAS/cuDNN workspaces and
  compiled kernels persist), synchronize, empty the cache, note what is allocated and reserved,
  ``reset_peak_memory_stats``, run, synchronize, and read ``allocated_bytes.all.peak`` (=
  ``max_memory_allocated``) and ``reserved_bytes.all.peak``. The cache is emptied first so that
  reserved memory left over from the timing loop does not hide what the call itself makes the
  allocator reserve (block rounding and fragmentation included).
* CPU: torch has no peak API and ``tracemalloc`` sees no tensors, so the peak comes from the
  profiler's memory events (``profile_memory=True``): every allocation and free, summed in time
  order.
* CUDA graphs: a replay allocates nothing (its output and intermediates live in the graph's private
  pool, allocated at capture and held from then on), so its peak reads 0. What it holds is read
  apart, from the allocator's snapshot: the bytes of segments in private pools (pool id not
  ``(0, 0)``), at the memory pass, above what they were before the case was set up.
* Both: the process's resident high-water mark (``VmHWM``), reset right before the call by
  writing ``5`` to ``/proc/self/clear_refs`` where the OS allows it. It counts the whole process
  (interpreter, libraries, the profiler), so it is a ceiling, not the call's own footprint.
"""
from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from harness import interrupts
from harness.measure.profiling import quiet_kineto

#: Columns :meth:`MemoryUsage.as_row` fills.
MEMORY_COLUMNS: tuple[str, ...] = (
    "peak_mem_bytes", "peak_reserved_bytes", "process_hwm_bytes", "process_hwm_reset", "mem_source",
    "graph_pool_bytes",
)

PROC_SELF = Path("/proc/self")


@dataclass(frozen=True)
class MemoryUsage:
    """Memory of one measured call; None where this device or OS cannot say."""

    #: Peak bytes of tensors allocated during the call, above those live before it.
    peak_mem_bytes: int | None
    #: CUDA only: peak bytes the caching allocator reserved during the call, above the baseline.
    peak_reserved_bytes: int | None
    #: The process's resident high-water mark after the call (VmHWM), in bytes.
    process_hwm_bytes: int | None
    #: Whether VmHWM was reset right before the call (else it is the process's lifetime peak).
    process_hwm_reset: bool = False
    #: Where ``peak_mem_bytes`` comes from: "cuda_allocator", "profiler", or "" when unknown.
    source: str = ""
    #: CUDA only: times the allocator freed its cache and retried (a sign of memory pressure).
    alloc_retries: int | None = None
    #: CUDA only: bytes held in CUDA graph pools, above those held before the case was set up.
    graph_pool_bytes: int | None = None

    def as_row(self) -> dict[str, object]:
        """The row's memory columns."""
        return {
            "peak_mem_bytes": self.peak_mem_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes,
            "process_hwm_bytes": self.process_hwm_bytes,
            "process_hwm_reset": self.process_hwm_reset,
            "mem_source": self.source,
            "graph_pool_bytes": self.graph_pool_bytes,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- process high-water mark --------------------------------------------------------------------


def available_host_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The host memory the kernel says a process can still get (``MemAvailable``); None where unknown.
    Linux overcommits: an allocation beyond it succeeds, and touching it gets the process killed."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_hwm(proc: Path = PROC_SELF) -> bool:
    """Reset the process's VmHWM to its current RSS; False where the OS does not allow it."""
    try:
        (proc / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def read_hwm(proc: Path = PROC_SELF) -> int | None:
    """VmHWM in bytes from ``/proc/self/status``; None where there is no such file or line."""
    try:
        text = (proc / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            parts = line.split()
            try:
                value = int(parts[1])
            except (IndexError, ValueError):
                return None
            unit = parts[2].lower() if len(parts) > 2 else "kb"
            return value * {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "b": 1}.get(unit, 1024)
    return None


# -- CPU: the profiler's memory events ----------------------------------------------------------


def peak_from_events(events: list[tuple[int, int]]) -> int:
    """Peak of the running sum of ``(time, bytes)`` allocation (+) and free (-) events, in time order.

    Zero when the call freed more than it allocated before any new allocation: the peak is above
    the memory live before the call, and that baseline is the running sum's zero.
    """
    running = peak = 0
    for _, nbytes in sorted(events, key=lambda e: e[0]):
        running += nbytes
        peak = max(peak, running)
    return peak


def profiler_memory_events(prof: torch.profiler.profile, device_type: str = "cpu") -> list[tuple[int, int]]:
    """``(start_ns, bytes)`` of every allocation and free on ``device_type`` the profiler recorded.

    The raw kineto events are read, not ``prof.events()``: there an allocation made inside an op is
    folded into that op, and only allocations outside any op stay separate ``[memory]`` events.
    """
    wanted = torch.device(device_type).type.upper()
    events = []
    for e in prof.profiler.kineto_results.events():  # type: ignore[union-attr]
        if e.name() != "[memory]":
            continue
        if str(e.device_type()).split(".")[-1].upper() != wanted:
            continue
        events.append((int(e.start_ns()), int(e.nbytes())))
    return events


def _cpu_peak(step: Callable[[], object], proc: Path) -> MemoryUsage:
    from torch.profiler import ProfilerActivity, profile

    reset = reset_hwm(proc)
    peak: int | None = None
    started = stepped = False
    try:
        # an interrupt inside a profiler region is raised at its end (``interrupts``)
        with interrupts.held(), quiet_kineto(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            started = True
            out = step()
            stepped = True
        hwm = read_hwm(proc)
        del out  # freed after the profiler stopped: the output counts towards the peak
        peak = peak_from_events(profiler_memory_events(prof, "cpu"))
    except Exception:  # noqa: BLE001 - the profiler failing must never stop a run ...
        if started and not stepped:
            raise  # ... but the step's own error (out of memory, say) is the case's, as in the timed loop
        hwm = read_hwm(proc)
    return MemoryUsage(peak, None, hwm, reset, "profiler" if peak is not None else "")


# -- CUDA: the caching allocator's counters -----------------------------------------------------


def graph_pool_bytes(device: torch.device | str, cuda: ModuleType | Any = None) -> int | None:
    """Bytes of ``device``'s segments in CUDA graph private pools (every pool but the default one,
    ``(0, 0)``): what captured graphs hold between replays. None where the allocator cannot say."""
    cuda = cuda if cuda is not None else torch.cuda
    device = torch.device(device)
    try:
        index = device.index if device.index is not None else int(cuda.current_device())
        return sum(int(s["total_size"]) for s in cuda.memory_snapshot()
                   if s.get("device") == index and tuple(s.get("segment_pool_id", (0, 0))) != (0, 0))
    except Exception:  # noqa: BLE001 - a snapshot the allocator refuses costs this figure, never the row
        return None


def _cuda_peak(step: Callable[[], object], device: torch.device, cuda: ModuleType | Any, proc: Path,
               empty_cache: bool, pool_base: int | None) -> MemoryUsage:
    cuda.synchronize(device)
    if empty_cache:
        cuda.empty_cache()  # frees the segments of graphs already gone, too: pools count what is held
    pools = graph_pool_bytes(device, cuda)
    base_allocated = int(cuda.memory_allocated(device))
    base_reserved = int(cuda.memory_reserved(device))
    cuda.reset_peak_memory_stats(device)
    reset = reset_hwm(proc)
    out = step()
    cuda.synchronize(device)
    stats = cuda.memory_stats(device)
    hwm = read_hwm(proc)
    del out
    peak_allocated = int(stats.get("allocated_bytes.all.peak", cuda.max_memory_allocated(device)))
    peak_reserved = stats.get("reserved_bytes.all.peak")
    retries = stats.get("num_alloc_retries")
    return MemoryUsage(
        max(0, peak_allocated - base_allocated),
        max(0, int(peak_reserved) - base_reserved) if peak_reserved is not None else None,
        hwm,
        reset,
        "cuda_allocator",
        int(retries) if retries is not None else None,
        None if pools is None or pool_base is None else max(0, pools - pool_base),
    )


def measure_memory(
    step: Callable[[], object],
    device: torch.device | str,
    *,
    warmup: int = 1,
    empty_cache: bool = True,
    cuda: ModuleType | Any = None,
    proc: Path = PROC_SELF,
    pool_base: int | None = 0,
) -> MemoryUsage:
    """Peak memory of one ``step()`` (the runner's timed call) after ``warmup`` calls.

    ``pool_base``: the CUDA graph pool bytes (``graph_pool_bytes``) before the step's variant was
    built; the usage's ``graph_pool_bytes`` is what the pools hold above it (None: unknown).
    ``cuda`` stands in for ``torch.cuda`` (tests pass a fake); ``proc`` for ``/proc/self``.
    Errors in the measurement itself give None fields; errors in ``step`` propagate, as they
    would have in the timed loop.
    """
    device = torch.device(device)
    for _ in range(warmup):
        step()
    gc.collect()
    if device.type == "cuda":
        return _cuda_peak(step, device, cuda if cuda is not None else torch.cuda, proc, empty_cache, pool_base)
    if device.type == "cpu":
        return _cpu_peak(step, proc)
    reset = reset_hwm(proc)
    step()
    return MemoryUsage(None, None, read_hwm(proc), reset, "")


def unavailable() -> MemoryUsage:
    """The memory columns of a row that was not measured."""
    return MemoryUsage(None, None, None, False, "")
