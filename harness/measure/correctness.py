"""Correctness before timing: every case is compared with the reference computed in float64.

Outputs are judged by the normwise error ``max|y - y_ref| / max|y_ref|``: element-wise relative
error explodes where the reference crosses zero (scSE outputs do, everywhere), so the largest error
is scaled by the largest reference value, as BLAS test suites do. Gradients are judged by the
relative Frobenius error ``‖g - g_ref‖ / ‖g_ref‖``: the max fusion's gradient is discontinuous
where the two branches tie, and a near-tie that rounds the other way moves one element by O(1)
without being wrong. NaN or Inf never pass.

A dtype's tolerance is a floor. Low precision is judged against what the seed's own module achieves
in that dtype, as PyTorch's accuracy checker does with its float64 reference: a case passes when its
error is at most ``max(tolerance, SEED_FACTOR × error of eager in the same dtype)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
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
#: How much worse than the seed's module in the same dtype a variant may be.
SEED_FACTOR = 5.0


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


def _relative_error(actual: torch.Tensor, expected: torch.Tensor, norm: Callable[[torch.Tensor], float]) -> float:
    """``norm(actual - expected) / norm(expected)`` in float64 on the CPU; inf for NaN or Inf in ``actual``."""
    a = actual.detach().to(device="cpu", dtype=torch.float64)
    e = expected.detach().to(device="cpu", dtype=torch.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape {tuple(a.shape)} differs from the reference's {tuple(e.shape)}")
    if not torch.isfinite(a).all():
        return math.inf
    if a.numel() == 0:
        return 0.0
    scale, diff = norm(e), norm(a - e)
    return diff / scale if scale > 0 else diff


def normwise_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max|actual - expected| / max|expected|``: for outputs."""
    return _relative_error(actual, expected, lambda t: t.abs().max().item())


def relative_l2_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``‖actual - expected‖₂ / ‖expected‖₂``: for gradients."""
    return _relative_error(actual, expected, lambda t: t.norm().item())


def allowed(floor: float, seed_error: float | None) -> float:
    """The tolerance actually applied: the dtype's floor, or a multiple of the seed module's own error."""
    if seed_error is None or not math.isfinite(seed_error):
        return floor
    return max(floor, SEED_FACTOR * seed_error)


@dataclass(frozen=True)
class Check:
    """The outcome of comparing one case with its float64 reference."""

    max_rel_err: float
    grad_rel_err: float | None
    tolerance: float
    grad_tolerance: float | None
    problem: str | None  # None when the case passed
    #: The seed's module in the case's dtype against float64: what that dtype itself costs.
    eager_rel_err: float | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None
