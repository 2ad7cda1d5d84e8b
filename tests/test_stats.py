"""Statistics derived from raw samples: exact values on known data."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sample_orders import log_ar1, without_drift

from harness.measure.stats import (
    NOISE_THRESHOLD,
    STATS_COLUMNS,
    Stats,
    ci_half_width,
    dependence_factor,
    median_ci,
    median_ci_ranks,
)


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
    x = without_drift(np.arange(1.0, 101.0))  # 100 samples: the 95% interval is (x[39], x[60]) 1-based -> 40 and 61
    low, high = median_ci(x)
    assert (low, high) == (40.0, 61.0)
    assert low <= np.median(x) <= high
    assert all(math.isnan(v) for v in median_ci(np.sort(x)))  # taken in that order, one steady drift: no interval


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


# ------------------------------------------------------------------------------------ exact summaries (mutation)


def order_statistic_ci(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """1-based ranks of the distribution-free CI of the median, from the binomial directly (not quantile_test)."""
    from scipy import stats as sps

    k = max(k for k in range(n // 2 + 1) if sps.binom.cdf(k - 1, n, 0.5) <= (1 - confidence) / 2)
    return k, n + 1 - k


def test_every_field_of_a_known_summary() -> None:
    """1..21: each percentile lands on a sample (index p/5), so a 26th or 96th percentile, ddof=0, a swapped
    min/max or a dropped confidence would each change a field."""
    x = np.arange(1.0, 22.0)
    low, high = order_statistic_ci(21)
    assert (low, high) == (6, 16)
    expected = {
        "median_ms": 11.0, "iqr_ms": 10.0, "mean_ms": 11.0, "std_ms": math.sqrt(38.5), "min_ms": 1.0,
        "max_ms": 21.0, "p05_ms": 2.0, "p95_ms": 20.0, "ci_low_ms": 6.0, "ci_high_ms": 16.0, "n_samples": 21,
        "noisy": True,
    }  # fmt: skip
    got = Stats.from_samples(list(without_drift(x))).as_dict()
    assert got == pytest.approx(expected, rel=1e-12)
    assert list(got) == list(expected)
    assert isinstance(got["n_samples"], int) and isinstance(got["noisy"], bool)


def test_confidence_reaches_the_interval() -> None:
    """A 50% interval is narrower than the 95% default: the level must be passed through, not fixed."""
    x = without_drift(np.arange(1.0, 22.0))
    low, high = order_statistic_ci(21, 0.5)
    assert (low, high) == (9, 13)
    s = Stats.from_samples(x, confidence=0.5)
    assert (s.ci_low_ms, s.ci_high_ms) == (9.0, 13.0)
    assert median_ci(x, 0.5) == (9.0, 13.0)
    assert median_ci(x) == (6.0, 16.0)
    assert ci_half_width(x, 0.5) == pytest.approx(2 / 11, rel=1e-12)
    assert ci_half_width(x) == pytest.approx(5 / 11, rel=1e-12)


def test_median_ci_is_an_interval_for_the_median() -> None:
    """An interval for the median (p = 0.5, not another quantile): skewed samples give ranks 6 and 16."""
    x = np.array([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 3, 4, 5, 6, 7, 8, 9, 10, 50, 100])
    low, high = order_statistic_ci(x.size)
    assert median_ci(without_drift(x)) == (float(x[low - 1]), float(x[high - 1]))
    assert median_ci(without_drift(x)) == (1.5, 7.0)


def test_six_samples_are_the_fewest_with_a_95_percent_interval() -> None:
    """Six samples give (min, max); five or none give NaN, not an error."""
    assert median_ci(without_drift(np.arange(1.0, 7.0))) == (1.0, 6.0)
    assert all(math.isnan(v) for v in median_ci(np.arange(1.0, 6.0)))
    assert all(math.isnan(v) for v in median_ci([]))


def test_one_sample_has_no_spread() -> None:
    """One sample gives no spread: its IQR and std are NaN (empty in results.csv), not a 0 that reads as a
    steady time; no interval, not noisy. Without a warning: numpy's ddof=1 std of one value warns of zero
    degrees of freedom, which a sweep of one-sample cases would print case after case."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = Stats.from_samples([2.0])
    assert (s.median_ms, s.min_ms, s.max_ms, s.p05_ms, s.p95_ms) == (2.0, 2.0, 2.0, 2.0, 2.0)
    assert math.isnan(s.iqr_ms) and math.isnan(s.std_ms)
    assert math.isnan(s.ci_low_ms) and math.isnan(s.ci_high_ms)
    assert s.n_samples == 1 and s.noisy is False


def test_spread_of_exactly_the_threshold_is_not_noisy() -> None:
    """Noisy means IQR/median *above* 10%: 9, 10, 11 has IQR 1 and median 10, exactly 0.1."""
    s = Stats.from_samples([9.0, 10.0, 11.0])
    assert s.iqr_ms / s.median_ms == NOISE_THRESHOLD
    assert not s.noisy
    assert Stats.from_samples([9.0, 10.0, 11.01]).noisy


def test_zero_or_negative_median_is_not_noisy_nor_a_finite_half_width() -> None:
    """A median of 0 or below: not noisy (no division by it) and an infinite relative half width."""
    assert not Stats.from_samples([-1.0, 0.0, 1.0]).noisy
    assert not Stats.from_samples([-3.0, -2.0, -1.0]).noisy
    assert ci_half_width([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]) == math.inf
    assert ci_half_width([-7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0]) == math.inf


def test_ci_half_width_is_the_larger_side() -> None:
    """Skewed samples: the distance to the high end (not the low one) over the median."""
    x = without_drift([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 3, 4, 5, 6, 7, 8, 9, 10, 50, 100])
    assert ci_half_width(x) == pytest.approx((7.0 - 2.0) / 2.0, rel=1e-12)  # not (2.0 - 1.5) / 2.0


def test_no_samples_error_says_so() -> None:
    """The error names the problem."""
    with pytest.raises(ValueError, match="^no samples$"):
        Stats.from_samples(np.array([]))


def test_stats_columns_are_the_fields_in_order() -> None:
    """The row columns follow the dataclass: a dropped or reordered field would shift every CSV column."""
    assert STATS_COLUMNS == ("median_ms", "iqr_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "p05_ms", "p95_ms",
                             "ci_low_ms", "ci_high_ms", "n_samples", "noisy")  # fmt: skip


def test_two_samples_have_a_sample_std() -> None:
    """Two samples are enough for the ddof=1 std (``x.size > 2`` would report 0 spread)."""
    s = Stats.from_samples([1.0, 3.0])
    assert s.std_ms == pytest.approx(math.sqrt(2.0), rel=1e-12)
    assert (s.median_ms, s.mean_ms, s.iqr_ms) == (2.0, 2.0, 1.0)


def test_sub_millisecond_spread_is_noisy() -> None:
    """A 0.5 ms kernel with a 20% IQR is noisy: the median only has to be positive, not above 1 ms."""
    s = Stats.from_samples([0.4, 0.5, 0.6])
    assert s.iqr_ms / s.median_ms == pytest.approx(0.2)
    assert s.noisy


def test_float32_samples_are_summarised_in_double_precision() -> None:
    """float32 samples (a GPU timer's) give the same Stats as their float64 copy: no float32 mean or std."""
    x32 = np.random.default_rng(0).lognormal(0.0, 0.3, 1001).astype(np.float32)
    assert Stats.from_samples(x32) == Stats.from_samples(x32.astype(np.float64))
    assert median_ci(x32) == median_ci(x32.astype(np.float64))


def test_no_samples_give_nan_without_a_numpy_warning() -> None:
    """An empty input returns (nan, nan) before any median of nothing is taken (no "Mean of empty slice")."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        low, high = median_ci([])
    assert math.isnan(low) and math.isnan(high)


def test_a_level_shift_is_seen_where_the_median_interval_is_narrow() -> None:
    from harness.measure.stats import level_shift, median_ci, steady

    shifted = [0.37] * 1100 + [0.17] * 900  # as seen: 55% of the loop at one level, then the other
    assert level_shift(shifted) == pytest.approx(1 - 0.17 / 0.37)
    low, high = median_ci(shifted)
    assert high - low < 0.01 * 0.37  # the median's interval alone shows no doubt at all
    assert not steady(shifted)
    flat = [1.0 + 0.01 * (i % 5) for i in range(200)]
    assert level_shift(flat) < 0.01 and steady(flat)
    assert not steady(flat[:9])  # too few to say
    spread = [1.0, 1.5] * 100  # a wide spread without a shift: the median's interval carries it
    assert level_shift(spread) < 0.01 and steady(spread)
    assert math.isnan(level_shift([1.0] * 9))


def test_level_shift_compares_exactly_the_two_halves() -> None:
    from harness.measure.stats import level_shift

    # first half's median 3 (its first third's is 1), second half's 6 (from a third on it would be 5)
    samples = [1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7]
    assert level_shift(samples) == 1.0
    assert level_shift([0.0] * 20) == math.inf  # a zero first half: no ratio, never "steady"
    assert math.isfinite(level_shift([1.0] * 10))  # ten samples are enough


def test_independent_samples_count_as_independent() -> None:
    """The dependence factor of independent samples stays near 1 (an interval barely wider than
    quantile_test's), and is exactly 1 where nothing can be estimated."""
    rng = np.random.default_rng(3)
    factors = [dependence_factor(rng.lognormal(0.0, 0.05, 2000)) for _ in range(20)]
    assert min(factors) >= 1.0 and np.median(factors) < 1.1 and max(factors) < 1.4
    assert dependence_factor([1.0, 2.0, 3.0]) == 1.0  # under 4 samples
    assert dependence_factor([2.0] * 50) == 1.0  # no spread: "≤ median" is always true
    assert dependence_factor(without_drift(np.arange(50.0))) == 1.0  # alternating: never below 1


def test_the_dependence_factor_of_drifting_samples_is_their_integrated_autocorrelation() -> None:
    """Log-AR(1) samples with correlation 0.8: "sample ≤ median" has autocorrelation (2/π)·asin(0.8^k)
    at lag k, so 1 + 2·Σ of it ≈ 6.4 samples make one independent sample for the median."""
    rho = 0.8
    expected = 1 + 2 * sum(2 / math.pi * math.asin(rho**k) for k in range(1, 200))
    got = dependence_factor(log_ar1(50_000, rho, 0.03, seed=5))
    assert got == pytest.approx(expected, rel=0.15)
    assert 6.0 < expected < 7.0


def test_the_interval_of_drifting_samples_covers_the_median() -> None:
    """400 samples whose neighbours correlate at 0.8: quantile_test's ranks, which assume
    independence, covered the true median (1) in about half of 300 series; widened by the
    dependence factor, at about the 95% it claims."""
    n, runs = 400, 300
    naive_low, naive_high = median_ci_ranks(n, 0.95)
    covered = naive = 0
    for seed in range(runs):
        x = log_ar1(n, 0.8, 0.03, seed=1000 + seed)
        low, high = median_ci(x)
        covered += low <= 1.0 <= high
        s = np.sort(x)
        naive += s[naive_low] <= 1.0 <= s[naive_high]
    assert naive / runs < 0.75
    assert covered / runs >= 0.90


def test_the_widened_ranks_are_the_effective_samples_scaled_back_outwards(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a factor of 4, 100 samples are 25 independent ones: the 95% ranks of 25 (8th and 18th,
    1-based) at the same quantiles of 100, rounded outwards: the 32nd and the 69th."""
    import harness.measure.stats as stats

    x = without_drift(np.arange(1.0, 101.0))
    monkeypatch.setattr(stats, "dependence_factor", lambda samples: 4.0)
    assert median_ci_ranks(25, 0.95) == (7, 17)
    assert median_ci(x) == (32.0, 69.0)
    monkeypatch.setattr(stats, "dependence_factor", lambda samples: 100 / 7)  # 7 effective: their (min, max),
    assert median_ci(x) == (14.0, 87.0)  # the 1st and 7th of 7, at 1/7 and 6/7 of the 100
    monkeypatch.setattr(stats, "dependence_factor", lambda samples: 100 / 5)  # 5: too few for 95%
    assert all(math.isnan(v) for v in median_ci(x))
    monkeypatch.setattr(stats, "dependence_factor", lambda samples: 100.0)  # 1: no bound even at 50%
    assert all(math.isnan(v) for v in median_ci(x, 0.5))
    monkeypatch.setattr(stats, "dependence_factor", lambda samples: 50.0)  # 2: at 50%, an upper bound
    assert math.isnan(median_ci(x, 0.5)[0]) and median_ci(x, 0.5)[1] == 51.0  # the 2nd of 2: at the 51st of 100


def test_the_dependence_factor_sums_the_linear_not_the_circular_autocorrelation() -> None:
    """The FFT is padded past 2n: unpadded, lag k would also correlate the last samples with the
    first. A step (low, then high) is one long excursion; 4 samples are enough to count."""
    def direct(x: np.ndarray) -> float:
        below = (x <= np.median(x)).astype(float)
        below -= below.mean()
        n = below.size
        rho = np.array([below[: n - k] @ below[k:] for k in range(n)]) / (below @ below)
        pairs = rho[: n - n % 2].reshape(-1, 2).sum(axis=1)
        ends = np.flatnonzero(pairs <= 0)
        pairs = pairs[: ends[0] if ends.size else pairs.size]
        return max(1.0, -1 + 2 * float(np.minimum.accumulate(pairs).sum()))

    rng = np.random.default_rng(4)
    for x in (np.r_[np.ones(7), 2 * np.ones(6)], np.r_[np.ones(20), 2 * np.ones(20)], log_ar1(33, 0.9, 0.05, seed=2),
              rng.lognormal(0, 0.1, 31)):
        assert dependence_factor(x) == pytest.approx(direct(x), rel=1e-9)
    assert dependence_factor(np.r_[np.ones(20), 2 * np.ones(20)]) > 10  # a step: one excursion
    assert dependence_factor([1.0, 1.0, 2.0, 2.0]) > 1.0  # from 4 samples on


def test_a_zero_median_has_no_relative_half_width() -> None:
    assert ci_half_width([0.0] * 10) == math.inf
