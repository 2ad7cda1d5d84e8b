"""Swapping every scSE block of a network for a variant, each built from that block's own weights.

The swapped network computes the unmodified network's function, so it is checked against that
network in float64 (exactly, within float64's rounding) and then timed as a whole. ``Swapped.names``
maps the swapped blocks' parameter names to the unmodified network's, so that their gradients are
compared name by name.
"""
from __future__ import annotations

import copy
import itertools
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from variants.contexts import Context
from variants.registry import Variant
from variants.weights import WRAPPER_PREFIXES, parameter_names


class Block(nn.Module):
    """A variant that builds a plain callable, as a module a network can hold."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@dataclass(frozen=True)
class Swapped:
    """A network whose scSE blocks are the variant's."""

    #: The swapped network in its context's form, on the device in the dtype, in train or eval mode.
    network: nn.Module
    #: The variant's modules, one per block swapped.
    blocks: tuple[nn.Module, ...]
    #: The swapped blocks' parameter names in ``network`` (wrapper prefixes dropped) → the unmodified network's.
    names: dict[str, str]
    #: Where each of ``blocks`` sits, in the same order.
    paths: tuple[str, ...] = ()
    #: ``network`` before its form: the same modules, run as they are (``network`` itself for the eager form).
    plain: nn.Module | None = None

    def original_name(self, name: str) -> str | None:
        """The unmodified network's name for a parameter of ``network``; None for a non-scSE one."""
        for prefix in WRAPPER_PREFIXES:
            name = name.replace(prefix, "")
        return self.names.get(name)


def block_paths(context: Context, network: nn.Module) -> list[str]:
    """Where the context's scSE blocks sit in ``network``, in module order."""
    return [path for path, module in network.named_modules() if path and context.is_block(module)]


def swap_blocks(context: Context, original: nn.Module, variant: Variant, device: torch.device,
                dtype: torch.dtype, train: bool) -> Swapped:
    """A copy of ``original`` (float32, CPU, unmodified) on ``device`` in ``dtype`` with every scSE
    block replaced by ``variant`` built from that block's weights, in ``context.form``.

    The rest of the network is converted first, and each block is built in place afterwards, so a
    variant keeps whatever precision it chose for its own weights (AMP keeps float32 masters).
    """
    paths = block_paths(context, original)
    if not paths:
        raise ValueError(f"context {context.name}: the network has no scSE block to swap")
    network = copy.deepcopy(original).to(device=device, dtype=dtype)
    copies = [network.get_submodule(path) for path in paths]  # the original blocks, as the copy holds them
    to_original = {ref: own for own, ref in context.block_names.items()}
    blocks: list[nn.Module] = []
    names: dict[str, str] = {}
    for path in paths:
        reference = context.to_reference(original.get_submodule(path))
        declared = (context.reduction, context.fusion, context.bias)
        if (reference.reduction, reference.fusion, reference.bias) != declared:  # rows are labelled by the context's
            raise ValueError(f"context {context.name}: block {path} is reduction {reference.reduction}, fusion "
                             f"{reference.fusion}, bias {reference.bias}, but the context declares reduction "
                             f"{declared[0]}, fusion {declared[1]}, bias {declared[2]}")
        built = variant.build(reference, device, dtype)
        block = built if isinstance(built, nn.Module) else Block(built)
        for own, ref in parameter_names(block).items():
            bare = own
            for prefix in WRAPPER_PREFIXES:
                bare = bare.replace(prefix, "")
            names[f"{path}.{bare}"] = f"{path}.{to_original.get(ref, ref)}"
        network.set_submodule(path, block)
        blocks.append(block)
    # by identity, not by ``is_block``: a variant may build the very class the network's blocks are
    left = [name for name, module in network.named_modules() if any(module is c for c in copies)]
    if left:  # a swap that missed a block (one held at two paths too) would time the original there
        raise RuntimeError(f"context {context.name}: {len(left)} original scSE block(s) left after the swap, "
                           f"first at {left[0]}")
    network.train(train)
    return Swapped(in_form(context, network), tuple(blocks), names, tuple(paths), network)


class CompiledNetwork(nn.Module):
    """A network under ``torch.compile(dynamic=False, fullgraph=True)`` through an entry function of
    its own, as ``variants.compiled`` compiles a block: dynamo keeps one cache per code object, and
    every case's network shares its class's ``forward``, so after ``recompile_limit`` (8) cases of a
    sweep dynamo silently ran the "compiled" network eagerly. Here each build has its own cache,
    every shape its own graph, and a graph break is an error, never a network compiled in pieces."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self._orig_mod = network  # torch.compile's own name for it: every map of names drops "_orig_mod."
        self._entry = _fresh_entry()
        self._compiled = torch.compile(self._entry, dynamic=False, fullgraph=True)

    @property
    def compiled_graphs(self) -> int:
        """Graphs dynamo has compiled for this build so far."""
        from torch._dynamo.eval_frame import _debug_get_cache_entry_list

        return len(_debug_get_cache_entry_list(self._entry.__code__))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._compiled(self._orig_mod, x)


_entry_ids = itertools.count()


def _fresh_entry() -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    def entry(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return network(x)

    code = entry.__code__.replace(co_name=f"compiled_network_{next(_entry_ids)}")
    return types.FunctionType(code, entry.__globals__, code.co_name)


def in_form(context: Context, network: nn.Module) -> nn.Module:
    """The swapped network as the context runs it: as it is, compiled, or captured in a CUDA graph."""
    if context.form == "compile":
        return CompiledNetwork(network)
    if context.form == "graph":
        from variants.cuda_graph import CudaGraphScSE

        return CudaGraphScSE(network)
    return network
