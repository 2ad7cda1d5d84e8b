"""Contexts: networks that contain scSE blocks, so that a variant is measured where it is used.

A block's GPU time can hide behind the other layers of a network, or its host time can dominate
them; only the network says which. A ``Context`` builds the unmodified network, finds its scSE
blocks, and says how to read one block as the reference ``ScSE`` (its weights renamed). The runner
swaps every block for the variant being measured (``variants.swap``) and times the whole network.

``form`` is how the whole network runs: ``eager``, ``compile`` (``torch.compile`` of the swapped
network) or ``graph`` (the swapped network captured in one CUDA graph), so a user can see whether a
fused block still matters once the network is compiled or graphed.

Other packages add contexts through the entry-point group ``harness.contexts``; each entry point
names a module (imported for its ``add_context`` calls), a ``Context``, or a function returning one
or several.

A context may say what one of its CPU cases holds in host memory at its peak (``host_peak``, a
``HostPeak``), so that the sweep refuses a case too large for the machine as an ``oom`` row before it
runs (``harness.sweep.oom``) instead of being ended by the kernel's OOM killer; a context that gives
none is estimated with a stated default (``DEFAULT_HOST_PEAK``).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch.nn as nn

from variants.reference import ScSE
from variants.registry import add_named, always_available, checked, load_plugins, nearest

ENTRY_POINT_GROUP = "harness.contexts"
#: Modules whose import registers the built-in contexts.
BUILTIN_MODULES: tuple[str, ...] = ("variants.unet",)
#: How the whole network runs.
FORMS: tuple[str, ...] = ("eager", "compile", "graph")


@dataclass(frozen=True)
class HostPeak:
    """The host memory one CPU case of a network takes at its peak: ``per_element`` bytes by mode per
    element of the network's input (N·C·H·W; above every float32 and 16-bit case measured, the
    allocator's heap counted; the harness doubles it in float64), plus the network's weights,
    ``parameters`` × 4 B × ``WEIGHT_COPIES[mode]``."""

    #: The network's parameters (its float32 weights are 4 B each).
    parameters: int
    #: Bytes per element of the network's input, by mode ("forward", "train").
    per_element: Mapping[str, int]
    #: Copies of the weights a case holds: the unmodified float32 network, its swapped copy, the
    #: float64 reference (two), the unmodified network in the case's dtype; in train each one's gradients.
    WEIGHT_COPIES: ClassVar[Mapping[str, int]] = {"forward": 5, "train": 10}

    def bytes(self, mode: str, elements: int) -> int:
        """The estimate for a case of ``mode`` whose input has ``elements`` elements."""
        return elements * self.per_element[mode] + self.parameters * 4 * self.WEIGHT_COPIES[mode]


#: A network whose context gives no ``host_peak``: a guess, not a bound — twice the U-Net's measured
#: figures (``variants.unet``), with weights of its size. A network larger per input element than
#: that may still be killed; its context should say (``Context.host_peak``).
DEFAULT_HOST_PEAK = HostPeak(parameters=25_000_000, per_element={"forward": 4096, "train": 8192})


@dataclass(frozen=True)
class Context:
    """A network with scSE blocks, and what the harness must know to swap them."""

    name: str
    description: str
    #: The unmodified network in float32 on the CPU, weights from torch's global RNG (the caller seeds it).
    build: Callable[[], nn.Module]
    #: Whether a module of the network is one of its scSE blocks (the modules a swap replaces).
    is_block: Callable[[nn.Module], bool]
    #: A block as the reference ``ScSE``, with the block's weights (float32, CPU).
    to_reference: Callable[[nn.Module], ScSE]
    #: A block's parameter names → the reference's (empty: the same names).
    block_names: Mapping[str, str] = field(default_factory=dict)
    #: The network's input and output channels: its input is (N, in_channels, H, W).
    in_channels: int = 3
    out_channels: int = 1
    #: The configuration every block of the network has: a case's ``reduction``, ``fusion``, ``bias``.
    reduction: int = 16
    fusion: str = "add"
    bias: bool = True
    form: str = "eager"
    #: The network this context runs, shared by its forms (``unet_compiled`` runs ``unet``); empty: its own name.
    network: str = ""
    devices: frozenset[str] = frozenset(("cpu", "cuda"))
    modes: frozenset[str] = frozenset(("forward", "train"))
    available: Callable[[], str | None] = always_available
    #: Height and width must be multiples of this (a U-Net halves them five times).
    size_multiple: int = 1
    #: What one CPU case takes in host memory at its peak (``HostPeak``); None: ``DEFAULT_HOST_PEAK``
    #: (``peak``).
    host_peak: HostPeak | None = None

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"context {self.name!r}: form {self.form!r} is not one of {', '.join(FORMS)}")

    @property
    def peak(self) -> HostPeak:
        """What one CPU case of this network takes at its peak: its own figure, else the default."""
        return self.host_peak or DEFAULT_HOST_PEAK

    @property
    def network_name(self) -> str:
        return self.network or self.name

    def unsupported(self, device: str, mode: str) -> str | None:
        """Why this context can't run on ``device`` in ``mode``, or None."""
        if device.split(":")[0] not in self.devices:
            return f"context {self.name} runs on {', '.join(sorted(self.devices))}"
        if mode not in self.modes:
            return f"context {self.name} supports mode {', '.join(sorted(self.modes))}, not {mode}"
        return None

    def unavailable(self) -> str | None:
        """Why the network can't be built here (a missing library), or None."""
        return checked(self.available)


_CONTEXTS: dict[str, Context] = {}
_entry_points_loaded = False


def add_context(context: Context, *, replace: bool = False) -> Context:
    """Register ``context``; a second one under a taken name is an error unless ``replace``."""
    return add_named(_CONTEXTS, context, "context", replace)


def remove_context(name: str) -> None:
    """Forget a context (tests use this to clean up)."""
    _CONTEXTS.pop(name, None)


def load_entry_points(force: bool = False) -> list[str]:
    """Import every ``harness.contexts`` entry point once (again with ``force``); returns warnings
    for broken plugins."""
    global _entry_points_loaded
    if _entry_points_loaded and not force:
        return []
    _entry_points_loaded = True
    return load_plugins(ENTRY_POINT_GROUP, Context, lambda c: add_context(c, replace=force), "context")


def all_contexts() -> dict[str, Context]:
    """Every registered context, built-in and from plugins, by name."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    load_entry_points()
    return dict(_CONTEXTS)


def get_context(name: str) -> Context:
    """The context called ``name``; a KeyError that suggests the nearest names otherwise."""
    found = all_contexts()
    if name in found:
        return found[name]
    raise KeyError(unknown_context_message(name, found))


def unknown_context_message(name: str, known: Iterable[str]) -> str:
    names = sorted(known)
    close = nearest(name, names)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(names) or 'none'}"
    return f"unknown context {name!r}{hint}"
