"""The statistics behind compare's verdicts: is a change larger than the noise, and is it significant?

A ratio of medians alone cannot tell a regression from noise, so each matched case also gets a
Mann–Whitney U test on the raw samples (distribution-free: latencies are skewed). A verdict needs
both a change larger than the threshold and a p-value below alpha, as asv does. A large change
without significance, or too few samples for the test ever to be significant, is AMBIGUOUS:
the honest answer is "measure again", not "same".

Results files without raw samples (``results.csv``) fall back to the stored 95% confidence
intervals of the medians. Two non-overlapping 95% intervals imply at most p = 0.0056 when their
widths are equal (Schenker & Gentleman 2001), but unequal widths hide a larger p, up to 0.05 as one
shrinks to nothing: at the point where they stop overlapping, z = 1.96·(w₁ + w₂)/√(w₁² + w₂²)
(``overlap_bound``, from the two half-widths that face each other). So the fallback is used only
where that case's bound is at most ``alpha``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import numpy as np
from scipy import stats as sps

DEFAULT_THRESHOLD = 0.05
DEFAULT_ALPHA = 0.01
#: The level of the stored ``ci_low_ms``/``ci_high_ms`` (harness.measure.stats uses 95%).
CSV_CI_LEVEL = 0.95
#: The z of one stored interval's half-width.
CSV_CI_Z = float(sps.norm.ppf(0.5 + CSV_CI_LEVEL / 2))
#: The smallest p-value two non-overlapping 95% intervals can stand for (equal widths: z = 1.96·√2).
CI_OVERLAP_P = float(2 * sps.norm.sf(CSV_CI_Z * math.sqrt(2)))


def overlap_bound(base: Timing, cur: Timing) -> float:
    """The largest p-value that ``base`` and ``cur``'s 95% intervals, not overlapping, can hide
    (normal theory): z = 1.96·(w₁ + w₂)/√(w₁² + w₂²) from the half-widths that face each other;
    0.0056 for equal widths, towards 0.05 as one shrinks. NaN without both intervals."""
    upper, lower = (base, cur) if cur.median >= base.median else (cur, base)
    facing = (upper.ci_high - upper.median, lower.median - lower.ci_low)
    if any(math.isnan(w) for w in facing):
        return math.nan
    w1, w2 = (max(w, 0.0) for w in facing)
    z = CSV_CI_Z * (w1 + w2) / math.hypot(w1, w2) if w1 + w2 > 0 else CSV_CI_Z
    return float(2 * sps.norm.sf(z))


class Verdict(StrEnum):
    FASTER = "FASTER"
    SLOWER = "SLOWER"
    SAME = "SAME"
    AMBIGUOUS = "AMBIGUOUS"


class Timing(NamedTuple):
    """One side's figures for one case: its raw samples (may be empty), median, CI and IQR (NaN if unknown)."""

    samples: np.ndarray
    median: float
    ci_low: float
    ci_high: float
    iqr: float


@dataclass(frozen=True)
class Significance:
    """What the test on one case found: the medians it compared, their ratio, the p-value, the noise."""

    baseline_ms: float
    current_ms: float
    ratio: float  # current / baseline: above 1 is slower
    p_value: float | None
    possible: bool  # whether these data can reach p < alpha at all
    method: str  # "mann-whitney", "ci-overlap" or "none"
    noise: float  # the larger IQR / median of the two sides
    note: str = ""  # "few samples", "by CIs" (no raw samples: judged by the 95% CIs), "no raw samples" or nothing


def min_attainable_p(n1: int, n2: int) -> float:
    """The smallest two-sided exact Mann–Whitney p-value with these sample sizes (no ties).

    With 3 samples a side it is 0.1: no alpha below that can ever be met, so such a case is
    AMBIGUOUS whatever its medians say.
    """
    if n1 < 1 or n2 < 1:
        return 1.0
    log_comb = math.lgamma(n1 + n2 + 1) - math.lgamma(n1 + 1) - math.lgamma(n2 + 1)  # comb overflows a float
    return min(1.0, 2.0 * math.exp(-log_comb))


def judge(
    ratio: float,
    p_value: float | None,
    significant_possible: bool,
    threshold: float,
    alpha: float,
    noise: float = 0.0,
) -> Verdict:
    """The verdict from the size of the change, its significance, and the runs' own spread.

    Slower means ``ratio > 1 + threshold``; faster means ``ratio < 1 / (1 + threshold)``, so that
    a 5% threshold is the same distance on a log scale either way. ``noise`` is the larger
    relative IQR (IQR / median) of the two sides: the test treats a run's samples as independent,
    but interference on a shared machine shifts whole runs, so a change no larger than the
    samples' own spread is AMBIGUOUS however small its p-value (see ``compare_render.NOTE_LEGEND["within noise"]``).
    """
    size = abs(math.log(ratio)) if 0 < ratio < math.inf else math.inf
    if not significant_possible or p_value is None:
        return Verdict.AMBIGUOUS
    if size <= math.log1p(threshold):
        return Verdict.SAME
    if p_value >= alpha or size <= math.log1p(noise):
        return Verdict.AMBIGUOUS
    return Verdict.SLOWER if ratio > 1.0 else Verdict.FASTER


def relative_iqr(samples: np.ndarray) -> float:
    """IQR / median of the samples; 0 when there are none to judge by."""
    if samples.size < 2:
        return 0.0
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return float((q3 - q1) / med) if med > 0 else 0.0


def significance(base: Timing, cur: Timing, alpha: float) -> Significance:
    """The test for one case: Mann–Whitney on the raw samples when both sides have them, else CI overlap."""
    if base.samples.size and cur.samples.size:
        return mann_whitney(base.samples, cur.samples, alpha)
    return ci_overlap(base, cur, alpha)


def mann_whitney(b_samples: np.ndarray, c_samples: np.ndarray, alpha: float) -> Significance:
    """Two-sided Mann–Whitney U on the raw samples; the medians and the noise are the samples' own."""
    b_med, c_med = float(np.median(b_samples)), float(np.median(c_samples))
    ratio = c_med / b_med if b_med > 0 else math.inf
    possible = min_attainable_p(b_samples.size, c_samples.size) < alpha
    p_value = float(sps.mannwhitneyu(b_samples, c_samples, alternative="two-sided").pvalue)
    noise = max(relative_iqr(b_samples), relative_iqr(c_samples))
    note = "" if possible else "few samples"
    return Significance(b_med, c_med, ratio, p_value, possible, "mann-whitney", noise, note)


def ci_overlap(base: Timing, cur: Timing, alpha: float) -> Significance:
    """Without raw samples: the stored medians, and whether their 95% CIs overlap (see the module docstring).

    No usable interval, or intervals apart by less than ``alpha`` can show (``overlap_bound``), leave
    no p-value (method "none"); overlapping ones give p = 1.
    """
    b_med, c_med = base.median, cur.median
    ratio = c_med / b_med if b_med > 0 else math.inf
    spreads = [iqr / m for iqr, m in ((base.iqr, b_med), (cur.iqr, c_med)) if m > 0]
    noise = max([v for v in spreads if math.isfinite(v)], default=0.0)
    lows, highs = (base.ci_low, cur.ci_low), (base.ci_high, cur.ci_high)
    none = Significance(b_med, c_med, ratio, None, False, "none", noise, "no raw samples")
    if any(math.isnan(v) for v in lows + highs):
        return none
    if lows[0] <= highs[1] and lows[1] <= highs[0]:  # overlapping intervals show no change (p taken as 1)
        return Significance(b_med, c_med, ratio, 1.0, True, "ci-overlap", noise, "by CIs")
    bound = overlap_bound(base, cur)  # apart, they bound p by what their widths allow
    if not bound <= alpha:
        return none
    return Significance(b_med, c_med, ratio, bound, True, "ci-overlap", noise, "by CIs")


def process_gate(b_proc: np.ndarray, c_proc: np.ndarray, ratio: float, noise: float) -> tuple[float, bool]:
    """The noise raised to the spread of the processes' medians (``--processes``), and whether the processes
    overlap: some process of one run as fast as some process of the other, so that the change does not show
    in every process. With fewer than two processes a side: ``noise`` unchanged, and no overlap.
    """
    if b_proc.size > 1 and c_proc.size > 1 and min(b_proc.min(), c_proc.min()) > 0:
        # Several processes a side: their spread is noise too, and a change must show in every one.
        noise = max(noise, b_proc.max() / b_proc.min() - 1, c_proc.max() / c_proc.min() - 1)
        return noise, not (c_proc.min() > b_proc.max() if ratio > 1 else c_proc.max() < b_proc.min())
    return noise, False


def divided(fig: Timing, by: float) -> Timing:
    """``fig`` in units of ``by`` (``compare --relative-to``: a case over its reference's median in the
    same run). A constant factor leaves the Mann–Whitney test and every relative spread as they were."""
    return Timing(fig.samples / by, fig.median / by, fig.ci_low / by, fig.ci_high / by, fig.iqr / by)


def own_noise(fig: Timing, processes: np.ndarray) -> float:
    """One side's spread as the gate counts it: IQR / median of its samples (of the stored IQR without
    them), raised to the spread of its processes' medians. A reference divided into a case brings its
    noise along: a reference read 10% high makes every case it divides read 10% faster."""
    if fig.samples.size:
        noise = relative_iqr(fig.samples)
    else:
        noise = fig.iqr / fig.median if fig.median > 0 and math.isfinite(fig.iqr) else 0.0
    if processes.size > 1 and processes.min() > 0:
        noise = max(noise, float(processes.max() / processes.min()) - 1)
    return noise
