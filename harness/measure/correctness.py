"""Correctness before timing: every result is compared with the reference computed in float64.

One engine for the sweep's runner and the conformance suite (``harness.testing``): the seeded
reference (``seed_of``, ``make_reference``), the reference in a precision (``reference_outputs``),
the judges (``judge_output``, ``judge_gradients``) and the runner's whole check (``verify``). The
two differ only by a named ``Policy``: ``SWEEP`` or the stricter ``CONFORMANCE``.

Outputs are judged by the normwise error ``max|y - y_ref| / max|y_ref|``: element-wise relative
error explodes where the reference crosses zero (scSE outputs do, everywhere), so the largest error
is scaled by the largest reference value, as BLAS test suites do. Gradients are judged normwise
too: a relative L2 error spreads a wrong patch thin (a zeroed gradient at one pixel of each
128×128 plane read 0.0076 against float16's 0.01). The max fusion's gradient is discontinuous
where its two branches tie, and a near-tie that rounds the other way moves one element by O(1)
without being wrong, so its train cases differentiate a cotangent that is zero at the near-ties
(``tie_free_cotangent``). NaN or Inf never pass.

A dtype's tolerance is a floor. Low precision is judged against what the seed's own module achieves
in that dtype, as PyTorch's accuracy checker does with its float64 reference: a case passes when its
error is at most ``max(tolerance, SEED_FACTOR × error of eager in the same dtype)`` (``allowed``).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from harness.measure.rounding import RandomRounding
from variants.reference import ScSE
from variants.weights import parameter_names

T = TypeVar("T")

#: Normwise tolerance per compute dtype. float32 on CUDA with TF32 allowed uses ``TF32_TOLERANCE``.
TOLERANCES: dict[str, float] = {
    "float64": 1e-10,
    "float32": 1e-5,
    "float16": 5e-3,
    "bfloat16": 3e-2,
}
#: TF32 keeps 10 mantissa bits, like float16.
TF32_TOLERANCE = 5e-3
#: Gradients pass through one more reduction than the output, so they get twice the slack.
GRAD_FACTOR = 2.0
#: How much worse than the seed's module in the same dtype a variant may be.
SEED_FACTOR = 5.0
#: The conformance suite's ``SEED_FACTOR``: a gradient that misses its floor may have at most this
#: multiple of PyTorch's own error at the same precision (as FlashAttention's tests hold kernels).
EAGER_FACTOR = 2.0
#: The conformance suite's draws of rounding error beside PyTorch's own run (``Policy.rounding_draws``).
ROUNDING_DRAWS = 16
#: How near the max fusion's two branches may come to a tie in the sweep's cotangent
#: (``tie_free_cotangent``): the widest tolerance, since one cotangent serves every variant of a
#: configuration, an AMP variant computing in bfloat16 on float32 input among them.
SWEEP_TIE_MARGIN = TOLERANCES["bfloat16"]


def tf32_enabled(device: torch.device | str) -> bool:
    """Whether float32 convolutions or matmuls on ``device`` may run in TF32."""
    if torch.device(device).type != "cuda":
        return False
    return bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)


def tolerance(dtype: str, device: torch.device | str, grad: bool = False) -> float:
    """The normwise tolerance for a case computed in ``dtype`` on ``device``."""
    tol = TOLERANCES[dtype]
    if dtype == "float32" and tf32_enabled(device):
        tol = TF32_TOLERANCE
    return tol * (GRAD_FACTOR if grad else 1.0)


def normwise_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max|actual - expected| / max|expected|`` in float64 on ``expected``'s device (only the
    scalars reach the host: copying a GPU activation to the CPU cost more than the whole check);
    inf for NaN or Inf in ``actual``."""
    e = expected.detach().to(dtype=torch.float64)
    a = actual.detach().to(device=e.device, dtype=torch.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape {tuple(a.shape)} differs from the reference's {tuple(e.shape)}")
    if not torch.isfinite(a).all():
        return math.inf
    if a.numel() == 0:
        return 0.0
    scale, diff = e.abs().max().item(), (a - e).abs().max().item()
    return diff / scale if scale > 0 else diff


def allowed(floor: float, seed_error: float | None, factor: float = SEED_FACTOR) -> float:
    """The tolerance actually applied: the dtype's floor, or ``factor`` times the seed module's own error.

    A non-finite seed error (the seed's module overflowed too) never excuses anything: the floor applies.
    """
    if seed_error is None or not math.isfinite(seed_error):
        return floor
    return max(floor, factor * seed_error)


@dataclass(frozen=True)
class Policy:
    """How a result is judged against float64, beyond the dtype's floor.

    The sweep and the conformance suite share every rule but these; each field says why they differ.
    """

    #: How many times the seed module's own error in the same precision a variant may have.
    seed_factor: float
    #: Whether the output's limit may lean on the seed's output error too, or is the floor alone.
    output_seed: bool
    #: Whether the seed module runs under autocast in a variant's ``compute_dtype`` (what PyTorch
    #: achieves at the precision the variant computes in), or plainly in the input's dtype.
    seed_autocast: bool
    #: How many more draws of the precision's rounding error join the seed's own run
    #: (``harness.measure.rounding``): the seed error is the largest. One run is one draw, and a
    #: correct variant rounding elsewhere missed twice it in 4 of 800 bfloat16 runs (KERNEL_NOTES.md).
    rounding_draws: int = 0
    #: Draws made only for a block whose gradient misses its limit, which is then judged as one more
    #: correct rounding (``_nearest_rounding``: its distance to the nearest draw or float64, within
    #: ``EAGER_FACTOR`` times how far the draws lie apart): each costs a float64 run on the CPU (8.6 s
    #: at 8×64×128×128), too much for every case, and a cancelling gradient (sSE's bias, a sum over
    #: N·H·W) varies more between roundings than one run shows: a correct eager_factored read 0.065
    #: in bfloat16 against 5 × eager's 0.011, and four draws reached 0.047.
    fallback_draws: int = 0


#: The sweep: any shape, large ones included, where outputs in low precision may lean on what eager
#: costs in the case's dtype (recorded as ``eager_rel_err``), an AMP variant's under the same autocast.
SWEEP = Policy(seed_factor=SEED_FACTOR, output_seed=True, seed_autocast=True, fallback_draws=4)
#: Conformance is stricter: its inputs are small (8×8), so nothing excuses a single wrong element. A
#: variant's author gets the sharp check: outputs to the floor alone, and a gradient that misses its
#: floor at most ``EAGER_FACTOR`` times PyTorch's own error at the variant's precision.
CONFORMANCE = Policy(seed_factor=EAGER_FACTOR, output_seed=False, seed_autocast=True, rounding_draws=ROUNDING_DRAWS)


# --- the reference -------------------------------------------------------------------------------


def seed_of(*parts: object) -> int:
    """A seed fixed by ``parts`` (their text joined with ':'), the same in every process and on every machine."""
    return zlib.crc32(":".join(map(str, parts)).encode())


def make_reference(channels: int, reduction: int, fusion: str, bias: bool, seed: int) -> ScSE:
    """The float32 CPU reference module with weights drawn from ``seed``.

    The gate of ``fusion="gate"`` starts at 0 in training, where σ(α) = ½ would hide a variant that
    swaps the two branches; here it is drawn at random so the checks can see that.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = ScSE(channels, reduction, fusion, bias)
        if fusion == "gate":
            torch.nn.init.normal_(ref.gate, std=1.0)
    return ref.eval()


def reference_outputs(
    ref: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor | None, dtype: torch.dtype, names: list[str],
    autocast: torch.dtype | None = None, form: Callable[[torch.nn.Module], Callable] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reference module's output and named gradients (``"input"``, then parameters), on ``x``'s device.
    A parameter the reference does not use (a network's idle block) gets no gradient and is left out.

    Computed in ``dtype``; with ``autocast``, the float32 module runs under autocast to that dtype
    instead, as an AMP variant's arithmetic does; with ``form``, the module is run as ``form(module)``
    (``torch.compile``), its parameters still named as the module's. ``x`` is copied, never touched.
    """
    module = copy.deepcopy(ref).to(device=x.device) if autocast else copy.deepcopy(ref).to(x.device, dtype)
    run = form(module) if form is not None else module
    xd = x.detach().to(dtype, copy=True).requires_grad_(grad_out is not None)
    amp = torch.autocast(x.device.type, dtype=autocast) if autocast else contextlib.nullcontext()
    with torch.enable_grad() if grad_out is not None else torch.no_grad():
        with amp:
            y = run(xd)
        if grad_out is None:
            return y.detach(), {}
        params = dict(module.named_parameters())
        cotangent = grad_out.to(device=x.device, dtype=y.dtype)
        values = torch.autograd.grad(y, [xd, *[params[n] for n in names[1:]]], cotangent, allow_unused=True)
    return y.detach(), {n: v for n, v in zip(names, values, strict=True) if v is not None}


def seed_errors(
    policy: Policy, ref: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor | None, compute: str,
    expected: tuple[torch.Tensor, dict[str, torch.Tensor]],
    form: Callable[[torch.nn.Module], Callable] | None = None,
) -> tuple[float, dict[str, float]]:
    """The seed module's own errors against the float64 ``expected`` (output, named gradients), in the
    precision ``policy`` says: what that precision itself costs on this very input (run as
    ``form(module)`` when given: a compiled network's own error is its compiler's too)."""
    y64, grads64 = expected
    low = getattr(torch, compute)
    autocast = low if policy.seed_autocast and low != x.dtype else None
    names = list(grads64)  # empty in forward mode, where no gradient is taken
    runs = [reference_outputs(ref, x, grad_out, x.dtype, names, autocast, form)]
    runs += rounding_draws(policy.rounding_draws, ref, x, grad_out, compute, names)
    out_err = _worst([normwise_error(y.to(y64.device), y64) for y, _ in runs])
    return out_err, {n: _worst([normwise_error(grads[n].to(g.device), g) for _, grads in runs])
                     for n, g in grads64.items()}


def rounding_draws(count: int, ref: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor | None, compute: str,
                   names: list[str]) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """``count`` float64 runs of ``ref`` on the CPU, each rounding step replaced by a random error of
    ``compute``'s (``RandomRounding``): each is what one correct rounding in that precision gives. The
    draws are seeded by the precision and shape, so every process and machine draws the same."""
    gen = torch.Generator().manual_seed(seed_of("rounding", compute, *x.shape))
    x_cpu = x.detach().cpu()
    cotangent = grad_out.cpu() if grad_out is not None else None
    runs = []
    for _ in range(count):
        with RandomRounding(getattr(torch, compute), gen):
            runs.append(reference_outputs(ref, x_cpu, cotangent, torch.float64, names))
    return runs


def _worst(errors: list[float]) -> float:
    """The largest error; infinite if any is not finite (a seed run that overflowed excuses nothing)."""
    return max(errors) if all(math.isfinite(e) for e in errors) else math.inf


def reference_named(fn: object, grads: dict[str, torch.Tensor], ref: ScSE) -> dict[str, torch.Tensor]:
    """Gradients keyed by the reference's parameter names and in its shapes (smp's ``cSE.1.weight`` is
    ``cse.fc.0.weight``; torch.compile's ``_orig_mod.`` prefix is dropped; linear_excite's ``(out, in)``
    Linear weight is the reference's ``(out, in, 1, 1)`` conv weight)."""
    names = parameter_names(fn)
    shapes = {n: p.shape for n, p in ref.named_parameters()}
    out = {}
    for name, g in grads.items():
        key = names.get(name, name)
        same_size = key in shapes and g.numel() == shapes[key].numel()
        out[key] = g.reshape(shapes[key]) if same_size else g
    return out


def tie_free_cotangent(ref: ScSE, x: torch.Tensor, grad_out: torch.Tensor, margin: float) -> torch.Tensor:
    """``grad_out`` with zeros where ``max(x·c, x·s)`` is a near tie, so the gradient is well defined.

    max is not differentiable where its arguments are equal: a rounding of c or s flips which
    branch gets the gradient there, and each flip moves a weight's gradient by a whole term.
    Where |c − s| is within ``margin`` (how far a correct variant's c and s may be from the float64
    ones) the cotangent is zeroed, so the loss no longer depends on the branch choice there, and
    every correct variant must agree on the gradient elsewhere.
    """
    with torch.no_grad():
        x64 = x.to(device="cpu", dtype=torch.float64)
        ref64 = copy.deepcopy(ref).to(torch.float64) if next(ref.parameters()).dtype != torch.float64 else ref
        c = ref64.cse.fc(ref64.cse.avg_pool(x64))  # (N, C, 1, 1)
        s = torch.sigmoid(ref64.sse.Conv1x1(x64))  # (N, 1, H, W)
        tie = (c - s).abs() < margin
    return grad_out.masked_fill(tie.expand_as(grad_out), 0.0)


# --- the judgement -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Named errors against float64 and the limit each is held to."""

    errors: dict[str, float]
    limits: dict[str, float]

    @property
    def failed(self) -> list[str]:
        """The names over their limit, in order (NaN or Inf in a result is an infinite error)."""
        return [n for n, err in self.errors.items() if not err <= self.limits[n]]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def worst(self) -> str:
        """The name nearest to (or furthest past) its limit: the one a row reports."""
        return max(self.errors, key=lambda n: self.errors[n] / self.limits[n])


def judge_output(policy: Policy, floor: float, output: torch.Tensor, expected: torch.Tensor,
                 seed_error: float | None = None) -> Verdict:
    """The output, normwise, against ``allowed(floor, seed_error)`` (the floor alone unless ``policy.output_seed``)."""
    limit = allowed(floor, seed_error if policy.output_seed else None, policy.seed_factor)
    return Verdict({"output": normwise_error(output, expected)}, {"output": limit})


def judge_gradients(
    policy: Policy, floor: float, grads: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
    seed: dict[str, float] | Callable[[], dict[str, float]] | None = None,
) -> Verdict:
    """Each gradient in ``grads`` (keyed like ``expected``), normwise, against
    ``allowed(floor, its seed error)``; without seed errors, against the floor.

    ``seed`` may be a callable: running the seed module costs a backward pass, so it is called only
    when a gradient misses the floor (then every limit is the floor or above: the same verdict).
    """
    errors = {n: normwise_error(g, expected[n]) for n, g in grads.items()}
    if callable(seed):
        seed = seed() if any(not err <= floor for err in errors.values()) else None
    own = seed or {}
    return Verdict(errors, {n: allowed(floor, own.get(n), policy.seed_factor) for n in grads})


def _draws_may_clear(verdict: Verdict, policy: Policy, trial: Trial) -> bool:
    """Whether ``policy``'s fallback draws could clear a failed gradient verdict: a block's (a whole
    network's float64 runs would cost minutes), below float64, and each failure a finite error (NaN
    or Inf is wrong however the draws fall)."""
    failed = verdict.failed
    return (bool(failed) and policy.fallback_draws > 0 and trial.output_shape is None
            and trial.x.dtype != torch.float64 and all(math.isfinite(verdict.errors[n]) for n in failed))


def fallback_draws(policy: Policy, trial: Trial, compute: str, names: list[str]) -> list[dict[str, torch.Tensor]]:
    """The gradients ``names`` of ``policy.fallback_draws`` rounding draws of the trial's block
    (``Policy.fallback_draws``), float32 on the CPU (half the memory of float64, and exact far below
    any precision's floor): what a gradient that missed its one-run limit is judged against."""
    runs = rounding_draws(policy.fallback_draws, trial.ref, trial.x, trial.grad_out, compute, names)
    return [{n: g.float() for n, g in grads.items()} for _, grads in runs]


def _distance(a: torch.Tensor, b: torch.Tensor, scale: float) -> float:
    """``max|a - b|`` in float64 over ``scale`` (the float64 gradient's largest value)."""
    diff = (a.to(torch.float64) - b.to(torch.float64)).abs().max().item()
    return diff / scale if scale > 0 else diff


def _groups(apart: list[list[float]], within: float) -> list[int]:
    """Each run's group: runs are joined when they lie within ``within`` of each other, and so are
    their groups (single linkage)."""
    group = list(range(len(apart)))
    for i in range(len(apart)):
        for j in range(i + 1, len(apart)):
            if apart[i][j] <= within:
                old = group[j]
                group = [group[i] if g == old else g for g in group]
    return group


def _nearest_rounding(verdict: Verdict, got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                      draws: list[dict[str, torch.Tensor]], floor: float) -> Verdict:
    """Each failed gradient judged again as one more correct rounding. The float64 gradient and the
    ``draws`` fall into groups of runs within the one-run limit of each other. The gradient passes
    within ``EAGER_FACTOR`` times the farthest draw of float64's group from float64 (the rule for a
    cancelling sum's continuous noise), or within that factor times its reach of a draw in another
    group; no limit is narrower than the one-run limit. The row reports the error and limit against
    float64, unless only another group passes it: then against the draw it lies nearest (by ratio).

    Groups, because of a ReLU kink: a hidden unit whose pre-activation is within rounding of zero is
    on or off by where a correct variant rounds, and its weight gradient's row is there or not. At
    one U-Net block (768×4×4, bfloat16) one of four draws switched a unit at 0.0022 off and read 0.57
    from float64, so 2× the farthest draw (1.14) passed a weight gradient of zeros (error 1). Now a
    correct variant that switched the unit lies near that draw, and zeros near no run. Only float64
    centres its own group: around each of its draws, 2× the group's reach would pass a gradient
    1.2× too large in a cancelling sum's wide group."""
    errors, limits = dict(verdict.errors), dict(verdict.limits)
    for name in verdict.failed:
        g64 = expected[name].detach().cpu()  # where the draws are: each tensor crosses once
        scale = g64.abs().max().item()
        runs = [g64, *(draw[name] for draw in draws if name in draw)]
        apart = [[_distance(a, b, scale) for b in runs] for a in runs]
        mine = got[name].detach().cpu()
        group = _groups(apart, limits[name])
        centres = [i for i in range(len(runs)) if i == 0 or group[i] != group[0]]
        judged = []
        for i in centres:
            reach = max((apart[i][j] for j in range(len(runs)) if j != i and group[j] == group[i]), default=None)
            limit = max(limits[name], allowed(floor, reach, EAGER_FACTOR))
            judged.append((_distance(mine, runs[i], scale), limit))
        passing = [pair for pair in judged[1:] if pair[0] <= pair[1]]
        near = min(passing, key=lambda pair: pair[0] / pair[1], default=judged[0])
        errors[name], limits[name] = judged[0] if judged[0][0] <= judged[0][1] else near
    return Verdict(errors, limits)


def _without(verdict: Verdict, names: list[str]) -> Verdict:
    """``verdict`` without ``names`` (judged elsewhere), so the worst it reports is one it judged."""
    return Verdict({n: e for n, e in verdict.errors.items() if n not in names},
                   {n: v for n, v in verdict.limits.items() if n not in names})


@dataclass(frozen=True)
class Trial:
    """What a variant was given: the reference it was built from, its input (and a copy from before
    the call, to catch writes to it) and the cotangent of a train step (None: forward only).

    ``ref`` is any module computing the function: an ``ScSE``, or the unmodified network whose
    blocks a variant replaced, whose output has its own shape (``output_shape``; None: the input's).
    """

    ref: torch.nn.Module
    x: torch.Tensor
    x_before: torch.Tensor
    grad_out: torch.Tensor | None
    output_shape: tuple[int, ...] | None = None
    #: How ``ref`` runs when it shows what the case's precision costs (``torch.compile`` for a
    #: compiled network: its compiler reorders the network's reductions); None: as it is.
    seed_form: Callable[[torch.nn.Module], Callable] | None = None
    #: The reference's parameters whose gradients a train step is judged on (a block's, or a network's
    #: scSE blocks'): each that the reference itself gives a gradient must get one, or a weight used
    #: detached, or frozen, would go unjudged and make the step look cheaper. Empty: only the
    #: gradients the variant gives are judged.
    judged: tuple[str, ...] = ()
    #: Of ``judged``, those whose finite miss here is left to a check where they sit: a network's scSE
    #: parameters, judged block by block (``harness.sweep.network.blocks_check``, with its rounding
    #: draws). One run of the unmodified network is one draw of its rounding: channels_last in a
    #: float16 U-Net read 0.118 on an sSE bias gradient (a cancelling sum) against 5× the network's
    #: own 0.0176, and every block passed where it sat. They must still get a gradient.
    judged_where_they_sit: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What the variant's first call gave: output, gradients by reference name, and its time."""

    output: torch.Tensor
    grads: dict[str, torch.Tensor]
    seconds: float


@dataclass(frozen=True)
class Check:
    """The outcome of comparing one case with its float64 reference."""

    max_rel_err: float
    grad_rel_err: float | None
    tolerance: float
    grad_tolerance: float | None
    problem: str | None  # None when the case passed
    #: The seed's module in the case's dtype against float64: what that dtype itself costs.
    eager_rel_err: float | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None


class Once(Generic[T]):
    """A value made by its first caller and kept for the rest. It holds only what ``make`` returns,
    never the caller's tensors (a memo holding a variant's device input would cost later cases memory)."""

    def __init__(self) -> None:
        self._value: T | None = None

    def get(self, make: Callable[[], T]) -> T:
        if self._value is None:
            self._value = make()
        return self._value


@dataclass(frozen=True)
class Expected:
    """What a trial is judged against, the same for every variant given the same reference, input,
    gradient names and precision: the float64 output and named gradients, and the seed module's
    own errors against them (None and empty in float64)."""

    output: torch.Tensor
    grads: dict[str, torch.Tensor]
    seed_error: float | None
    seed_grad_errors: dict[str, float]
    #: ``fallback_draws``' gradients, made by the first variant that needs them and kept: every
    #: variant of the configuration that misses a gradient's limit is judged by the same draws, paid
    #: for once (a draw is a float64 CPU run: 8.6 s at 8×64×128×128).
    drawn: Once[list[dict[str, torch.Tensor]]] = dataclasses.field(
        default_factory=lambda: Once(), compare=False, repr=False)


def expected_of(trial: Trial, names: list[str], compute: str, policy: Policy = SWEEP) -> Expected:
    """The float64 reference on the trial's input (gradients ``names``: ``"input"`` then parameters),
    and below float64 the seed module's errors in the trial's precision (``seed_errors``)."""
    y64, grads64 = reference_outputs(trial.ref, trial.x, trial.grad_out, torch.float64, names)
    if trial.x.dtype == torch.float64:
        return Expected(y64, grads64, None, {})
    seed_err, seed_grad_errs = seed_errors(policy, trial.ref, trial.x, trial.grad_out, compute, (y64, grads64),
                                           trial.seed_form)
    return Expected(y64, grads64, seed_err, seed_grad_errs)


def verify(trial: Trial, got: Outcome, compute: str, policy: Policy = SWEEP,
           expected: Callable[[list[str]], Expected] | None = None) -> Check:
    """The first problem of ``got`` against the reference computed in float64 on the same input.

    The floor is ``compute``'s tolerance. Below float64 the seed's own module runs on the same input
    too, and its error sets how much error that precision is allowed (``allowed``). ``expected``
    gives ``expected_of(trial, names, compute, policy)`` for the gradient names, from a memo shared
    by a configuration's variants (the runner's); without it, it is computed here.
    """
    x, train = trial.x, trial.grad_out is not None
    tol = tolerance(compute, x.device)
    grad_tol = tolerance(compute, x.device, grad=True) if train else None

    def fail(problem: str) -> Check:
        return Check(math.nan, None, tol, grad_tol, problem)

    if not torch.equal(x.detach(), trial.x_before):
        return fail("the variant modified its input")
    shape, whose = (tuple(x.shape), "input") if trial.output_shape is None else (tuple(trial.output_shape), "reference")
    if tuple(got.output.shape) != shape:
        return fail(f"output shape {tuple(got.output.shape)} differs from the {whose}'s {shape}")
    if got.output.device != x.device:
        return fail(f"output is on {got.output.device}, not {x.device}")
    if got.output.dtype != x.dtype:  # a float32 result would be judged, and timed, as a bfloat16 one
        return fail(f"output dtype {got.output.dtype} differs from the input's {x.dtype}")
    if train and "input" not in got.grads:
        return fail("no gradient reached the input")
    ref_names = dict(trial.ref.named_parameters())
    unmatched = sorted(n for n in got.grads if n != "input" and n not in ref_names)
    if unmatched:  # a renamed parameter must be mapped (reference_names), never skipped
        return fail(f"parameter {unmatched[0]} has no counterpart in the reference (set reference_names)")
    names = ["input", *(trial.judged or [n for n in got.grads if n != "input"])]
    found = expected(names) if expected is not None else expected_of(trial, names, compute, policy)
    missing = [n for n in found.grads if n not in got.grads]  # the reference's own idle parameters excused
    if missing:
        return fail(f"no gradient reached parameter {missing[0]}")
    y64, grads64, seed_err, seed_grad_errs = found.output, found.grads, found.seed_error, found.seed_grad_errors
    out = judge_output(policy, tol, got.output, y64, seed_err)
    err, limit = out.errors["output"], out.limits["output"]
    if not out.passed:
        what = "NaN or Inf in the output" if err == math.inf else f"output error {err:.3g} > tolerance {limit:.3g}"
        return Check(err, None, limit, grad_tol, what)
    if grad_tol is None:
        return Check(err, None, limit, None, None, seed_err)
    grads = judge_gradients(policy, grad_tol, {n: got.grads[n] for n in grads64}, grads64, seed_grad_errs)
    if _draws_may_clear(grads, policy, trial):
        drawn = found.drawn.get(lambda: fallback_draws(policy, trial, compute, list(grads64)))
        grads = _nearest_rounding(grads, got.grads, grads64, drawn, grad_tol)
    elsewhere = [n for n in grads.failed if n in trial.judged_where_they_sit and math.isfinite(grads.errors[n])]
    grads = _without(grads, elsewhere)
    worst = grads.worst
    grad_err, grad_limit = grads.errors[worst], grads.limits[worst]
    problem = None if grads.passed else f"gradient of {worst} error {grad_err:.3g} > tolerance {grad_limit:.3g}"
    return Check(err, grad_err, limit, grad_limit, problem, seed_err)
