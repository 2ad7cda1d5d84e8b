"""Variants measured one after another against round by round (``--processes``' rounds): ``python
results/baselines/noise-cpu/judge_rounds.py`` from the repository root.

``sweep-cpu.toml`` was run twelve times on one VM, alternating the two orders: ``seq1``,
``rounds1``, ``seq2``, ``rounds2``, … (``seq``: the commit before the rounds, e11492b, which ran
each case's five processes one after another). No code a variant runs changed, so every SLOWER
below is false. Each pair of runs (``SETS``) is judged over eager (``compare --relative-to
eager``) at three thresholds; each non-eager variant of the later run is then made 2× slower, and
the cases of it judged SLOWER counted. Each non-eager case's ratio to eager is read in both runs
of a pair: how far it moved (in percent, either way) is the drift no division cancels.
"""
from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np

from harness.results.compare import compare, load_run

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from judge_relative import slowed, slower  # noqa: E402

DAY = HERE / "2026-11-29"
CONFIG = ("dtype", "mode", "batch", "channels", "height", "width")
THRESHOLDS = (0.05, 0.25, 0.75)


def over_eager(records) -> dict[tuple, float]:
    """Each non-eager ok case's median over eager's at its configuration."""
    rows = [r for r in records if r.get("status") == "ok"]
    eager = {tuple(r[c] for c in CONFIG): r["median_ms"] for r in rows if r["variant"] == "eager"}
    return {(r["variant"], *(r[c] for c in CONFIG)): r["median_ms"] / eager[tuple(r[c] for c in CONFIG)]
            for r in rows if r["variant"] != "eager" and tuple(r[c] for c in CONFIG) in eager}  # fmt: skip


#: Which runs are judged against which: every pair among runs 1-4 (a quiet VM; the first 30 s of
#: seq3 shared it with a 28 s script, so also without run 3), then runs 5-6, made while another
#: process copied memory 10 s in every 30 (``disturb.py``), against every run before them; then
#: every run against the committed baseline, as the CI's CPU gate judges.
SETS = (("quiet: runs 1-4, every pair", list(itertools.combinations(range(1, 5), 2))),
        ("quiet: runs 1, 2, 4", list(itertools.combinations((1, 2, 4), 2))),
        ("with a tenant: 5-6 against 1-6", [(a, b) for b in (5, 6) for a in range(1, b)]),
        ("1-6 against the committed baseline", [(0, b) for b in range(1, 7)]))  # fmt: skip
#: Run 0 of either order: the committed CPU baseline (2026-11-28, one process after another, 41 GB/s).
BASELINE = HERE.parent / "cpu-amd-epyc"


def run_path(order: str, number: int) -> Path:
    return BASELINE if number == 0 else DAY / f"{order}{number}"


def judge(order: str, pairs: list[tuple[int, int]]) -> str:
    """The table's cells for ``order``'s runs judged in ``pairs``."""
    false, caught, cases, moved = [0] * 3, [0] * 3, 0, []
    for first, second in pairs:
        base, cur = load_run(run_path(order, first)), load_run(run_path(order, second))
        variants = sorted({str(r["variant"]) for r in cur.records} - {"eager"})
        for n, threshold in enumerate(THRESHOLDS):
            result = compare(base, cur, threshold=threshold, relative_to="eager")
            false[n] += slower(result)
            for variant in variants:
                worse = slowed(cur, variant, 2.0)
                caught[n] += slower(compare(base, worse, threshold=threshold, relative_to="eager"), variant)
        cases += len(result.cases)
        a, b = over_eager(base.records), over_eager(cur.records)
        moved += [abs(math.log2(b[k] / a[k])) for k in a if k in b]
    pct = (2 ** np.array(moved) - 1) * 100
    return (f"{', '.join(str(f) for f in false)} of {cases} | {', '.join(str(c) for c in caught)} of {cases} | "
            f"{np.median(pct):.1f}%, {np.percentile(pct, 90):.1f}%, {pct.max():.1f}%")


def main() -> None:
    print("| runs | order | false SLOWER over eager at 0.05 / 0.25 / 0.75 | 2× caught at 0.05 / 0.25 / 0.75 "
          "| ratio to eager moved: median, p90, max |")
    print("|---|---|---|---|---|")
    for name, pairs in SETS:
        for order in ("seq", "rounds"):
            print(f"| {name} ({len(pairs)} pairs) | {order} | {judge(order, pairs)} |")


if __name__ == "__main__":
    main()
