"""Conformance: does a variant compute the reference's function? Reusable by any variant's author.

``check_variant("name")`` runs the variant on every configuration it declares (dtype × mode ×
fusion × bias × reduction) and, for each, on several inputs: a main one, batch 1, odd sizes
(C=3, H=7, W=5), a non-contiguous view and a channels_last tensor. Each run must give the right
shape, dtype and device, finite values within the dtype's tolerance of the float64 reference, leave
its input (and the reference it was built from) unchanged, and answer a second, different input
just as well (no stale buffers). In train mode the input's gradient and every parameter's gradient
must match the reference's, parameter by parameter; a variant whose parameters are named otherwise
sets ``reference_names`` (its name → the reference's) on the module it builds.

Every failure is collected, then raised together as one ``ConformanceError`` (an AssertionError)
whose message lists them, so that pytest shows all of them at once::

    from harness.testing import check_variant
    check_variant("my_variant")                        # every declared configuration, on CPU
    check_variant("my_variant", device="cuda", modes="forward", dtypes="float16")

For pytest, ``pytest_params()`` gives one parametrized case per variant × configuration, with
unsupported and unavailable ones skipped with their reason (see tests/test_conformance.py).
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.measure.correctness import normwise_error, tolerance
from variants.reference import FUSIONS, ScSE
from variants.registry import DTYPES, MODES, Variant, get_variant, list_variants
from variants.tags import bias_unsupported, compute_dtype, supported_biases, tag
from variants.weights import parameter_names

__all__ = [
    "INPUTS", "ConformanceError", "ConformanceReport", "Config", "Failure", "InputSpec", "case_tolerance",
    "check_config", "check_run", "check_variant", "configurations", "parameter_names", "pytest_params",
    "supported_biases", "tag", "tie_free_cotangent", "torch_threads",
]  # fmt: skip

#: Reductions checked by default: the seed's 2 and smp's/SENet's 16 (1 hidden channel at C=16).
DEFAULT_REDUCTIONS: tuple[int, ...] = (2, 16)
#: Where a gradient is ill-conditioned, a variant may miss it by this multiple of PyTorch's own
#: error in the same precision (see ``grad_tolerances``).
EAGER_FACTOR = 2.0


@dataclass(frozen=True)
class InputSpec:
    """One input the suite feeds a variant: its size and its memory layout."""

    name: str
    batch: int
    channels: int
    height: int
    width: int
    layout: str = "contiguous"  # or "non_contiguous", "channels_last"
    #: The values are ``offset + scale * N(0, 1)``: a large offset makes half-precision sums overflow.
    scale: float = 1.0
    offset: float = 0.0

    def make(self, seed: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        """A normal input drawn in float32 on the CPU (the same on every device)."""
        gen = torch.Generator().manual_seed(seed)
        n, c, h, w = self.batch, self.channels, self.height, self.width
        size = (n, c, 2 * w, h) if self.layout == "non_contiguous" else (n, c, h, w)
        x = (self.offset + self.scale * torch.randn(size, generator=gen)).to(device=device, dtype=dtype)
        if self.layout == "non_contiguous":
            # Every other row of a wider tensor, then H and W swapped: contiguous in neither NCHW
            # nor NHWC, and H, W can't be merged by .view (as a transposed activation can't).
            x = x[:, :, ::2].transpose(2, 3)
        elif self.layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        return x


#: The inputs every configuration is checked on.
INPUTS: tuple[InputSpec, ...] = (
    InputSpec("main", 2, 16, 8, 8),
    InputSpec("batch1", 1, 16, 8, 8),
    InputSpec("odd", 2, 3, 7, 5),
    InputSpec("non_contiguous", 2, 16, 8, 8, "non_contiguous"),
    InputSpec("channels_last", 2, 16, 8, 8, "channels_last"),
)
INPUTS_BY_NAME: dict[str, InputSpec] = {spec.name: spec for spec in INPUTS}


@dataclass(frozen=True)
class Config:
    """A configuration of the math: what the reference is built with, and how it is run."""

    dtype: str
    mode: str
    fusion: str
    bias: bool
    reduction: int

    @property
    def label(self) -> str:
        return f"{self.dtype}-{self.mode}-{self.fusion}-bias{int(self.bias)}-r{self.reduction}"


@dataclass(frozen=True)
class Failure:
    """One thing that went wrong, on one configuration and input."""

    variant: str
    config: Config
    input: str
    problem: str

    def __str__(self) -> str:
        return f"{self.variant} [{self.config.label}, input {self.input}]: {self.problem}"


class ConformanceError(AssertionError):
    """A variant failed conformance; ``failures`` lists every problem found."""

    def __init__(self, variant: str, failures: Sequence[Failure], checked: int, note: str | None = None) -> None:
        self.variant = variant
        self.failures = list(failures)
        lines = [f"variant {variant!r} failed {len(self.failures)} conformance check(s) in {checked} run(s):"]
        lines += [f"  - {f}" for f in self.failures]
        super().__init__(f"variant {variant!r}: {note}" if note else "\n".join(lines))


@dataclass
class ConformanceReport:
    """What ``check_variant`` did: runs checked, configurations skipped (with why) and failures."""

    variant: str
    checked: list[tuple[Config, str]] = field(default_factory=list)
    skipped: list[tuple[Config, str]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> ConformanceReport:
        """Raise ``ConformanceError`` listing every failure; also when nothing at all was checked."""
        if self.failures:
            raise ConformanceError(self.variant, self.failures, len(self.checked))
        if not self.checked:
            reasons = "; ".join(sorted({r for _, r in self.skipped})) or "no configuration requested"
            raise ConformanceError(self.variant, [], 0, note=f"nothing was checked: {reasons}")
        return self


# --- what a variant declares ---------------------------------------------------------------------


def unsupported(variant: Variant, device: str, config: Config) -> str | None:
    """Why ``variant`` can't run ``config`` on ``device``, or None: the registry's answer plus bias."""
    reason = variant.unsupported(device, config.dtype, config.mode, config.fusion)
    return reason or bias_unsupported(variant, config.bias)


def case_tolerance(variant: Variant, dtype: str, device: torch.device | str, grad: bool = False) -> float:
    """The tolerance a variant is held to: its dtype's, or its compute dtype's when that is looser.

    An AMP variant takes float32 input but computes in float16 (tag ``compute_dtype``), so it is
    held to float16's tolerance; a float16 input is never held to better than float16's.
    """
    return max(tolerance(dtype, device, grad), tolerance(compute_dtype(variant, dtype), device, grad))


# --- the checks ----------------------------------------------------------------------------------


def _seed(*parts: object) -> int:
    return zlib.crc32(":".join(map(str, parts)).encode())


def make_reference(config: Config, channels: int, seed: int) -> ScSE:
    """A float32 CPU reference with seeded weights; the gate random, so swapped branches show."""
    reduction = min(config.reduction, channels)  # C=3 can't have 16: the largest that fits
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(seed, channels, reduction, config.fusion, config.bias))
        ref = ScSE(channels, reduction, config.fusion, config.bias)
        if config.fusion == "gate":
            torch.nn.init.normal_(ref.gate, std=1.0)
    return ref.eval()


def tie_free_cotangent(ref: ScSE, x: torch.Tensor, grad_out: torch.Tensor, margin: float) -> torch.Tensor:
    """``grad_out`` with zeros where ``max(x·c, x·s)`` is a near tie, so the gradient is well defined.

    max is not differentiable where its arguments are equal: a rounding of c or s flips which
    branch gets the gradient there, and each flip moves a weight's gradient by a whole term.
    Where |c − s| is within ``margin`` (the case's tolerance: how far a correct variant's c and s
    may be from the float64 ones) the cotangent is zeroed, so the loss no longer depends on the
    branch choice there, and every correct variant must agree on the gradient elsewhere.
    """
    with torch.no_grad():
        x64 = x.to(device="cpu", dtype=torch.float64)
        ref64 = ref.to(torch.float64) if next(ref.parameters()).dtype != torch.float64 else ref
        c = ref64.cse.fc(ref64.cse.avg_pool(x64))  # (N, C, 1, 1)
        s = torch.sigmoid(ref64.sse.Conv1x1(x64))  # (N, 1, H, W)
        tie = (c - s).abs() < margin
    return grad_out.masked_fill(tie.expand_as(grad_out), 0.0)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _compare_grads(
    fn: object, params: dict[str, torch.nn.Parameter], grads: dict[str, torch.Tensor | None],
    ref_grads: dict[str, torch.Tensor], allowed: Callable[[str, float], float],
) -> list[str]:
    """Every parameter's gradient against the reference's, matched by (mapped) name."""
    problems = []
    mapping = parameter_names(fn)
    seen: set[str] = set()
    for name in params:
        ref_name = mapping[name]
        if ref_name not in ref_grads:
            problems.append(f"parameter {name!r} (as {ref_name!r}) has no counterpart in the reference; "
                            "set reference_names on the built module to map it")
            continue
        seen.add(ref_name)
        got = grads[name]
        if got is None:
            problems.append(f"no gradient reached parameter {name!r}")
            continue
        expected = ref_grads[ref_name]
        if got.numel() != expected.numel():
            problems.append(f"gradient of {name!r} has shape {tuple(got.shape)}, the reference's "
                            f"{ref_name!r} {tuple(expected.shape)}")
            continue
        err = normwise_error(got.reshape(expected.shape), expected)
        if not err <= allowed(ref_name, err):
            problems.append(f"gradient of {name!r} error {err:.3g} > tolerance {allowed(ref_name, err):.3g}")
    missing = sorted(set(ref_grads) - seen)
    if missing:
        problems.append(f"reference parameter(s) {', '.join(missing)} have no trainable counterpart in the variant")
    return problems


def grad_tolerances(
    variant: Variant, ref: ScSE, x: torch.Tensor, grad_out: torch.Tensor,
    ref_grads: dict[str, torch.Tensor], dtype: str,
) -> dict[str, float]:
    """Per gradient (``input`` and each reference parameter): the dtype's gradient tolerance, or
    ``EAGER_FACTOR`` times the error of the plain reference module run in the same precision
    (in the input's dtype, or under autocast for a variant with a ``compute_dtype``), whichever
    is larger.

    The normwise measure divides by the gradient's own size, and some gradients are small only
    because their terms cancel (with reduction 16 a whole weight's gradient is one cancelling sum
    times the pooled input), or because a hidden unit sits at ReLU's kink. There even PyTorch's own
    module in that precision misses the float64 gradient by more than the dtype's tolerance; a
    variant is then held to doing no worse than twice what PyTorch does (as FlashAttention's tests
    hold their kernels to a multiple of the PyTorch error in the same precision).
    """
    device = x.device
    compute = compute_dtype(variant, dtype)
    xb = x.detach().clone().requires_grad_(True)
    if compute == dtype:
        base = copy.deepcopy(ref).to(device=device, dtype=xb.dtype)
        yb = base(xb)
    else:  # what PyTorch does in that precision is the reference module under autocast
        base = copy.deepcopy(ref).to(device=device)
        with torch.autocast(device_type=device.type, dtype=getattr(torch, compute)):
            yb = base(xb)
    base_params = dict(base.named_parameters())
    got = torch.autograd.grad(yb, [xb, *base_params.values()], grad_out.to(device, yb.dtype))
    floor = case_tolerance(variant, dtype, device, grad=True)
    tols = {}
    for name, g in zip(["input", *base_params], got, strict=True):
        tols[name] = max(floor, EAGER_FACTOR * normwise_error(g, ref_grads[name]))
    return tols


def _check_output(y: object, x: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> list[str]:
    if not isinstance(y, torch.Tensor):
        return [f"{what}: returned {type(y).__name__}, not a tensor"]
    problems = []
    if tuple(y.shape) != tuple(x.shape):
        return [f"{what}: shape {tuple(y.shape)} differs from the input's {tuple(x.shape)}"]
    if y.dtype != x.dtype:
        problems.append(f"{what}: dtype {y.dtype} differs from the input's {x.dtype}")
    if y.device != x.device:
        problems.append(f"{what}: on {y.device}, not the input's {x.device}")
    err = normwise_error(y, expected)
    if err == float("inf"):
        problems.append(f"{what}: NaN or Inf in the output")
    elif not err <= tol:
        problems.append(f"{what}: error {err:.3g} > tolerance {tol:.3g} (normwise, vs float64 reference)")
    return problems


def check_run(variant: Variant, config: Config, spec: InputSpec, device: str = "cpu", seed: int = 0) -> list[str]:
    """Run ``variant`` on one configuration and one input; every problem found, as sentences."""
    dev = torch.device(device)
    dtype = getattr(torch, config.dtype)
    train = config.mode == "train"
    ref = make_reference(config, spec.channels, seed)
    ref_state = _state(ref)
    tol = case_tolerance(variant, config.dtype, dev)
    x = spec.make(_seed(seed, spec.name, "x"), dev, dtype)
    x2 = spec.make(_seed(seed, spec.name, "x2"), dev, dtype)
    before = x.clone()
    problems: list[str] = []

    fn = variant.build(ref, dev, dtype)
    if any(not torch.equal(v, ref_state[k]) for k, v in ref.state_dict().items()):
        problems.append("build() modified the reference module it was given")
    ref64 = copy.deepcopy(ref).to(torch.float64)
    ref64.load_state_dict(ref_state)
    params = {n: p for n, p in fn.named_parameters() if p.requires_grad} if isinstance(fn, torch.nn.Module) else {}

    grad_out = None
    if train:
        grad_out = torch.randn(tuple(x.shape), generator=torch.Generator().manual_seed(_seed(seed, "g")))
        if config.fusion == "max":
            grad_out = tie_free_cotangent(ref64, x.detach(), grad_out, margin=tol)
        x.requires_grad_(True)
        y = fn(x)
        if not isinstance(y, torch.Tensor) or not y.requires_grad:
            return problems + ["train mode: the output does not require grad (no autograd graph to the input)"]
        got = torch.autograd.grad(y, [x, *params.values()], grad_out.to(dev, y.dtype), allow_unused=True)
        y = y.detach().clone()
        x_grad, param_grads = got[0], dict(zip(params, got[1:], strict=True))
    else:
        with torch.no_grad():
            y = fn(x)
        y = y.detach().clone() if isinstance(y, torch.Tensor) else y  # the next call may reuse its buffer

    x64 = x.detach().to(device="cpu", dtype=torch.float64).requires_grad_(train)
    y64 = ref64(x64)
    problems += _check_output(y, x, y64, tol, "output")
    if not torch.equal(x.detach(), before):
        problems.append("the input was modified")

    if train:
        assert grad_out is not None
        ref_params = dict(ref64.named_parameters())
        ref_got = torch.autograd.grad(y64, [x64, *ref_params.values()], grad_out.to(torch.float64))
        ref_grads = dict(zip(["input", *ref_params], ref_got, strict=True))
        floor = case_tolerance(variant, config.dtype, dev, grad=True)
        cache: dict[str, float] = {}

        def allowed(name: str, err: float) -> float:
            """The floor, unless the error passes it: then look at PyTorch's own error (computed once)."""
            if err <= floor:
                return floor
            if not cache:
                cache.update(grad_tolerances(variant, ref, x, grad_out, ref_grads, config.dtype))
            return cache[name]

        if not isinstance(fn, torch.nn.Module):
            problems.append("train mode: the callable is not an nn.Module, so its parameters can't be trained")
        if x_grad is None:
            problems.append("no gradient reached the input")
        else:
            err = normwise_error(x_grad, ref_grads["input"])
            if x_grad.dtype != x.dtype:
                problems.append(f"input gradient dtype {x_grad.dtype} differs from the input's {x.dtype}")
            if not err <= allowed("input", err):
                problems.append(f"input gradient error {err:.3g} > tolerance {allowed('input', err):.3g}")
        if isinstance(fn, torch.nn.Module):
            param_refs = {k: v for k, v in ref_grads.items() if k != "input"}
            problems += _compare_grads(fn, params, param_grads, param_refs, allowed)

    # A second, different input through the same callable: stale buffers or caches show here.
    with torch.no_grad() if not train else torch.enable_grad():
        y2 = fn(x2)
    y2 = y2.detach().clone() if isinstance(y2, torch.Tensor) else y2
    with torch.no_grad():
        problems += _check_output(y2, x2, ref64(x2.to(device="cpu", dtype=torch.float64)), tol, "second call")
    return problems


# --- the entry points ----------------------------------------------------------------------------


def _as_tuple(values: Iterable[Any] | Any | None, default: Iterable[Any]) -> tuple[Any, ...]:
    if values is None:
        return tuple(default)
    if isinstance(values, str):
        return tuple(v.strip() for v in values.split(",") if v.strip())
    if isinstance(values, Iterable):
        return tuple(values)
    return (values,)


def configurations(
    variant: Variant | str,
    device: str = "cpu",
    *,
    dtypes: Iterable[str] | str | None = None,
    modes: Iterable[str] | str | None = None,
    fusions: Iterable[str] | str | None = None,
    biases: Iterable[bool] | bool | None = None,
    reductions: Iterable[int] | int | None = None,
) -> list[tuple[Config, str | None]]:
    """Every requested configuration, each with the reason it is unsupported (None: supported).

    Nothing is dropped: an unsupported configuration comes back with its reason, so a caller can
    skip it visibly.
    """
    v = get_variant(variant) if isinstance(variant, str) else variant
    grid = itertools.product(
        _as_tuple(dtypes, DTYPES), _as_tuple(modes, MODES), _as_tuple(fusions, FUSIONS),
        _as_tuple(biases, (False, True)), _as_tuple(reductions, DEFAULT_REDUCTIONS),
    )
    out = []
    for dtype, mode, fusion, bias, reduction in grid:
        config = Config(dtype, mode, fusion, bool(bias), int(reduction))
        out.append((config, unsupported(v, device, config)))
    return out


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (None: leave as is), then restore."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_config(
    variant: Variant | str, config: Config, device: str = "cpu",
    inputs: Iterable[InputSpec | str] | None = None, seed: int = 0,
) -> list[Failure]:
    """Every failure of one configuration over the inputs (all of ``INPUTS`` by default)."""
    v = get_variant(variant) if isinstance(variant, str) else variant
    specs = [INPUTS_BY_NAME[s] if isinstance(s, str) else s for s in (inputs or INPUTS)]
    failures = []
    for spec in specs:
        try:
            problems = check_run(v, config, spec, device, seed)
        except Exception as exc:  # a crash is a failure to report, alongside the others
            problems = [f"raised {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"]
        failures += [Failure(v.name, config, spec.name, p) for p in problems]
    return failures


def check_variant(
    variant: Variant | str,
    *,
    device: str = "cpu",
    dtypes: Iterable[str] | str | None = None,
    modes: Iterable[str] | str | None = None,
    fusions: Iterable[str] | str | None = None,
    biases: Iterable[bool] | bool | None = None,
    reductions: Iterable[int] | int | None = None,
    inputs: Iterable[InputSpec | str] | None = None,
    seed: int = 0,
    threads: int | None = 1,
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Check ``variant`` on every supported configuration (narrowed by the arguments) and input.

    ``threads`` (default 1, restored afterwards): the suite's tensors are tiny, so threads gain
    nothing, and on a loaded machine a 2-thread oneDNN conv of them took 40 ms instead of 0.25 ms.
    Raises ``ConformanceError`` listing every failure, or when nothing could be checked (the
    variant is unavailable on ``device``, or supports none of the requested configurations);
    with ``raise_on_failure=False`` returns the report instead.
    """
    v = get_variant(variant) if isinstance(variant, str) else variant
    report = ConformanceReport(v.name)
    why_not = v.unavailable(device)
    configs = configurations(v, device, dtypes=dtypes, modes=modes, fusions=fusions, biases=biases,
                             reductions=reductions)
    specs = [INPUTS_BY_NAME[s] if isinstance(s, str) else s for s in (inputs or INPUTS)]
    with torch_threads(threads):
        for config, reason in configs:
            reason = why_not or reason
            if reason:
                report.skipped.append((config, reason))
                continue
            report.failures += check_config(v, config, device, specs, seed)
            report.checked += [(config, spec.name) for spec in specs]
    return report.raise_for_failures() if raise_on_failure else report


def pytest_params(
    patterns: Iterable[str] | str = "*",
    device: str = "cpu",
    *,
    marks: Callable[[Variant, Config], Sequence[Any]] | None = None,
    **axes: Any,
) -> list[Any]:
    """``pytest.param(variant_name, config)`` for every variant × configuration, for parametrize.

    A configuration the variant declares unsupported gets no case at all: it can never run
    anywhere, and a skip for it would only inflate the count. A variant unavailable here (no GPU,
    no Triton) is skipped with its reason, since it runs elsewhere. ``marks`` may add marks (e.g.
    ``slow``) per case. Use with ``check_config`` in the test body.
    """
    import pytest  # only needed here: pytest is not a runtime dependency

    params = []
    for name in list_variants(patterns):
        v = get_variant(name)
        why_not = v.unavailable(device)
        for config, reason in configurations(v, device, **axes):
            if reason:
                continue
            extra = list(marks(v, config)) if marks else []
            if why_not:
                extra.append(pytest.mark.skip(reason=why_not))
            params.append(pytest.param(name, config, id=f"{name}-{device}-{config.label}", marks=extra))
    return params
