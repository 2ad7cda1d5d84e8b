"""Replay the wall-time loop's stop rule on this card's stored wall samples (``../cuda-nvidia-h200``).

Run from the repository root: ``python results/baselines/nvidia-h200/wall_stop_replay.py``. Each ok
row's wall loop is replayed under each rule: the sample it would have stopped at, why, and its loop
time, estimated per sample from the row's ``phase_timing_s`` less its primary loop. Where a rule
needs more samples than the run took ("ran out"), the estimate is up to 4× as many, or the budget.
The figures in README.md ("Synchronous wall time") and ``TimingPolicy.for_wall`` come from here.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from harness.measure.stats import ci_half_width, dependence_factor
from harness.measure.timing import MIN_EFFECTIVE_SAMPLES

RUN = Path(__file__).resolve().parent.parent / "cuda-nvidia-h200" / "results.jsonl"
#: (stop-check confidence, CI target, wall budget in seconds): the rule the run was made with, the
#: stricter check with the old target and budget, and today's rule (``TimingPolicy.for_wall``).
RULES = [(0.95, 0.01, 1.0), (0.995, 0.01, 1.0), (0.995, 0.02, 0.5)]


def stop_at(samples: list[float], confidence: float, rel: float, budget_n: float, min_samples: int = 10):
    """The sample ``measure`` stops at, and why, with checks at ``min_samples`` and every 10% more
    (today's intervals, which count dependent samples, and its ``MIN_EFFECTIVE_SAMPLES``)."""
    next_check = min_samples
    for n in range(1, len(samples) + 1):
        if n >= next_check:
            window = samples[:n]
            if ci_half_width(window, confidence) <= rel and n / dependence_factor(window) >= MIN_EFFECTIVE_SAMPLES:
                return n, "converged"
            next_check = max(n + 1, math.ceil(n * 1.1))
        if n >= min_samples and n >= budget_n:
            return n, "budget"
    return len(samples), "ran out"


def main() -> None:
    rows = [json.loads(line) for line in RUN.read_text().splitlines()]
    rows = [r for r in rows if r.get("status") == "ok"]
    spent = 0.0
    for confidence, rel, budget in RULES:
        total, why = 0.0, Counter()
        for r in rows:
            wall = r["wall_samples_ms"]
            primary = 0.1 + len(r["samples_ms"]) * r["calls_per_sample"] * max(r["host_ms"], r["median_ms"]) * 1.3e-3
            loop = max(r["phase_timing_s"] - primary, 0.01)
            per_sample = loop / len(wall)
            n, reason = stop_at(wall, confidence, rel, budget / per_sample)
            if reason == "ran out":
                n = min(4 * len(wall), budget / per_sample)
            total += min(n * per_sample, budget)
            why[reason] += 1
            spent += loop if (confidence, rel, budget) == RULES[0] else 0.0
        print(f"check at {confidence:.1%}, ±{rel:.0%}: {total:5.1f} s of wall loops; {dict(why)}")
    print(f"the run itself: {spent:.1f} s of wall loops over {len(rows)} cases")


if __name__ == "__main__":
    main()
