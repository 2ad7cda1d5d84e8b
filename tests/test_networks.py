"""Variants inside networks (contexts): every scSE block swapped, the swapped network computing the
unmodified one's function, rows and report that say so, and a context added by another package.

smp's Unet needs segmentation_models_pytorch; on this CPU CI its torchvision is made importable by
tests/torchvision_shim.py (test set-up only). Where smp cannot be imported, those tests skip.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import FAST, FAST_RUN, ROOT

import harness
from harness.measure.block_share import block_ranges, block_share, share_of
from harness.measure.metrics import metric_set
from harness.measure.timing import CpuClock
from harness.sweep.cases import Case
from harness.sweep.network import make_network
from harness.sweep.runner import run_case
from variants.contexts import add_context, get_context, remove_context
from variants.registry import all_variants, get_variant, register, unregister
from variants.swap import block_paths, swap_blocks
from variants.tags import bias_unsupported, tags_of
from variants.unet import smp_unavailable

needs_smp = pytest.mark.skipif(smp_unavailable() is not None, reason=str(smp_unavailable()))
SHIMS = ROOT / "tests" / "shims"


def unet_case(variant: str, mode: str = "forward", dtype: str = "float32", size: int = 64,
              context: str = "unet") -> Case:
    ctx = get_context(context)
    return Case(variant, "cpu", dtype, mode, 1, 3, size, size, ctx.reduction, ctx.fusion, ctx.bias, context)


def runnable_here(name: str, dtype: str = "float32") -> bool:
    """Variants that can run in the unet on this CPU, uncompiled (compiling ten blocks takes minutes)."""
    v = get_variant(name)
    ctx = get_context("unet")
    return (v.unavailable("cpu") is None and v.unsupported("cpu", dtype, "forward", ctx.fusion) is None
            and bias_unsupported(v, ctx.bias) is None and not tags_of(v).interpreted_on_cpu)


@needs_smp
def test_the_swap_replaces_every_block_for_every_variant_that_supports_the_network() -> None:
    ctx = get_context("unet")
    original = make_network(ctx, unet_case("eager"), 0)
    paths = block_paths(ctx, original)
    assert len(paths) == 10
    scse_params = {f"{p}.{n}" for p in paths for n, _ in original.get_submodule(p).named_parameters()}
    assert len(scse_params) == 60  # six parameters a block: two convs in cSE, one in sSE, each with a bias
    tried = []
    for name, variant in sorted(all_variants().items()):
        if variant.unavailable("cpu") is not None or variant.unsupported("cpu", "float32", "forward", "add"):
            continue
        if bias_unsupported(variant, True):
            continue
        swapped = swap_blocks(ctx, original, variant, torch.device("cpu"), torch.float32, train=False)
        assert len(swapped.blocks) == 10, name
        assert block_paths(ctx, swapped.network) == [], name  # no original block is left
        assert sorted(swapped.names.values()) == sorted(scse_params), name  # every scSE parameter is mapped
        tried.append(name)
    assert {"eager", "eager_factored", "smp", "compile"} <= set(tried)


@needs_smp
def test_a_swap_refuses_an_original_block_left_not_a_new_one_of_its_class() -> None:
    """"Left" means the original module itself (here held at two paths, so a swap by path misses
    one), not any module of the network's block class: a variant may build that class anew, and the
    check against float64 judges what it computes."""
    ctx = get_context("unet")
    keeps_smp = register("keeps_original", "returns smp's own module", replace=True)(
        lambda ref, d, t: __import__("segmentation_models_pytorch").base.modules.SCSEModule(ref.channels)
    )
    del keeps_smp
    try:
        fresh = swap_blocks(ctx, make_network(ctx, unet_case("eager"), 0), get_variant("keeps_original"),
                            torch.device("cpu"), torch.float32, False)  # fmt: skip
        assert len(fresh.blocks) == 10
        shared = make_network(ctx, unet_case("eager"), 0)
        decoder = shared.decoder.blocks
        decoder[1].attention2.attention = decoder[1].attention1.attention  # one block at two paths
        with pytest.raises(RuntimeError, match="original scSE block"):
            swap_blocks(ctx, shared, get_variant("eager"), torch.device("cpu"), torch.float32, False)
    finally:
        unregister("keeps_original")


@needs_smp
@pytest.mark.parametrize("mode", ["forward", "train"])
def test_in_float64_every_swapped_network_is_the_unmodified_one(mode: str) -> None:
    """The swap must be exact: within 1e-10 in float64, output and (train) every judged gradient."""
    every = ("eager", "eager_factored", "mean_squeeze", "linear_excite", "channels_last", "smp")
    names = [n for n in (every if mode == "forward" else every[1::2]) if runnable_here(n, "float64")]
    assert names, "no float64 variant to swap in"
    measures = metric_set()  # FLOPs counted once for all of them, as a run does
    for name in names:
        result = run_case(unet_case(name, mode, "float64"), get_variant(name), CpuClock(), FAST, seed=3,
                          measures=measures)
        assert result.status.value == "ok", (name, result.reason)
        assert result.check is not None and result.check.max_rel_err <= 1e-10, name
        if mode == "train":
            assert result.check.grad_rel_err is not None and result.check.grad_rel_err <= 1e-10 * 2, name
        assert result.metrics["blocks"] == 10


@needs_smp
def test_a_wrong_block_makes_the_network_a_mismatch(temp_variant) -> None:
    def build(ref: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        module = get_variant("eager").build(ref, device, dtype)
        with torch.no_grad():
            module.sse.Conv1x1.bias.add_(0.5)  # one wrong weight in every block
        return module

    temp_variant("wrong_bias", build, dtypes=("float32", "float64"))
    result = run_case(unet_case("wrong_bias", dtype="float64"), get_variant("wrong_bias"), CpuClock(), FAST, 0,
                      measures=metric_set())
    assert result.status.value == "mismatch"
    assert "output error" in (result.reason or "")
    assert result.metrics["blocks"] == 10


def zero_block(ref: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> Callable:
    return lambda x: torch.zeros_like(x)


def shifted_bias(ref: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Every block's sSE bias off by 0.25: under the float16 network's own limit on the Intel Xeon VM
    (0.336; the AMD EPYC VM's is higher, 0.45), so only the blocks' check can catch it (off by 0.5,
    the Intel VM's network check caught it first)."""
    module = get_variant("eager").build(ref, device, dtype)
    with torch.no_grad():
        module.sse.Conv1x1.bias.add_(0.25)
    return module


@needs_smp
@pytest.mark.parametrize(("dtype", "build", "where"), [
    ("bfloat16", zero_block, "decoder.blocks.0.attention1.attention: output error 1 > "),
    ("float16", shifted_bias, "decoder.blocks.0.attention2.attention: output error "),
])  # fmt: skip
def test_in_16_bits_a_wrong_block_is_caught_where_it_sits(temp_variant, dtype: str, build: Callable,
                                                           where: str) -> None:  # fmt: skip
    """The unmodified U-Net misses its own float64 output by 0.37 in bfloat16 (0.09 in float16 on the
    AMD EPYC VM, 0.067 on an Intel Xeon one), so five times that passed blocks returning zeros
    (bfloat16) or a bias off by 0.5 (float16, on the AMD VM; the Intel one's network check read 0.353
    against 0.336 and caught it first): each block is judged on the input it received there. The bias
    is now off by 0.25, which the Intel VM's blocks' check catches at 0.0353 against 0.00542."""
    temp_variant("wrong_block", build, dtypes=("float32", "float16", "bfloat16"))
    result = run_case(unet_case("wrong_block", dtype=dtype), get_variant("wrong_block"), CpuClock(), FAST, 0,
                      measures=metric_set())  # fmt: skip
    assert result.status.value == "mismatch", result.reason
    assert (result.reason or "").startswith("scSE block " + where), result.reason
    right = run_case(unet_case("eager", dtype=dtype), get_variant("eager"), CpuClock(), FAST, 0, measures=metric_set())
    assert right.status.value == "ok", right.reason  # the blocks' own check passes a right one
    ok = run_case(unet_case("eager_factored", dtype=dtype), get_variant("eager_factored"), CpuClock(), FAST, 0,
                  measures=metric_set())  # fmt: skip
    assert ok.status.value == "ok", ok.reason  # a correct block passes its own check there


class NoWeightGradient(torch.nn.Module):
    """Right output and input gradient, but the first excitation conv's weight enters as
    ``w.detach() + 0·w``: its gradient is exactly zero, an error of 1, which a 16-bit network's own
    gradient error (above 1 for some of its scSE parameters) let pass."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.reference_names = {f"inner.{n}": n for n, _ in inner.named_parameters()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = {n: (p.detach() + 0 * p if n == "cse.fc.0.weight" else p) for n, p in self.inner.named_parameters()}
        return torch.func.functional_call(self.inner, params, (x,))


@needs_smp
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_in_16_bits_a_block_whose_weight_gets_no_gradient_is_caught_where_it_sits(temp_variant, dtype: str) -> None:
    eager = get_variant("eager")
    temp_variant("no_wgrad", lambda ref, device, dtype: NoWeightGradient(eager.build(ref, device, dtype)),
                 dtypes=("float32", "float16", "bfloat16"))  # fmt: skip
    result = run_case(unet_case("no_wgrad", "train", dtype), get_variant("no_wgrad"), CpuClock(), FAST, 0,
                      measures=metric_set())  # fmt: skip
    assert result.status.value == "mismatch", (result.reason, result.check)
    assert (result.reason or "").startswith("scSE block decoder.blocks.0.attention1.attention: gradient of "
                                            "cse.fc.0.weight error 1 > "), result.reason  # fmt: skip
    right = run_case(unet_case("eager", "train", dtype), get_variant("eager"), CpuClock(), FAST, 0,
                     measures=metric_set())  # fmt: skip
    assert right.status.value == "ok", right.reason  # the blocks' gradients check passes a right one


class ReplaysZeros(torch.nn.Module):
    """A CPU stand-in for a CUDA graph that captured wrongly: the plain modules are right, the replay not."""

    def __init__(self, network: torch.nn.Module, wrong: bool) -> None:
        super().__init__()
        self.network, self.wrong = network, wrong

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.network(x)
        return torch.zeros_like(y) if self.wrong else y


@needs_smp
@pytest.mark.parametrize("wrong", [True, False])
def test_in_16_bits_a_graph_replay_that_differs_from_its_network_is_caught(monkeypatch, wrong: bool) -> None:
    import variants.swap as swap

    graphed = dataclasses.replace(get_context("unet"), name="unet_graph_stand_in", form="graph",
                                  devices=frozenset({"cpu"}))  # fmt: skip
    monkeypatch.setattr(swap, "in_form", lambda context, network: ReplaysZeros(network, wrong))
    add_context(graphed, replace=True)
    try:
        case = dataclasses.replace(unet_case("eager", dtype="bfloat16"), context=graphed.name)
        result = run_case(case, get_variant("eager"), CpuClock(), FAST, 0, measures=metric_set())
    finally:
        remove_context(graphed.name)
    if wrong:
        assert result.status.value == "mismatch", (result.reason, result.check)
        assert (result.reason or "").startswith("the CUDA graph's replay differs from the network it captured: "
                                                "error 1 > tolerance "), result.reason  # fmt: skip
    else:
        assert result.status.value == "ok", result.reason


class NudgesItsInput(torch.nn.Module):
    """Right output, but it scales its input in place afterwards, by 2%: the network's other
    readers of that activation see it, too little for a bfloat16 network's own limit."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        x.mul_(1.02)
        return y


@needs_smp
def test_a_block_writing_into_its_input_inside_a_network_is_caught(temp_variant) -> None:
    temp_variant("nudges", lambda ref, device, dtype: NudgesItsInput(get_variant("eager").build(ref, device, dtype)),
                 dtypes=("float32", "bfloat16"))  # fmt: skip
    result = run_case(unet_case("nudges", dtype="bfloat16"), get_variant("nudges"), CpuClock(), FAST, 0,
                      measures=metric_set())  # fmt: skip
    assert result.status.value == "mismatch", result.reason
    assert (result.reason or "").endswith(": the variant modified its input"), result.reason
    assert (result.reason or "").startswith("scSE block ")


@needs_smp
def test_a_block_weight_left_without_a_gradient_makes_the_network_a_mismatch(temp_variant) -> None:
    """Inside a network a block's weight used detached gives no gradient: judged only on the gradients
    that reach, the step would pass and time cheaper. The idle block's weights (its reference gets
    none either) are excused, as the eager swap passing in train mode shows."""
    import copy

    def build(ref: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        module = copy.deepcopy(ref).to(device, dtype)
        conv = module.sse.Conv1x1
        module.forward = lambda x: module.combine(  # type: ignore[method-assign]
            module.cse(x), x * torch.sigmoid(torch.nn.functional.conv2d(x, conv.weight.detach(), conv.bias)))
        return module

    temp_variant("detached_in_net", build, dtypes=("float64",))
    for name, status in (("detached_in_net", "mismatch"), ("eager", "ok")):
        result = run_case(unet_case(name, "train", "float64"), get_variant(name), CpuClock(), FAST, 0,
                          measures=metric_set())
        assert result.status.value == status, (name, result.reason)
    assert result.reason is None
    detached = run_case(unet_case("detached_in_net", "train", "float64"), get_variant("detached_in_net"),
                        CpuClock(), FAST, 0, measures=metric_set())  # fmt: skip
    assert detached.reason is not None and detached.reason.startswith("no gradient reached parameter decoder.")
    assert detached.reason.endswith(".sSE.0.weight")


@needs_smp
def test_a_cancelling_scse_gradient_that_misses_the_networks_one_run_is_judged_where_it_sits(temp_variant) -> None:
    """channels_last in a float16 U-Net (seed 0) read 0.118 on an sSE bias gradient, a sum over the
    image, against 5× the unmodified network's own 0.0176 (one run: one draw of its rounding), and
    every block passed where it sat, with its rounding draws: a correct variant called a mismatch.
    The blocks' check judges the scSE parameters now; a wrong one is still caught there."""
    case = unet_case("channels_last", "train", "float16")
    right = run_case(case, get_variant("channels_last"), CpuClock(), FAST, 0, measures=metric_set())
    assert right.status.value == "ok", right.reason
    assert right.check is not None and right.check.grad_rel_err <= right.check.grad_tolerance

    def doubled_bias_grad(ref: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        module = get_variant("channels_last").build(ref, device, dtype)
        module.sse.Conv1x1.bias.register_hook(lambda g: 2 * g)
        return module

    temp_variant("doubled_bias_grad", doubled_bias_grad, dtypes=("float16",))
    wrong = run_case(dataclasses.replace(case, variant="doubled_bias_grad"), get_variant("doubled_bias_grad"),
                     CpuClock(), FAST, 0, measures=metric_set())  # fmt: skip
    assert wrong.status.value == "mismatch"
    assert (wrong.reason or "").startswith("scSE block decoder.") and "sse.Conv1x1.bias error" in wrong.reason


@needs_smp
def test_float32_is_judged_against_the_unmodified_networks_own_error() -> None:
    result = run_case(unet_case("eager_factored"), get_variant("eager_factored"), CpuClock(), FAST, 0,
                      measures=metric_set())
    assert result.status.value == "ok", result.reason
    check = result.check
    assert check is not None and check.eager_rel_err is not None
    # BatchNorm in eval mode lets activations grow: the network's own float32 error is far above a block's 1e-5
    assert check.eager_rel_err > 1e-5
    assert check.tolerance == pytest.approx(5 * check.eager_rel_err)
    assert check.max_rel_err <= check.tolerance


@needs_smp
def test_the_scse_share_counts_the_blocks_and_nothing_else() -> None:
    ctx = get_context("unet")
    original = make_network(ctx, unet_case("eager"), 0)
    swapped = swap_blocks(ctx, original, get_variant("eager"), torch.device("cpu"), torch.float32, False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        share = block_share(lambda: swapped.network(x), swapped.blocks, torch.device("cpu"))
        assert share is not None and 0.0 < share < 0.5
        # one trace, read for every block and for every other one: each range names its block, so
        # the five are a strict part of the ten whatever the machine's load (two traces were not)
        with block_ranges(swapped.blocks), torch.profiler.profile() as prof:
            swapped.network(x)
    events = list(prof.events())
    whole, half = share_of(events, False), share_of(events, False, which=set(range(1, 10, 2)))
    other = share_of(events, False, which=set(range(0, 10, 2)))
    assert whole is not None and half is not None and other is not None
    assert 0.0 < half < whole and 0.0 < other < whole and half + other == pytest.approx(whole)
    xg = x.clone().requires_grad_(True)
    inputs = [xg, *swapped.network.parameters()]

    def step() -> object:
        return torch.autograd.grad(swapped.network(xg).sum(), inputs, allow_unused=True)

    train = block_share(step, swapped.blocks, torch.device("cpu"))
    assert train is not None and 0.0 < train < 0.5


def cuda_trace(block_kernel_at: tuple[int, int], other_kernel_at: tuple[int, int], direct: bool = False) -> list:
    """Events shaped as torch's kineto parser builds them on CUDA: a CPU op holding the kernel it
    launched, and that kernel again as a device-side event at the time the GPU ran it, on the
    launching thread. A block's range (0–10 µs) and another layer's op (12–13 µs), each launching a
    4 µs kernel: the blocks' true share is one half."""
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import FunctionEvent

    def event(name: str, start: int, end: int, device: DeviceType = DeviceType.CPU) -> FunctionEvent:
        return FunctionEvent(id=0, name=name, thread=1, start_us=start, end_us=end, use_device="cuda",
                             device_type=device)  # fmt: skip

    block, mul, conv = event("scse_block:0", 0, 10), event("aten::mul", 1, 2), event("aten::conv2d", 12, 13)
    block.append_cpu_child(mul)
    (block if direct else mul).append_kernel("k_block", 0, 4)  # direct: Triton's launch, or a graph's replay
    conv.append_kernel("k_conv", 0, 4)
    ran = [event("k_block", *block_kernel_at, DeviceType.CUDA), event("k_conv", *other_kernel_at, DeviceType.CUDA)]
    return [block, mul, conv, *ran]


@pytest.mark.parametrize(("block_kernel_at", "other_kernel_at", "direct"), [
    ((3, 7), (13, 17), False),  # the GPU keeps up: each kernel runs inside its launcher's time
    ((14, 18), (18, 22), False),  # the GPU runs behind: the block's kernel after its range (0.25 before)
    ((14, 18), (2, 6), False),  # ... and another layer's kernel during a block's range (0.25 before)
    ((14, 18), (18, 22), True),  # a kernel launched directly in the block's range (0.0 before)
])  # fmt: skip
def test_the_scse_share_on_cuda_counts_each_kernel_once_for_the_op_that_launched_it(
        block_kernel_at: tuple[int, int], other_kernel_at: tuple[int, int], direct: bool) -> None:
    assert share_of(cuda_trace(block_kernel_at, other_kernel_at, direct), True) == pytest.approx(0.5)


@needs_smp
def test_a_network_run_writes_rows_and_the_report_shows_the_network_and_its_scse_share(tmp_path: Path) -> None:
    frame = harness.run(device="cpu", contexts="unet", variants="eager,smp", shapes="3x64x64", modes="forward",
                        out=str(tmp_path / "run"), **FAST_RUN)
    assert list(frame["context"]) == ["unet", "unet"]
    assert list(frame["status"]) == ["ok", "ok"]
    assert list(frame["blocks"]) == [10, 10]
    assert set(frame["reduction"]) == {16} and set(frame["fusion"]) == {"add"} and set(frame["bias"]) == {True}
    assert frame["scse_share"].between(0, 1, inclusive="neither").all()
    assert frame["torch_flops"].notna().all() and frame["bytes_min"].isna().all()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Inside networks" in report
    section = report.split("## Inside networks")[1].split("\n## ")[0]
    eager_line = next(line for line in section.splitlines() if "| eager " in line)
    share = frame.loc[frame["variant"] == "eager", "scse_share"].item()
    assert f"{100 * share:.1f}%" in eager_line and "| 1.00 " in eager_line
    csv = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(csv["context"]) == ["unet", "unet"]


def test_bad_context_options_are_one_line_each(tmp_path: Path) -> None:
    cases = [
        (["--context", "unte"], "unknown context 'unte'"),
        (["--context", "unet", "--reductions", "2"], "--reductions does not apply with --context"),
        (["--context", "unet", "--shapes", "4x64x64"], "takes 3 input channels"),
        (["--context", "unet", "--shapes", "3x50x64"], "multiples of 32"),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SHIMS), str(ROOT)])}
    for args, message in cases:
        out = subprocess.run([sys.executable, "-m", "harness", "run", "--device", "cpu", *args, "--out",
                              str(tmp_path / "never")], capture_output=True, text=True, env=env, cwd=ROOT,
                             timeout=300)  # fmt: skip
        if smp_unavailable() is not None and "unavailable" in out.stderr:
            continue  # without smp every --context unet says so first, in one line too
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "never").exists()


def test_an_unavailable_context_says_why_in_one_line() -> None:
    from harness.sweep.config import SweepConfig
    from harness.sweep.options import ConfigError

    add_context(get_context("unet").__class__(
        name="needs_lib", description="x", build=lambda: torch.nn.Identity(), is_block=lambda m: False,
        to_reference=lambda m: m, available=lambda: "needs somelib (pip install somelib)"), replace=True)
    try:
        with pytest.raises(ConfigError, match=r"^--context: needs_lib is unavailable here: needs somelib"):
            SweepConfig.build(device="cpu", contexts="needs_lib")
    finally:
        remove_context("needs_lib")


PLUGIN = '''
    import torch
    from variants.contexts import Context
    from variants.reference import ScSE


    class PluginBlock(ScSE):
        """The network's own scSE class: a swapped-in variant is never one."""


    class TinyNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.att1 = PluginBlock(8, reduction=2)
            self.mid = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.att2 = PluginBlock(8, reduction=2)
            self.head = torch.nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.head(self.att2(self.mid(self.att1(self.stem(x)))))


    def reference(block):
        ref = ScSE(block.channels, reduction=2)
        ref.load_state_dict(block.state_dict())
        return ref


    TINY = Context(name="tiny", description="two scSE blocks in a tiny CNN", build=TinyNet,
                   is_block=lambda m: isinstance(m, PluginBlock), to_reference=reference,
                   out_channels=2, reduction=2, bias=False)
'''


def make_context_plugin(root: Path) -> None:
    """An installed-looking package whose ``harness.contexts`` entry point is a ``Context``."""
    (root / "tiny_context.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "tiny_context-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-context\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.contexts]\ntiny = tiny_context:TINY\n")


def test_a_context_from_another_package_runs_from_the_cli(tmp_path: Path) -> None:
    make_context_plugin(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out_dir = tmp_path / "run"
    args = ["--device", "cpu", "--context", "tiny", "--variants", "eager,eager_factored", "--shapes", "3x16x16",
            "--batch-sizes", "2", "--modes", "forward,train", "--max-time", "0.05", "--min-samples", "3",
            "--warmup", "0", "--out", str(out_dir)]  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "harness", "run", *args], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    assert [(r["variant"], r["mode"], r["status"]) for r in rows] == [
        ("eager", "forward", "ok"), ("eager_factored", "forward", "ok"),
        ("eager", "train", "ok"), ("eager_factored", "train", "ok"),
    ]  # fmt: skip
    assert all(r["context"] == "tiny" and r["blocks"] == 2 and r["reduction"] == 2 and r["bias"] is False
               for r in rows)
    assert all(r["grad_rel_err"] is not None for r in rows if r["mode"] == "train")
    assert "## Inside networks" in (out_dir / "report.md").read_text()
    listed = subprocess.run([sys.executable, "-m", "harness", "list"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)  # fmt: skip
    assert "tiny" in listed.stdout and "two scSE blocks in a tiny CNN" in listed.stdout


def tiny_module() -> dict:
    """The plugin's module, executed here: its network, block class and ``Context``."""
    namespace: dict = {"__name__": "tiny_context_inline"}
    exec(textwrap.dedent(PLUGIN), namespace)  # noqa: S102 - the test's own source
    return namespace


@pytest.mark.parametrize("mode", ["forward", "train"])
def test_the_compiled_form_of_a_network_is_checked_and_its_compile_time_kept_apart(mode: str) -> None:
    import dataclasses

    tiny = tiny_module()["TINY"]
    compiled = add_context(dataclasses.replace(tiny, name="tiny_compiled", form="compile", network="tiny"),
                           replace=True)
    try:
        case = Case("eager_factored", "cpu", "float32", mode, 2, 3, 16, 16, 2, "add", False, compiled.name)
        result = run_case(case, get_variant("eager_factored"), CpuClock(), FAST, 0, measures=metric_set())
    finally:
        remove_context("tiny_compiled")
    assert result.status.value == "ok", result.reason
    assert result.first_call is not None and result.first_call.compile_s is not None
    assert result.metrics["blocks"] == 2 and result.metrics["form"] == "compile"
    assert result.metrics["scse_share"] is None  # compiled, the blocks' kernels are fused with the rest
    if mode == "train":
        assert result.check is not None and result.check.grad_rel_err is not None


@needs_smp
@pytest.mark.cuda
@pytest.mark.parametrize(("context", "variant", "dtype", "mode"), [
    ("unet", "triton_fused", "float16", "train"),
    ("unet", "cuda_graph", "float16", "forward"),
    ("unet_graphed", "eager_factored", "float16", "forward"),
    ("unet_compiled", "eager", "float32", "train"),
    ("unet_compiled", "triton_fused", "float16", "forward"),  # failed on an H200 before the fused ops
    ("unet_compiled", "triton_fused", "float16", "train"),
    ("unet_compiled", "cuda_fused", "float16", "forward"),
])  # fmt: skip
def test_networks_on_a_gpu(context: str, variant: str, dtype: str, mode: str) -> None:
    from harness.sweep.runner import clock_for

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    ctx = get_context(context)
    case = Case(variant, "cuda", dtype, mode, 2, 3, 128, 128, ctx.reduction, ctx.fusion, ctx.bias, context)
    result = run_case(case, get_variant(variant), clock_for("cuda", "cold"), FAST, 0, measures=metric_set())
    assert result.status.value == "ok", result.reason
    assert result.metrics["blocks"] == 10
    assert result.figures is not None and result.figures.host_ms > 0 and result.figures.bound in ("host", "device")
    if ctx.form == "eager":
        assert 0 < result.metrics["scse_share"] < 1


@needs_smp
@pytest.mark.parametrize("variant", ["cuda_graph", "graphed_triton_fused"])
def test_a_variant_replaying_its_own_cuda_graph_is_skipped_inside_a_compiled_or_graphed_network(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fullgraph=True would make it an error row; the skip says why, before anything is built."""
    from harness.sweep.runner import skip_reason

    case = Case(variant, "cpu", "float32", "forward", 1, 3, 64, 64, 16, "add", True, "unet_compiled")
    assert skip_reason(case, get_variant(variant), True) == (
        "replays a CUDA graph of its own, which torch.compile cannot trace into unet_compiled")
    eager_network = dataclasses.replace(case, context="unet")
    assert "torch.compile" not in (skip_reason(eager_network, get_variant(variant), True) or "")
    graphed = dataclasses.replace(case, device="cuda", context="unet_graphed")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the context itself runs on CUDA only
    assert (skip_reason(graphed, get_variant(variant), True) or "").startswith(
        "replays a CUDA graph of its own inside unet_graphed's capture")


@needs_smp
@pytest.mark.parametrize("variant", ["compile_reduce_overhead", "compile_max_autotune"])
def test_a_compile_mode_replaying_cuda_graphs_is_skipped_inside_a_compiled_or_graphed_network_on_cuda(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both modes replay CUDA graphs (cudagraph trees) on a GPU, as cuda_graph does: inside another
    compile or capture they were run all the same. On a CPU they compile as the default mode does."""
    from harness.sweep.runner import skip_reason

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for context in ("unet_compiled", "unet_graphed"):
        case = Case(variant, "cuda", "float16", "forward", 1, 3, 64, 64, 16, "add", True, context)
        assert (skip_reason(case, get_variant(variant), True) or "").startswith("replays a CUDA graph of its own")
        eager_network = dataclasses.replace(case, context="unet")
        assert "CUDA graph" not in (skip_reason(eager_network, get_variant(variant), True) or "")
    on_cpu = Case(variant, "cpu", "float32", "forward", 1, 3, 64, 64, 16, "add", True, "unet_compiled")
    assert "CUDA graph" not in (skip_reason(on_cpu, get_variant(variant), True) or "")


def test_every_compiled_network_has_its_own_compile_and_never_falls_back_to_eager() -> None:
    """Compiled as ``torch.compile(network)``, every case's network shared its class's forward in
    dynamo's cache: past ``recompile_limit`` (8) a sweep's 'compiled' networks ran eagerly."""
    from torch._dynamo import config as dynamo_config

    from variants.swap import CompiledNetwork

    net_class = tiny_module()["TinyNet"]
    x = torch.randn(2, 3, 16, 16)
    builds = []
    for k in range(dynamo_config.recompile_limit + 2):
        torch.manual_seed(k)
        network = CompiledNetwork(net_class().eval())
        with torch.no_grad():
            y = network(x[: 1 + k % 2])  # two batch sizes: each build specialises on its own
            assert torch.allclose(y, network._orig_mod(x[: 1 + k % 2]), atol=1e-5)
        builds.append(network)
    assert [b.compiled_graphs for b in builds] == [1] * len(builds)  # compiled, every one of them
    assert [n for n, _ in builds[0].named_parameters()][0].startswith("_orig_mod.")  # names map as compile's


def test_the_first_variant_of_a_compiled_network_counts_no_recompile() -> None:
    """The check compiles the unmodified network too: counted in the whole process, it read as one
    recompile of the timed network for the first variant of each configuration."""
    import dataclasses

    tiny = tiny_module()["TINY"]
    compiled = add_context(dataclasses.replace(tiny, name="tiny_compiled", form="compile", network="tiny"),
                           replace=True)
    try:
        case = Case("eager", "cpu", "float16", "forward", 2, 3, 16, 16, 2, "add", False, compiled.name)
        result = run_case(case, get_variant("eager"), CpuClock(), FAST, 0, measures=metric_set())
    finally:
        remove_context("tiny_compiled")
    assert result.status.value == "ok", result.reason
    assert result.first_call is not None and result.first_call.recompiles == 0


def test_the_seed_form_is_how_the_reference_shows_its_own_error() -> None:
    """A compiled network is held to what the compiled unmodified network costs: the reference runs
    in the seed form for its own low-precision error, never for the float64 truth."""
    from harness.measure.correctness import Trial, expected_of, make_reference

    ref = make_reference(8, 2, "add", False, seed=1)
    x = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(0)).to(torch.float16)
    plain = expected_of(Trial(ref, x, x.clone(), None), ["input"], "float16")
    skewed_form = lambda module: (lambda t: module(t) * 1.01)  # noqa: E731 - a form that is 1% off
    skewed = expected_of(Trial(ref, x, x.clone(), None, seed_form=skewed_form), ["input"], "float16")
    assert torch.equal(plain.output, skewed.output)  # float64 is the truth, whatever the form
    assert plain.seed_error is not None and skewed.seed_error is not None
    assert plain.seed_error < 5e-3 < skewed.seed_error


def test_a_network_run_resumes_and_is_compared_with_itself(tmp_path: Path) -> None:
    """--resume reads the context back (and the reduction, fusion and bias it fixes) and runs only
    what is missing; compare matches the rows on their context."""
    from harness.results.compare import compare

    tiny = add_context(tiny_module()["TINY"], replace=True)
    try:
        out = tmp_path / "run"
        options = dict(device="cpu", contexts=tiny.name, variants="eager,eager_factored", shapes="3x16x16",
                       batch_sizes=2, modes="forward", out=str(out), **FAST_RUN)  # fmt: skip
        first = harness.run(**options)
        assert list(first["status"]) == ["ok", "ok"]
        lines = (out / "results.jsonl").read_text().splitlines()
        (out / "results.jsonl").write_text(lines[0] + "\n")  # as if killed after the first case
        again = harness.run(resume=str(out), **FAST_RUN)
        assert list(again["variant"]) == ["eager", "eager_factored"] and set(again["context"]) == {"tiny"}
        assert len((out / "results.jsonl").read_text().splitlines()) == 2  # only the missing case ran
        result = compare(str(out), str(out))
        assert len(result.cases) == 2 and all(c.fields["context"] == "tiny" for c in result.cases)
    finally:
        remove_context(tiny.name)


@needs_smp
def test_the_network_count_from_one_and_two_samples_is_the_full_batch_count() -> None:
    from harness.measure.flops import fvcore_flops, network_flop_columns

    with torch.random.fork_rng(devices=[]):
        network = get_context("unet").build().float().eval()
    traced = fvcore_flops(network, torch.zeros(3, 3, 64, 64), "forward")
    columns = network_flop_columns("unet", (3, 3, 64, 64), "forward")
    assert traced.flops is not None and columns["fvcore_flops"] == traced.flops
    assert columns["fvcore_uncounted"] == traced.uncounted_text


@needs_smp
def test_a_network_trace_too_large_for_the_host_is_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A case refused as out of memory still got its FLOP columns: fvcore traced the network for real
    at two samples of the full image, with no check, which at 32×3×1024×1024 alone needs gigabytes."""
    import harness.measure.flops as flops

    monkeypatch.setattr(flops, "available_host_bytes", lambda: 2 * 2**30)  # 2 GiB free
    columns = flops.network_flop_columns("unet", (32, 3, 1024, 1024), "forward")
    assert columns["fvcore_flops"] is None or math.isnan(columns["fvcore_flops"])
    assert "fvcore not run: its trace needs about" in str(columns.get("flop_errors") or columns)
    assert columns["torch_flops"] > 0  # the meta-device count needs no memory


def test_a_network_whose_blocks_are_the_harness_scse_swaps_cleanly() -> None:
    """A context whose blocks are ``variants.ScSE`` itself was refused for every variant that builds
    one: the swapped-in block, an ``ScSE`` too, read as "1 original scSE block(s) left"."""
    from dataclasses import replace

    from variants.reference import ScSE
    from variants.swap import swap_blocks

    tiny = tiny_module()
    context = replace(tiny["TINY"], is_block=lambda m: isinstance(m, ScSE))
    original = context.build()
    swapped = swap_blocks(context, original, get_variant("eager"), torch.device("cpu"), torch.float32, False)
    assert len(swapped.blocks) == 2 and all(isinstance(b, ScSE) for b in swapped.blocks)
    assert not any(m is o for m in swapped.network.modules() for o in (original.att1, original.att2))
    shared = context.build()
    shared.att2 = shared.att1  # one block at two paths: a swap by path would leave the original at one
    with pytest.raises(RuntimeError, match="original scSE block"):
        swap_blocks(context, shared, get_variant("eager"), torch.device("cpu"), torch.float32, False)


def test_a_context_declaring_other_blocks_than_it_has_is_refused() -> None:
    """Rows were labelled r4 max bias for blocks that are r2 add without bias, and a variant that
    could run them was skipped for the declared fusion."""
    from dataclasses import replace

    from variants.swap import swap_blocks

    tiny = tiny_module()
    wrong = replace(tiny["TINY"], reduction=4, fusion="max", bias=True)
    with pytest.raises(ValueError, match="block att1 is reduction 2, fusion add, bias False, but the context "
                                         "declares reduction 4, fusion max, bias True"):
        swap_blocks(wrong, wrong.build(), get_variant("eager"), torch.device("cpu"), torch.float32, False)


def test_in_train_mode_a_block_whose_output_feeds_nothing_is_judged_on_its_output_alone() -> None:
    """Its output gets no gradient (nothing the loss reads depends on it), as the unmodified
    network's block gets none: its gradients are not judged, its output is, and the case runs."""
    namespace = tiny_module()

    class DeadBranch(namespace["TinyNet"]):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.mid(self.att1(self.stem(x)))
            self.att2(y)  # computed, never used
            return self.head(y)

    dead = add_context(dataclasses.replace(namespace["TINY"], name="tiny_dead_branch", build=DeadBranch),
                       replace=True)  # fmt: skip
    try:
        case = unet_case("eager", "train", "float32", size=16, context=dead.name)
        result = run_case(case, get_variant("eager"), CpuClock(), FAST, 0, measures=metric_set())
    finally:
        remove_context(dead.name)
    assert result.status.value == "ok", result.reason


def test_a_networks_default_images_have_its_own_input_channels() -> None:
    """A grey-scale network run without --shapes was refused for 3 channels, naming a flag not given."""
    import dataclasses

    from harness.sweep.config import SweepConfig

    grey = add_context(dataclasses.replace(tiny_module()["TINY"], name="tiny_grey", in_channels=1), replace=True)
    try:
        cfg = SweepConfig.build(device="cpu", contexts=grey.name, variants="eager")
        assert cfg.shapes == ((1, 128, 128),)
        assert SweepConfig.build(device="cpu", contexts="unet", variants="eager").shapes == ((3, 128, 128),)
    finally:
        remove_context(grey.name)
