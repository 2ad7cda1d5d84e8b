"""CPU disturbance: a case starved of its core is seen, measured again, and flagged."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.measure.cpu_wait import ThreadWait
from harness.measure.timing import CpuClock, TimingPolicy, measure
from harness.sweep.runner import time_step

linux_schedstat = pytest.mark.skipif(not ThreadWait().available, reason="no /proc/self/task/*/schedstat here")


def spin(seconds: float = 0.002) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def work() -> None:
    """About 10 ms of pure CPU work: longer than a scheduler slice, so a competitor hits every call
    (as a descheduled OpenMP thread hits every call of a multi-threaded op)."""
    total = 0
    for i in range(150_000):
        total += i * i


def write_schedstat(folder: Path, tid: str, delay_ns: int) -> None:
    (folder / tid).mkdir(exist_ok=True)
    (folder / tid / "schedstat").write_text(f"1000 {delay_ns} 3\n")


def test_thread_wait_sums_increases_and_survives_a_thread_that_exits(tmp_path: Path) -> None:
    write_schedstat(tmp_path, "1", 500)
    write_schedstat(tmp_path, "2", 7_000)
    wait = ThreadWait(tmp_path)
    assert wait.read_ns() == 0  # counted from when the threads were listed
    write_schedstat(tmp_path, "1", 800)
    write_schedstat(tmp_path, "2", 9_000)
    assert wait.read_ns() == 2_300
    (tmp_path / "2" / "schedstat").unlink()  # the file stays open: the thread's last value stands
    write_schedstat(tmp_path, "1", 1_000)
    assert wait.read_ns() == 2_500


def test_without_schedstat_the_wait_is_unknown(tmp_path: Path) -> None:
    wait = ThreadWait(tmp_path / "missing")
    assert not wait.available and wait.read_ns() is None
    timing = measure(work, CpuClock(wait), TimingPolicy(warmup_s=0.0, min_samples=5, max_time_s=0.05))
    assert timing.wait_share is None and not timing.disturbed


@pytest.fixture
def one_core():
    """This thread pinned to one core, and a busy process pinned to the same core when asked."""
    before = os.sched_getaffinity(0)
    core = min(before)
    os.sched_setaffinity(0, {core})
    procs: list[subprocess.Popen] = []

    def compete() -> None:
        code = f"import os, time\nos.sched_setaffinity(0, {{{core}}})\nend = time.time() + 60\n"
        code += "while time.time() < end: pass"
        procs.append(subprocess.Popen([sys.executable, "-c", code]))
        time.sleep(0.3)  # let it start spinning

    try:
        yield compete
    finally:
        for p in procs:
            p.kill()
            p.wait()
        os.sched_setaffinity(0, before)


@linux_schedstat
def test_a_case_sharing_its_core_with_a_busy_process_is_flagged_disturbed(one_core) -> None:
    policy = TimingPolicy(warmup_s=0.02, min_samples=10, max_time_s=0.3)
    one_core()
    timing, _, remeasured = time_step(work, CpuClock(), policy)
    assert timing.wait_share is not None and timing.wait_share > 0.2, timing.wait_share
    assert remeasured
    assert timing.disturbed


@linux_schedstat
def test_a_case_with_its_core_to_itself_waits_little(one_core) -> None:
    """Alone on its core (other processes may run elsewhere), the wait is a small share of the time."""
    timing = measure(work, CpuClock(), TimingPolicy(warmup_s=0.02, min_samples=10, max_time_s=0.3))
    assert timing.wait_share is not None and timing.wait_share < 0.2, timing.wait_share
