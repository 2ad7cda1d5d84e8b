"""FLOPs of one scSE configuration, counted three ways, each with its convention in the open.

Papers and tools mix up multiply-adds and FLOPs, and most counters drop element-wise work,
which is most of scSE's. So every row carries three counts:

* ``fvcore_flops`` -- fvcore's ``FlopCountAnalysis`` (one multiply-add = 1 flop), traced with
  ``torch.jit`` on the eager reference, with handles added for the element-wise ops fvcore
  otherwise skips. fvcore traces the forward pass only: in ``train`` rows it is the forward
  share, and ``fvcore_scope`` says so.
* ``torch_flops`` -- ``torch.utils.flop_counter.FlopCounterMode`` (one multiply-add = 2 flops),
  with formulas added for pooling, reductions and element-wise ops, forward and backward.
* ``analytic_flops`` -- the closed form in :data:`ANALYTIC_FORMULA_MD` (2 flops per multiply-add),
  computed from the sizes alone in ``harness.measure.flop_formula``.

All three share one rule for everything that is not a multiply-add (see
:data:`ANALYTIC_FORMULA_MD`), so they must agree exactly once the multiply-adds are weighted alike;
``tests/test_flops.py`` checks that they do. This module runs the two counters and fills a row's
FLOP columns; the formula's names are importable from here too.
"""
from __future__ import annotations

import copy
import logging
import math
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from harness.measure.bandwidth import weight_count

# ANALYTIC_FORMULA_MD and analytic_breakdown are only re-exported: the formula's names stay importable from here.
from harness.measure.flop_formula import ANALYTIC_FORMULA_MD as ANALYTIC_FORMULA_MD
from harness.measure.flop_formula import analytic_breakdown as analytic_breakdown
from harness.measure.flop_formula import analytic_flops, check_mode
from harness.measure.memory import available_host_bytes
from variants.reference import ScSE

SCOPE_FORWARD = "forward"
SCOPE_TRAIN = "forward+backward"

# -- element-wise rules shared by both counters -------------------------------------------------

#: aten ops that cost 1 flop per output element.
ELEMENTWISE_OPS: tuple[str, ...] = (
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "neg_",
    "maximum", "minimum", "relu", "relu_", "sigmoid", "sigmoid_", "sigmoid_backward",
    "threshold_backward", "eq", "ne", "gt", "lt", "ge", "le",
)
#: aten reductions: 1 flop per input element.
REDUCTION_OPS: tuple[str, ...] = ("mean", "sum", "_adaptive_avg_pool2d")
#: aten ops that only move, select or create data: 0 flops, by the convention of ANALYTIC_FORMULA_MD.
ZERO_COST_OPS: frozenset[str] = frozenset({
    "view", "_unsafe_view", "reshape", "_reshape_alias", "expand", "expand_as", "detach", "alias",
    "t", "transpose", "permute", "squeeze", "unsqueeze", "as_strided", "slice", "select", "narrow",
    "split", "split_with_sizes", "unbind", "cat", "stack", "clone", "copy_", "contiguous", "_to_copy",
    "to", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "new_zeros",
    "new_ones", "zeros_like", "ones_like", "full_like", "fill_", "zero_", "lift_fresh", "where",
    "masked_fill", "masked_fill_", "_local_scalar_dense",
})


@dataclass(frozen=True)
class FlopCount:
    """One counter's answer: the total, its convention and scope, and what it could not count."""

    flops: int | None
    #: "mac=1" or "mac=2": what one multiply-add counts.
    convention: str
    #: "forward" or "forward+backward".
    scope: str
    #: Ops the counter met without a rule (counted as 0); empty when everything was counted.
    uncounted: tuple[str, ...] = ()
    #: Flops per op, for tables and for finding where a disagreement comes from.
    by_op: tuple[tuple[str, int], ...] = ()
    #: Why there is no count (library missing, tracing failed), else None.
    error: str | None = None

    @property
    def uncounted_text(self) -> str:
        """The uncounted ops as one cell: ``""`` when none."""
        return ", ".join(self.uncounted)


# -- fvcore -------------------------------------------------------------------------------------


def _numel(shape: Sequence[int] | None) -> int:
    """Elements of a shape (0 for none), as both counters' rules count them."""
    return math.prod(shape) if shape is not None else 0


def _fvcore_handles() -> dict[str, Callable[[list[Any], list[Any]], Any]]:
    """Handles for the ops fvcore skips, under the shared element-wise rules."""
    from fvcore.nn.jit_handles import conv_flop_jit, get_shape

    def per_output_element(inputs: list[Any], outputs: list[Any]) -> int:
        return _numel(get_shape(outputs[0]))

    def per_input_element(inputs: list[Any], outputs: list[Any]) -> int:
        return _numel(get_shape(inputs[0]))

    def free(inputs: list[Any], outputs: list[Any]) -> int:
        return 0

    def conv_with_bias(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
        # fvcore's handle counts the multiplies only; a bias adds one flop per output element.
        counts = Counter(conv_flop_jit(inputs, outputs))
        if get_shape(inputs[2]) is not None:
            counts["conv_bias"] += _numel(get_shape(outputs[0]))
        return counts

    handles: dict[str, Callable[[list[Any], list[Any]], Any]] = {
        f"aten::{op}": per_output_element for op in ELEMENTWISE_OPS
    }
    # the TorchScript graph fvcore reads names the pool without the underscore torch's dispatch shows
    handles.update({f"aten::{op.lstrip('_')}": per_input_element for op in REDUCTION_OPS})
    handles.update({f"aten::{op}": free for op in ZERO_COST_OPS})
    handles["aten::_convolution"] = conv_with_bias
    return handles


@contextmanager
def _quiet(logger_names: Sequence[str]) -> Iterator[None]:
    """Silence Python warnings and the named loggers, so no tracing chatter reaches the screen."""
    loggers = [logging.getLogger(name) for name in logger_names]
    saved = [lg.disabled for lg in loggers]
    try:
        for lg in loggers:
            lg.disabled = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, was in zip(loggers, saved, strict=True):
            lg.disabled = was


def fvcore_flops(module: torch.nn.Module, x: torch.Tensor, mode: str) -> FlopCount:
    """fvcore's count (1 flop per multiply-add) of ``module(x)``, traced with ``torch.jit``.

    ``module`` must be eager (jit tracing fails on compiled modules): pass the reference. fvcore
    sees only the forward graph, so in ``train`` mode the count is the forward pass's and the
    scope says "forward". Never raises: a missing fvcore or a failed trace gives ``flops=None``.
    """
    check_mode(mode)
    try:
        with _quiet(("fvcore",)):  # importing fvcore already trips torch.jit's deprecation warnings
            from fvcore.nn import FlopCountAnalysis
    except ImportError as exc:  # pragma: no cover - fvcore is a dependency
        return FlopCount(None, "mac=1", SCOPE_FORWARD, error=f"fvcore not importable: {exc}")
    try:
        with _quiet(("fvcore", "fvcore.nn.jit_analysis")), torch.no_grad():
            analysis = (
                FlopCountAnalysis(module, (x,))
                .set_op_handle(**_fvcore_handles())
                .unsupported_ops_warnings(False)
                .uncalled_modules_warnings(False)
                .tracer_warnings("none")
            )
            total = int(analysis.total())
            by_op = tuple(sorted((str(k), int(v)) for k, v in analysis.by_operator().items()))
            uncounted = tuple(sorted(analysis.unsupported_ops()))
    except Exception as exc:  # noqa: BLE001 - a metric must never stop a run
        return FlopCount(None, "mac=1", SCOPE_FORWARD, error=f"fvcore failed: {type(exc).__name__}: {exc}")
    return FlopCount(total, "mac=1", SCOPE_FORWARD, uncounted, by_op)


# -- torch.utils.flop_counter -------------------------------------------------------------------


def _per_output_element(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return _numel(out_shape)


def _per_input_element(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return _numel(args[0])


def _shape_of(t: Any) -> Any:
    return t.shape if isinstance(t, torch.Tensor) else t


def _conv_with_bias(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """Torch's own conv formula (multiply-adds only), plus one flop per output element for a bias."""
    # args: input, weight, bias (None without), stride, padding, dilation, transposed, ...
    flops = int(flop_registry[torch.ops.aten.convolution](*args, out_val=out_val, **kwargs))
    return flops + (_numel(_shape_of(out_val)) if args[2] is not None else 0)


def _conv_backward_with_bias(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """Torch's own conv backward formula, plus the bias gradient: a sum over grad_out."""
    # args: grad_out, input, weight, bias_sizes, stride, padding, dilation, transposed,
    # output_padding, groups, output_mask.
    flops = int(flop_registry[torch.ops.aten.convolution_backward](*args, out_val=out_val, **kwargs))
    output_mask = args[10]
    return flops + (_numel(_shape_of(args[0])) if output_mask[2] else 0)


# FlopCounterMode passes raw tensors (not shapes) to formulas marked like this.
_conv_with_bias._get_raw = True  # type: ignore[attr-defined]
_conv_backward_with_bias._get_raw = True  # type: ignore[attr-defined]


def torch_custom_mapping() -> dict[Any, Callable[..., int]]:
    """FlopCounterMode formulas for the ops it does not count, under the shared rules."""
    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}
    for op in ELEMENTWISE_OPS:
        if hasattr(aten, op):
            mapping[getattr(aten, op)] = _per_output_element
    for op in REDUCTION_OPS:
        mapping[getattr(aten, op)] = _per_input_element
    # The pooling backward writes a gradient of the input's shape: one division per element.
    mapping[aten._adaptive_avg_pool2d_backward] = _per_output_element
    for op in (aten.convolution, aten._convolution):
        mapping[op] = _conv_with_bias
    mapping[aten.convolution_backward] = _conv_backward_with_bias
    return mapping


class _FlopCounter(FlopCounterMode):
    """FlopCounterMode that also remembers the ops it met with no formula and no zero-cost rule."""

    def __init__(self) -> None:
        super().__init__(display=False, custom_mapping=torch_custom_mapping())
        self.uncounted: Counter[str] = Counter()

    def _count_flops(self, func_packet: Any, out: Any, args: Any, kwargs: Any) -> Any:
        # Called once per op that FlopCounterMode could not decompose further.
        if func_packet not in self.flop_registry:
            name = getattr(func_packet, "__name__", str(func_packet))
            if name not in ZERO_COST_OPS:
                self.uncounted[f"aten.{name}"] += 1
        return super()._count_flops(func_packet, out, args, kwargs)


def torch_flops(module: torch.nn.Module, x: torch.Tensor, mode: str, *, on_meta: bool = True) -> FlopCount:
    """FlopCounterMode's count (2 flops per multiply-add) of ``module(x)``, with backward in train.

    Forward runs under ``no_grad`` (``inference_mode`` made the counter read 0 in some torch
    versions). Train runs ``module(x)`` and its backward with gradients for x and every parameter.
    With ``on_meta`` the module and input are copied to the meta device, so nothing is computed.
    """
    check_mode(mode)
    try:
        if on_meta:
            module = copy.deepcopy(module).to("meta")
            x = torch.empty(x.shape, dtype=x.dtype, device="meta")
        counter = _FlopCounter()
        if mode == "forward":
            with torch.no_grad(), counter:
                module(x)
        else:
            x = x.detach().requires_grad_(True)
            with torch.enable_grad(), counter:
                y = module(x)
                y.backward(torch.ones_like(y))
    except Exception as exc:  # noqa: BLE001 - a metric must never stop a run
        return FlopCount(None, "mac=2", SCOPE_FORWARD if mode == "forward" else SCOPE_TRAIN,
                         error=f"FlopCounterMode failed: {type(exc).__name__}: {exc}")
    by_op = tuple(sorted((str(k), int(v)) for k, v in counter.get_flop_counts().get("Global", {}).items()))
    return FlopCount(
        int(counter.get_total_flops()),
        "mac=2",
        SCOPE_FORWARD if mode == "forward" else SCOPE_TRAIN,
        tuple(sorted(counter.uncounted)),
        by_op,
    )


def arithmetic_intensity(flops: int | float | None, bytes_moved: int | float | None) -> float | None:
    """FLOPs per byte moved; None when either is unknown or no bytes move."""
    if flops is None or bytes_moved is None or bytes_moved <= 0:
        return None
    return float(flops) / float(bytes_moved)


# -- what the runner calls ----------------------------------------------------------------------

#: Columns :func:`flop_columns` fills, in report order.
FLOP_COLUMNS: tuple[str, ...] = (
    "fvcore_flops", "fvcore_scope", "fvcore_uncounted", "torch_flops", "torch_uncounted", "analytic_flops",
)


def affine_in_batch(count_at: Callable[[int], FlopCount], batch: int) -> FlopCount:
    """The count at ``batch`` from counts at batches 1 and 2, when it is affine in the batch: every
    op here does per-sample work, plus at most a fixed part (the gate's σ(α), once per call), so
    count(N) = count(1) + (N − 1)·(count(2) − count(1)), op by op. jit tracing runs the model for
    real on the CPU: two traces of one or two samples instead of one of N (a 32×64×128×128 block
    took 0.31 s, a sample 0.01 s; a network at 8×3×512×512, seconds). A failed small trace is
    traced again at ``batch``, so that its error is the real one."""
    if batch <= 2:
        return count_at(batch)
    one, two = count_at(1), count_at(2)
    if one.flops is None or two.flops is None or one.uncounted != two.uncounted:
        return count_at(batch)
    ones, twos = dict(one.by_op), dict(two.by_op)
    by_op = tuple(sorted((op, ones.get(op, 0) + (batch - 1) * (twos.get(op, 0) - ones.get(op, 0)))
                         for op in ones.keys() | twos.keys()))  # fmt: skip
    return replace(one, flops=one.flops + (batch - 1) * (two.flops - one.flops), by_op=by_op)


def trace_refused(needed: int) -> FlopCount | None:
    """fvcore's count, not made, where its trace needs more host memory than is available (an
    overcommitted allocation would have the kernel kill the sweep); None where it fits."""
    available = available_host_bytes()
    if available is None or needed <= available:
        return None
    return FlopCount(None, "mac=1", SCOPE_FORWARD, error=f"fvcore not run: its trace needs about "
                                                        f"{needed / 2**30:,.1f} GiB; {available / 2**30:,.1f} GiB "
                                                        "is available")  # fmt: skip


def fvcore_forward(shape: tuple[int, int, int, int], reduction: int, fusion: str, bias: bool) -> FlopCount:
    """fvcore's count of a fresh reference: traced on the CPU in float32 (jit tracing needs real
    tensors), at one and two samples and extrapolated (``affine_in_batch``). Forward only, so one
    count serves both modes."""
    n, c, h, w = shape
    # the trace runs for real at two samples (input, a few intermediates, output) beside the weights
    refused = trace_refused(4 * (2 * 6 * c * h * w + weight_count(c, reduction, fusion, bias)))
    if refused is not None:
        return refused
    reference = ScSE(c, reduction, fusion, bias)

    def at(batch: int) -> FlopCount:
        with torch.no_grad():
            return fvcore_flops(reference, torch.zeros(batch, c, h, w), "forward")

    return affine_in_batch(at, n)


def flop_columns(
    shape: tuple[int, int, int, int], reduction: int, fusion: str, bias: bool, mode: str,
    fvcore: FlopCount | None = None,
) -> dict[str, object]:
    """The FLOP columns of a row, counted on a fresh eager reference of the configuration.

    FlopCounterMode runs on the meta device, so it computes nothing; ``fvcore``: the configuration's
    ``fvcore_forward`` count when the caller has it already. Errors land in the ``*_uncounted`` cells.
    """
    n, c, h, w = shape
    check_mode(mode)
    fv = fvcore if fvcore is not None else fvcore_forward(shape, reduction, fusion, bias)
    with torch.device("meta"):  # counted there: nothing allocated, whatever the size
        reference = ScSE(c, reduction, fusion, bias)
    tc = torch_flops(reference, torch.empty(shape, device="meta"), mode)
    return _columns(fv, tc, analytic_flops(n, c, h, w, reduction, fusion, bias, mode, "mac=2"))


def _columns(fv: FlopCount, tc: FlopCount, analytic: int | None) -> dict[str, object]:
    """``FLOP_COLUMNS`` from the two counters' results and the closed-form count (None: none)."""
    return {
        "fvcore_flops": fv.flops,
        "fvcore_scope": fv.scope,
        "fvcore_uncounted": fv.error or fv.uncounted_text,
        "torch_flops": tc.flops,
        "torch_uncounted": tc.error or tc.uncounted_text,
        "analytic_flops": analytic,
    }


class FlopMemo:
    """``flop_columns`` counted once per configuration and mode, for the last ``size`` of them.

    The counts depend on the configuration alone, never on the variant, dtype or device, and a sweep
    walks a configuration's variants in a row (``harness.sweep.cases.expand``): the first variant
    pays for the count, the rest reuse it. fvcore's forward trace (which runs the full shape on the
    CPU) is shared by both modes. Owned by whoever counts (the run's ``metrics.Flops``), so nothing
    is remembered between runs or tests.
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._fvcore: OrderedDict[tuple[object, ...], FlopCount] = OrderedDict()
        self._columns: OrderedDict[tuple[object, ...], dict[str, object]] = OrderedDict()

    def columns(self, shape: tuple[int, int, int, int], reduction: int, fusion: str, bias: bool,
                mode: str) -> dict[str, object]:
        """A copy of the configuration's FLOP columns (counted on the first ask)."""
        key = (tuple(shape), reduction, fusion, bias, mode)
        if key not in self._columns:
            config = key[:4]
            if config not in self._fvcore:
                self._remember(self._fvcore, config, fvcore_forward(shape, reduction, fusion, bias))
            self._fvcore.move_to_end(config)
            self._remember(self._columns, key, flop_columns(shape, reduction, fusion, bias, mode,
                                                            self._fvcore[config]))  # fmt: skip
        self._columns.move_to_end(key)
        return dict(self._columns[key])

    def network_columns(self, context: str, shape: tuple[int, int, int, int], mode: str) -> dict[str, object]:
        """A copy of the FLOP columns of a context's unmodified network on an input of ``shape``
        (counted on the first ask): fvcore's forward and FlopCounterMode's, no analytic count."""
        key = ("network", context, tuple(shape), mode)
        if key not in self._columns:
            self._remember(self._columns, key, network_flop_columns(context, shape, mode))
        self._columns.move_to_end(key)
        return dict(self._columns[key])

    def _remember(self, table: OrderedDict[tuple[object, ...], Any], key: tuple[object, ...], value: Any) -> None:
        table[key] = value
        while len(table) > self.size:
            table.popitem(last=False)


def network_flop_columns(context: str, shape: tuple[int, int, int, int], mode: str) -> dict[str, object]:
    """The FLOP columns of a context's unmodified network (``variants.contexts``): fvcore traces it
    on the CPU in float32 (at one and two samples, ``affine_in_batch``); FlopCounterMode runs on the
    meta device."""
    from variants.contexts import get_context

    check_mode(mode)
    found = get_context(context)
    with torch.random.fork_rng(devices=[]):  # the weights do not change the count; the caller's RNG is left alone
        network = found.build().float().eval()
    _, c, h, w = shape
    # the trace runs the network for real at two samples: at most what a forward case of that size holds
    fv = trace_refused(found.peak.bytes("forward", 2 * c * h * w)) or affine_in_batch(
        lambda batch: fvcore_flops(network, torch.zeros(batch, *shape[1:]), "forward"), shape[0])
    return _columns(fv, torch_flops(network, torch.empty(shape, device="meta"), mode), None)
