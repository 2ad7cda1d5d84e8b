"""compare_stats unit by unit: exact answers at the boundaries its docstrings promise.

Each test names the plausible mistake it catches: a ``<`` for a ``<=``, a one-sided test, a
dropped term, a swapped side. Expected values come from hand arithmetic or from numpy/scipy
directly, never from the module under test.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps

from harness.results import compare_stats as cs
from harness.results.compare_stats import Significance, Timing, Verdict

NAN = math.nan


def timing(median: float, ci_low: float = NAN, ci_high: float = NAN, iqr: float = NAN) -> Timing:
    """One side as results.csv gives it: no raw samples, only the stored figures."""
    return Timing(np.array([]), median, ci_low, ci_high, iqr)


# ------------------------------------------------------------------------------------ min_attainable_p


@pytest.mark.parametrize(
    ("n1", "n2", "expected"),
    [(3, 3, 0.1), (1, 2, 2 / 3), (2, 1, 2 / 3), (1, 5, 1 / 3), (5, 1, 1 / 3), (2, 2, 1 / 3), (4, 6, 2 / 210)],
)
def test_min_attainable_p_is_two_over_n_choose_k(n1: int, n2: int, expected: float) -> None:
    """2 / C(n1+n2, n1): a guard of ``n < 2`` instead of ``n < 1`` would call a one-sample side hopeless (1.0)."""
    assert expected == pytest.approx(2 / math.comb(n1 + n2, n1))
    assert cs.min_attainable_p(n1, n2) == pytest.approx(expected, rel=1e-12)


def test_min_attainable_p_without_samples_on_a_side_is_one() -> None:
    """No samples on a side (or one each): no test can ever be significant."""
    assert cs.min_attainable_p(0, 5) == 1.0
    assert cs.min_attainable_p(5, 0) == 1.0
    assert cs.min_attainable_p(0, 0) == 1.0
    assert cs.min_attainable_p(1, 1) == 1.0


# ------------------------------------------------------------------------------------ judge


@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_a_change_of_exactly_the_threshold_is_same(threshold: float) -> None:
    """Slower means ratio > 1 + threshold (strictly): ``size < log1p(threshold)`` would call it SLOWER."""
    assert math.log(1 + threshold) == math.log1p(threshold)  # the boundary is exact in floating point
    assert cs.judge(1 + threshold, 1e-9, True, threshold, 0.01) is Verdict.SAME
    assert cs.judge(1 + threshold * 1.01, 1e-9, True, threshold, 0.01) is Verdict.SLOWER


def test_a_speedup_of_exactly_the_threshold_is_same() -> None:
    """Faster means ratio < 1 / (1 + threshold): exactly that ratio is SAME, just below it FASTER."""
    assert cs.judge(0.5, 1e-9, True, 1.0, 0.01) is Verdict.SAME
    assert cs.judge(0.49, 1e-9, True, 1.0, 0.01) is Verdict.FASTER


def test_a_p_value_of_exactly_alpha_is_not_significant() -> None:
    """A verdict needs p below alpha: ``p_value > alpha`` would let p == alpha through as SLOWER."""
    assert cs.judge(1.5, 0.01, True, 0.05, 0.01) is Verdict.AMBIGUOUS
    assert cs.judge(1.5, 0.0099, True, 0.05, 0.01) is Verdict.SLOWER


@pytest.mark.parametrize("noise", [0.5, 1.0])
def test_a_change_of_exactly_the_noise_is_ambiguous(noise: float) -> None:
    """A change no larger than the runs' own spread is AMBIGUOUS: ``size < log1p(noise)`` would call it SLOWER."""
    assert math.log(1 + noise) == math.log1p(noise)  # the boundary is exact in floating point
    assert cs.judge(1 + noise, 1e-9, True, 0.05, 0.01, noise=noise) is Verdict.AMBIGUOUS
    assert cs.judge(1 + noise * 1.01, 1e-9, True, 0.05, 0.01, noise=noise) is Verdict.SLOWER


def test_a_speedup_of_exactly_the_noise_is_ambiguous() -> None:
    """The same boundary on the faster side (1 / 2 is exact, so its log is exactly -log1p(1))."""
    assert cs.judge(0.5, 1e-9, True, 0.05, 0.01, noise=1.0) is Verdict.AMBIGUOUS
    assert cs.judge(0.49, 1e-9, True, 0.05, 0.01, noise=1.0) is Verdict.FASTER


def test_judge_noise_defaults_to_zero() -> None:
    """Without a noise argument a significant 50% slowdown is SLOWER (a default noise of 1.0 would hide it)."""
    assert cs.judge(1.5, 1e-9, True, 0.05, 0.01) is Verdict.SLOWER
    assert cs.judge(1 / 1.5, 1e-9, True, 0.05, 0.01) is Verdict.FASTER


def test_no_p_value_or_no_possible_significance_is_ambiguous() -> None:
    """Either missing piece alone makes it AMBIGUOUS (``and`` for ``or`` would compare None with alpha)."""
    assert cs.judge(1.5, None, True, 0.05, 0.01) is Verdict.AMBIGUOUS
    assert cs.judge(1.5, 1e-9, False, 0.05, 0.01) is Verdict.AMBIGUOUS
    assert cs.judge(1.0, None, True, 0.05, 0.01) is Verdict.AMBIGUOUS  # even a change of nothing


def test_zero_and_infinite_ratios_are_infinitely_large_changes() -> None:
    """A current median of 0 is FASTER and a baseline of 0 SLOWER (``0 <= ratio`` would take log(0))."""
    assert cs.judge(0.0, 1e-9, True, 0.05, 0.01) is Verdict.FASTER
    assert cs.judge(math.inf, 1e-9, True, 0.05, 0.01) is Verdict.SLOWER
    assert cs.judge(0.0, 1e-9, True, 0.05, 0.01, noise=1e6) is Verdict.FASTER  # no finite noise hides it


# ------------------------------------------------------------------------------------ relative_iqr


def test_relative_iqr_of_known_arrays() -> None:
    """IQR / median with numpy's linear percentiles: 1..9 gives (7 - 3) / 5; two samples already count."""
    assert cs.relative_iqr(np.arange(1.0, 10.0)) == pytest.approx(0.8, rel=1e-12)
    assert cs.relative_iqr(np.array([1.0, 3.0])) == pytest.approx((2.5 - 1.5) / 2.0, rel=1e-12)
    x = np.random.default_rng(3).lognormal(0.0, 0.5, 101)
    assert cs.relative_iqr(x) == pytest.approx(sps.iqr(x) / np.median(x), rel=1e-12)


def test_relative_iqr_uses_the_median_not_a_nearby_percentile() -> None:
    """Skewed samples whose 51st percentile differs from the median: the divisor must be the median."""
    x = np.array([1.0, 2.0, 3.0, 10.0, 20.0])  # q1 = 2, median = 3, q3 = 10
    assert cs.relative_iqr(x) == pytest.approx(8.0 / 3.0, rel=1e-12)


def test_relative_iqr_with_nothing_to_judge_by_is_zero() -> None:
    """No samples, one sample, or a median of zero or below: 0, not 1 and not a division by zero."""
    assert cs.relative_iqr(np.array([])) == 0.0
    assert cs.relative_iqr(np.array([5.0])) == 0.0
    assert cs.relative_iqr(np.array([0.0, 0.0, 0.0, 1.0])) == 0.0
    assert cs.relative_iqr(np.array([-3.0, -2.0, -1.0])) == 0.0


# ------------------------------------------------------------------------------------ mann_whitney


def test_mann_whitney_fields_and_two_sided_p_value() -> None:
    """Medians, ratio, two-sided p, possibility, method, noise and note, each checked against scipy/numpy."""
    rng = np.random.default_rng(7)
    b = rng.normal(1.0, 0.05, 12)
    c = rng.normal(1.1, 0.15, 15)
    got = cs.mann_whitney(b, c, 0.01)
    b_med, c_med = float(np.median(b)), float(np.median(c))
    two_sided = float(sps.mannwhitneyu(b, c, alternative="two-sided").pvalue)
    assert got.noise == pytest.approx(sps.iqr(c) / c_med, rel=1e-12)
    assert replace(got, noise=0.0) == Significance(b_med, c_med, c_med / b_med, two_sided, True, "mann-whitney", 0.0)
    assert sps.iqr(c) / c_med > sps.iqr(b) / b_med  # noise is the larger side's spread
    assert two_sided != float(sps.mannwhitneyu(b, c, alternative="less").pvalue)


def test_mann_whitney_noise_is_the_larger_of_the_two_sides() -> None:
    """The baseline's spread counts too, when it is the wider side (``min`` or one side only would miss it)."""
    b = np.array([1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])  # relative IQR 1.5 / 2.5
    c = np.array([5.0, 5.1, 5.2, 5.3, 5.4, 5.5, 5.6])  # relative IQR 0.3 / 5.3
    got = cs.mann_whitney(b, c, 0.01)
    assert got.noise == pytest.approx(0.6, rel=1e-12)
    assert cs.mann_whitney(c, b, 0.01).noise == pytest.approx(0.6, rel=1e-12)


def test_mann_whitney_with_alpha_at_the_smallest_attainable_p_is_not_possible() -> None:
    """``possible`` means p < alpha can be reached: alpha equal to the smallest p cannot, so "few samples"."""
    b, c = np.arange(1.0, 5.0), np.arange(11.0, 16.0)  # 4 and 5 samples: smallest p = 2 / 126
    smallest = cs.min_attainable_p(4, 5)
    at = cs.mann_whitney(b, c, smallest)
    assert not at.possible and at.note == "few samples"
    above = cs.mann_whitney(b, c, smallest * 1.001)
    assert above.possible and above.note == ""
    assert above.p_value == pytest.approx(2 / 126, rel=1e-9)  # fully separated: the exact test's floor


def test_mann_whitney_with_a_zero_baseline_median_has_an_infinite_ratio() -> None:
    """A baseline median of 0 gives ratio inf, not a ZeroDivisionError (``b_med >= 0``)."""
    got = cs.mann_whitney(np.zeros(6), np.ones(6), 0.01)
    assert got.ratio == math.inf
    assert (got.baseline_ms, got.current_ms) == (0.0, 1.0)


# ------------------------------------------------------------------------------------ ci_overlap


def test_ci_overlap_of_overlapping_intervals_has_p_one_and_its_fields() -> None:
    """Every field of the overlapping case, with medians under 1 ms (a ``m > 1`` guard would drop their spread)."""
    got = cs.ci_overlap(timing(0.5, 0.4, 0.6, iqr=0.1), timing(0.55, 0.5, 0.7, iqr=0.22), 0.01)
    assert got == Significance(0.5, 0.55, 0.55 / 0.5, 1.0, True, "ci-overlap", 0.22 / 0.55, "by CIs")


def test_ci_overlap_noise_is_the_larger_relative_iqr_of_either_side() -> None:
    """IQR / median (not IQR * median), from whichever side is wider."""
    got = cs.ci_overlap(timing(2.0, 1.5, 2.5, iqr=1.0), timing(4.0, 3.0, 5.0, iqr=0.4), 0.01)
    assert got.noise == pytest.approx(0.5, rel=1e-12)
    assert got.ratio == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("cur_above", [True, False])
def test_disjoint_intervals_give_the_overlap_bound_either_way(cur_above: bool) -> None:
    """Non-overlapping intervals in either order give p = CI_OVERLAP_P (a swapped index would see overlap)."""
    low, high = timing(1.0, 0.9, 1.1), timing(2.0, 1.9, 2.1)
    base, cur = (low, high) if cur_above else (high, low)
    got = cs.ci_overlap(base, cur, 0.01)
    assert got.p_value == pytest.approx(cs.CI_OVERLAP_P, rel=1e-12)  # equal widths: the smallest bound
    assert (got.baseline_ms, got.current_ms, got.ratio, got.noise) == (base.median, cur.median,
                                                                      cur.median / base.median, 0.0)
    assert (got.method, got.possible, got.note) == ("ci-overlap", True, "by CIs")


@pytest.mark.parametrize("cur_above", [True, False])
def test_touching_intervals_overlap(cur_above: bool) -> None:
    """Closed intervals sharing an end overlap (p = 1): ``<`` for ``<=`` would call them significant."""
    low, high = timing(1.0, 0.9, 1.5), timing(2.0, 1.5, 2.1)
    base, cur = (low, high) if cur_above else (high, low)
    assert cs.ci_overlap(base, cur, 0.01).p_value == 1.0


def test_alpha_exactly_the_overlap_bound_still_uses_the_intervals() -> None:
    """The fallback is used when alpha is at least the intervals' bound; just below it there is no p-value."""
    base, cur = timing(1.0, 0.9, 1.1), timing(2.0, 1.9, 2.1)
    bound = cs.overlap_bound(base, cur)
    assert cs.ci_overlap(base, cur, bound).method == "ci-overlap"
    below = cs.ci_overlap(base, cur, bound * 0.999)
    assert below == Significance(1.0, 2.0, 2.0, None, False, "none", 0.0, "no raw samples")


def test_no_usable_interval_leaves_no_p_value_with_every_field() -> None:
    """A NaN end on either side: method "none", not possible, the medians and noise still reported."""
    got = cs.ci_overlap(timing(2.0, NAN, NAN, iqr=0.5), timing(3.0, 2.5, 3.5, iqr=0.3), 0.01)
    assert got == Significance(2.0, 3.0, 1.5, None, False, "none", 0.25, "no raw samples")
    one_end = cs.ci_overlap(timing(2.0, 1.9, 2.1), timing(3.0, 2.9, NAN), 0.01)
    assert (one_end.method, one_end.p_value, one_end.possible) == ("none", None, False)


def test_unknown_iqrs_give_zero_noise() -> None:
    """NaN IQRs on both sides: noise 0 (the default of the max), not 1 and not an error."""
    assert cs.ci_overlap(timing(1.0, 0.9, 1.1), timing(1.2, 1.1, 1.3), 0.01).noise == 0.0


def test_zero_medians_give_an_infinite_ratio_and_no_spread() -> None:
    """A zero median is skipped, not divided by: the baseline's gives ratio inf, the current's no spread."""
    got = cs.ci_overlap(timing(0.0, 0.0, 0.1, iqr=0.1), timing(1.0, 0.9, 1.1, iqr=0.2), 0.01)
    assert got.ratio == math.inf and got.noise == pytest.approx(0.2)
    assert cs.ci_overlap(timing(1.0, 0.9, 1.1, iqr=0.2), timing(0.0, 0.0, 0.1, iqr=0.1), 0.01).noise == 0.2


# ------------------------------------------------------------------------------------ significance


def test_significance_uses_mann_whitney_only_when_both_sides_have_samples() -> None:
    """Raw samples on both sides: Mann–Whitney; on one side only: the stored intervals."""
    s = np.arange(1.0, 11.0)
    with_samples = Timing(s, 5.5, 4.0, 7.0, 4.5)
    assert cs.significance(with_samples, with_samples, 0.01).method == "mann-whitney"
    assert cs.significance(with_samples, timing(5.5, 4.0, 7.0), 0.01).method == "ci-overlap"
    assert cs.significance(timing(5.5, 4.0, 7.0), with_samples, 0.01).method == "ci-overlap"


# ------------------------------------------------------------------------------------ process_gate


@pytest.mark.parametrize(("b", "c"), [([1.0], [2.0, 3.0]), ([1.0, 2.0], [3.0]), ([1.0], [3.0]), ([], [])])
def test_fewer_than_two_processes_a_side_leave_noise_alone(b: list[float], c: list[float]) -> None:
    """One process on either side: noise unchanged and no overlap (``or`` / ``>= 1`` would apply the gate)."""
    assert cs.process_gate(np.array(b), np.array(c), 1.5, 0.01) == (0.01, False)


def test_two_processes_a_side_are_enough() -> None:
    """Two processes a side is "several": their spread becomes noise (``> 2`` would skip it)."""
    noise, overlap = cs.process_gate(np.array([1.0, 1.1]), np.array([2.0, 2.4]), 2.0, 0.01)
    assert noise == pytest.approx(0.2, rel=1e-12)
    assert not overlap


@pytest.mark.parametrize(
    ("b", "c", "noise", "expected"),
    [([1.0, 1.5], [3.0, 3.3], 0.01, 0.5), ([1.0, 1.1], [3.0, 4.5], 0.01, 0.5), ([1.0, 1.1], [3.0, 3.3], 0.7, 0.7)],
)
def test_process_spread_raises_noise_to_the_widest(b: list[float], c: list[float], noise: float,
                                                   expected: float) -> None:  # fmt: skip
    """max(noise, b spread, c spread): dropping any one of the three terms changes one of these."""
    got, _ = cs.process_gate(np.array(b), np.array(c), 3.0, noise)
    assert got == pytest.approx(expected, rel=1e-12)


def test_a_zero_process_median_leaves_the_gate_off() -> None:
    """A process median of 0 on either side: no division by it (``>= 0`` would make the noise infinite)."""
    assert cs.process_gate(np.array([0.0, 1.0]), np.array([1.0, 2.0]), 1.5, 0.01) == (0.01, False)
    assert cs.process_gate(np.array([1.0, 2.0]), np.array([0.0, 1.0]), 0.5, 0.01) == (0.01, False)


def test_exactly_touching_processes_overlap() -> None:
    """A process of one run as fast as one of the other overlaps, slower (ratio > 1) or faster (ratio < 1)."""
    assert cs.process_gate(np.array([1.0, 2.0]), np.array([2.0, 3.0]), 1.5, 0.0)[1]
    assert cs.process_gate(np.array([2.0, 3.0]), np.array([1.0, 2.0]), 1 / 1.5, 0.0)[1]


def test_disjoint_processes_do_not_overlap_either_way() -> None:
    """Every process slower (or every one faster): no overlap; the direction of the ratio picks the check."""
    assert not cs.process_gate(np.array([1.0, 2.0]), np.array([3.0, 4.0]), 2.0, 0.0)[1]
    assert not cs.process_gate(np.array([3.0, 4.0]), np.array([1.0, 2.0]), 0.5, 0.0)[1]
    assert cs.process_gate(np.array([1.0, 3.0]), np.array([2.0, 4.0]), 1.5, 0.0)[1]  # interleaved: overlap
    assert cs.process_gate(np.array([2.0, 4.0]), np.array([1.0, 3.0]), 1 / 1.5, 0.0)[1]


def test_unequal_widths_hide_a_larger_p_than_equal_ones() -> None:
    """Non-overlapping 95% intervals stand for p < 0.0056 only at equal widths: at 1:0.2 the bound is
    0.021, and one of width 0 gives 0.05. Unequal sample counts made the fallback call 2.4% of
    identical pairs significant at a stated alpha of 0.01."""
    assert cs.overlap_bound(timing(1.0, 0.9, 1.1), timing(2.0, 1.9, 2.1)) == pytest.approx(cs.CI_OVERLAP_P)
    assert cs.CI_OVERLAP_P == pytest.approx(0.0056, abs=1e-4)
    base, cur = timing(1.0, 0.9, 1.1), timing(2.0, 1.98, 2.02)  # half-widths 0.1 and 0.02 face each other
    bound = cs.overlap_bound(base, cur)
    assert cs.overlap_bound(cur, base) == bound
    assert bound == pytest.approx(2 * sps.norm.sf(1.959964 * 0.12 / math.hypot(0.1, 0.02)), rel=1e-5)
    assert bound == pytest.approx(0.021, abs=0.001)
    assert cs.ci_overlap(base, cur, 0.01).method == "none"  # cannot reach alpha = 0.01
    assert cs.ci_overlap(base, cur, 0.05).p_value == pytest.approx(bound)
    assert cs.overlap_bound(timing(1.0, 1.0, 1.0), timing(2.0, 2.0, 2.0)) == pytest.approx(0.05, abs=1e-4)
    # only the facing sides count: the far ends may be anything, whichever side is faster
    high, low = timing(2.0, 1.99, 2.2), timing(1.0, 0.9, 1.01)  # facing: 0.01 and 0.01; far: 0.2 and 0.1
    for base, cur in ((high, low), (low, high)):
        assert cs.overlap_bound(base, cur) == pytest.approx(cs.CI_OVERLAP_P)
        assert cs.ci_overlap(base, cur, 0.01).p_value == pytest.approx(cs.CI_OVERLAP_P)
    # overlapping intervals of any widths show no change: p = 1, so a small change is SAME
    wide, narrow = timing(1.0, 0.5, 1.5), timing(1.01, 1.0, 1.02)
    assert cs.ci_overlap(wide, narrow, 0.01).p_value == 1.0


def test_divided_puts_every_figure_in_units_of_the_reference() -> None:
    """``compare --relative-to``: samples, median, CI and IQR alike (results.csv is judged by the last four)."""
    out = cs.divided(Timing(np.array([2.0, 4.0]), 3.0, 2.5, 3.5, 1.0), 2.0)
    assert out.samples.tolist() == [1.0, 2.0]
    assert (out.median, out.ci_low, out.ci_high, out.iqr) == (1.5, 1.25, 1.75, 0.5)


NO_SAMPLES = np.array([])


@pytest.mark.parametrize(("fig", "processes", "noise"), [
    (Timing(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 3.0, math.nan, math.nan, 99.0), NO_SAMPLES, 2 / 3),  # samples' own
    (Timing(NO_SAMPLES, 2.0, math.nan, math.nan, 0.5), NO_SAMPLES, 0.25),  # a results.csv row: its stored IQR
    (Timing(NO_SAMPLES, 0.5, math.nan, math.nan, 0.25), NO_SAMPLES, 0.5),  # a median under 1 ms is a median
    (Timing(NO_SAMPLES, 0.0, math.nan, math.nan, 0.25), NO_SAMPLES, 0.0),  # nothing to divide by
    (Timing(NO_SAMPLES, 2.0, math.nan, math.nan, math.nan), NO_SAMPLES, 0.0),  # no IQR stored
    (Timing(NO_SAMPLES, 2.0, math.nan, math.nan, 0.5), np.array([1.0, 1.5]), 0.5),  # two processes 50% apart
    (Timing(NO_SAMPLES, 2.0, math.nan, math.nan, 0.5), np.array([1.0, 1.1]), 0.25),  # their spread under the IQR's
    (Timing(NO_SAMPLES, 2.0, math.nan, math.nan, 0.5), np.array([0.0, 1.0]), 0.25),  # a process of 0: no spread
])  # fmt: skip
def test_own_noise_is_the_larger_of_the_iqr_and_the_processes_spread(fig: Timing, processes: np.ndarray,
                                                                      noise: float) -> None:  # fmt: skip
    assert cs.own_noise(fig, processes) == pytest.approx(noise)
