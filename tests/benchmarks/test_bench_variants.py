"""Every registered variant on a few small shapes, timed by pytest-benchmark's ``benchmark`` fixture.

For people who track performance inside pytest::

    pytest tests/benchmarks --benchmark-save=baseline
    pytest tests/benchmarks --benchmark-compare='*_baseline' --benchmark-compare-fail=min:15%

Each variant is checked against the float64 reference first (a fast wrong answer is not a
result), with the harness's own runner functions. ``HARNESS_BENCH_DEVICE`` picks the device
(default: CUDA when available) and ``HARNESS_BENCH_VARIANTS`` a glob of variants (default ``*``).
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from harness.sweep.cases import Case
from harness.sweep.runner import first_call, skip_reason, verify
from harness.sweep.subject import block_subject
from harness.testing import supported_biases
from variants.registry import get_variant, list_variants

DEVICE = os.environ.get("HARNESS_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
VARIANTS = list_variants(os.environ.get("HARNESS_BENCH_VARIANTS", "*"))
#: (N, C, H, W): small enough for a CPU, and two aspect ratios (more channels, or more pixels).
SHAPES: tuple[tuple[int, int, int, int], ...] = ((2, 32, 32, 32), (8, 64, 16, 16))


def synchronized_perf_counter() -> float:
    """``perf_counter`` once the GPU has finished its queued work.

    CUDA launches return before the kernel runs, so an unsynchronised timer measures the launch
    only; pytest-benchmark reads its timer before and after each round of calls, and syncing
    there makes a round's time the GPU's. On the CPU (CUDA never initialised) it costs nothing.
    """
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


pytestmark = pytest.mark.benchmark(timer=synchronized_perf_counter)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", VARIANTS)
def test_forward(benchmark, name: str, shape: tuple[int, int, int, int]) -> None:
    variant = get_variant(name)
    n, c, h, w = shape
    bias = supported_biases(variant)[0]
    case = Case(name, DEVICE, "float32", "forward", n, c, h, w, 2, "add", bias)
    reason = skip_reason(case, variant, explicit=False)
    if reason:
        pytest.skip(reason)
    subject = block_subject(case, variant, 0, None)
    fn, x = subject.fn, subject.x
    got = first_call(fn, x, {}, None)  # compiles, warms up, and gives the output to check
    check = verify(case, variant, subject, got)
    assert check.passed, f"{name} is wrong on {case.label}: {check.problem}"
    benchmark.group = f"{DEVICE} float32 forward {n}x{c}x{h}x{w}"
    benchmark.extra_info.update(device=DEVICE, shape=list(shape), max_rel_err=check.max_rel_err)
    with torch.no_grad():
        out = benchmark(fn, x)
    assert out.shape == x.shape
