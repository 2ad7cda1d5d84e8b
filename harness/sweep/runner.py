"""The runner: for each case, build the variant, check it against float64, then time it.

A case never ends the sweep. Whatever goes wrong becomes the row's ``status`` and ``reason``:
``skipped`` (unsupported or unavailable here), ``mismatch`` (wrong numbers: not timed),
``oom``, or ``error`` (any other exception).
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from harness.measure import metrics  # profiling metrics (issue 5): FLOPs, memory, GPU telemetry, traces
from harness.measure.correctness import Check, allowed, normwise_error, relative_l2_error, tolerance
from harness.measure.figures import timing_columns
from harness.measure.timing import Clock, CpuClock, Timing, TimingPolicy, measure
from harness.sweep.cases import Case
from harness.sweep.oom import is_out_of_memory, release_memory  # issue 7: CPU allocation failures are oom too
from variants.compiled import compiled_graphs  # issue 3: compile_s and recompiles
from variants.reference import ScSE
from variants.registry import Variant
from variants.tags import bias_unsupported, compiles, input_memory_format
from variants.weights import parameter_names

Fn = Callable[[torch.Tensor], torch.Tensor]


def case_seed(case: Case, seed: int) -> int:
    """A seed fixed by the configuration, so every variant of a configuration sees the same data."""
    text = f"{seed}:{case.batch}:{case.channels}:{case.height}:{case.width}:{case.reduction}:{case.fusion}:{case.bias}"
    return zlib.crc32(text.encode())


def make_reference(case: Case, seed: int) -> ScSE:
    """The float32 CPU reference module of the case's configuration, with seeded weights.

    The gate of ``fusion="gate"`` starts at 0 in training, where σ(α) = ½ would hide a variant
    that swaps the two branches; here it is drawn at random so the check can see that.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case_seed(case, seed))
        ref = ScSE(case.channels, case.reduction, case.fusion, case.bias)
        if case.fusion == "gate":
            torch.nn.init.normal_(ref.gate, std=1.0)
    return ref.eval()


def make_input(case: Case, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A standard-normal input, drawn on the CPU so that it is the same on every device."""
    gen = torch.Generator().manual_seed(case_seed(case, seed) + 1)
    x = torch.randn(case.batch, case.channels, case.height, case.width, generator=gen)
    return x.to(device=device, dtype=dtype)


def trainable(fn: object) -> dict[str, torch.nn.Parameter]:
    """The parameters a train step differentiates: those of ``fn`` when it is a module."""
    if isinstance(fn, torch.nn.Module):
        return {name: p for name, p in fn.named_parameters() if p.requires_grad}
    return {}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def skip_reason(case: Case, variant: Variant, explicit: bool) -> str | None:
    """Why the case is not run at all, or None."""
    reason = variant.unavailable(case.device)
    if reason:
        return reason
    reason = variant.unsupported(case.device, case.dtype, case.mode, case.fusion)
    if reason:
        return reason
    reason = bias_unsupported(variant, case.bias)  # issue 3: smp's convs always have a bias
    if reason:
        return reason
    if dict(variant.tags).get("interpreted_on_cpu") and case.device == "cpu" and not explicit:
        return "runs in the Triton interpreter on CPU (correctness only, not timed); name it explicitly to time it"
    return None


@dataclass(frozen=True)
class Outcome:
    """The first call's results, kept for the correctness check."""

    output: torch.Tensor
    grads: dict[str, torch.Tensor]
    seconds: float


def first_call(fn: Fn, x: torch.Tensor, params: dict[str, torch.Tensor], grad_out: torch.Tensor | None) -> Outcome:
    """Run the variant once, as the timed loop will, and time it (compilation happens here)."""
    t0 = time.perf_counter()
    if grad_out is None:
        with torch.no_grad():
            y = fn(x)
        grads: dict[str, torch.Tensor] = {}
    else:
        y = fn(x)
        names = ["input", *params]
        values = torch.autograd.grad(y, [x, *params.values()], grad_out, allow_unused=True)
        grads = {n: g for n, g in zip(names, values, strict=True) if g is not None}
    sync(x.device)
    return Outcome(y.detach(), grads, time.perf_counter() - t0)


def verify(case: Case, variant: Variant, ref: ScSE, x: torch.Tensor, x_before: torch.Tensor,
           got: Outcome, grad_out: torch.Tensor | None) -> Check:
    """Compare the variant's first call with the reference computed in float64 on the same input.

    Below float64 the seed's own module runs in the case's dtype too, and its error sets how much
    error that dtype is allowed (``correctness.allowed``).
    """
    device, train = x.device, grad_out is not None
    compute_dtype = str(dict(variant.tags).get("compute_dtype", case.dtype))
    tol = tolerance(compute_dtype, device)
    grad_tol = tolerance(compute_dtype, device, grad=True) if train else None

    def fail(problem: str, err: float = float("nan"), grad_err: float | None = None) -> Check:
        return Check(err, grad_err, tol, grad_tol, problem)

    if not torch.equal(x.detach(), x_before):
        return fail("the variant modified its input")
    if tuple(got.output.shape) != tuple(x.shape):
        return fail(f"output shape {tuple(got.output.shape)} differs from the input's {tuple(x.shape)}")
    if got.output.device != device:
        return fail(f"output is on {got.output.device}, not {device}")
    if train and "input" not in got.grads:
        return fail("no gradient reached the input")
    ref_names = dict(ref.named_parameters())
    unmatched = sorted(n for n in got.grads if n != "input" and n not in ref_names)
    if unmatched:  # issue 3: a renamed parameter must be mapped (reference_names), never skipped
        return fail(f"parameter {unmatched[0]} has no counterpart in the reference (set reference_names)")
    names = ["input", *[n for n in got.grads if n != "input"]]
    y64, grads64 = reference_outputs(ref, x, grad_out, torch.float64, names)
    seed_err: float | None = None
    seed_grad_errs: dict[str, float] = {}
    if x.dtype != torch.float64:
        y_seed, grads_seed = reference_outputs(ref, x, grad_out, x.dtype, names)
        seed_err = normwise_error(y_seed, y64)
        seed_grad_errs = {n: relative_l2_error(grads_seed[n], grads64[n]) for n in grads64}
    tol = allowed(tol, seed_err)
    err = normwise_error(got.output, y64)
    if err > tol:
        what = "NaN or Inf in the output" if err == float("inf") else f"output error {err:.3g} > tolerance {tol:.3g}"
        return fail(what, err)
    grad_err: float | None = None
    if train:
        limits = {n: allowed(grad_tol, seed_grad_errs.get(n)) for n in grads64}  # type: ignore[arg-type]
        errors = {n: relative_l2_error(got.grads[n], grads64[n]) for n in grads64}
        worst = max(errors, key=lambda n: errors[n] / limits[n])
        grad_err, grad_tol = errors[worst], limits[worst]
        if grad_err > grad_tol:
            return Check(err, grad_err, tol, grad_tol,
                         f"gradient of {worst} error {grad_err:.3g} > tolerance {grad_tol:.3g}", seed_err)
    return Check(err, grad_err, tol, grad_tol, None, seed_err)


def reference_outputs(ref: ScSE, x: torch.Tensor, grad_out: torch.Tensor | None, dtype: torch.dtype,
                      names: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reference module's output and named gradients, computed in ``dtype`` on ``x``'s device."""
    module = copy.deepcopy(ref).to(device=x.device, dtype=dtype)
    xd = x.detach().to(dtype).requires_grad_(grad_out is not None)
    with torch.enable_grad() if grad_out is not None else torch.no_grad():
        y = module(xd)
        if grad_out is None:
            return y.detach(), {}
        params = dict(module.named_parameters())
        values = torch.autograd.grad(y, [xd, *[params[n] for n in names[1:]]], grad_out.to(dtype))
    return y.detach(), dict(zip(names, values, strict=True))


def _reference_named(fn: object, grads: dict[str, torch.Tensor], ref: ScSE) -> dict[str, torch.Tensor]:
    """Gradients keyed by the reference's parameter names and in its shapes (issue 3: smp's
    ``cSE.1.weight`` is ``cse.fc.0.weight``; torch.compile's ``_orig_mod.`` prefix is dropped;
    linear_excite's ``(out, in)`` Linear weight is the reference's ``(out, in, 1, 1)`` conv weight)."""
    names = parameter_names(fn)
    shapes = {n: p.shape for n, p in ref.named_parameters()}
    out = {}
    for name, g in grads.items():
        key = names.get(name, name)
        same_size = key in shapes and g.numel() == shapes[key].numel()
        out[key] = g.reshape(shapes[key]) if same_size else g
    return out


def make_step(
    fn: Fn, x: torch.Tensor, params: dict[str, torch.Tensor], grad_out: torch.Tensor | None
) -> Callable[[], object]:
    """The timed call. Train mode differentiates ``(y * grad_out).sum()`` with ``autograd.grad``,
    so no ``.grad`` accumulates between calls and nothing needs clearing inside the timed region."""
    if grad_out is None:
        return lambda: fn(x)
    inputs = [x, *params.values()]
    return lambda: torch.autograd.grad(fn(x), inputs, grad_out, allow_unused=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def measure_case(case: Case, variant: Variant, clock: Clock, policy: TimingPolicy, seed: int,
                 trace_dir: Path | None = None) -> dict[str, Any]:
    """Check, then time, one case that is known to be runnable; returns the row's measured fields.

    After the timed loop: GPU telemetry over it, peak memory of one more call, and with
    ``trace_dir`` a profiler trace (``metrics.after_timing``; none of it inside the loop).
    """
    device, dtype = torch.device(case.device), getattr(torch, case.dtype)
    train = case.mode == "train"
    ref = make_reference(case, seed)
    x = make_input(case, seed, device, dtype).contiguous(memory_format=input_memory_format(variant))
    x_before = x.clone()
    if train:
        x.requires_grad_(True)
    gen = torch.Generator().manual_seed(case_seed(case, seed) + 2)
    grad_out = torch.randn(tuple(x.shape), generator=gen).to(device, dtype) if train else None
    fn = variant.build(ref, device, dtype)
    params = trainable(fn) if train else {}
    got = first_call(fn, x, params, grad_out)
    got = Outcome(got.output, _reference_named(fn, got.grads, ref), got.seconds)
    graphs_after_first = compiled_graphs(fn) if compiles(variant) else None
    check = verify(case, variant, ref, x, x_before, got, grad_out)
    row: dict[str, Any] = {
        "max_rel_err": check.max_rel_err,
        "grad_rel_err": check.grad_rel_err,
        "tolerance": check.tolerance,
        "grad_tolerance": check.grad_tolerance,
        "eager_rel_err": check.eager_rel_err,
        "first_call_s": got.seconds,
        # issue 3: a compiling variant's first call is its compile time, never a latency sample
        "compile_s": got.seconds if graphs_after_first is not None else None,
    }
    del got
    if not check.passed:
        return row | {"status": "mismatch", "reason": check.problem}
    step = make_step(fn, x, params, grad_out)
    telemetry = metrics.begin_telemetry(device)
    try:
        with torch.no_grad() if not train else contextlib.nullcontext():
            timing, wall, remeasured = time_step(step, clock, policy)
            if graphs_after_first is not None:  # graphs compiled by warm-up and timed calls
                row["recompiles"] = compiled_graphs(fn) - graphs_after_first
            calls = sum(t.warmup_calls + len(t.samples_ms) * t.calls_per_sample for t in (timing, wall) if t)
            trace = metrics.trace_path(trace_dir, case) if trace_dir is not None else None
            profiled = metrics.after_timing(step, device, telemetry, calls, trace)
    finally:
        if telemetry is not None:
            telemetry.close()
    figures = timing_columns(timing, wall, device.type == "cuda", case.batch, remeasured)
    return row | {"status": "ok", "reason": None} | figures | profiled


def time_step(step: Callable[[], object], clock: Clock, policy: TimingPolicy) -> tuple[Timing, Timing | None, bool]:
    """The primary timing (measured again once if the CPU was starved), then, on CUDA, wall time.

    Wall samples are synchronous calls on an already warm step: they need no warm-up, and half
    the budget, since each sample is one call and its spread is the host's, not the GPU's.
    """
    timing = measure(step, clock, policy)
    remeasured = timing.disturbed
    if remeasured:
        timing = measure(step, clock, policy)
    wall = None
    if clock.wall is not None:
        wall = measure(step, clock.wall, replace(policy, warmup_s=0.0, max_time_s=policy.max_time_s / 2))
    return timing, wall, remeasured


def run_case(case: Case, variant: Variant, clock: Clock | None, policy: TimingPolicy, seed: int,
             explicit: bool = False, cache: str = "cold", trace_dir: Path | None = None) -> dict[str, Any]:
    """One finished row for ``case``, whatever happens. ``trace_dir``: write a profiler trace there."""
    row: dict[str, Any] = case.as_dict() | {"threads": torch.get_num_threads(), "cache": cache}
    row |= metrics.config_columns(case)  # FLOPs depend on the configuration only: every row has them
    reason = skip_reason(case, variant, explicit)
    if reason is not None or clock is None:
        return row | {"status": "skipped", "reason": reason or "no clock for this device"}
    try:
        row |= measure_case(case, variant, clock, policy, seed, trace_dir)
    except Exception as exc:  # noqa: BLE001 - one failing case must never end the sweep
        row |= {"status": "oom" if is_out_of_memory(exc) else "error", "reason": _one_line(exc)}
    finally:
        release_memory(case.device)
    row["finished_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return row


def clock_for(device: str, cache: str) -> Clock:
    """The clock for the run's device, made once per run (the L2 flush buffer is allocated once)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        from harness.measure.cuda_clock import make_cuda_clock

        return make_cuda_clock(dev, cache)
    return CpuClock()
