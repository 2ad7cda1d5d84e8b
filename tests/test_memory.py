"""Peak memory: the profiler-derived CPU peak, the CUDA allocator arithmetic (fake), VmHWM parsing."""
from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.measure.memory import (
    MEMORY_COLUMNS,
    graph_pool_bytes,
    measure_memory,
    peak_from_events,
    read_hwm,
    reset_hwm,
    unavailable,
)
from variants.reference import ScSE

MiB = 1 << 20


def test_peak_follows_allocations_in_time_order() -> None:
    def step() -> torch.Tensor:
        a = torch.ones(MiB // 4)  # 1 MiB of float32
        b = torch.ones(MiB // 2)  # 2 MiB: 3 MiB live here
        del a, b
        return torch.ones(MiB // 8)  # 0.5 MiB, held as the output

    usage = measure_memory(step, "cpu", warmup=0)
    assert usage.source == "profiler"
    assert usage.peak_mem_bytes == 3 * MiB
    assert usage.peak_reserved_bytes is None


def forward_peak(batch: int) -> tuple[int, int]:
    module, x = ScSE(16, 2, "add"), torch.randn(batch, 16, 32, 32)
    with torch.no_grad():
        usage = measure_memory(lambda: module(x), "cpu")
    assert usage.peak_mem_bytes is not None
    return usage.peak_mem_bytes, x.nbytes


def test_forward_peak_is_plausible_and_grows_with_batch() -> None:
    small, x_small = forward_peak(2)
    large, x_large = forward_peak(8)
    # c = x·cSE, s = x·sSE and y = c + s are live together: at least three tensors of x's size.
    assert 3 * x_small <= small <= 5 * x_small
    assert 3 * x_large <= large <= 5 * x_large
    assert large > 3.5 * small


def test_train_peak_exceeds_forward_peak() -> None:
    module = ScSE(16, 2, "max")
    x = torch.randn(4, 16, 32, 32, requires_grad=True)
    grad = torch.randn_like(x)
    params = list(module.parameters())
    train = measure_memory(lambda: torch.autograd.grad(module(x), [x, *params], grad), "cpu")
    with torch.no_grad():
        forward = measure_memory(lambda: module(x), "cpu")
    assert train.peak_mem_bytes is not None and forward.peak_mem_bytes is not None
    assert train.peak_mem_bytes > forward.peak_mem_bytes + x.nbytes


def test_peak_from_events_sorts_by_time() -> None:
    # Out of order on purpose: at t=1 +100, t=2 +50, t=3 -100, t=4 +20.
    assert peak_from_events([(3, -100), (1, 100), (4, 20), (2, 50)]) == 150
    assert peak_from_events([(1, -64), (2, -64)]) == 0
    assert peak_from_events([]) == 0


HWM_CHECK = """
import torch
from harness.measure.memory import measure_memory
MiB = 1 << 20
small = measure_memory(lambda: torch.ones(16), "cpu", warmup=0)
large = measure_memory(lambda: torch.ones(64 * MiB // 4), "cpu", warmup=0)  # 64 MiB, touched
print(small.process_hwm_bytes, large.process_hwm_bytes, small.process_hwm_reset and large.process_hwm_reset)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_process_hwm_sees_a_large_allocation() -> None:
    """In a fresh process: in this one, memory freed by earlier tests (kept by the steady allocator)
    may already be resident, and then the 64 MiB raise no high-water mark."""
    out = subprocess.run([sys.executable, "-c", HWM_CHECK], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.split()
    small, large, reset = int(out[0]), int(out[1]), out[2] == "True"
    assert large >= 64 * MiB
    if reset:
        assert large - small >= 32 * MiB


def test_hwm_parsing_and_missing_proc(tmp_path: Path) -> None:
    (tmp_path / "status").write_text("Name:\tpython\nVmPeak:\t 999 kB\nVmHWM:\t  225408 kB\nVmRSS:\t 1 kB\n")
    assert read_hwm(tmp_path) == 225408 * 1024
    assert reset_hwm(tmp_path) is True and (tmp_path / "clear_refs").read_text() == "5"
    nowhere = tmp_path / "absent"
    assert read_hwm(nowhere) is None
    assert reset_hwm(nowhere) is False
    (tmp_path / "status").write_text("Name:\tpython\n")
    assert read_hwm(tmp_path) is None


class FakeCuda:
    """Just enough of ``torch.cuda``'s allocator counters to check the arithmetic."""

    def __init__(self, allocated: int, reserved: int, cached: int) -> None:
        self.allocated, self.reserved, self.cached = allocated, reserved, cached
        self.peak_allocated, self.peak_reserved = 10**12, 10**12  # stale peaks from the timing loop
        self.calls: list[str] = []

    def synchronize(self, device: Any = None) -> None:
        self.calls.append("synchronize")

    def empty_cache(self) -> None:
        self.calls.append("empty_cache")
        self.reserved -= self.cached
        self.cached = 0
        self.segments = [s for s in getattr(self, "segments", []) if not s.get("unused")]

    def memory_allocated(self, device: Any = None) -> int:
        return self.allocated

    def memory_reserved(self, device: Any = None) -> int:
        return self.reserved

    def max_memory_allocated(self, device: Any = None) -> int:
        return self.peak_allocated

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self.calls.append("reset")
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def memory_stats(self, device: Any = None) -> dict[str, int]:
        return {
            "allocated_bytes.all.peak": self.peak_allocated,
            "reserved_bytes.all.peak": self.peak_reserved,
            "num_alloc_retries": 0,
        }

    def allocate(self, nbytes: int, reserve: int) -> None:
        self.allocated += nbytes
        self.reserved += reserve
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def free(self, nbytes: int) -> None:
        self.allocated -= nbytes


def test_cuda_peaks_are_above_the_baseline(tmp_path: Path) -> None:
    fake = FakeCuda(allocated=100 * MiB, reserved=300 * MiB, cached=150 * MiB)
    (tmp_path / "status").write_text("VmHWM:\t 2048 kB\n")
    phase = {"measured": False}

    def step() -> None:
        if phase["measured"]:
            fake.allocate(30 * MiB, reserve=40 * MiB)  # a temporary
            fake.allocate(10 * MiB, reserve=0)  # the output
            fake.free(30 * MiB)

    usage = measure_memory(step, "cuda:0", warmup=0, cuda=fake, proc=tmp_path)
    assert usage.peak_mem_bytes == 0  # a call that allocates nothing
    phase["measured"] = True
    fake.calls.clear()
    usage = measure_memory(step, "cuda:0", warmup=0, cuda=fake, proc=tmp_path)
    assert usage.source == "cuda_allocator"
    assert usage.peak_mem_bytes == 40 * MiB
    assert usage.peak_reserved_bytes == 40 * MiB
    assert usage.alloc_retries == 0
    assert usage.process_hwm_bytes == 2048 * 1024 and usage.process_hwm_reset
    # The cache is emptied and the stale peaks reset before the call, and the call is waited for.
    assert fake.calls == ["synchronize", "empty_cache", "reset", "synchronize"]


class FakeCudaWithPools(FakeCuda):
    """FakeCuda with the allocator's snapshot: segments by device and pool; a segment marked
    ``unused`` (the pool of a graph already gone) is freed by ``empty_cache``."""

    def __init__(self, segments: list[dict[str, Any]]) -> None:
        super().__init__(allocated=0, reserved=0, cached=0)
        self.segments = segments

    def current_device(self) -> int:
        return 0

    def memory_snapshot(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self.segments]


def segment(device: int, mib: int, pool: tuple[int, int] = (0, 0), unused: bool = False) -> dict[str, Any]:
    return {"device": device, "total_size": mib * MiB, "segment_pool_id": pool, "unused": unused}


def test_what_cuda_graphs_hold_is_read_from_their_pools_above_the_cases_start() -> None:
    """A replay allocates nothing, so its peak reads 0; what its capture holds is the bytes of the
    device's segments in private pools (not the default pool), after the cache is emptied (a gone
    graph's pool is then freed), above what the pools held before the case."""
    fake = FakeCudaWithPools([segment(0, 20), segment(0, 8, (1, 0)), segment(1, 4, (2, 0)),
                              segment(0, 16, (3, 0), unused=True)])
    assert graph_pool_bytes("cuda:1", fake) == 4 * MiB
    usage = measure_memory(lambda: None, "cuda", warmup=0, cuda=fake, pool_base=2 * MiB)
    assert usage.graph_pool_bytes == 6 * MiB  # device 0's live pool, 8 MiB, less the 2 held before
    assert usage.as_row()["graph_pool_bytes"] == 6 * MiB
    assert graph_pool_bytes("cuda:0", fake) == 8 * MiB  # the gone graph's 16 MiB were freed first
    assert measure_memory(lambda: None, "cuda", warmup=0, cuda=fake, pool_base=None).graph_pool_bytes is None
    assert measure_memory(lambda: None, "cuda", warmup=0, cuda=fake, pool_base=20 * MiB).graph_pool_bytes == 0
    assert measure_memory(lambda: None, "cuda:0", warmup=0, cuda=FakeCuda(0, 0, 0)).graph_pool_bytes is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_real_graph_holds_its_output_in_its_pool_and_eager_holds_none() -> None:
    from variants.registry import get_variant

    x = torch.randn(8, 64, 32, 32, device="cuda")
    held = {}
    for name in ("eager", "cuda_graph"):
        gc.collect()
        torch.cuda.empty_cache()  # as the runner's case before starts from: no pool of a gone graph left
        base = graph_pool_bytes("cuda")
        fn = get_variant(name).build(ScSE(64, 4), torch.device("cuda"), torch.float32)
        with torch.no_grad():
            fn(x)
            held[name] = measure_memory(lambda fn=fn: fn(x), "cuda", pool_base=base)
        del fn
    assert held["eager"].graph_pool_bytes == 0
    assert held["cuda_graph"].graph_pool_bytes is not None and held["cuda_graph"].graph_pool_bytes >= x.nbytes
    assert held["cuda_graph"].peak_mem_bytes is not None and held["cuda_graph"].peak_mem_bytes < x.nbytes


def test_row_columns() -> None:
    assert tuple(unavailable().as_row()) == MEMORY_COLUMNS
    assert all(v in (None, False, "") for v in unavailable().as_row().values())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_cuda_peak() -> None:
    x = torch.randn(8, 64, 64, 64, device="cuda")
    module = ScSE(64, 4, "add").cuda()
    with torch.no_grad():
        usage = measure_memory(lambda: module(x), "cuda")
    assert usage.peak_mem_bytes is not None and usage.peak_mem_bytes >= 3 * x.nbytes
    # Reserved growth may be below the allocated peak: temporaries can fit into segments that x's
    # allocation already reserved (1-10 MiB requests share 20 MiB segments). A fresh 256 MiB block
    # cannot: the cache is emptied before the measured call, so it must be reserved anew.
    assert usage.peak_reserved_bytes is not None
    assert usage.process_hwm_bytes is not None
    block = measure_memory(lambda: torch.empty(256 * MiB, dtype=torch.uint8, device="cuda"), "cuda")
    assert block.peak_reserved_bytes is not None and block.peak_reserved_bytes >= 256 * MiB
    assert block.peak_mem_bytes is not None and block.peak_mem_bytes >= 256 * MiB


def test_an_error_in_the_measured_step_is_the_cases_not_a_missing_metric() -> None:
    """The docstring's promise: errors in ``step`` propagate (a CPU out-of-memory in the peak-memory
    call is an ``oom`` row, not empty memory columns); only the profiler's own failures are swallowed."""
    calls = []

    def step() -> torch.Tensor:
        calls.append(1)
        if len(calls) > 1:  # the warm-up call passes, the measured one fails
            raise RuntimeError("DefaultCPUAllocator: not enough memory")
        return torch.ones(4)

    with pytest.raises(RuntimeError, match="not enough memory"):
        measure_memory(step, "cpu")


def test_a_cpu_out_of_memory_in_the_peak_memory_call_fails_the_case_as_oom() -> None:
    """Through the metric the runner uses: the CPU allocator's failure is a plain RuntimeError, and it
    makes the row ``oom`` (``--oom-retry`` can then halve the batch); any other failure of the
    measurement leaves the memory columns empty."""
    from harness.measure.metrics import PeakMemory, Timed
    from harness.sweep.cases import Case

    case = Case("eager", "cpu", "float32", "forward", 2, 4, 4, 4, 2, "add")

    def failing(message: str):  # noqa: ANN202
        def step() -> None:
            raise RuntimeError(message)

        return step

    oom = Timed(case, failing("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"),
                torch.device("cpu"), 1, 1.0, ())  # fmt: skip
    with pytest.raises(RuntimeError, match="DefaultCPUAllocator"):
        PeakMemory().measured(oom)
    other = Timed(case, failing("something else"), torch.device("cpu"), 1, 1.0, ())
    assert PeakMemory().measured(other) == unavailable().as_row()
