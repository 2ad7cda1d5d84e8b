"""What a variant may declare beyond the registry's fields, typed: the harness reads tags only here.

A variant registers its tags as a dict (``register(..., tags={"compiles": True})``); ``tags_of``
gives them back as a frozen ``Tags``, so a misspelt or mistyped tag fails at registration rather
than being ignored in the middle of a sweep. Tags are optional: a variant without any runs like
the reference. Keys this module does not know are kept in ``Tags.other`` for other tools.
"""
from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch

DTYPE_NAMES: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")
#: The ``torch.compile`` modes that replay CUDA graphs on a GPU.
GRAPHED_COMPILE_MODES: tuple[str, ...] = ("reduce-overhead", "max-autotune")


class Tagged(Protocol):
    name: str
    tags: tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class Tags:
    """A variant's declared traits, with the defaults of a variant that declares none."""

    #: The dtype the arithmetic runs in when it differs from the input's (AMP): the looser
    #: tolerance of the two applies.
    compute_dtype: str | None = None
    #: The ``bias`` settings supported, e.g. ``(True,)`` for smp.
    biases: tuple[bool, ...] = (False, True)
    #: ``"channels_last"``: give it NHWC input, so that no layout copy is timed.
    input_memory_format: str = "contiguous"
    #: The first call compiles (or captures): it is timed as ``compile_s``, never as latency, and
    #: graphs compiled afterwards are counted as ``recompiles``.
    compiles: bool = False
    #: The ``torch.compile`` mode, for the record and for estimating the first call's cost.
    compile_mode: str | None = None
    #: The output buffer is overwritten by the next call (CUDA graphs): clone what you keep.
    output_reused: bool = False
    #: On the CPU it runs in the Triton interpreter: checked, but timed only when named explicitly.
    interpreted_on_cpu: bool = False
    #: Always run its cases in a worker process (it may crash the process).
    isolate: bool = False
    #: Seconds its first call costs beyond a plain call (compilation, autotuning), for sharding.
    first_call_s: float | None = None
    #: Tags this module does not know, for other tools, as (key, value) pairs.
    other: tuple[tuple[str, object], ...] = ()

    @classmethod
    def parse(cls, values: Mapping[str, object]) -> Tags:
        """Validated tags from a registration's dict; ``ValueError`` naming a tag of the wrong type."""
        known = {f.name for f in fields(cls)} - {"other"}
        for key in values:  # another tool's tag is kept; one a letter or two from ours is a typo
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8) if key not in known else []
            if close:
                raise ValueError(f"unknown tag {key!r}; did you mean {close[0]!r}? (another tool's tag may not "
                                 "be spelt this close to a known one)")
        given = {k: v for k, v in values.items() if k in known}
        if "biases" in given:  # "False" is truthy: only True and False themselves
            biases = given["biases"]
            if isinstance(biases, (str, bytes)) or not isinstance(biases, Iterable) or not all(
                    isinstance(b, bool) for b in biases):
                raise ValueError(f"tag 'biases' must be a tuple of True and/or False, got {biases!r}")
            given["biases"] = tuple(biases)
        for key in ("compiles", "output_reused", "interpreted_on_cpu", "isolate"):
            if key in given and not isinstance(given[key], bool):
                raise ValueError(f"tag {key!r} must be True or False, got {given[key]!r}")
        if given.get("compute_dtype") is not None and given["compute_dtype"] not in DTYPE_NAMES:
            raise ValueError(f"tag 'compute_dtype' must be one of {', '.join(DTYPE_NAMES)}")
        if given.get("input_memory_format", "contiguous") not in ("contiguous", "channels_last"):
            raise ValueError("tag 'input_memory_format' must be 'contiguous' or 'channels_last'")
        if given.get("first_call_s") is not None:
            given["first_call_s"] = float(given["first_call_s"])  # type: ignore[arg-type]
        other = tuple(sorted((k, v) for k, v in values.items() if k not in known))
        return cls(**given, other=other)  # type: ignore[arg-type]

    @property
    def memory_format(self) -> torch.memory_format:
        """The memory format the variant wants its input in."""
        return torch.channels_last if self.input_memory_format == "channels_last" else torch.contiguous_format

    def replays_graphs(self, device: str) -> bool:
        """Whether its call replays CUDA graphs of its own on ``device``: a graph variant's, or
        ``torch.compile``'s in the modes that use CUDA graphs there (cudagraph trees)."""
        return self.output_reused or (device == "cuda" and self.compile_mode in GRAPHED_COMPILE_MODES)

    def dtype_for(self, dtype: str) -> str:
        """The dtype a variant computes in for input of ``dtype``."""
        return self.compute_dtype or dtype


@functools.cache
def _parsed(tags: tuple[tuple[str, object], ...]) -> Tags:
    return Tags.parse(dict(tags))


def tags_of(variant: Tagged) -> Tags:
    """A variant's tags, typed."""
    return _parsed(variant.tags)


def tag(variant: Tagged, key: str, default: Any = None) -> Any:
    """One tag's value by name (a known one typed, else from ``other``), or ``default``."""
    tags = tags_of(variant)
    if key in {f.name for f in fields(Tags)} - {"other"}:
        return getattr(tags, key)
    return dict(tags.other).get(key, default)


def supported_biases(variant: Tagged) -> tuple[bool, ...]:
    """The bias settings a variant supports: its tag ``biases``, else both."""
    return tags_of(variant).biases


def bias_unsupported(variant: Tagged, bias: bool) -> str | None:
    """Why ``variant`` can't run with ``bias``, or None."""
    biases = supported_biases(variant)
    if bool(bias) in biases:
        return None
    return f"{variant.name} supports bias={', '.join(str(b) for b in biases)} only"


def compute_dtype(variant: Tagged, dtype: str) -> str:
    """The dtype a variant computes in for input of ``dtype``."""
    return tags_of(variant).dtype_for(dtype)
