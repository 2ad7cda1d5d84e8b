"""The host-memory check before a case: an estimate of its peak above what a case really takes,
so that the kernel's OOM killer never ends a sweep."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import harness.sweep.oom as oom
from harness.measure import allocator
from harness.results.record import CaseResult, Status
from harness.sweep.cases import Case

GiB = 2**30
ROOT = Path(__file__).resolve().parents[1]


def case(batch: int = 16, mode: str = "forward", dtype: str = "float32", device: str = "cpu",
         shape: tuple[int, int, int] = (64, 1024, 1024), fusion: str = "add") -> Case:
    c, h, w = shape
    return Case("eager", device, dtype, mode, fusion=fusion, batch=batch, channels=c, height=h, width=w,
                reduction=2, bias=False)


@pytest.fixture
def mmapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The estimate without the heap's share, whatever this process's allocator was made."""
    monkeypatch.setattr(oom, "heap_served", lambda nbytes: False, raising=False)


def per_element(c: Case) -> float:
    return oom.host_bytes_needed(c) / (c.batch * c.channels * c.height * c.width)


# -- the estimate ---------------------------------------------------------------------------------


def test_the_case_the_oom_killer_took_is_refused_before_anything_is_allocated(mmapped: None) -> None:
    """``--shapes 64x1024x1024 --batch-sizes 64 --oom-retry`` on a 24 GB VM with 22.5 GiB available:
    batch 16 "needs at least 20 GiB" and ran, and the kernel killed the sweep at 24 GB resident (no
    row, no report). The check now refuses it, as an out-of-memory failure with one line of reason."""
    available = int(22.5 * GiB)
    with pytest.raises(MemoryError) as refused:
        oom.check_host_memory(case(16), available=available)
    reason = str(refused.value)
    assert "\n" not in reason and "GiB of host memory" in reason and "estimate" in reason, reason
    assert oom.host_bytes_needed(case(16)) > 24e9  # above what it reached before it was killed


def test_oom_retry_halves_until_the_estimate_fits_and_measures_there(mmapped: None) -> None:
    """With --oom-retry the refusals are ``oom`` attempts, and the case lands on the largest batch
    whose estimate leaves the headroom free: batch 4 of 64×1024×1024 (1 GiB float32 tensors, about
    19.5 GiB estimated; the 68 B per element measured at smaller sizes would be 17) on 22.5 GiB."""
    available = int(22.5 * GiB)
    tried: list[int] = []

    def run_once(c: Case) -> CaseResult:
        tried.append(c.batch)
        try:
            oom.check_host_memory(c, available=available)
        except MemoryError as exc:
            return CaseResult.failure(c, Status.OOM, str(exc), threads=None, cache=None)
        return CaseResult.failure(c, Status.SKIPPED, "would run here", threads=None, cache=None)

    result = oom.run_with_retry(run_once, case(64))
    assert tried == [64, 32, 16, 8, 4]
    assert result.batch_run == 4 and result.status is Status.SKIPPED
    assert result.reason.startswith("out of memory at batch 64, 32, 16, 8; ran at batch 4"), result.reason
    assert oom.host_bytes_needed(case(4)) <= available - oom.headroom(available)


#: Peaks measured per input element (VmHWM above the RSS before the case, glibc with every full-size
#: tensor mmapped, 16×64×128×128 except float64 at 8×): the worst variant or fusion of each.
MEASURED = {
    ("forward", "float32"): 76.0, ("forward", "float16"): 56.1, ("forward", "bfloat16"): 56.1,
    ("forward", "float64"): 79.3,
    ("train", "float32"): 98.1, ("train", "float16"): 86.7, ("train", "bfloat16"): 75.1,
    ("train", "float64"): 110.5,
}
#: The same with glibc made steady (every tensor from its heap), 4/8/16×64×128×128.
MEASURED_HEAP = {("forward", "float32"): 80.5, ("forward", "float16"): 64.1,
                 ("train", "float32"): 157.6, ("train", "float16"): 121.1}


@pytest.mark.parametrize(("mode", "dtype"), sorted(MEASURED))
def test_the_estimate_is_above_every_measured_peak(monkeypatch: pytest.MonkeyPatch, mode: str, dtype: str) -> None:
    """The estimate per element is above the measured peaks (``oom.CPU_PEAK_BYTES``): the old lower
    bound was 20 B per float32 element (draw, input and its copy, float64 input), the peak is 68-98."""
    big = case(64, mode, dtype, shape=(64, 128, 128))
    monkeypatch.setattr(oom, "heap_served", lambda nbytes: False, raising=False)
    assert per_element(big) >= MEASURED[(mode, dtype)]
    monkeypatch.setattr(oom, "heap_served", lambda nbytes: True)
    assert per_element(big) >= MEASURED_HEAP.get((mode, dtype), MEASURED[(mode, dtype)])


def test_the_heap_share_follows_the_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    """A steady glibc serves blocks under 1 GiB from its heap, where freed memory stays resident
    (fragmentation: up to 158 B per element in train); mmapped blocks are given back when freed."""
    monkeypatch.setattr(allocator, "allocator_name", lambda: "glibc")
    monkeypatch.setattr(allocator, "already_steady", lambda: "made steady")
    assert oom.heap_served(allocator.STEADY_BYTES - 1) and not oom.heap_served(allocator.STEADY_BYTES)
    small, large = case(2, "train"), case(8, "train")  # float32 tensors of 512 MiB and 2 GiB
    assert per_element(small) == pytest.approx(per_element(large) * oom.HEAP_FACTOR["train"], rel=1e-6)
    monkeypatch.setattr(allocator, "already_steady", lambda: None)
    assert not oom.heap_served(64 * 2**20) and oom.heap_served(16 * 2**20)  # glibc's dynamic mmap threshold
    monkeypatch.setattr(allocator, "allocator_name", lambda: "jemalloc")
    assert oom.heap_served(allocator.STEADY_BYTES * 4)


def test_a_gpu_case_counts_only_what_the_host_holds(mmapped: None) -> None:
    """On CUDA the host holds the float32 draw (and the cotangent in train): nothing of the CPU's check."""
    gpu = case(16, device="cuda")
    elements = 16 * 64 * 1024 * 1024
    assert elements * 4 <= oom.host_bytes_needed(gpu) < elements * 4 + 2**20
    assert elements * 8 <= oom.host_bytes_needed(dataclasses.replace(gpu, mode="train")) < elements * 8 + 2**20
    oom.check_host_memory(gpu, available=int(22.5 * GiB))  # 4 GiB of draw fits


def test_the_headroom_is_kept_free(mmapped: None) -> None:
    """A case whose estimate fits but leaves less than the headroom free is refused too: the
    estimate is not a bound, and the rest of the machine moves."""
    c = case(1, shape=(64, 256, 256))
    needed = oom.host_bytes_needed(c)
    assert oom.headroom(10 * GiB) == GiB and oom.headroom(40 * GiB) == 4 * GiB
    oom.check_host_memory(c, available=needed + GiB)
    with pytest.raises(MemoryError, match="kept free"):
        oom.check_host_memory(c, available=needed + GiB - 1)
    with pytest.raises(MemoryError):
        oom.check_host_memory(c, available=needed + 1)


PEAK_SCRIPT = textwrap.dedent("""
    import gc, sys
    from pathlib import Path
    import torch
    from harness.measure import memory
    from harness.measure.metrics import metric_set
    from harness.measure.timing import CpuClock, TimingPolicy
    from harness.sweep.cases import Case
    from harness.sweep.runner import run_case
    from harness.sweep.subject import SharedInputs
    from variants.registry import get_variant

    mode, n = sys.argv[1], int(sys.argv[2])
    policy, clock = TimingPolicy(warmup_s=0.0, min_samples=3, max_time_s=0.05), CpuClock()
    measures, inputs = metric_set(), SharedInputs()
    make = lambda b, c, hw: Case("eager", "cpu", "float32", mode, fusion="max", batch=b, channels=c,
                                 height=hw, width=hw, reduction=2, bias=False)
    assert run_case(make(2, 8, 5), get_variant("eager"), clock, policy, 0, measures=measures,
                    inputs=inputs).status.value == "ok"  # libraries loaded, thread pools up
    memory.reset_hwm = lambda proc=None: False  # the PeakMemory metric must not reset the high-water mark
    def status(key):
        return next(int(l.split()[1]) * 1024 for l in Path("/proc/self/status").read_text().splitlines()
                    if l.startswith(key))
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS:")
    row = run_case(make(n, 64, 128), get_variant("eager"), clock, policy, 0, measures=measures, inputs=inputs)
    assert row.status.value == "ok", row.reason
    print(status("VmHWM:") - before)
""")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["forward", "train"])
def test_the_estimate_is_above_a_real_cases_peak(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """A real case (8×64×128×128 float32, max fusion: 0.6-0.8 GB) in a fresh process, its resident
    high-water mark above the RSS before it: below the estimate, which is what kept the sweep alive."""
    if not Path("/proc/self/clear_refs").exists() or allocator.allocator_name() != "glibc":
        pytest.skip("needs Linux's /proc/self/clear_refs and glibc's allocator")
    # not steady (a steady run here exports its MALLOC_ variables): the 32 MiB float32 tensors and
    # the 64 MiB float64 ones are mmapped, as the estimate below supposes
    env = {k: v for k, v in os.environ.items() if k not in allocator.ENV}
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, mode, "8"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    peak = int(out.stdout.split()[-1])
    c = Case("eager", "cpu", "float32", mode, fusion="max", batch=8, channels=64, height=128, width=128,
             reduction=2, bias=False)
    monkeypatch.setattr(oom, "heap_served", lambda nbytes: False, raising=False)
    assert peak < oom.host_bytes_needed(c), (peak, oom.host_bytes_needed(c))
