"""The CPU allocator under the timed loop, kept from handing memory back to the OS between calls.

glibc's malloc returns a freed block of a few MB to the kernel (``munmap``, or trimming the heap's
top), so the next call page-faults the same memory back in. On the 2-core VM this project grew on,
that made an 8×32×64×64 float32 train step read 12.7 ms (IQR wide) instead of 4.6 ms with two
threads: the timing measured the kernel's page faults, and the noise swamped differences between
variants. jemalloc and tcmalloc, which PyTorch's CPU performance guide recommends for real
workloads, keep such memory. ``make_steady`` gets glibc to do the same: it raises the mmap and
trim thresholds with ``mallopt`` in this process, and sets the matching ``MALLOC_*_`` variables so
that worker processes (``--isolate``) start the same way.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks below this are served from the heap, and the heap is never trimmed below it.
STEADY_BYTES = 1 << 30
ENV = {"MALLOC_MMAP_THRESHOLD_": str(STEADY_BYTES), "MALLOC_TRIM_THRESHOLD_": str(STEADY_BYTES)}


def allocator_name() -> str:
    """``jemalloc``, ``tcmalloc`` or ``mimalloc`` when preloaded, else ``glibc`` or the platform's own."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return name
    return "glibc" if platform.libc_ver()[0] == "glibc" else "system"


_made_steady = False
#: The thresholds this process started with: glibc read them then, and a later change does nothing.
_STARTED_WITH = {name: os.environ[name] for name in ENV if name in os.environ}


def make_steady() -> bool:
    """Stop glibc from returning freed memory to the OS; False where the allocator is not glibc's."""
    global _made_steady
    if allocator_name() != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = libc.mallopt(M_MMAP_THRESHOLD, STEADY_BYTES) == 1 and libc.mallopt(M_TRIM_THRESHOLD, STEADY_BYTES) == 1
    if ok:
        os.environ.update(ENV)
        _made_steady = True
    return ok


def already_steady() -> str | None:
    """Why this process's allocator is steady whatever a run asks, or None: ``make_steady`` took effect
    earlier here (``mallopt`` cannot be undone), or the process started with its variables (a worker
    of a steady run, or a shell that exported them), which glibc applied at start-up."""
    if _made_steady:
        return "an earlier run in this process made the allocator steady, which cannot be undone"
    if _started_steady():
        return "this process started with " + " and ".join(f"{k}={v}" for k, v in ENV.items()) + ", which glibc applied"
    return None


def _started_steady() -> bool:
    return allocator_name() == "glibc" and _STARTED_WITH == ENV
