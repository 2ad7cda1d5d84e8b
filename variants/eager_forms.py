"""Eager rewrites of scSE that people choose between: same math, fewer passes or other operators.

Each keeps the reference's parameter names, so gradients compare name by name.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from variants.reference import ScSE
from variants.registry import register
from variants.weights import copy_weights, rebuild

ALL_DTYPES = ("float32", "float16", "bfloat16", "float64")

#: Fusions where ``combine(x·c, x·s)`` factors exactly into ``x · f(c, s)``. ``max`` does not:
#: ``max(x·c, x·s)`` is ``x·min(c, s)`` wherever x < 0. ``concat`` mixes channels after the product.
FACTORED_FUSIONS: tuple[str, ...] = ("add", "mul", "gate")


def _needs_graph(x: torch.Tensor, module: nn.Module) -> bool:
    """Whether autograd will record this call (then in-place writes would cost a hidden copy)."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))


class FactoredScSE(ScSE):
    """scSE with the output written once: ``x · f(c, s)`` for the per-channel c and per-pixel s.

    The reference makes two full-size products and a sum (three full-size writes); here one
    broadcast pass builds ``f(c, s)`` into a fresh buffer and ``x`` is multiplied into it in place.
    """

    def __init__(self, channels: int, reduction: int = 2, fusion: str = "add", bias: bool = False) -> None:
        if fusion not in FACTORED_FUSIONS:
            raise ValueError(f"fusion {fusion!r} does not factor exactly; eager_factored supports {FACTORED_FUSIONS}")
        super().__init__(channels, reduction, fusion, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cse.fc(self.cse.avg_pool(x))  # (N, C, 1, 1)
        s = torch.sigmoid(self.sse.Conv1x1(x))  # (N, 1, H, W)
        if self.fusion == "add":
            scale = c + s  # x·c + x·s = x·(c + s)
        elif self.fusion == "gate":
            g = torch.sigmoid(self.gate)  # g·x·c + (1−g)·x·s = x·(g·c + (1−g)·s)
            scale = torch.addcmul(g * c, 1 - g, s)
        else:  # mul: (x·c)·(x·s) = ((c·s)·x)·x, ordered so no intermediate outgrows the result
            scale = c * s
            scale = scale.mul_(x) if not _needs_graph(x, self) else scale * x
        if _needs_graph(x, self):
            return scale * x
        return scale.mul_(x)


class MeanPool(nn.Module):
    """Global average pooling as ``x.mean((2, 3))``: the workaround for pytorch#43992."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class LinearCSE(nn.Module):
    """The channel branch with its MLP as ``nn.Linear`` on the pooled ``(N, C)`` vector."""

    def __init__(self, channels: int, reduction: int, bias: bool) -> None:
        super().__init__()
        hidden = channels // reduction
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.avg_pool(x).flatten(1))
        return x * y[:, :, None, None]


class ChannelsLastScSE(ScSE):
    """The reference with weights and input in ``torch.channels_last`` (NHWC).

    The input is converted only if it is not channels_last already; the runner should make it
    channels_last beforehand (tag ``input_memory_format``) so that no copy is timed.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last))


@register("eager_factored", "x·(c + s): one broadcast pass into a fresh buffer, x multiplied in place",
          dtypes=ALL_DTYPES, fusions=FACTORED_FUSIONS)
def build_eager_factored(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    return rebuild(FactoredScSE, reference, device, dtype)


@register("mean_squeeze", "squeeze as x.mean((2, 3)) instead of AdaptiveAvgPool2d", dtypes=ALL_DTYPES)
def build_mean_squeeze(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    module = rebuild(ScSE, reference, device, dtype)
    module.cse.avg_pool = MeanPool()
    return module


@register("linear_excite", "excitation MLP as nn.Linear on the pooled (N, C) vector, not 1x1 convs",
          dtypes=ALL_DTYPES)
def build_linear_excite(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    module = ScSE(reference.channels, reduction=reference.reduction, fusion=reference.fusion, bias=reference.bias)
    module.cse = LinearCSE(reference.channels, reference.reduction, reference.bias)
    return copy_weights(module, reference).to(device=device, dtype=dtype)


@register("channels_last", "the reference with module and input in torch.channels_last", dtypes=ALL_DTYPES,
          tags={"input_memory_format": "channels_last"})
def build_channels_last(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    module = rebuild(ChannelsLastScSE, reference, device, dtype)
    return module.to(memory_format=torch.channels_last)
