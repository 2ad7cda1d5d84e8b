"""Moving the reference's weights into another implementation, and saying which name is which.

Every variant must compute the reference's function with the reference's weights. Most keep the
reference's parameter names; one that cannot (smp's ``cSE.1.weight`` for the reference's
``cse.fc.0.weight``) sets ``reference_names`` on the module it builds, a map from its own
parameter names to the reference's. The conformance suite (``harness.testing``) reads that map to
compare gradients name by name.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from variants.reference import ScSE

#: The fusions the fused kernels compute, by the code their kernels switch on (Triton and CUDA alike).
#: ``concat`` needs a 2C→C matmul per pixel, no longer a memory-bound epilogue: left to other variants.
FUSION_CODES: dict[str, int] = {"add": 0, "max": 1, "mul": 2, "gate": 3}
#: The attribute a built module may set: ``{own parameter name: reference parameter name}``.
REFERENCE_NAMES_ATTR = "reference_names"
#: Prefixes wrappers add to parameter names: torch.compile's OptimizedModule.
WRAPPER_PREFIXES: tuple[str, ...] = ("_orig_mod.",)


def reference_names(module: object) -> dict[str, str]:
    """The module's map from its parameter names to the reference's (empty: the names are the same)."""
    return dict(getattr(module, REFERENCE_NAMES_ATTR, None) or {})


def parameter_names(fn: object) -> dict[str, str]:
    """The callable's trainable parameters as ``{own name: reference name}`` (empty: not a module).

    Wrapper prefixes (torch.compile's ``_orig_mod.``) are dropped, then the module's
    ``reference_names`` map applies (to the name with or without the prefix).
    """
    if not isinstance(fn, nn.Module):
        return {}
    names = reference_names(fn)
    out = {}
    for name, p in fn.named_parameters():
        if not p.requires_grad:
            continue
        bare = name
        for prefix in WRAPPER_PREFIXES:
            bare = bare.replace(prefix, "")
        out[name] = names.get(name, names.get(bare, bare))
    return out


@torch.no_grad()
def copy_weights(
    module: nn.Module,
    reference: nn.Module,
    names: Mapping[str, str] | None = None,
    *,
    zero_missing: bool = False,
) -> nn.Module:
    """Copy ``reference``'s parameters into ``module``, reshaping where only the layout differs.

    A 1x1 conv's ``(out, in, 1, 1)`` weight and a Linear's ``(out, in)`` weight hold the same
    numbers, so a reshape is allowed when the element counts agree. ``zero_missing`` zeroes a
    parameter the reference lacks (a bias of a bias-free reference), which leaves the function as is.
    """
    names = dict(names or {})
    ref_params = dict(reference.named_parameters())
    for name, param in module.named_parameters():
        ref_name = names.get(name, name)
        source = ref_params.get(ref_name)
        if source is None:
            if zero_missing:
                param.zero_()
                continue
            raise KeyError(f"{type(module).__name__}.{name} has no reference parameter {ref_name!r}")
        if source.numel() != param.numel():
            raise ValueError(f"{name}: {tuple(param.shape)} can't hold the reference's {tuple(source.shape)}")
        param.copy_(source.reshape(param.shape))
    return module


def rebuild(cls: type[ScSE], reference: ScSE, device: torch.device, dtype: torch.dtype) -> ScSE:
    """An instance of the ``ScSE`` subclass ``cls`` with the reference's configuration and weights."""
    module = cls(reference.channels, reduction=reference.reduction, fusion=reference.fusion, bias=reference.bias)
    module.load_state_dict(reference.state_dict(), strict=True)
    return module.to(device=device, dtype=dtype)


class KernelWeights(NamedTuple):
    """The parameters as fused kernels read them, gathered once per module (``kernel_weights``):
    w1 (hidden, C) and w2 (C, hidden) row-major, ws (C), the biases, alpha the gate logits (C)."""

    w1: torch.Tensor
    b1: torch.Tensor | None
    w2: torch.Tensor
    b2: torch.Tensor | None
    ws: torch.Tensor
    bs: torch.Tensor | None
    alpha: torch.Tensor | None
    fusion: str


def check_channels(x: torch.Tensor, w: KernelWeights) -> None:
    """The fused kernels (Triton's and CUDA's) index the weights by the input's channels: another
    count reads (and, backward, writes) past them."""
    if x.dim() != 4 or x.shape[1] != w.ws.numel():
        raise ValueError(f"the block takes NCHW input with {w.ws.numel()} channels, got shape {tuple(x.shape)}")


def kernel_weights(module: nn.Module) -> KernelWeights:
    """``module``'s parameters (an ``ScSE``'s names), checked once for what the kernels assume."""
    fusion = module.fusion
    if fusion not in FUSION_CODES:
        raise ValueError(f"the fused kernels compute fusion {', '.join(FUSION_CODES)}, not {fusion!r}")
    fc1, fc2, conv = module.cse.fc[0], module.cse.fc[2], module.sse.Conv1x1
    weights = KernelWeights(fc1.weight, fc1.bias, fc2.weight, fc2.bias, conv.weight, conv.bias,
                            module.gate if fusion == "gate" else None, fusion)
    for name, t in zip(KernelWeights._fields[:-1], weights[:-1], strict=True):
        if t is not None and not t.is_contiguous():
            raise ValueError(f"the fused kernels read {name} as a dense row-major array; it has strides {t.stride()}")
    return weights


class ReferenceWeights(nn.Module):
    """A copy of the reference's parameters under the same names, for a variant that computes the
    forward its own way (a fused kernel) but must keep the reference's weights and gradients.

    ``weights`` is what the kernels read (``kernel_weights``): the parameters themselves, not
    copies, so an optimizer's in-place update is seen. They are gathered when built, again whenever
    ``.to()`` and friends may have replaced the parameters, and again when a call finds that one was
    replaced (``load_state_dict(assign=True)``, ``torch.func.functional_call``, a new ``Parameter``,
    a parametrization): a check of identities, not a gathering, per call.
    """

    def __init__(self, reference: ScSE) -> None:
        super().__init__()
        ref = copy.deepcopy(reference)
        self.fusion: str = ref.fusion
        self.cse = ref.cse
        self.sse = ref.sse
        if ref.fusion == "gate":
            self.gate = ref.gate
        self._gather()

    def _gather(self) -> KernelWeights:
        gathered = kernel_weights(self)
        fc1, fc2, conv = self.cse.fc[0], self.cse.fc[2], self.sse.Conv1x1
        slots = [(fc1, "weight"), (fc1, "bias"), (fc2, "weight"), (fc2, "bias"), (conv, "weight"), (conv, "bias"),
                 (self, "gate")]  # fmt: skip
        # where each tensor lives: a module's parameter table, which every replacement writes
        self._held = tuple((owner._parameters, name, t) for (owner, name), t in zip(slots, gathered[:-1], strict=True))
        self._weights = gathered
        return gathered

    @property
    def weights(self) -> KernelWeights:
        for table, name, tensor in self._held:
            if table.get(name) is not tensor:
                return self._gather()
        return self._weights

    def _apply(self, fn: Any, recurse: bool = True) -> ReferenceWeights:
        super()._apply(fn, recurse)
        self._gather()
        return self
