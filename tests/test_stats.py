"""Statistics derived from raw samples: exact values on known data."""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness.measure.stats import Stats, ci_half_width, median_ci


def test_summary_of_known_samples() -> None:
    s = Stats.from_samples([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100])
    assert s.median_ms == 6
    assert s.min_ms == 1 and s.max_ms == 100
    assert s.iqr_ms == pytest.approx(8.5 - 3.5)
    assert s.mean_ms == pytest.approx(155 / 11)
    assert s.n_samples == 11
    assert s.noisy  # IQR/median = 5/6


def test_quiet_samples_are_not_noisy() -> None:
    s = Stats.from_samples(np.linspace(0.99, 1.01, 50))
    assert not s.noisy
    assert s.p05_ms < s.median_ms < s.p95_ms


def test_median_ci_is_an_order_statistic_interval() -> None:
    x = np.arange(1.0, 101.0)  # 100 samples: the 95% interval is (x[39], x[60]) 1-based -> 40 and 61
    low, high = median_ci(x)
    assert (low, high) == (40.0, 61.0)
    assert low <= np.median(x) <= high


def test_too_few_samples_give_no_interval() -> None:
    low, high = median_ci([1.0, 2.0, 3.0])
    assert math.isnan(low) and math.isnan(high)
    assert ci_half_width([1.0, 2.0, 3.0]) == math.inf


def test_ci_half_width_shrinks_with_more_samples() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(1.0, 0.05, 20)
    large = rng.normal(1.0, 0.05, 2000)
    assert ci_half_width(large) < ci_half_width(small)
    assert ci_half_width(large) < 0.01


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError):
        Stats.from_samples([])


def test_relative_l2_tolerates_one_flipped_element_but_not_a_scaled_tensor() -> None:
    import torch

    from harness.measure.correctness import normwise_error, relative_l2_error

    ref = torch.randn(100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    flipped = ref.clone()
    i = int(torch.argmin((ref.abs() - 1.0).abs()))  # a typical element, |x| ≈ 1: the property holds for any draw
    flipped[i] = -flipped[i]  # one near-tie resolved the other way
    assert relative_l2_error(flipped, ref) < 1e-2 < normwise_error(flipped, ref)
    assert relative_l2_error(ref * 1.01, ref) == pytest.approx(0.01)
    assert relative_l2_error(ref * float("nan"), ref) == math.inf
