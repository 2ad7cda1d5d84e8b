"""The host-memory check for a case inside a network (``--context``): the estimate counts the network's
activations and weights, not only its input, so a U-Net case too large for the machine is an ``oom``
row before it runs instead of the kernel's OOM killer ending the sweep."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

import harness.sweep.oom as oom
import harness.sweep.runner as runner
from harness.measure import allocator
from harness.measure.metrics import MetricSet
from harness.measure.timing import CpuClock, TimingPolicy
from harness.results.record import Status
from harness.sweep.cases import Case
from variants.contexts import DEFAULT_HOST_PEAK, HostPeak, add_context, get_context, remove_context
from variants.registry import get_variant
from variants.unet import UNET_HOST_PEAK, smp_unavailable

GiB, MiB = 2**30, 2**20
SHIMS = ROOT / "tests" / "shims"
needs_smp = pytest.mark.skipif(smp_unavailable() is not None, reason=str(smp_unavailable()))


def unet_case(batch: int, size: int, mode: str = "forward", dtype: str = "float32", context: str = "unet",
              device: str = "cpu") -> Case:
    ctx = get_context(context)
    return Case("eager", device, dtype, mode, batch, 3, size, size, ctx.reduction, ctx.fusion, ctx.bias, context)


#: Peaks measured 2026-11-28 on the 2-core VM (glibc, 2 threads): one ``run_case`` of smp's Unet
#: (eager blocks, the run's metrics) in a fresh process, VmHWM reset by /proc/self/clear_refs just
#: before the case, above the RSS just before; the higher of glibc made steady (the CPU default) and
#: not where both were run. (context, mode, dtype, batch, size) → MiB; ``variants.unet`` says more.
MEASURED_MIB = {
    ("unet", "forward", "float32", 1, 128): 461, ("unet", "forward", "float32", 2, 256): 891,
    ("unet", "forward", "float32", 4, 256): 1393, ("unet", "forward", "float32", 4, 512): 4850,
    ("unet", "forward", "float32", 6, 512): 6311,
    ("unet", "forward", "bfloat16", 1, 128): 412, ("unet", "forward", "bfloat16", 2, 256): 772,
    ("unet", "forward", "bfloat16", 4, 256): 1434, ("unet", "forward", "bfloat16", 4, 512): 4759,
    ("unet", "forward", "float16", 1, 128): 435, ("unet", "forward", "float64", 2, 256): 916,
    ("unet", "forward", "float64", 4, 256): 1878,
    ("unet", "train", "float32", 1, 128): 581, ("unet", "train", "float32", 2, 256): 1838,
    ("unet", "train", "float32", 4, 256): 2996, ("unet", "train", "float32", 4, 512): 8860,
    ("unet", "train", "bfloat16", 1, 128): 509, ("unet", "train", "bfloat16", 2, 256): 1379,
    ("unet", "train", "bfloat16", 4, 256): 2888, ("unet", "train", "bfloat16", 4, 512): 8160,
    ("unet", "train", "float16", 1, 128): 554, ("unet", "train", "float64", 2, 256): 1771,
    ("unet", "train", "float64", 4, 256): 5072,
    ("unet_compiled", "forward", "float32", 2, 256): 944, ("unet_compiled", "forward", "float32", 4, 256): 1531,
    ("unet_compiled", "forward", "bfloat16", 2, 256): 897, ("unet_compiled", "train", "float32", 2, 256): 1846,
}  # fmt: skip


@pytest.mark.parametrize("key", sorted(MEASURED_MIB), ids=lambda k: "-".join(map(str, k)))
def test_the_estimate_is_above_every_measured_network_peak(key: tuple) -> None:
    context, mode, dtype, batch, size = key
    needed = oom.host_bytes_needed(unet_case(batch, size, mode, dtype, context))
    assert needed > MEASURED_MIB[key] * MiB, (needed / MiB, MEASURED_MIB[key])
    # not by chance: the weights alone are not it at the larger sizes
    if batch * size * size >= 4 * 256 * 256:
        weights = UNET_HOST_PEAK.parameters * 4 * HostPeak.WEIGHT_COPIES[mode]
        assert weights < MEASURED_MIB[key] * MiB


def test_a_network_case_counts_far_more_than_its_input() -> None:
    """The block's figures per input element (78-106 B in float32) said 9 GiB for a U-Net forward at
    32×3×1024×1024; the network holds 1.4-2.7 kB per input element beside its weights."""
    c = unet_case(32, 1024)
    elements = 32 * 3 * 1024 * 1024
    assert oom.host_bytes_needed(c) >= elements * 2048
    assert oom.host_bytes_needed(dataclasses.replace(c, mode="train")) >= elements * 4096
    assert oom.host_bytes_needed(dataclasses.replace(c, dtype="float64")) >= elements * 4096
    assert oom.host_bytes_needed(dataclasses.replace(c, context="unet_compiled")) == oom.host_bytes_needed(c)


def test_a_network_case_far_too_big_is_refused_before_it_runs() -> None:
    """``--context unet --shapes 3x1024x1024 --batch-sizes 32`` on a 24 GB VM: about 200 GiB."""
    with pytest.raises(MemoryError, match="GiB of host memory") as refused:
        oom.check_host_memory(unet_case(32, 1024), available=int(22.5 * GiB))
    assert "\n" not in str(refused.value)
    oom.check_host_memory(unet_case(1, 512), available=int(22.5 * GiB))  # 2 GiB: it fits


def test_oom_retry_halves_a_network_case_to_a_batch_that_fits() -> None:
    available = int(22.5 * GiB)
    fits = [b for b in (32, 16, 8, 4, 2, 1)
            if oom.host_bytes_needed(unet_case(b, 1024)) <= available - oom.headroom(available)]
    assert fits and max(fits) == 2  # 2×3×1024² forward: about 12.5 GiB estimated, 18 allowed


@needs_smp
def test_a_network_case_far_too_big_is_an_oom_row_and_nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the runner: the row says ``oom`` with the estimate, and the network is never built."""
    built: list[Case] = []
    monkeypatch.setattr(oom, "available_host_bytes", lambda: int(22.5 * GiB))
    monkeypatch.setattr(runner, "measure_case", lambda case, *args, **kwargs: built.append(case))
    c = unet_case(32, 1024)
    policy = TimingPolicy(warmup_s=0.0, min_samples=3, max_samples=5, max_time_s=0.05)
    row = runner.run_case(c, get_variant("eager"), CpuClock(), policy, 0, measures=MetricSet(()))
    assert row.status is Status.OOM and "GiB of host memory" in (row.reason or ""), row.reason
    assert built == []


def test_a_context_supplies_its_own_figure_or_gets_the_default() -> None:
    unet = get_context("unet")
    own = HostPeak(parameters=1_000, per_element={"forward": 10, "train": 20})
    mine = add_context(dataclasses.replace(unet, name="zz_own_peak", network="zz_net", host_peak=own), replace=True)
    unknown = add_context(dataclasses.replace(unet, name="zz_no_peak", network="zz_other", host_peak=None),
                          replace=True)
    try:
        assert mine.peak is own
        assert unknown.peak is DEFAULT_HOST_PEAK
        assert unet.peak is UNET_HOST_PEAK
        assert get_context("unet_compiled").peak is UNET_HOST_PEAK
        c = unet_case(2, 64, "train", context="zz_own_peak")
        assert oom.host_bytes_needed(c) == 2 * 3 * 64 * 64 * 20 + 1_000 * 4 * HostPeak.WEIGHT_COPIES["train"]
        default = oom.host_bytes_needed(unet_case(2, 64, context="zz_no_peak"))
        assert default > oom.host_bytes_needed(unet_case(2, 64))  # the default is above the measured U-Net's
    finally:
        remove_context("zz_own_peak")
        remove_context("zz_no_peak")


def test_a_gpu_network_case_counts_the_draw_and_the_cpu_built_weights() -> None:
    c = unet_case(32, 1024, device="cuda")
    elements = 32 * 3 * 1024 * 1024
    assert oom.host_bytes_needed(c) == elements * 4 + 4 * UNET_HOST_PEAK.parameters


PEAK_SCRIPT = textwrap.dedent("""
    import gc, sys
    from pathlib import Path
    from harness.measure import allocator, memory
    from harness.measure.metrics import metric_set
    from harness.measure.timing import CpuClock, TimingPolicy
    from harness.sweep.cases import Case
    from harness.sweep.runner import run_case
    from harness.sweep.subject import SharedInputs
    from variants.contexts import get_context
    from variants.registry import get_variant

    mode, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    assert allocator.make_steady()  # the CPU default, and the higher peaks
    import segmentation_models_pytorch  # noqa: F401 - its import is not the case's
    policy, clock = TimingPolicy(warmup_s=0.0, min_samples=3, max_samples=5, max_time_s=0.05), CpuClock()
    measures, inputs = metric_set(), SharedInputs()
    warm = Case("eager", "cpu", "float32", mode, fusion="max", batch=2, channels=8, height=5, width=5, reduction=2)
    assert run_case(warm, get_variant("eager"), clock, policy, 0, measures=measures,
                    inputs=inputs).status.value == "ok"  # libraries loaded, thread pools up
    memory.reset_hwm = lambda proc=None: False  # the PeakMemory metric must not reset the high-water mark
    def status(key):
        return next(int(l.split()[1]) * 1024 for l in Path("/proc/self/status").read_text().splitlines()
                    if l.startswith(key))
    ctx = get_context("unet")
    case = Case("eager", "cpu", "float32", mode, n, 3, size, size, ctx.reduction, ctx.fusion, ctx.bias, "unet")
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS:")
    row = run_case(case, get_variant("eager"), clock, policy, 0, measures=measures, inputs=inputs)
    assert row.status.value == "ok", row.reason
    print(status("VmHWM:") - before)
""")


def real_peak(mode: str, batch: int, size: int) -> int:
    if not Path("/proc/self/clear_refs").exists() or allocator.allocator_name() != "glibc":
        pytest.skip("needs Linux's /proc/self/clear_refs and glibc's allocator")
    env = {k: v for k, v in os.environ.items() if k not in allocator.ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(SHIMS), str(ROOT)])  # smp importable in the child too
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, mode, str(batch), str(size)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


@needs_smp
def test_the_estimate_is_above_a_real_small_network_cases_peak() -> None:
    """1×3×128×128 forward in a fresh process (a few seconds): about 460 MiB, mostly weights."""
    peak = real_peak("forward", 1, 128)
    assert 100 * MiB < peak < oom.host_bytes_needed(unet_case(1, 128)), peak / MiB


@needs_smp
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["forward", "train"])
def test_the_estimate_is_above_a_real_network_cases_peak(mode: str) -> None:
    """4×3×256×256 with glibc steady (1.4 and 3.0 GiB measured; a minute or two on 2 cores)."""
    peak = real_peak(mode, 4, 256)
    assert peak < oom.host_bytes_needed(unet_case(4, 256, mode)), peak / MiB
