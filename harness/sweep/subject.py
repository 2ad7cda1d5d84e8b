"""What one case runs: its seeded reference, input and cotangent, and the callable checked and timed.

Every variant of a configuration sees the same data: the seed is fixed by the configuration
(``case_seed``), and the draws are shared by the run (``SharedInputs``). A ``Subject`` is what the
runner checks and times, whether a variant alone (``block_subject``) or a network whose scSE blocks
are the variant's (``harness.sweep.network``).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from harness.measure import correctness
from harness.measure.correctness import Check, Expected, reference_named, seed_of
from harness.sweep.cases import Case
from variants.reference import ScSE
from variants.registry import Variant
from variants.tags import tags_of

Fn = Callable[[torch.Tensor], torch.Tensor]
T = TypeVar("T")


def case_seed(case: Case, seed: int) -> int:
    """A seed fixed by the configuration, so every variant of a configuration sees the same data."""
    return seed_of(seed, case.batch, case.channels, case.height, case.width, case.reduction, case.fusion, case.bias)


def make_reference(case: Case, seed: int) -> ScSE:
    """The case's float32 CPU reference (``correctness.make_reference``), its weights drawn from ``case_seed``."""
    return correctness.make_reference(case.channels, case.reduction, case.fusion, case.bias, case_seed(case, seed))


def draw_input(case: Case, seed: int) -> torch.Tensor:
    """The case's standard-normal input in float32 on the CPU, so that it is the same on every device."""
    gen = torch.Generator().manual_seed(case_seed(case, seed) + 1)
    return torch.randn(case.batch, case.channels, case.height, case.width, generator=gen)


def output_shape(case: Case) -> tuple[int, int, int, int]:
    """The shape of the case's output: the input's for a block, the network's output for a context."""
    channels = case.channels
    if case.context:
        from variants.contexts import get_context

        channels = get_context(case.context).out_channels
    return (case.batch, channels, case.height, case.width)


def draw_cotangent(case: Case, seed: int, x: torch.Tensor | None = None) -> torch.Tensor:
    """The fixed random ``g`` a train step differentiates ``(y * g).sum()`` with; float32, CPU.
    A block's max fusion gets zeros where its branches nearly tie on ``x`` (the case's input, by
    default drawn here), so that its gradient is judged normwise like any other
    (``correctness.tie_free_cotangent``)."""
    gen = torch.Generator().manual_seed(case_seed(case, seed) + 2)
    g = torch.randn(output_shape(case), generator=gen)
    if case.fusion != "max" or case.context:
        return g
    x = draw_input(case, seed) if x is None else x
    rounded = x.to(getattr(torch, case.dtype))  # what the variants are given
    return correctness.tie_free_cotangent(make_reference(case, seed), rounded, g, correctness.SWEEP_TIE_MARGIN)


def make_input(case: Case, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A standard-normal input (``draw_input``) on ``device`` in ``dtype``."""
    return draw_input(case, seed).to(device=device, dtype=dtype)


class SharedInputs:
    """The input, cotangent and float64 reference of a configuration, made once for all its variants.

    Every variant of a configuration gets the same draw (``case_seed``), and ``torch.randn`` of a
    large input costs more than some variants' whole check (0.25 s for 32×64×128×128 on an H100's
    host). The sweep walks a configuration's variants in a row (``cases.expand``), so the last
    ``size`` draws are kept, on the CPU in float32: host memory, never the device's. Each variant is
    given its own copy, so one that writes into its input spoils nothing for the next. Owned by the
    run (``isolation.CaseExecutor``); nothing is kept between runs or tests.
    """

    def __init__(self, size: int = 1) -> None:
        self.size = size
        self._kept: OrderedDict[tuple[object, ...], tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()
        self._expected: OrderedDict[tuple[object, ...], Expected] = OrderedDict()

    def get(self, case: Case, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The CPU float32 input and, in train mode, cotangent of ``case``: never hand these to a variant."""
        key = configuration(case, seed)
        if key not in self._kept:
            x = draw_input(case, seed)
            self._kept[key] = (x, draw_cotangent(case, seed, x) if case.mode == "train" else None)
        return _recent(self._kept, key, self.size)

    def expected(self, case: Case, seed: int, detail: tuple[object, ...], make: Callable[[], Expected]) -> Expected:
        """What a configuration's variants are judged against (``correctness.Expected``: the float64
        reference and the seed module's own errors), made by ``make`` for the first variant and kept
        for the rest. ``detail``: what else it depends on (the gradient names, the compute dtype, the
        input's layout). Kept on the case's device, the last ``size`` only: on an H100 the check
        was the largest share of a case's time, the reference recomputed for every variant."""
        key = (*configuration(case, seed), *detail)
        if key not in self._expected:
            self._expected[key] = make()
        return _recent(self._expected, key, self.size)


def configuration(case: Case, seed: int) -> tuple[object, ...]:
    """Everything that identifies a case's data except its variant."""
    return (seed, *(v for name, v in case.as_dict().items() if name != "variant"))


def _recent(table: OrderedDict[tuple[object, ...], T], key: tuple[object, ...], size: int) -> T:
    """``table[key]``, marked most recent; the oldest entries beyond ``size`` are dropped."""
    table.move_to_end(key)
    while len(table) > size:
        table.popitem(last=False)
    return table[key]


def trainable(fn: object) -> dict[str, torch.nn.Parameter]:
    """The parameters a train step differentiates: those of ``fn`` when it is a module."""
    if isinstance(fn, torch.nn.Module):
        return {name: p for name, p in fn.named_parameters() if p.requires_grad}
    return {}


@dataclass(frozen=True)
class Subject:
    """What one case runs and what its check compares it with: a variant alone (``block_subject``)
    or a network whose scSE blocks are the variant's (``harness.sweep.network``)."""

    #: The timed callable.
    fn: Fn
    #: What the float64 check runs: the reference block, or the unmodified network.
    reference: torch.nn.Module
    x: torch.Tensor
    #: A copy of ``x`` from before any call, to catch a variant writing into its input.
    x_before: torch.Tensor
    #: The cotangent of a train step; None: forward only.
    grad_out: torch.Tensor | None
    #: Every parameter a train step differentiates.
    params: dict[str, torch.Tensor]
    #: The first call's gradients → those the check judges, keyed by the reference's names.
    checked: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    #: Whether the first call compiles or captures (timed as ``compile_s``, never as latency).
    compiles: bool = False
    #: The output's shape; None: the input's.
    output_shape: tuple[int, ...] | None = None
    #: The scSE blocks inside ``fn`` (a network's), for the share of its time they take.
    blocks: tuple[torch.nn.Module, ...] = ()
    #: How the reference runs when it shows what the precision costs (``correctness.Trial.seed_form``).
    seed_form: Callable[[torch.nn.Module], Callable] | None = None
    #: The reference's parameters whose gradients a train step must give (``correctness.Trial.judged``).
    judged: tuple[str, ...] = ()
    #: Of ``judged``, those a miss of the whole is left to ``parts_check`` for (``correctness.Trial``).
    judged_where_they_sit: tuple[str, ...] = ()
    #: Why a train step of this subject cannot be judged (its variant built a plain function, whose
    #: weights autograd cannot reach), or None.
    untrainable: str | None = None
    #: Once the whole passed its check, a check of its parts where they sit (a network's blocks, each
    #: against the reference block in float64 on the input it received there), given the precision
    #: computed in: the first failed part's ``Check``, or None.
    parts_check: Callable[[str], Check | None] | None = None


#: What a train case of a variant that builds a plain function is skipped with.
PLAIN_FUNCTION = ("train mode needs a variant that builds an nn.Module: its parameters are what a train step "
                  "differentiates, and this one built a plain function")


def case_tensors(case: Case, seed: int, inputs: SharedInputs | None, memory_format: torch.memory_format
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The case's input (in ``memory_format``, requiring grad in train mode), a copy of it, and the
    cotangent, on the case's device in its dtype: each a copy of the shared draw."""
    device, dtype = torch.device(case.device), getattr(torch, case.dtype)
    x_drawn, grad_drawn = (inputs or SharedInputs()).get(case, seed)
    # copy=True: on the CPU in float32 ``to`` would hand out the kept draw itself
    x = x_drawn.to(device=device, dtype=dtype, copy=True).contiguous(memory_format=memory_format)
    x_before = x.clone()
    if case.mode == "train":
        x.requires_grad_(True)
    grad_out = grad_drawn.to(device=device, dtype=dtype, copy=True) if grad_drawn is not None else None
    return x, x_before, grad_out


def block_subject(case: Case, variant: Variant, seed: int, inputs: SharedInputs | None) -> Subject:
    """The variant alone, built from the case's seeded reference."""
    ref = make_reference(case, seed)
    x, x_before, grad_out = case_tensors(case, seed, inputs, tags_of(variant).memory_format)
    fn = variant.build(ref, torch.device(case.device), getattr(torch, case.dtype))
    if not callable(fn):  # None read as "'NoneType' object is not callable", or as a plain function in train
        raise TypeError(f"{variant.name}'s build returned {type(fn).__name__}, not a module or a function")
    train = case.mode == "train"
    params = trainable(fn) if train else {}
    judged = tuple(name for name, p in ref.named_parameters() if p.requires_grad) if train else ()
    untrainable = PLAIN_FUNCTION if train and not isinstance(fn, torch.nn.Module) else None
    return Subject(fn, ref, x, x_before, grad_out, params, lambda grads: reference_named(fn, grads, ref),
                   compiles=tags_of(variant).compiles, judged=judged, untrainable=untrainable)
