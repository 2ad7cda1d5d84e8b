"""The steady CPU allocator: after it, a freed block is reused without page faults."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.measure.allocator import allocator_name

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import resource, sys
sys.path.insert(0, {root!r})
import torch
from harness.measure.allocator import make_steady
if sys.argv[1] == "steady":
    assert make_steady()
for _ in range(10):  # warm: the first allocations fault in any case (with 2 threads, the first ~6 here)
    torch.empty(8 << 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(8 << 20).fill_(1.0)  # 32 MiB allocated, touched, freed
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT)), mode], capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


@pytest.mark.skipif(allocator_name() != "glibc", reason="needs glibc's malloc")
def test_steady_malloc_stops_page_faults_on_reused_blocks() -> None:
    plain, steady = faults("plain"), faults("steady")
    assert plain > 20 * 4000  # 32 MiB is 8192 pages: glibc gives it back to the OS each time
    assert steady < plain / 4  # without it every one of the 20 blocks faults again; a stray one may


def test_preloaded_allocators_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    assert allocator_name() == "jemalloc"


def test_a_run_asking_for_no_steady_malloc_after_one_that_made_it_steady_is_told(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """mallopt cannot be undone, and workers inherit the variables: env.json must say what is in
    effect, not what was asked."""
    from harness.api import steady_allocator
    from harness.measure import allocator
    from harness.sweep.config import SweepConfig

    off = SweepConfig.build(device="cpu", variants="eager", steady_malloc=False)
    monkeypatch.setattr(allocator, "_made_steady", False)
    assert steady_allocator(off) is False
    monkeypatch.setattr(allocator, "_made_steady", True)
    with pytest.warns(RuntimeWarning, match="cannot be undone; this run is steady too"):
        assert steady_allocator(off) is True
    monkeypatch.setattr(allocator, "make_steady", lambda: True)
    assert steady_allocator(SweepConfig.build(device="cpu", variants="eager")) is True


def test_a_process_started_with_the_steady_variables_is_steady_whatever_a_run_asks(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A worker of a steady run, or a shell exporting the variables: glibc applied them at start-up."""
    from harness.api import steady_allocator
    from harness.measure import allocator
    from harness.sweep.config import SweepConfig

    off = SweepConfig.build(device="cpu", variants="eager", steady_malloc=False)
    monkeypatch.setattr(allocator, "_made_steady", False)
    monkeypatch.setattr(allocator, "_STARTED_WITH", dict(allocator.ENV))
    monkeypatch.setattr(allocator, "allocator_name", lambda: "glibc")
    with pytest.warns(RuntimeWarning, match="this process started with MALLOC_MMAP_THRESHOLD_=1073741824"):
        assert steady_allocator(off) is True
    monkeypatch.setattr(allocator, "_STARTED_WITH", {"MALLOC_MMAP_THRESHOLD_": allocator.ENV["MALLOC_MMAP_THRESHOLD_"]})
    assert steady_allocator(off) is False  # one threshold alone: the heap is still trimmed
    monkeypatch.setattr(allocator, "_STARTED_WITH", dict(allocator.ENV))
    monkeypatch.setattr(allocator, "allocator_name", lambda: "jemalloc")  # glibc's variables do nothing there
    assert steady_allocator(off) is False


def test_a_child_started_after_a_steady_run_knows_it_is_steady() -> None:
    from harness.measure.allocator import ENV

    code = "from harness.measure import allocator; print(bool(allocator.already_steady()))"
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(allocator_name() == "glibc")
    env = {k: v for k, v in env.items() if k not in ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
