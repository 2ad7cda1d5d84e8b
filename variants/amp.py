"""The reference under ``torch.autocast``: weights stay float32, the convolutions run in fp16/bf16.

What ``dtype`` means here: the dtype of the *input*, i.e. of the activations arriving at the block.
``float32`` is a float32 model wrapped in autocast; ``float16``/``bfloat16`` is the block inside a
mixed-precision network whose previous layer already produced half-precision activations. Either way
the arithmetic that matters runs in the autocast dtype, given by the tag ``compute_dtype``: the
tolerance of a case is the looser of its dtype's and its compute dtype's
(``harness.testing.case_tolerance``). The output is returned in the input's dtype, as the other
variants do (for ``concat`` autocast would otherwise hand back the projection's half output).

The squeeze is ``x.mean((2, 3), dtype=float32)``, not ``AdaptiveAvgPool2d``: with channels_last
input under AMP the pooling produced NaN on CUDA (pytorch/pytorch#43992, in SE blocks of timm's
models); the mean accumulated in float32 is the workaround given there, and a half-precision sum
over H·W overflows anyway once the activations' sum passes 65504.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from variants.reference import ScSE
from variants.registry import register
from variants.weights import rebuild


class AutocastScSE(ScSE):
    """The reference's math under autocast, with a float32-accumulated squeeze."""

    compute_dtype: torch.dtype = torch.float16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.compute_dtype):
            pooled = x.mean((2, 3), keepdim=True, dtype=torch.float32)
            c = x * self.cse.fc(pooled)
            s = self.sse(x)
            out = self.combine(c, s)
        return out.to(x.dtype)


class AutocastFp16ScSE(AutocastScSE):
    compute_dtype = torch.float16


class AutocastBf16ScSE(AutocastScSE):
    compute_dtype = torch.bfloat16


def _build(cls: type[AutocastScSE]):
    def build(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
        # Master weights stay float32 whatever the input's dtype: that is what AMP is.
        return rebuild(cls, reference, device, torch.float32)

    return build


register("amp_fp16", "the reference under torch.autocast(float16), float32 weights, float32-accumulated squeeze",
         dtypes=("float32", "float16"), tags={"compute_dtype": "float16"})(_build(AutocastFp16ScSE))
register("amp_bf16", "the reference under torch.autocast(bfloat16), float32 weights, float32-accumulated squeeze",
         dtypes=("float32", "bfloat16"), tags={"compute_dtype": "bfloat16"})(_build(AutocastBf16ScSE))
