"""Statistics of one case, derived from its raw samples (never stored instead of them)."""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import stats as sps

#: IQR/median above this marks a measurement as noisy (torch.utils.benchmark and pyperf warn at 10%).
NOISE_THRESHOLD = 0.10


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median, from order statistics (binomial),
    widened for samples that depend on their neighbours.

    Latency samples are skewed (a long right tail), so a normal-theory interval would lie. The
    order-statistic interval (scipy's ``quantile_test``, p = 0.5) assumes independent samples, and
    timing samples are not: on the 2-core VM consecutive samples' lag-1 autocorrelation had a median
    of 0.59 (40 cases), an H200's wall samples 0.38 (87 cases), and with a correlation of 0.5 from
    one sample to the next that interval covered the median in 80% of simulated runs, at 0.8 in
    54%. So the ranks are those of ``n / dependence_factor(samples)`` independent samples, scaled
    back to ``n`` (the sign test's count has that factor's variance); for independent samples the
    factor is about 1 and the interval is quantile_test's. ``samples`` must be in the order taken.
    Too few (effective) samples for the level give ``(nan, nan)``: under 6 for 95%.
    """
    raw = np.asarray(samples, dtype=float)
    x = np.sort(raw)
    n = int(x.size)
    if n == 0:
        return (math.nan, math.nan)
    n_eff = max(1, int(n / dependence_factor(raw)))
    low, high = median_ci_ranks(n_eff, float(confidence))
    # the effective sample's ranks at the same quantiles of the n samples, rounded outwards (the
    # identity when n_eff == n; "no bound", -1 or n_eff, maps to -1 or n)
    low, high = (low + 1) * n // n_eff - 1, -(-high * n // n_eff)
    return (float(x[low]) if low >= 0 else math.nan, float(x[high]) if high < n else math.nan)


def dependence_factor(samples: Sequence[float]) -> float:
    """How many of these samples hold as much information about the median as one independent
    sample: the integrated autocorrelation ``1 + 2 Σ ρ_k`` of the series "sample ≤ median" (whose
    count the order-statistic interval rests on), summed by Geyer's initial positive sequence (lag
    pairs while their sum stays positive, never rising), as MCMC's effective sample size is. At
    least 1: a series that alternates is not given a narrower interval than independent samples."""
    x = np.asarray(samples, dtype=float)
    n = x.size
    if n < 4:
        return 1.0
    below = (x <= np.median(x)).astype(float)
    below -= below.mean()
    if not below.any():
        return 1.0
    size = 1 << (2 * n - 1).bit_length()  # zero-padded past 2n: the FFT's products are not circular
    spectrum = np.fft.rfft(below, size)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n]
    rho = acov / acov[0]
    pairs = rho[: n - n % 2].reshape(-1, 2).sum(axis=1)  # Γ_m = ρ_2m + ρ_2m+1; Γ_0 = 1 + ρ_1 > 0
    ends = np.flatnonzero(pairs <= 0)
    pairs = pairs[: ends[0] if ends.size else pairs.size]
    return max(1.0, -1.0 + 2.0 * float(np.minimum.accumulate(pairs).sum()))


@functools.lru_cache(maxsize=8192)
def median_ci_ranks(n: int, confidence: float) -> tuple[int, int]:
    """The 0-based order statistics that bound the median's interval among ``n`` samples, as
    ``scipy.stats.quantile_test(...).confidence_interval`` picks them (-1 or ``n``: no bound)."""
    if not 0 < confidence < 1:
        raise ValueError("the confidence level must lie strictly between 0 and 1")
    tail = (1 - confidence) / 2
    counts = sps.binom(n, 0.5)
    return int(counts.ppf(tail)) - 1, int(counts.isf(tail))


def ci_half_width(samples: Sequence[float], confidence: float = 0.95) -> float:
    """The larger distance from the median to an end of its CI, relative to the median."""
    low, high = median_ci(samples, confidence)
    med = float(np.median(samples))
    if math.isnan(low) or med <= 0:
        return math.inf
    return max(med - low, high - med) / med


def level_shift(samples: Sequence[float]) -> float:
    """How far the samples moved while they were taken: |median of the second half / median of the
    first − 1|. A host's wall time on a shared VM can step by 2× within a second (an H200 machine,
    2026-11-27: 0.37 ms a call, then 0.17), which neither the IQR nor the median's CI shows as
    doubt once thousands of samples narrow it. NaN with fewer than 10 samples."""
    x = np.asarray(samples, dtype=float)
    if x.size < 10:
        return math.nan
    first, second = np.median(x[: x.size // 2]), np.median(x[x.size // 2 :])
    return float(abs(second / first - 1)) if first > 0 else math.inf


def steady(samples: Sequence[float]) -> bool:
    """Samples whose median a comparison may rest on: enough of them, and no level shift beyond
    ``NOISE_THRESHOLD`` between the two halves. (A wide but stationary spread is the median's
    interval's business: it widens with it.)"""
    shift = level_shift(samples)
    return bool(math.isfinite(shift) and shift <= NOISE_THRESHOLD)


@dataclass(frozen=True)
class Stats:
    """Summary of a case's samples, in milliseconds per call."""

    median_ms: float
    iqr_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p05_ms: float
    p95_ms: float
    ci_low_ms: float
    ci_high_ms: float
    n_samples: int
    noisy: bool

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], confidence: float = 0.95) -> Stats:
        x = np.asarray(samples_ms, dtype=float)
        if x.size == 0:
            raise ValueError("no samples")
        p05, q1, med, q3, p95 = np.percentile(x, [5, 25, 50, 75, 95])
        low, high = median_ci(x, confidence)
        # one sample has no spread to give: NaN (empty in results.csv), never a 0 that reads as a steady time
        iqr = float(q3 - q1) if x.size > 1 else math.nan
        return cls(
            median_ms=float(med),
            iqr_ms=iqr,
            mean_ms=float(x.mean()),
            std_ms=float(x.std(ddof=1)) if x.size > 1 else math.nan,
            min_ms=float(x.min()),
            max_ms=float(x.max()),
            p05_ms=float(p05),
            p95_ms=float(p95),
            ci_low_ms=low,
            ci_high_ms=high,
            n_samples=int(x.size),
            noisy=bool(med > 0 and iqr / med > NOISE_THRESHOLD),
        )

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


#: The row columns a ``Stats`` fills, in order.
STATS_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Stats))
