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


def already_steady() -> bool:
    """Whether ``make_steady`` took effect earlier in this process: ``mallopt`` cannot be undone, and
    the workers it starts inherit the variables, so a later run here is steady whatever it asks."""
    return _made_steady
