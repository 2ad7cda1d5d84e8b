"""The reference scSE module: the seed's code, plus the fusions and options the variants explore.

Parameter names follow the seed (``cse.fc.0.weight``, ``cse.fc.2.weight``, ``sse.Conv1x1.weight``)
so that a state_dict saved from the seed's ``scSE`` loads here with ``strict=True``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

FUSIONS: tuple[str, ...] = ("add", "max", "mul", "gate", "concat")


class cSE(nn.Module):  # noqa: N801 - the seed's name, kept for checkpoint compatibility
    """Channel squeeze & excitation: global average pool, bottleneck MLP, sigmoid gate per channel."""

    def __init__(self, in_channel: int, reduction: int = 2, bias: bool = False) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(in_channel, in_channel // reduction, 1, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channel // reduction, in_channel, 1, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)
        y = self.fc(y)
        return x * y.expand_as(x)


class sSE(nn.Module):  # noqa: N801
    """Spatial squeeze & excitation: a 1x1 conv to one channel, sigmoid gate per pixel."""

    def __init__(self, in_channel: int, bias: bool = False) -> None:
        super().__init__()
        self.Conv1x1 = nn.Conv2d(in_channel, 1, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.Conv1x1(x)
        return x * torch.sigmoid(y)


class ScSE(nn.Module):
    """Concurrent spatial and channel SE; ``fusion`` says how the two branches are combined.

    ``add`` is the seed's sum; ``max`` the scSE authors' max-out; ``mul`` the product of the two
    branches; ``gate`` a learned per-channel mix ``σ(α)·cSE + (1−σ(α))·sSE`` with α starting at 0;
    ``concat`` a 1x1 conv over the two branches concatenated (2C → C).
    """

    def __init__(self, channels: int, reduction: int = 2, fusion: str = "add", bias: bool = False) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"reduction {reduction} leaves no hidden channel for C={channels}")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose from {', '.join(FUSIONS)}")
        self.channels, self.reduction, self.fusion, self.bias = channels, reduction, fusion, bias
        self.cse = cSE(channels, reduction, bias)
        self.sse = sSE(channels, bias)
        if fusion == "gate":
            self.gate = nn.Parameter(torch.zeros(1, channels, 1, 1))
        elif fusion == "concat":
            self.project = nn.Conv2d(2 * channels, channels, 1, bias=bias)

    def combine(self, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Fuse the channel branch ``c`` = x·cSE and the spatial branch ``s`` = x·sSE."""
        if self.fusion == "add":
            return c + s
        if self.fusion == "max":
            return torch.maximum(c, s)
        if self.fusion == "mul":
            return c * s
        if self.fusion == "gate":
            g = torch.sigmoid(self.gate)
            return g * c + (1 - g) * s
        return self.project(torch.cat([c, s], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.cse(x), self.sse(x))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, fusion={self.fusion!r}, bias={self.bias}"
