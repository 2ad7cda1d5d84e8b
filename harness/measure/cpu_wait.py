"""How long this process's threads waited for a CPU core: the direct signal of a starved CPU case.

Linux keeps, per thread, the time it was runnable but not running (``run_delay``, the second
field of ``/proc/self/task/<tid>/schedstat``, in ns). On an idle machine it stays near zero; when
another process takes a core that an OpenMP worker needs, it grows by the time stolen, and a
2-thread call that takes 2 ms runs 40 ms while one thread waits. CPU time against wall time
cannot say that for a multi-threaded call (spinning threads burn CPU while they wait); the run
queue delay can, for any number of threads.

Only the wait that other processes can explain counts as a disturbance (``others_wait_s``): a
variant whose own threads outnumber the cores waits for itself, and that is its cost, to be timed
and compared like any other, not excused as a busy machine. Two signs of that, from the same files:
more of the process's threads ran during a sample than it has cores (16 OpenMP threads on 2 cores,
which hand the cores back and forth and leave them idle in between), or the process kept every
core busy itself.

Where the files do not exist (not Linux) the reader reports ``None``: unknown, not zero.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

TASKS = Path("/proc/self/task")
#: A thread on a core for this share of a sample worked in it (16 threads sharing 2 cores get 12%).
WORKED_SHARE = 0.05


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
        #: Each thread's time on a core between the last two reads, in ns.
        self.ran_ns: list[int] = []
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
        same read updates ``busy_ns`` (schedstat's first field, the time on a core).
        """
        if not self._fds:
            return None
        self.ran_ns = []
        for name, fd in list(self._fds.items()):
            try:
                fields = os.pread(fd, 128, 0).split()
                now = (int(fields[0]), int(fields[1]))
            except (OSError, IndexError, ValueError):
                os.close(fd)  # the thread has exited: its wait no longer grows
                del self._fds[name]
                continue
            busy, delay = self._last.get(name, now)
            self.ran_ns.append(now[0] - busy)
            self.busy_ns += now[0] - busy
            self._total += now[1] - delay
            self._last[name] = now
        return self._total

    def others_wait_s(self, wait_ns: int, busy_ns: int, wall_s: float, ran_ns: Sequence[int] = ()) -> float:
        """The part of ``wait_ns`` (the threads' run-queue wait over ``wall_s``; ``ran_ns``, each
        thread's time on a core meanwhile) that other processes can explain, in s: none when more
        threads worked than there are cores (each on a core for ``WORKED_SHARE`` of the time or more:
        a progress bar's refresh is not work), since they queued behind each other; else at most the
        core time this process left to others, ``cores × wall − busy``."""
        if sum(ran >= WORKED_SHARE * wall_s * 1e9 for ran in ran_ns) > self.cores:
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
