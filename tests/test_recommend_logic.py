"""The answer table's logic at its edges: touching intervals, the kinds of interval, the speedup's
interval where a side cannot give one, the end-to-end note, thread counts and the order of the answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sample_orders import without_drift
from test_recommend import cuda_row, only, row

from harness.results.compare_stats import Timing
from harness.results.recommend import (
    fastest_end_to_end,
    interval,
    recommend,
    same_threads,
    speedup_bounds,
    speedup_interval,
    speedup_text,
    table_rows,
    terminal_cells,
)
from harness.results.store import to_frame
from harness.results.tables import timing_of

NO_CI = {"ci_low_ms": None, "ci_high_ms": None}


# --- ties: intervals that overlap, contain or touch ---------------------------------------------


def test_an_interval_inside_the_winners_wide_one_is_a_tie() -> None:
    """A winner too noisy to tell apart from a variant whose whole interval lies inside its own is tied
    with it, although that variant is more than 5% slower."""
    rec = only([row("fast", 0.5, 0.1, 2.0), row("steady", 0.65, 0.6, 0.7)])
    assert rec.tied == ("steady",) and rec.tied_by_margin == ()
    assert rec.verdict() == "tie: fast, steady (intervals overlap: any of them)"


def test_intervals_that_touch_overlap_at_either_end() -> None:
    """Closed intervals that share an end overlap: timings quantized by the clock make a bound equal
    another's. Above: the other's interval starts where the winner's ends; below: it ends where the
    winner's starts (equal medians, the name breaks the tie)."""
    above = only([row("fast", 0.5, 0.45, 0.55), row("other", 0.6, 0.55, 0.65)])
    assert above.tied == ("other",) and above.verdict().startswith("tie: fast, other (intervals overlap")
    below = only([row("fast", 0.5, 0.5, 0.6), row("twin", 0.5, 0.4, 0.5)])
    assert below.winner == "fast" and below.tied == ("twin",) and below.tied_by_margin == ()
    assert below.verdict() == "tie: fast, twin (intervals overlap: any of them)"


def test_equal_medians_rank_by_name_whatever_the_row_order() -> None:
    """Two variants reading the same median: the answer does not depend on which row came first
    (a merged or resumed run reorders them)."""
    rows = [row("zeta", 0.5), row("alpha", 0.5), row("eager", 2.0)]
    assert only(rows).winner == "alpha" and only(rows[::-1]).winner == "alpha"
    assert only(rows).runner_up == "zeta"


def test_a_speedup_interval_that_starts_at_exactly_one_ties_with_eager() -> None:
    """[1.00, …] reaches 1×: eager's lower bound at √95% equals the winner's upper one (a timer's
    quantum), while their 95% intervals are apart and the medians 23% apart."""
    # 20 samples: at 95% the interval is the 6th to 15th order statistic, at √95% the 5th to 16th
    fast = [0.80 + 0.01 * i for i in range(15)] + [1.0, 1.01, 1.02, 1.03, 1.04]  # 16th: 1.0
    eager = [0.96, 0.97, 0.98, 0.99, 1.0] + [1.06 + 0.01 * i for i in range(15)]  # 5th: 1.0
    rows = [row(name, float(np.median(x)), samples_ms=list(without_drift(x)), **NO_CI)
            for name, x in (("eager", eager), ("fast", fast))]  # fmt: skip
    rec = only(rows)
    assert rec.winner == "fast" and rec.interval_ms[1] < 1.0 and rec.speedup_method == "samples"
    assert rec.speedup_ci[0] == 1.0
    assert rec.tied == ("eager",) and rec.tied_by_speedup
    assert rec.verdict() == "tie: fast, eager (the speedup over eager may be 1×: any of them)"


# --- the kinds of interval, as the table shows them ---------------------------------------------


def test_an_interval_from_the_samples_is_a_95_percent_ci_and_can_carry_a_clear_verdict() -> None:
    """results.jsonl without stored intervals: the median's 95% CI from the raw samples (6th to 15th
    of 20) is shown in brackets, and a clear lead is "clear", not "unsure"."""
    fast = [1.0 + 0.01 * i for i in range(20)]
    slow = [2.0 + 0.01 * i for i in range(20)]
    rows = [row(name, float(np.median(x)), samples_ms=list(without_drift(x)), **NO_CI)
            for name, x in (("fast", fast), ("slow", slow))]  # fmt: skip
    rec = only(rows)
    assert rec.interval_kind == "95% CI" and rec.interval_ms == pytest.approx((1.05, 1.14))
    assert table_rows([rec])[0][3].endswith(" [1.05, 1.14]")
    assert rec.few_samples == () and rec.verdict().startswith("clear: next is slow at ")


def test_two_samples_give_their_quartiles() -> None:
    """Two samples are too few for a CI but have quartiles: 1.0 and 1.2 give 1.05–1.15."""
    rec = only([row("fast", 1.1, samples_ms=[1.0, 1.2], **NO_CI)])
    assert rec.interval_kind == "IQR" and rec.interval_ms == pytest.approx((1.05, 1.15))
    assert table_rows([rec])[0][3] == "1.10 (IQR 1.05–1.15)"


def test_a_median_with_no_spread_at_hand_is_shown_alone() -> None:
    """results.csv's row of one sample (IQR 0, no interval): no "(IQR 0)" read as a steady time, no
    interval line under it in the terminal; the median alone."""
    rec = only([row("only", 1.0, iqr_ms=0.0, **NO_CI)])
    assert rec.interval_kind == "" and rec.interval_ms == (1.0, 1.0)
    assert table_rows([rec])[0][3] == "1.00"
    assert terminal_cells(rec)[2] == "1.00"


def test_half_a_stored_interval_is_no_interval() -> None:
    """A row with one bound of its CI missing (a blank cell in results.csv) falls back to what else it
    has, never an interval with a NaN end."""
    rec = only([row("fast", 1.0, 0.95, ci_high_ms=None, iqr_ms=0.1)])
    assert rec.interval_kind == "IQR width" and table_rows([rec])[0][3] == "1.00 (IQR 0.1)"
    samples = np.array(list(without_drift([1.0 + 0.01 * i for i in range(20)])))
    assert interval(Timing(samples, 1.095, 0.9, math.nan, math.nan)) == pytest.approx((1.05, 1.14, "95% CI"))


# --- which variants the answer rests on --------------------------------------------------------


def test_a_slow_variant_with_few_samples_leaves_a_clear_answer_clear() -> None:
    """Only the winner, the runner-up, tied variants and eager carry the answer: a third, slower
    variant's too-few samples make it no less sure."""
    rec = only([row("eager", 2.0), row("fast", 0.5), row("slow", 5.0, iqr_ms=0.5, **NO_CI)])
    assert rec.few_samples == () and rec.unsure is None
    assert rec.verdict() == "clear: next is eager at 2.00 ms"


def test_eager_with_few_samples_makes_the_answer_unsure() -> None:
    """The speedup rests on eager: eager with too few samples for an interval, behind a clear
    runner-up, leaves the answer unsure."""
    rec = only([row("fast", 0.5), row("next", 1.0), row("eager", 2.0, iqr_ms=0.2, **NO_CI)])
    assert rec.runner_up == "next" and rec.few_samples == ("eager",)
    assert rec.verdict().startswith("unsure: eager took too few independent samples")


def test_a_tied_variant_with_few_samples_is_among_those_the_answer_rests_on() -> None:
    """A variant tied with the winner (not the runner-up) whose interval is only its IQR's width is
    named among the few-sample ones."""
    rec = only([row("fast", 0.5, 0.45, 0.55), row("next", 0.52, 0.50, 0.54), row("wide", 0.6, iqr_ms=0.4, **NO_CI)])
    assert rec.tied == ("next", "wide") and rec.runner_up == "next"
    assert rec.few_samples == ("wide",)


# --- the speedup's interval where a side cannot give one ---------------------------------------


def test_the_speedup_falls_back_to_stored_intervals_when_a_side_has_too_few_samples_at_root_95() -> None:
    """Eager's 6 samples have a stored 95% CI but none at √95% (that needs 7): the speedup's interval
    comes from the stored intervals, and the table still shows one."""
    eager = list(without_drift([1.9, 1.95, 2.0, 2.05, 2.1, 2.15]))
    fast = list(without_drift([0.45 + 0.005 * i for i in range(20)]))
    rows = [row("eager", 2.025, 1.9, 2.15, samples_ms=eager), row("fast", 0.4975, 0.475, 0.52, samples_ms=fast)]
    rec = only(rows)
    assert rec.speedup_method == "stored CIs"
    assert rec.speedup_ci == pytest.approx((1.9 / 0.52, 2.15 / 0.475))
    assert speedup_text(rec) == "4.07× [3.65, 4.53]"


def test_no_speedup_interval_where_the_winners_lower_bound_is_zero() -> None:
    """A winner faster than the clock's quantum read 0 ms in some calls: its interval starts at 0 and
    the speedup has no upper bound. The answer stands, with the speedup and no interval."""
    rec = only([row("eager", 2.0), row("fast", 0.1, 0.0, 0.2)])
    assert rec.speedup == 20.0 and all(math.isnan(v) for v in rec.speedup_ci) and rec.speedup_method == ""
    assert speedup_text(rec) == "20.00×"
    # from raw samples: the √95% lower bound (5th of 20) is 0, the stored 95% one (6th) is not
    fast = [0.0] * 5 + [0.1 + 0.01 * i for i in range(15)]
    eager = [2.0 + 0.01 * i for i in range(20)]
    samples = only([row("eager", 2.095, 2.05, 2.14, samples_ms=list(without_drift(eager))),
                    row("fast", 0.145, 0.1, 0.19, samples_ms=list(without_drift(fast)))])  # fmt: skip
    assert samples.speedup_method == "stored CIs" and samples.speedup_ci == pytest.approx((2.05 / 0.19, 2.14 / 0.1))


def test_the_speedup_interval_is_nan_and_unnamed_when_a_side_has_none() -> None:
    """Eager without an interval (too few samples, results.csv): no interval however good the winner's,
    and no method named for it."""
    eager = timing_of(row("eager", 2.0, iqr_ms=0.2, **NO_CI))
    fast = timing_of(row("fast", 0.5, 0.45, 0.55))
    low, high, method = speedup_interval(eager, fast)
    assert math.isnan(low) and math.isnan(high) and method == ""
    rec = only([row("eager", 2.0, iqr_ms=0.2, **NO_CI), row("fast", 0.5, 0.45, 0.55)])
    assert rec.speedup == 4.0 and rec.speedup_method == "" and speedup_text(rec) == "4.00×"


@pytest.mark.parametrize("eager", [None, "eager"])
def test_no_speedup_method_without_an_eager_to_divide_or_when_eager_wins(eager: str | None) -> None:
    rows = [row("fast", 0.5), row("other", 1.0)] + ([row("eager", 0.4)] if eager else [])
    assert only(rows).speedup_method == ""


def test_a_bound_that_is_not_one_never_reads_as_one() -> None:
    """As many decimals as a bound needs to stay off 1, however close it is (it stopped at six:
    1.0000004 read 1.000000, a clear lead whose interval seemed to reach 1×); 1 itself reads 1.00."""
    assert speedup_bounds(1.000004, 1.2) == "[1.000004, 1.20]"
    assert speedup_bounds(1.0000004, 1.2) == "[1.0000004, 1.20]"
    above = math.nextafter(1.0, 2.0)
    below = math.nextafter(1.0, 0.0)
    assert speedup_bounds(below, above) == "[0.9999999999999999, 1.0000000000000002]"  # one ulp either side
    assert speedup_bounds(1.0, 1.0) == "[1.00, 1.00]"


def test_the_margin_of_a_tie_is_compares_no_change() -> None:
    """Tied by the 5% margin exactly where compare would call the change SAME: at 1.05 against 1.00 the
    ratio's last bit put the answer table's tie on one side and compare's on the other."""
    from harness.results.compare_stats import Verdict, judge
    from harness.results.recommend import EQUIVALENT, within_margin

    for best, other in [(0.20, 0.21), (1.0, 1.05), (2.0, 2.1), (20.0, 21.0), (1.0, 1.0499), (1.0, 1.0501),
                        (0.3, 0.315), (1.0, 1.0)]:
        same = judge(other / best, 0.0, True, EQUIVALENT, 0.05) is Verdict.SAME
        assert within_margin(best, other) == same, (best, other)
    assert within_margin(1.0, 1.0499) and not within_margin(1.0, 1.0501)
    assert within_margin(0.0, 0.0) and not within_margin(0.0, 1e-9)  # a median of 0: only another 0 is close
    tight = {"ci_low_ms": None, "ci_high_ms": None, "iqr_ms": 0.0}
    assert only([row("fast", 0.20, 0.199, 0.201), row("next", 0.21, 0.2095, 0.2105)]).tied_by_margin == ("next",)
    assert only([row("fast", 1.0, **tight), row("next", 1.05, **tight)]).tie is False  # compare: not SAME either


# --- end to end (CUDA wall time) ----------------------------------------------------------------


def test_an_end_to_end_interval_that_touches_the_winners_is_not_below_it() -> None:
    """Not "wholly below": a wall interval ending where the winner's starts is not clearly faster."""
    rec = only([cuda_row("fused", 0.075, 0.17, 0.16, 0.18), cuda_row("graphed", 0.080, 0.12, 0.09, 0.16)])
    assert rec.wall_best is None and not any(n.startswith("end to end") for n in rec.notes())


def test_of_several_variants_faster_end_to_end_the_lowest_wall_time_is_named() -> None:
    """Ranked by GPU time, "graphed" comes before "cudagraph", but the latter's wall time is lower."""
    rec = only([cuda_row("fused", 0.075, 0.17, 0.16, 0.18), cuda_row("graphed", 0.080, 0.094, 0.090, 0.098),
                cuda_row("cudagraph", 0.090, 0.05, 0.045, 0.055)])  # fmt: skip
    assert rec.wall_best == "cudagraph" and rec.wall_best_ms == 0.05
    assert "end to end: cudagraph is faster, 0.05 against 0.17 ms wall" in rec.notes()


def test_a_wall_interval_without_its_median_is_never_named_end_to_end() -> None:
    """A row whose wall median is missing (a blank cell) has no wall time to name, whatever its interval."""
    best = cuda_row("fused", 0.075, 0.17, 0.16, 0.18)
    partial = cuda_row("graphed", 0.080, None, 0.090, 0.098)
    assert fastest_end_to_end(best, [best, partial]) is None
    assert only([best, partial]).wall_best is None


# --- thread counts (CPU) ------------------------------------------------------------------------


def test_eagers_thread_count_ranks_even_when_most_rows_ran_on_another() -> None:
    """Eager set the count the run asked for; three variants that set their own 8 are not ranked against it."""
    rec = only([row("eager", 2.0, threads=2), row("greedy", 0.5, threads=8), row("hungry", 0.6, threads=8),
                row("fused", 1.0, threads=2), row("wide", 0.7, threads=8)])  # fmt: skip
    assert rec.threads == 2 and rec.winner == "fused"
    assert rec.other_threads == (("greedy", 8), ("hungry", 8), ("wide", 8))


def test_rows_written_as_cpu_0_rank_by_thread_count_too() -> None:
    """Runs from before `--device cpu:0` was written as `cpu` carry "cpu:0" in their rows."""
    rows = [row("eager", 2.0, threads=2, device="cpu:0"), row("greedy", 0.5, threads=8, device="cpu:0"),
            row("fused", 1.0, threads=2, device="cpu:0")]  # fmt: skip
    rec = only(rows)
    assert rec.winner == "fused" and rec.other_threads == (("greedy", 8),)


def test_a_frame_without_a_threads_column_keeps_every_row() -> None:
    """A results.csv from before thread counts were recorded has no such column: every row is ranked."""
    timed = pd.DataFrame({"variant": ["eager", "fast"], "median_ms": [2.0, 0.5]})
    kept, others, threads = same_threads(timed, "cpu")
    assert kept.equals(timed) and others == () and threads is None


# --- without eager: the reference the precision is held to --------------------------------------


def test_without_eager_equally_tight_references_are_picked_by_name_not_by_speed() -> None:
    """Of variants held equally tight, the one named beside a lower-precision winner is the first by
    name, so the note does not change between runs as their times swap."""
    rows = [row("amp", 0.5, tolerance=0.03, max_rel_err=3e-3), row("zeta", 0.51, tolerance=1e-5, max_rel_err=1e-7),
            row("alpha", 0.9, tolerance=1e-5, max_rel_err=2e-7)]  # fmt: skip
    for order in (rows, rows[::-1]):
        rec = only(order)
        assert rec.less_precise == (("amp", 3e-3, "alpha", 2e-7),)
        assert "amp computes in lower precision: error 0.003 against alpha's 2e-07" in rec.notes()


# --- one answer per configuration -------------------------------------------------------------------


def test_answers_come_in_the_sweeps_order_not_sorted() -> None:
    """The report lists configurations as the sweep ran them: batch 16 before batch 8 if it ran first."""
    rows = [row("eager", 4.0, batch=16), row("fast", 2.0, batch=16), row("eager", 2.0, batch=8), row("fast", 1.0)]
    assert [r.config for r in recommend(to_frame(rows))] == ["32x16x16 b16", "32x16x16 b8"]


def test_rows_without_a_bias_column_still_get_an_answer() -> None:
    """Rows from before the bias column (empty there) are a configuration like any other, not dropped."""
    rows = [row("eager", 2.0), row("fast", 0.5)]
    for r in rows:
        del r["bias"]
    recs = recommend(to_frame(rows))
    assert [(r.config, r.winner) for r in recs] == [("32x16x16 b8", "fast")]
