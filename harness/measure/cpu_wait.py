"""How long this process's threads waited for a CPU core: the direct signal of a starved CPU case.

Linux keeps, per thread, the time it was runnable but not running (``run_delay``, the second
field of ``/proc/self/task/<tid>/schedstat``, in ns). On an idle machine it stays near zero; when
another process takes a core that an OpenMP worker needs, it grows by the time stolen, and a
2-thread call that takes 2 ms runs 40 ms while one thread waits. CPU time against wall time
cannot say that for a multi-threaded call (spinning threads burn CPU while they wait); the run
queue delay can, for any number of threads.

Only the wait that other processes can explain counts as a disturbance (``others_wait_s``): a
variant whose own threads outnumber the cores waits for itself, and that is its cost, to be timed
and compared like any other, not excused as a busy machine. So nothing counts while torch's
intra-op pool has more threads than the process has cores (16 OpenMP threads on 2 cores hand the
cores back and forth, queueing, and leave them idle in between), and otherwise at most the core
time the process left to others: cores × wall − its threads' own time on a core. That time is
read from each thread's CPU clock (``clock_gettime``), exact at any instant; schedstat's own
on-CPU field only moves at a scheduler tick or a switch, and per sample it read 0 or lumps of
3.7 ms for a thread spinning 0.2 ms at a time.

Where the files do not exist (not Linux) the reader reports ``None``: unknown, not zero.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

TASKS = Path("/proc/self/task")


def thread_cpu_ns(tid: int) -> int | None:
    """The CPU time of thread ``tid`` of this process, in ns (Linux's per-thread CPU clock, as
    ``pthread_getcpuclockid`` builds it); None where there is none (another process's thread)."""
    try:
        return time.clock_gettime_ns((~tid << 3) | 6)
    except (OSError, OverflowError, ValueError):
        return None


class ThreadWait:
    """Sums ``run_delay`` over the process's threads, reading files kept open (a few µs a read).

    ``refresh`` re-lists the threads: call it after warm-up, once the intra-op pool exists.
    """

    def __init__(self, tasks: Path = TASKS) -> None:
        self.tasks = tasks
        self._fds: dict[str, int] = {}
        self._last: dict[str, tuple[int, int]] = {}
        self._total = 0
        #: On-CPU time of the known threads since ``refresh``, in ns, as of the last ``read_ns``.
        self.busy_ns = 0
        #: The cores this process may run on: what its threads and other processes' share.
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.refresh()

    @property
    def available(self) -> bool:
        return bool(self._fds)

    def refresh(self) -> None:
        self.close()
        try:
            names = os.listdir(self.tasks)
        except OSError:
            return
        for name in names:
            try:
                self._fds[name] = os.open(self.tasks / name / "schedstat", os.O_RDONLY)
            except OSError:
                continue  # a thread that ended meanwhile, or no schedstat in this kernel
        self.read_ns()  # the baseline each thread's increase is counted from

    def read_ns(self) -> int | None:
        """Run-queue wait of the known threads since ``refresh``, in ns; None when it cannot be read.

        Kept as a sum of per-thread increases, so a thread that exits never makes it go down. The
        same read updates ``busy_ns`` (the thread's CPU clock; schedstat's first field, which lags,
        only where the clock cannot be read).
        """
        if not self._fds:
            return None
        for name, fd in list(self._fds.items()):
            try:
                fields = os.pread(fd, 128, 0).split()
                cpu = thread_cpu_ns(int(name)) if name.isdigit() else None
                now = (int(fields[0]) if cpu is None else cpu, int(fields[1]))
            except (OSError, IndexError, ValueError):
                os.close(fd)  # the thread has exited: its wait no longer grows
                del self._fds[name]
                continue
            busy, delay = self._last.get(name, now)
            self.busy_ns += now[0] - busy
            self._total += now[1] - delay
            self._last[name] = now
        return self._total

    def others_wait_s(self, wait_ns: int, busy_ns: int, wall_s: float, pool_threads: int = 1) -> float:
        """The part of ``wait_ns`` (the threads' run-queue wait over ``wall_s``) that other processes
        can explain, in s: none while the intra-op pool (``pool_threads``) outnumbers the cores, since
        its threads queue behind each other; else at most the core time this process left to others,
        ``cores × wall − busy``."""
        if pool_threads > self.cores:
            return 0.0
        left_ns = max(0.0, self.cores * wall_s * 1e9 - busy_ns)
        return min(float(wait_ns), left_ns) * 1e-9

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds, self._last = {}, {}

    def __del__(self) -> None:
        self.close()
