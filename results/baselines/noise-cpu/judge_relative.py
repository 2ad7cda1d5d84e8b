"""False and caught regressions of the CPU sweep, judged in ms and over eager of each run (``compare
--relative-to eager``): ``python results/baselines/noise-cpu/judge_relative.py`` from the repository root.

Each pair of unchanged runs is compared at three thresholds; every SLOWER is false. Then each
non-eager variant of the current run is made 2x slower (its samples, medians and process medians
doubled) and the cases of it judged SLOWER are counted: the gate's power against a gross regression.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.results.compare import LoadedRun, compare, load_run
from harness.results.compare_stats import Verdict

HERE = Path(__file__).resolve().parent
PAIRS = (("cpu-amd-epyc", "2026-11-29/run1"), ("cpu-amd-epyc", "2026-11-29/run2"),
         ("2026-11-29/run1", "2026-11-29/run2"))  # fmt: skip
TIMES = ("median_ms", "ci_low_ms", "ci_high_ms", "iqr_ms", "mean_ms", "min_ms", "max_ms", "p05_ms", "p95_ms")


def slowed(run: LoadedRun, variant: str, factor: float) -> LoadedRun:
    """``run`` with ``variant``'s timed rows ``factor`` times slower."""
    rows = []
    for row in run.records:
        row = dict(row)
        if row.get("variant") == variant and row.get("status") == "ok":
            row |= {k: row[k] * factor for k in TIMES if row.get(k) is not None}
            row |= {k: [v * factor for v in row[k]] for k in ("samples_ms", "process_medians_ms") if row.get(k)}
        rows.append(row)
    return dataclasses.replace(run, records=tuple(rows))


def slower(result, variant: str | None = None) -> int:
    """The cases of ``result`` (of ``variant``) judged SLOWER; a pair of runs that compare calls not
    comparable (another CPU model, say) ends the script, as it would the CLI's judgement."""
    if result.env_differences:
        raise SystemExit(f"{result.baseline} → {result.current}: {result.env_differences[0]}")
    return sum(c.verdict is Verdict.SLOWER and (variant is None or dict(c.key)["variant"] == variant)
               for c in result.cases)  # fmt: skip


def main() -> None:
    print("| baseline → current | threshold | false SLOWER in ms | false SLOWER over eager | "
          "2× caught in ms | 2× caught over eager |")
    print("|---|---|---|---|---|---|")
    for base_name, cur_name in PAIRS:
        base = load_run(HERE.parent / base_name if base_name == "cpu-amd-epyc" else HERE / base_name)
        cur = load_run(HERE / cur_name)
        others = sorted({str(r["variant"]) for r in cur.records} - {"eager"})
        for threshold in (0.05, 0.25, 0.75):
            ms, rel = compare(base, cur, threshold=threshold), compare(base, cur, threshold=threshold,
                                                                       relative_to="eager")  # fmt: skip
            caught_ms = caught_rel = 0
            for variant in others:
                worse = slowed(cur, variant, 2.0)
                caught_ms += slower(compare(base, worse, threshold=threshold), variant)
                caught_rel += slower(compare(base, worse, threshold=threshold, relative_to="eager"), variant)
            n_other = sum(dict(c.key)["variant"] != "eager" for c in ms.cases)
            print(f"| {base_name} → {cur_name} | {threshold} | {slower(ms)} of {len(ms.cases)} | "
                  f"{slower(rel)} of {len(rel.cases)} | {caught_ms} of {n_other} | {caught_rel} of {len(rel.cases)} |")


if __name__ == "__main__":
    main()
