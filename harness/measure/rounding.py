"""Monte Carlo arithmetic: a module run in float64 with every rounding step of a lower precision
replaced by a random error distributed as that precision's rounding error.

Why: a gradient that is one cancelling sum (the hidden unit of a reduction-16 bottleneck has one)
is ill-conditioned, so how far a correct low-precision implementation lands from float64 depends on
where it rounds. One run of PyTorch's own module is one draw of that error, and a correct variant
that rounds elsewhere is another: in bfloat16 eager_factored missed twice the first in 4 of 800
runs (``variants/KERNEL_NOTES.md``, "Judging a cancelling gradient"). A few perturbed runs show how far
a correct rounding can move the result (D. Stott Parker, "Monte Carlo Arithmetic", 1997).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

aten = torch.ops.aten

#: Operations whose results a low-precision run doesn't round: they move, select or create values.
#: Views and in-place writes are recognised from their schemas, casts by their dtypes (``rounds``).
EXACT: frozenset[Any] = frozenset({
    aten.clone, aten.copy, aten.detach, aten.alias, aten.lift_fresh, aten.contiguous,
    aten.empty_like, aten.zeros_like, aten.ones_like, aten.full_like, aten.new_zeros, aten.new_ones,
    aten.new_empty, aten.new_full, aten.zeros, aten.ones, aten.empty, aten.full, aten.scalar_tensor,
    aten.fill, aten.masked_fill, aten.where, aten.maximum, aten.minimum, aten.max, aten.min, aten.relu,
    aten.threshold_backward, aten.neg, aten.abs, aten.cat, aten.stack, aten.index, aten.select_backward,
    aten.slice_backward, aten.expand_copy, aten.squeeze_copy, aten.unsqueeze_copy,
})


class RandomRounding(TorchDispatchMode):
    """While active, every floating result v of an operation that would round in ``dtype`` gets an
    error uniform in ±½ ulp(v), the ulp being ``dtype``'s: round-to-nearest's error when the bits it
    drops are uniform (a relative error of at most half ``dtype``'s epsilon).

    Run around a float64 forward and its backward, it perturbs both passes, as rounding would. A
    cast rounds only from a finer dtype than ``dtype`` (a float32 weight does; a bfloat16 input,
    already representable, does not), and a result no finer than ``dtype`` was rounded for real.
    """

    def __init__(self, dtype: torch.dtype, generator: torch.Generator) -> None:
        super().__init__()
        self.dtype = dtype
        self.mantissa_bits = -round(math.log2(torch.finfo(dtype).eps))  # stored bits: eps = 2^-bits
        self.generator = generator

    def rounds(self, func: Any, args: tuple) -> bool:
        if func.is_view or func._schema.is_mutable or func.overloadpacket in EXACT:
            return False
        if func.overloadpacket is aten._to_copy:
            source = args[0]
            return source.is_floating_point() and self.finer(source.dtype)
        return True

    def finer(self, dtype: torch.dtype) -> bool:
        """Whether ``dtype`` holds more bits than the emulated one (a coarser result is rounded for real)."""
        return torch.finfo(dtype).eps < torch.finfo(self.dtype).eps

    def perturb(self, t: object) -> object:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0 or not self.finer(t.dtype):
            return t
        draw = torch.rand(t.shape, generator=self.generator, dtype=torch.float64).to(t)  # t's device and dtype
        _, exponent = torch.frexp(t)  # t = m·2^e with ½ ≤ |m| < 1, so ulp(t) = 2^(e - 1 - mantissa bits)
        ulp = torch.ldexp(torch.ones_like(t), exponent - 1 - self.mantissa_bits)
        return t + (draw - 0.5) * ulp * (t != 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        return tree_map(self.perturb, out) if self.rounds(func, args) else out
