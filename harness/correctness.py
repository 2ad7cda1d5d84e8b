"""Correctness before timing: every case is compared with the reference computed in float64.

The error measure is normwise: ``max|y - y_ref| / max|y_ref|``. Element-wise relative error
explodes where the reference crosses zero (scSE outputs do, everywhere), so the largest error is
scaled by the largest reference value, as BLAS test suites do. NaN or Inf in the output never pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Normwise tolerance per compute dtype. float32 on CUDA with TF32 allowed uses ``TF32_TOLERANCE``.
TOLERANCES: dict[str, float] = {
    "float64": 1e-10,
    "float32": 1e-5,
    "float16": 5e-3,
    "bfloat16": 3e-2,
}
#: TF32 keeps 10 mantissa bits, like float16.
TF32_TOLERANCE = 5e-3
#: Gradients pass through one more reduction than the output, so they get twice the slack.
GRAD_FACTOR = 2.0


def tf32_enabled(device: torch.device | str) -> bool:
    """Whether float32 convolutions or matmuls on ``device`` may run in TF32."""
    if torch.device(device).type != "cuda":
        return False
    return bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)


def tolerance(dtype: str, device: torch.device | str, grad: bool = False) -> float:
    """The normwise tolerance for a case computed in ``dtype`` on ``device``."""
    tol = TOLERANCES[dtype]
    if dtype == "float32" and tf32_enabled(device):
        tol = TF32_TOLERANCE
    return tol * (GRAD_FACTOR if grad else 1.0)


def normwise_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max|actual - expected| / max|expected|`` in float64; inf when ``actual`` has NaN or Inf."""
    a = actual.detach().to(device="cpu", dtype=torch.float64)
    e = expected.detach().to(device="cpu", dtype=torch.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape {tuple(a.shape)} differs from the reference's {tuple(e.shape)}")
    if not torch.isfinite(a).all():
        return math.inf
    scale = e.abs().max().item()
    diff = (a - e).abs().max().item() if a.numel() else 0.0
    return diff / scale if scale > 0 else diff


@dataclass(frozen=True)
class Check:
    """The outcome of comparing one case with its float64 reference."""

    max_rel_err: float
    grad_rel_err: float | None
    tolerance: float
    grad_tolerance: float | None
    problem: str | None  # None when the case passed

    @property
    def passed(self) -> bool:
        return self.problem is None
