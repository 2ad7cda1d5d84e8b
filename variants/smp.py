"""segmentation-models-pytorch's ``SCSEModule``, with its parameter names, so its checkpoints load.

smp (``segmentation_models_pytorch/base/modules.py``) writes scSE as two ``nn.Sequential``s with a
bias on every conv and reduction 16 by default, and returns ``x*cSE(x) + x*sSE(x)``: the
reference's ``fusion="add"`` with ``bias=True``. Its parameter names differ from the reference's;
``SMP_TO_REFERENCE`` says which is which, and the built module carries it as ``reference_names``.

The variant declares ``bias=True`` (tag ``biases``) since smp's convs always have one. Built from a
bias-free reference it still computes the reference's function (its biases are zeroed), but then it
has parameters the reference lacks, so that configuration is not claimed.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from variants.registry import register
from variants.weights import copy_weights

#: smp's parameter name → the reference's.
SMP_TO_REFERENCE: dict[str, str] = {
    "cSE.1.weight": "cse.fc.0.weight",
    "cSE.1.bias": "cse.fc.0.bias",
    "cSE.3.weight": "cse.fc.2.weight",
    "cSE.3.bias": "cse.fc.2.bias",
    "sSE.0.weight": "sse.Conv1x1.weight",
    "sSE.0.bias": "sse.Conv1x1.bias",
}


class SmpSCSE(nn.Module):
    """smp's ``SCSEModule``: the same modules in the same order, hence the same state_dict keys."""

    reference_names = SMP_TO_REFERENCE

    def __init__(self, in_channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.cSE = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, in_channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels // reduction, in_channels, 1),
            nn.Sigmoid(),
        )
        self.sSE = nn.Sequential(nn.Conv2d(in_channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.cSE(x) + x * self.sSE(x)


def to_reference_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An smp ``SCSEModule`` checkpoint renamed for ``ScSE(C, reduction, fusion="add", bias=True)``."""
    unknown = sorted(set(state_dict) - set(SMP_TO_REFERENCE))
    if unknown:
        raise KeyError(f"not keys of smp's SCSEModule: {', '.join(unknown)}")
    return {SMP_TO_REFERENCE[k]: v for k, v in state_dict.items()}


@register("smp", "segmentation-models-pytorch's SCSEModule: bias on every conv, x*cSE(x) + x*sSE(x)",
          dtypes=("float32", "float16", "bfloat16", "float64"), fusions=("add",), tags={"biases": (True,)})
def build_smp(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    module = SmpSCSE(reference.channels, reduction=reference.reduction)
    copy_weights(module, reference, SMP_TO_REFERENCE, zero_missing=True)
    return module.to(device=device, dtype=dtype)
