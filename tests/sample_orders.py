"""Samples in a given order, for the tests of intervals that read the order they were taken in."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def without_drift(values: Sequence[float]) -> np.ndarray:
    """``values`` in an order with no dependence between neighbours: the lower and upper halves of
    the sorted values interleaved, so that "sample ≤ median" alternates and
    ``stats.dependence_factor`` is 1. The median's interval is then exactly ``quantile_test``'s;
    sorted, the same values are one steady drift, and the interval widens or vanishes."""
    x = np.sort(np.asarray(values, dtype=float))
    low, high = x[: x.size // 2], x[x.size // 2 :]
    out = np.empty_like(x)
    out[1::2][: low.size] = low  # odd positions: the lower half
    out[0::2] = high[: out[0::2].size]
    return out


def log_ar1(n: int, rho: float, sigma: float, seed: int) -> np.ndarray:
    """``n`` samples around 1 whose logs are a stationary AR(1) series: each carries on from the last
    with correlation ``rho``, spread ``sigma`` (slow drift, as consecutive timing samples show)."""
    rng = np.random.default_rng(seed)
    z = np.empty(n)
    z[0] = sigma * rng.standard_normal()
    shocks = sigma * math.sqrt(1 - rho**2) * rng.standard_normal(n)
    for i in range(1, n):
        z[i] = rho * z[i - 1] + shocks[i]
    return np.exp(z)
