"""The tags a variant may declare beyond the registry's fields, and how to read them.

Tags are optional: a variant without any runs like the reference. Those the zoo uses:

``compute_dtype``         the dtype the arithmetic runs in when it differs from the input's (AMP):
                          its tolerance applies (the looser of the two).
``biases``                the ``bias`` settings supported, e.g. ``(True,)`` for smp; default both.
``input_memory_format``   ``"channels_last"``: give it NHWC input, so no layout copy is timed.
``compiles``              the first call compiles (or captures): time it as ``compile_s``, never as
                          latency, and count graphs compiled afterwards as ``recompiles``.
``compile_mode``          the ``torch.compile`` mode, for the record.
``output_reused``         the output buffer is overwritten by the next call (CUDA graphs): clone
                          what you keep.
"""
from __future__ import annotations

from typing import Any

import torch

from variants.registry import Variant


def tag(variant: Variant, key: str, default: Any = None) -> Any:
    """One tag's value, or ``default``."""
    return dict(variant.tags).get(key, default)


def supported_biases(variant: Variant) -> tuple[bool, ...]:
    """The bias settings a variant supports: its tag ``biases``, else both."""
    return tuple(bool(b) for b in tag(variant, "biases", (False, True)))


def bias_unsupported(variant: Variant, bias: bool) -> str | None:
    """Why ``variant`` can't run with ``bias``, or None."""
    biases = supported_biases(variant)
    if bool(bias) in biases:
        return None
    return f"{variant.name} supports bias={', '.join(str(b) for b in biases)} only"


def compute_dtype(variant: Variant, dtype: str) -> str:
    """The dtype a variant computes in for input of ``dtype``."""
    return str(tag(variant, "compute_dtype", dtype))


def input_memory_format(variant: Variant) -> torch.memory_format:
    """The memory format the variant wants its input in."""
    fmt = tag(variant, "input_memory_format", "contiguous")
    return torch.channels_last if fmt == "channels_last" else torch.contiguous_format


def compiles(variant: Variant) -> bool:
    """Whether the first call compiles (or captures) rather than just runs."""
    return bool(tag(variant, "compiles", False))
