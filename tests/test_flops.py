"""The three FLOP counts agree exactly wherever their conventions overlap."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

from harness.measure.flops import (
    FLOP_COLUMNS,
    analytic_breakdown,
    analytic_flops,
    arithmetic_intensity,
    flop_columns,
    fvcore_flops,
    torch_flops,
)
from variants.reference import FUSIONS, ScSE

# (batch, channels, height, width, reduction): odd sizes, C not divisible by r, 1x1 maps, r = C.
SHAPES = [
    (2, 8, 5, 6, 2),
    (1, 6, 3, 7, 4),
    (3, 16, 4, 4, 16),
    (2, 5, 1, 1, 2),
    (1, 1, 1, 1, 1),
]
MODES = ("forward", "train")


def conv_macs(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of every conv in ``module(x)``, read off the modules with hooks (not the formula)."""
    total = 0

    def hook(conv: torch.nn.Conv2d, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += conv.weight.numel() * out.shape[0] * out.shape[2] * out.shape[3]

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("mode", MODES)
def test_three_counts_agree(shape: tuple[int, ...], fusion: str, bias: bool, mode: str) -> None:
    n, c, h, w, r = shape
    module = ScSE(c, r, fusion, bias)
    x = torch.randn(n, c, h, w)

    fv = fvcore_flops(module, x, mode)
    tc = torch_flops(module, x, mode)
    assert fv.error is None and tc.error is None
    assert fv.uncounted == () and tc.uncounted == ()

    # fvcore: 1 flop per multiply-add, forward only even in train rows.
    assert fv.scope == "forward"
    assert fv.flops == analytic_flops(n, c, h, w, r, fusion, bias, "forward", "mac=1")
    # FlopCounterMode: 2 flops per multiply-add, backward included in train rows.
    assert tc.scope == ("forward" if mode == "forward" else "forward+backward")
    assert tc.flops == analytic_flops(n, c, h, w, r, fusion, bias, mode, "mac=2")

    # Where the conventions differ, they differ by exactly the multiply-adds, counted independently.
    forward_mac2 = analytic_flops(n, c, h, w, r, fusion, bias, "forward", "mac=2")
    assert forward_mac2 - fv.flops == conv_macs(module, x)


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("mode", MODES)
def test_meta_device_counts_like_real_tensors(fusion: str, mode: str) -> None:
    module, x = ScSE(12, 3, fusion, True), torch.randn(2, 12, 4, 5)
    on_meta = torch_flops(module, x, mode, on_meta=True)
    on_cpu = torch_flops(module, x, mode, on_meta=False)
    assert on_meta.flops == on_cpu.flops
    assert on_meta.by_op == on_cpu.by_op


def test_hand_counted_example() -> None:
    # add, no bias, N=1 C=4 K=2 H=W=2: P=16, Q=4. pool 16, MLP 2·(8+8)+2+4=38, cSE product 16,
    # sSE conv 2·16+4=36, sSE product 16, add 16: 138; with 1 flop per multiply-add 138-32=106.
    assert analytic_flops(1, 4, 2, 2, 2, "add", False, "forward", "mac=2") == 138
    assert analytic_flops(1, 4, 2, 2, 2, "add", False, "forward", "mac=1") == 106
    # The README's shortcut for add without bias: 4P + Q + N·(K + C) + m·(P + 2·N·C·K).
    n, c, h, w, k = 3, 32, 7, 9, 8
    p, q = n * c * h * w, n * h * w
    shortcut = 4 * p + q + n * (k + c) + 2 * (p + 2 * n * c * k)
    assert analytic_flops(n, c, h, w, c // k, "add", False, "forward") == shortcut


def test_train_costs_more_than_forward_and_breakdown_sums() -> None:
    for fusion in FUSIONS:
        fwd = analytic_flops(4, 32, 16, 16, 4, fusion, True, "forward")
        train = analytic_flops(4, 32, 16, 16, 4, fusion, True, "train")
        parts = analytic_breakdown(4, 32, 16, 16, 4, fusion, True, "train")
        assert sum(parts.values()) == train
        assert 2 * fwd < train < 5 * fwd


def test_elementwise_work_outweighs_convolutions_for_scse() -> None:
    n, c, h, w = 8, 64, 32, 32
    total = analytic_flops(n, c, h, w, 16, "add", False, "forward")
    macs = analytic_flops(n, c, h, w, 16, "add", False, "forward", "mac=2") - analytic_flops(
        n, c, h, w, 16, "add", False, "forward", "mac=1"
    )
    assert total - 2 * macs > 2 * macs


def test_fvcore_is_quiet(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        count = fvcore_flops(ScSE(8, 2, "gate", True), torch.randn(2, 8, 4, 4), "forward")
    out, err = capfd.readouterr()
    assert count.flops and count.flops > 0
    assert out == "" and err == ""
    assert [r.getMessage() for r in caplog.records] == []
    assert [str(w.message) for w in caught] == []


def test_plain_fvcore_would_skip_the_elementwise_ops() -> None:
    """The handles matter: without them fvcore drops sigmoid and the products."""
    from fvcore.nn import FlopCountAnalysis

    module, x = ScSE(8, 2, "add"), torch.randn(2, 8, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = FlopCountAnalysis(module, (x,)).unsupported_ops_warnings(False).tracer_warnings("none")
        plain_total = plain.total()
        skipped = set(plain.unsupported_ops())
    assert {"aten::sigmoid", "aten::mul", "aten::add"} <= skipped
    assert plain_total < fvcore_flops(module, x, "forward").flops  # type: ignore[operator]


class WithTanh(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * x


def test_ops_without_a_rule_are_reported() -> None:
    x = torch.randn(2, 3, 4, 4)
    fv = fvcore_flops(WithTanh(), x, "forward")
    tc = torch_flops(WithTanh(), x, "train")
    assert fv.uncounted == ("aten::tanh",)
    assert "aten.tanh" in tc.uncounted and "aten.tanh_backward" in tc.uncounted
    assert fv.flops == x.numel()  # the product is counted, tanh is not
    assert fv.uncounted_text == "aten::tanh"


def test_counters_never_raise() -> None:
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    fv = fvcore_flops(Broken(), torch.randn(1, 2, 2, 2), "forward")
    tc = torch_flops(Broken(), torch.randn(1, 2, 2, 2), "train")
    assert fv.flops is None and "boom" in str(fv.error)
    assert tc.flops is None and "boom" in str(tc.error)


def test_flop_columns_for_a_row() -> None:
    cols = flop_columns((2, 8, 5, 6), 2, "max", True, "train")
    assert tuple(cols) == FLOP_COLUMNS
    assert cols["analytic_flops"] == cols["torch_flops"] == analytic_flops(2, 8, 5, 6, 2, "max", True, "train")
    assert cols["fvcore_flops"] == analytic_flops(2, 8, 5, 6, 2, "max", True, "forward", "mac=1")
    assert cols["fvcore_scope"] == "forward"
    assert cols["fvcore_uncounted"] == "" and cols["torch_uncounted"] == ""


def test_arithmetic_intensity() -> None:
    assert arithmetic_intensity(1000, 250) == 4.0
    assert arithmetic_intensity(None, 250) is None
    assert arithmetic_intensity(1000, None) is None
    assert arithmetic_intensity(1000, 0) is None


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        analytic_flops(1, 4, 2, 2, 2, "add", False, "backward")
    with pytest.raises(ValueError, match="fusion"):
        analytic_flops(1, 4, 2, 2, 2, "sum", False, "forward")
    with pytest.raises(ValueError, match="convention"):
        analytic_flops(1, 4, 2, 2, 2, "add", False, "forward", "macs")
    with pytest.raises(ValueError, match="hidden"):
        analytic_flops(1, 4, 2, 2, 8, "add", False, "forward")


def test_flop_memo_counts_once_keeps_a_bounded_number_and_hands_out_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.measure import flops

    counted: list[tuple[object, ...]] = []
    real = flops.flop_columns
    monkeypatch.setattr(flops, "flop_columns", lambda *a, **k: counted.append(a) or real(*a, **k))
    memo = flops.FlopMemo(size=1)
    first = memo.columns((2, 8, 5, 6), 2, "max", True, "train")
    assert first == real((2, 8, 5, 6), 2, "max", True, "train")
    first["torch_flops"] = -1  # the caller's copy: the memo is unchanged
    assert memo.columns((2, 8, 5, 6), 2, "max", True, "train")["torch_flops"] > 0
    assert len(counted) == 1
    memo.columns((2, 8, 5, 6), 2, "max", True, "forward")  # evicts the train count (size 1)
    memo.columns((2, 8, 5, 6), 2, "max", True, "train")
    assert len(counted) == 3


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("bias", [False, True])
def test_fvcore_counted_at_one_and_two_samples_is_the_full_batch_count(fusion: str, bias: bool) -> None:
    """The extrapolation is exact: the gate's σ(α) is the part not per sample, so a plain ×N would be off."""
    from harness.measure.flops import fvcore_flops, fvcore_forward

    for shape in ((3, 16, 5, 7), (7, 8, 4, 4)):
        reference = ScSE(shape[1], 4, fusion, bias)
        with torch.no_grad():
            traced = fvcore_flops(reference, torch.zeros(shape), "forward")
        counted = fvcore_forward(shape, 4, fusion, bias)
        assert counted.flops == traced.flops and counted.by_op == traced.by_op
        assert counted.uncounted == traced.uncounted and counted.scope == traced.scope


def test_a_failed_small_trace_is_traced_again_at_the_full_batch() -> None:
    from harness.measure.flops import FlopCount, affine_in_batch

    asked: list[int] = []

    def count_at(batch: int) -> FlopCount:
        asked.append(batch)
        return FlopCount(None, "mac=1", "forward", error=f"failed at {batch}")

    assert affine_in_batch(count_at, 5).error == "failed at 5" and asked == [1, 2, 5]
    assert affine_in_batch(lambda b: FlopCount(10 * b + 3, "mac=1", "forward", by_op=(("mul", 10 * b + 3),)),
                           6).by_op == (("mul", 63),)  # fmt: skip
