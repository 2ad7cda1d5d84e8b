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

The inputs, configurations and reports (``INPUTS``, ``Config``, ``ConformanceReport``, ...) are
defined in ``harness.conformance`` and re-exported here: import them from this module.
"""
from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from harness.conformance import (
    INPUTS,
    INPUTS_BY_NAME,
    OVERFLOW_INPUT,
    Config,
    ConformanceError,
    ConformanceReport,
    Failure,
    InputSpec,
)
from harness.measure import correctness
from harness.measure.correctness import CONFORMANCE, seed_of, tie_free_cotangent
from harness.measure.envinfo import torch_threads
from variants.reference import FUSIONS
from variants.registry import DTYPES, MODES, Variant, get_variant, list_variants
from variants.tags import bias_unsupported, compute_dtype, supported_biases, tag
from variants.weights import parameter_names

__all__ = [
    "INPUTS", "OVERFLOW_INPUT", "ConformanceError", "ConformanceReport", "Config", "Failure", "InputSpec",
    "case_tolerance",
    "check_config", "check_run", "check_variant", "configurations", "parameter_names", "pytest_params",
    "supported_biases", "tag", "tie_free_cotangent", "torch_threads",
]  # fmt: skip

#: Reductions checked by default: the seed's 2 and smp's/SENet's 16 (1 hidden channel at C=16).
DEFAULT_REDUCTIONS: tuple[int, ...] = (2, 16)


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
    compute = compute_dtype(variant, dtype)
    return max(correctness.tolerance(dtype, device, grad), correctness.tolerance(compute, device, grad))


# --- the checks ----------------------------------------------------------------------------------


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _gradient_problems(
    fn: object, x: torch.Tensor, x_grad: torch.Tensor | None, params: dict[str, torch.nn.Parameter],
    grads: dict[str, torch.Tensor | None], ref_grads: dict[str, torch.Tensor], floor: float,
    own_errors: Callable[[], dict[str, float]],
) -> list[str]:
    """The input's and every parameter's gradient against the reference's, matched by (mapped) name.

    Each is held to ``floor`` or, where it misses that, to ``CONFORMANCE.seed_factor`` times
    ``own_errors()`` (what the variant's precision costs PyTorch's own module, by reference name).
    """
    problems: list[str] = []
    judged: dict[str, torch.Tensor] = {}  # label → gradient, in the reference's shape
    as_ref: dict[str, str] = {}  # label → the reference's name
    slot: dict[str, int] = {}  # label → where its error, if any, goes among the problems

    def compare(label: str, got: torch.Tensor, ref_name: str) -> None:
        judged[label], as_ref[label], slot[label] = got, ref_name, len(problems)
        problems.append("")

    if not isinstance(fn, torch.nn.Module):
        problems.append("train mode: the callable is not an nn.Module, so its parameters can't be trained")
    if x_grad is None:
        problems.append("no gradient reached the input")
    else:
        if x_grad.dtype != x.dtype:
            problems.append(f"input gradient dtype {x_grad.dtype} differs from the input's {x.dtype}")
        compare("input gradient", x_grad, "input")
    if isinstance(fn, torch.nn.Module):
        param_refs = {k: v for k, v in ref_grads.items() if k != "input"}
        mapping = parameter_names(fn)
        seen: set[str] = set()
        for name in params:
            ref_name = mapping[name]
            if ref_name not in param_refs:
                problems.append(f"parameter {name!r} (as {ref_name!r}) has no counterpart in the reference; "
                                "set reference_names on the built module to map it")
                continue
            seen.add(ref_name)
            got = grads[name]
            if got is None:
                problems.append(f"no gradient reached parameter {name!r}")
                continue
            expected = param_refs[ref_name]
            if got.numel() != expected.numel():
                problems.append(f"gradient of {name!r} has shape {tuple(got.shape)}, the reference's "
                                f"{ref_name!r} {tuple(expected.shape)}")
                continue
            compare(f"gradient of {name!r}", got.reshape(expected.shape), ref_name)
        missing = sorted(set(param_refs) - seen)
        if missing:
            problems.append(f"reference parameter(s) {', '.join(missing)} have no trainable counterpart in the variant")

    def seed() -> dict[str, float]:
        errors = own_errors()
        return {label: errors[name] for label, name in as_ref.items()}

    expected = {label: ref_grads[name] for label, name in as_ref.items()}
    verdict = correctness.judge_gradients(CONFORMANCE, floor, judged, expected, seed)
    for label in verdict.failed:
        problems[slot[label]] = (f"{label} error {verdict.errors[label]:.3g} > "
                                 f"tolerance {verdict.limits[label]:.3g}")
    return [p for p in problems if p]


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
    verdict = correctness.judge_output(CONFORMANCE, tol, y, expected)
    err, limit = verdict.errors["output"], verdict.limits["output"]
    if err == math.inf:
        problems.append(f"{what}: NaN or Inf in the output")
    elif not verdict.passed:
        problems.append(f"{what}: error {err:.3g} > tolerance {limit:.3g} (normwise, vs float64 reference)")
    return problems


def check_run(variant: Variant, config: Config, spec: InputSpec, device: str = "cpu", seed: int = 0) -> list[str]:
    """Run ``variant`` on one configuration and one input; every problem found, as sentences."""
    dev = torch.device(device)
    dtype = getattr(torch, config.dtype)
    train = config.mode == "train"
    reduction = min(config.reduction, spec.channels)  # C=3 can't have 16: the largest that fits
    ref_seed = seed_of(seed, spec.channels, reduction, config.fusion, config.bias)
    ref = correctness.make_reference(spec.channels, reduction, config.fusion, config.bias, ref_seed)
    ref_state = _state(ref)
    tol = case_tolerance(variant, config.dtype, dev)
    x = spec.make(seed_of(seed, spec.name, "x"), dev, dtype)
    x2 = spec.make(seed_of(seed, spec.name, "x2"), dev, dtype)
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
        grad_out = torch.randn(tuple(x.shape), generator=torch.Generator().manual_seed(seed_of(seed, "g")))
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

        def own_errors() -> dict[str, float]:
            """PyTorch's own module's gradient errors at the variant's precision (under autocast for an AMP
            variant), each the largest of its run and ``CONFORMANCE.rounding_draws`` random roundings:
            where a gradient is small only because its terms cancel (with reduction 16 a whole weight's
            gradient is one cancelling sum) or a hidden unit sits at ReLU's kink, even it misses the
            float64 gradient by more than the dtype's tolerance, by an amount that depends on where it
            rounds."""
            compute = compute_dtype(variant, config.dtype)
            return correctness.seed_errors(CONFORMANCE, ref, x, grad_out, compute, (y64.detach(), ref_grads))[1]

        problems += _gradient_problems(fn, x, x_grad, params, param_grads, ref_grads, floor, own_errors)

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
    why_not = unavailable_here(v, device)
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


def unavailable_here(variant: Variant, device: str) -> str | None:
    """Why ``variant`` cannot run on ``device`` on this machine: its own reason, or no GPU for a
    CUDA device (a variant's own check need not ask, and the cases failed instead of skipping)."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU here"
    return variant.unavailable(device)


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
    ``slow``) per case. Use with ``check_config`` in the test body. No case at all is a
    ``ValueError`` (a collection error): pytest read an empty list as one skipped test and a green
    run, when a plugin had failed to import or the pattern was misspelt.
    """
    import pytest  # only needed here: pytest is not a runtime dependency

    names = list_variants(patterns)
    if not names:
        raise ValueError(f"no registered variant matches {patterns!r}: nothing to check (a plugin that failed to "
                         f"import warns why; `python -m harness list` shows what is registered)")  # fmt: skip
    params = []
    for name in names:
        v = get_variant(name)
        why_not = unavailable_here(v, device)
        for config, reason in configurations(v, device, **axes):
            if reason:
                continue
            extra = list(marks(v, config)) if marks else []
            if why_not:
                extra.append(pytest.mark.skip(reason=why_not))
            params.append(pytest.param(name, config, id=f"{name}-{device}-{config.label}", marks=extra))
    if not params:
        kind = torch.device(device).type
        elsewhere = [n for n in names if kind not in get_variant(n).devices]
        if elsewhere == names:  # a CUDA-only variant asked for on the default device="cpu"
            devices = sorted({d for n in names for d in get_variant(n).devices})
            raise ValueError(f"{', '.join(names)} run(s) on {' and '.join(devices)} only, not {device}: ask "
                             f"pytest_params(..., device={devices[0]!r}) (skipped with the reason on a machine "
                             "without one)")  # fmt: skip
        raise ValueError(f"{', '.join(names)} declare(s) no configuration among those asked for on {device}: "
                         "nothing to check (see their dtypes, modes and fusions)")  # fmt: skip
    return params
