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
    """Distribution-free confidence interval of the median, from order statistics (binomial).

    Latency samples are skewed (a long right tail), so a normal-theory interval would lie;
    the order-statistic interval assumes nothing but independence. Fewer than 6 samples cannot
    give a 95% interval: then it is ``(nan, nan)``. The interval is scipy's ``quantile_test``'s
    (p = 0.5), whose ranks depend on the count alone: they are computed once per count, since the
    stop rule asks for an interval after every 10% more samples.
    """
    x = np.sort(np.asarray(samples, dtype=float))
    if x.size == 0:
        return (math.nan, math.nan)
    low, high = median_ci_ranks(int(x.size), float(confidence))
    return (float(x[low]) if low >= 0 else math.nan, float(x[high]) if high < x.size else math.nan)


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
        iqr = float(q3 - q1)
        return cls(
            median_ms=float(med),
            iqr_ms=iqr,
            mean_ms=float(x.mean()),
            std_ms=float(x.std(ddof=1)) if x.size > 1 else 0.0,
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
