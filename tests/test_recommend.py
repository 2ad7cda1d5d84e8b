"""Which variant to run: the fastest correct one, its speedup's interval, ties, and the marks that qualify it."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sample_orders import without_drift

from harness.measure.stats import median_ci
from harness.results.recommend import (
    EQUIVALENT,
    Recommendation,
    recommend,
    speedup_interval,
    speedup_text,
    table_rows,
)
from harness.results.store import to_frame
from harness.results.tables import timing_of


def row(variant: str, median: float | None, low: float | None = None, high: float | None = None,
        status: str = "ok", batch: int = 8, mode: str = "forward", **kw: Any) -> dict[str, Any]:  # fmt: skip
    """One timed row; its 95% CI of the median is ``low``–``high``, ±5% when not given."""
    ok = status == "ok" or median is not None
    return {"variant": variant, "device": "cpu", "dtype": "float32", "mode": mode, "batch": batch, "channels": 32,
            "height": 16, "width": 16, "reduction": 2, "fusion": "add", "bias": False, "status": status,
            "reason": None if status == "ok" else "output error 0.3 > tolerance 1e-05", "median_ms": median,
            "ci_low_ms": (median * 0.95 if low is None else low) if ok else None,
            "ci_high_ms": (median * 1.05 if high is None else high) if ok else None,
            "iqr_ms": 0.1 * median if ok else None, "noisy": False, "disturbed": False, **kw}  # fmt: skip


def only(rows: list[dict[str, Any]]) -> Recommendation:
    recs = recommend(to_frame(rows))
    assert len(recs) == 1
    return recs[0]


def test_a_clear_winner_with_its_speedup_interval_from_the_stored_intervals() -> None:
    rec = only([row("eager", 2.0, 1.9, 2.1), row("fast", 0.5, 0.45, 0.55), row("other", 1.0, 0.95, 1.05)])
    assert rec.winner == "fast" and not rec.tie and rec.tied == ()
    assert rec.runner_up == "other" and rec.runner_up_ms == 1.0
    assert rec.speedup == 4.0
    # eager_low / winner_high, eager_high / winner_low
    assert rec.speedup_ci == pytest.approx((3.4545, 4.6667), abs=1e-4)  # 1.9 / 0.55, 2.1 / 0.45
    assert rec.speedup_method == "stored CIs"
    assert rec.verdict() == "clear: next is other at 1.00 ms"
    assert speedup_text(rec) == "4.00× [3.45, 4.67]"
    assert table_rows([rec])[0][:4] == ("cpu · float32 · forward", "32x16x16 b8", "fast", "0.500 [0.450, 0.550]")


def test_overlapping_intervals_are_a_tie_that_lists_every_tied_variant() -> None:
    rec = only([row("eager", 2.0), row("fast", 0.50, 0.45, 0.55), row("fused", 0.52, 0.54, 0.60),
                row("also", 0.70, 0.40, 0.90), row("slow", 0.56, 0.555, 0.58)])  # fmt: skip
    assert rec.winner == "fast" and rec.tie
    # the runner-up ("fused") overlaps; "slow" is between them but clear of the winner; "also" is wide
    assert rec.tied == ("fused", "also")
    assert rec.verdict().startswith("tie: fast, fused, also")


def test_intervals_apart_are_no_tie() -> None:
    rec = only([row("fast", 0.50, 0.45, 0.55), row("fused", 0.60, 0.56, 0.64)])
    assert rec.winner == "fast" and not rec.tie


def test_a_faster_mismatch_or_error_never_wins() -> None:
    rec = only([row("eager", 2.0), row("wrong", 0.1, 0.09, 0.11, status="mismatch"),
                row("broken", 0.05, status="error"), row("fast", 0.5)])  # fmt: skip
    assert rec.winner == "fast"
    assert rec.not_timed == (("wrong", "mismatch"), ("broken", "error"))
    assert "wrong" not in rec.tied and "broken" not in rec.tied


def test_nothing_correct_is_no_winner() -> None:
    rec = only([row("wrong", 0.1, status="mismatch"), row("eager", None, status="error")])
    assert rec.winner is None and math.isnan(rec.speedup)
    assert rec.verdict() == "no variant ran correctly: wrong (mismatch), eager (error)"
    assert table_rows([rec])[0][2:5] == ("—", "", "")
    # out of memory is no wrong result: "no variant ran correctly" read as if every variant were wrong
    full = only([row("eager", None, status="oom"), row("fast", None, status="oom")])
    assert full.verdict() == "no variant fit in memory at this batch: eager (oom), fast (oom)"
    mixed = only([row("eager", None, status="oom"), row("gpu", None, status="skipped")])
    assert mixed.verdict() == "no variant was timed: eager (oom), gpu (skipped)"


def test_a_winner_whose_median_reads_zero_says_so_not_that_eager_is_missing() -> None:
    rec = only([row("eager", 1.0), row("fast", 0.0, 0.0, 0.0)])
    assert rec.winner == "fast" and "no speedup: fast's median reads 0 ms" in rec.notes()
    assert not any("no eager" in n for n in rec.notes())


def test_the_terminal_keeps_the_notes_of_a_winner_named_eager_something() -> None:
    """Dropping eager's own marks by the prefix "eager" dropped eager_amp's lower-precision note too."""
    from harness.results.recommend import terminal_cells

    rec = only([row("eager", 1.0, tolerance=1e-5, max_rel_err=1e-7, noisy=True),
                row("eager_amp", 0.5, tolerance=3e-2, max_rel_err=3e-3)])
    assert rec.notes() == ["eager ~", "eager_amp computes in lower precision: error 0.003 against eager's 1e-07"]
    assert terminal_cells(rec)[1].splitlines()[2:] == ["eager_amp computes in lower precision: error 0.003 "
                                                      "against eager's 1e-07"]


def test_a_host_bound_noisy_winner_is_marked() -> None:
    rec = only([row("eager", 2.0), row("fast", 0.5, bound="host", host_ms=0.9, noisy=True),
                row("other", 1.0, bound="device", host_ms=0.2)])  # fmt: skip
    assert rec.winner == "fast" and rec.host_bound and rec.marks == ("~", "host-bound")
    assert rec.notes() == ["host-bound: host 0.9 ms per call", "~ noisy"]
    assert speedup_text(rec).endswith(" ~")


def test_a_disturbed_side_leaves_no_speedup_figure_but_the_winner_stands() -> None:
    """A new user on a loaded VM read "149.58× [143.71, 157.31]" for amp_bf16 beside "unsure": a ratio
    of upper bounds, quoted as a figure. Eager or the winner disturbed: no figure; another variant
    disturbed leaves eager over the winner as it is."""
    from harness.results.recommend import terminal_cells

    rec = only([row("eager", 2.0, disturbed=True), row("fast", 0.5)])
    assert rec.winner == "fast" and rec.marks == () and rec.eager_marks == ("!",)
    assert rec.notes() == ["eager !"]
    assert speedup_text(rec) == "— (CPU busy) !" and rec.speedup == 4.0
    assert terminal_cells(rec)[3] == "—\n(CPU busy) !"
    own = only([row("eager", 2.0), row("fast", 0.5, disturbed=True)])
    assert speedup_text(own) == "— (CPU busy) !"
    other = only([row("eager", 2.0), row("fast", 0.5), row("next", 1.0, disturbed=True)])
    assert speedup_text(other) == "4.00× [3.62, 4.42]"  # 1.9 / 0.525, 2.1 / 0.475
    assert terminal_cells(other)[3] == "4.00×\n[3.62, 4.42]"


@pytest.mark.parametrize("eager", [None, "mismatch"])
def test_without_eager_there_is_still_a_winner_but_no_speedup(eager: str | None) -> None:
    rows = [row("fast", 0.5), row("other", 1.0)]
    if eager:
        rows.append(row("eager", 0.2, status=eager))
    rec = only(rows)
    assert rec.winner == "fast"
    assert math.isnan(rec.speedup) and all(math.isnan(v) for v in rec.speedup_ci)
    assert speedup_text(rec) == ""
    assert "no eager timed to compare with" in rec.notes()


def test_eager_itself_can_be_the_answer() -> None:
    rec = only([row("eager", 0.4), row("slow", 2.0)])
    assert rec.winner == "eager" and rec.speedup == 1.0
    assert speedup_text(rec) == "1× (is eager)"


def test_speedup_interval_from_raw_samples_uses_each_median_at_root_95_percent() -> None:
    """20 samples a side: the √95% (97.47%) interval of the median is the 5th to the 16th order statistic
    (binomial coverage 1 - 2·P(B(20, ½) ≤ 4) = 98.8%; the 6th to 15th give only 95.9%)."""
    eager = list(without_drift([2.0 + 0.01 * i for i in range(20)]))  # 5th = 2.04, 16th = 2.15
    fast = list(without_drift([1.0 + 0.01 * i for i in range(20)]))  # 5th = 1.04, 16th = 1.15
    rec = only([row("eager", 2.095, samples_ms=eager), row("fast", 1.095, samples_ms=fast)])
    assert rec.speedup_method == "samples"
    assert rec.speedup_ci == pytest.approx((2.04 / 1.15, 2.15 / 1.04))
    # The same pair without raw samples (results.csv): the stored intervals instead.
    low, high, method = speedup_interval(timing_of(row("eager", 2.0, 1.9, 2.1)), timing_of(row("fast", 1.0, 0.9, 1.25)))
    assert (low, high, method) == (pytest.approx(1.9 / 1.25), pytest.approx(2.1 / 0.9), "stored CIs")


def test_too_few_samples_for_a_ci_fall_back_to_their_quartiles() -> None:
    rows = [row("fast", 1.0, samples_ms=[0.8, 0.9, 1.0, 1.1, 1.2]), row("next", 1.15, samples_ms=[1.05, 1.1, 1.15])]
    for r in rows:
        r["ci_low_ms"] = r["ci_high_ms"] = None  # under 6 samples: no interval stored
    rec = only(rows)
    assert rec.interval_kind == "IQR" and rec.interval_ms == pytest.approx((0.9, 1.1))
    assert rec.tied == ("next",)  # its quartiles 1.075–1.125 reach into the winner's
    assert table_rows([rec])[0][3] == "1.00 (IQR 0.90–1.10)"


def test_one_recommendation_per_device_dtype_mode_and_configuration() -> None:
    rows = [row("eager", 2.0), row("fast", 0.5), row("eager", 4.0, batch=16), row("fast", 3.9, batch=16),
            row("eager", 10.0, mode="train"), row("fast", 12.0, 11.0, 13.0, mode="train")]  # fmt: skip
    recs = recommend(to_frame(rows))
    assert [(r.mode, r.config, r.winner, r.tie) for r in recs] == [
        ("forward", "32x16x16 b8", "fast", False),
        ("forward", "32x16x16 b16", "fast", True),
        ("train", "32x16x16 b8", "eager", False),
    ]


def cuda_row(variant: str, gpu: float, wall: float, wall_low: float, wall_high: float, **kw: Any) -> dict[str, Any]:
    return row(variant, gpu, device="cuda", wall_ms=wall, wall_ci_low_ms=wall_low, wall_ci_high_ms=wall_high, **kw)


def test_a_variant_clearly_faster_end_to_end_is_named_beside_the_gpu_time_winner() -> None:
    """As on an H200: triton_fused had the lowest GPU time but 0.16 ms of host time a call, while a
    graphed form's wall time was lower still."""
    rec = only([cuda_row("eager", 0.29, 0.37, 0.36, 0.38), cuda_row("fused", 0.075, 0.17, 0.16, 0.18, bound="host",
                host_ms=0.16), cuda_row("graphed", 0.080, 0.094, 0.090, 0.098)])  # fmt: skip
    assert rec.winner == "fused" and rec.wall_best == "graphed"
    assert rec.wall_best_ms == 0.094 and rec.wall_ms == 0.17
    assert "end to end: graphed is faster, 0.094 against 0.17 ms wall" in rec.notes()
    assert "end to end: graphed" in table_rows([rec])[0][-1]
    from harness.results.recommend import terminal_cells

    assert "end to end: graphed" in terminal_cells(rec)[1]


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_no_end_to_end_note_when_the_wall_intervals_overlap_or_on_the_cpu(device: str) -> None:
    overlapping = [cuda_row("fused", 0.075, 0.17, 0.10, 0.18), cuda_row("graphed", 0.080, 0.094, 0.090, 0.12)]
    apart = [cuda_row("fused", 0.075, 0.17, 0.16, 0.18), cuda_row("graphed", 0.080, 0.094, 0.090, 0.098)]
    for rows in (overlapping, apart) if device == "cuda" else (apart,):
        for r in rows:
            r["device"] = device
        rec = only(rows)
        if device == "cuda" and rows is apart:
            assert rec.wall_best == "graphed"
            continue
        assert rec.wall_best is None and not any(n.startswith("end to end") for n in rec.notes())


def test_no_end_to_end_claim_rests_on_wall_samples_that_shifted_or_spread() -> None:
    """An H200's host stepped from 0.37 to 0.17 ms a call halfway through one wall loop: thousands of
    samples narrow the median's interval, but the figure is not one to rank on."""
    steady_wall = [0.094 + 0.001 * (i % 3) for i in range(40)]
    shifted = [0.37] * 20 + [0.17] * 20
    winner = cuda_row("fused", 0.075, 0.17, 0.16, 0.18, wall_samples_ms=[0.17 + 0.001 * (i % 3) for i in range(40)])
    clear = only([winner, cuda_row("graphed", 0.080, 0.094, 0.090, 0.098, wall_samples_ms=steady_wall)])
    assert clear.wall_best == "graphed"
    moved = only([dict(winner), cuda_row("graphed", 0.080, 0.094, 0.090, 0.098, wall_samples_ms=shifted)])
    assert moved.wall_best is None
    unsteady_winner = dict(winner, wall_samples_ms=shifted)
    assert only([unsteady_winner, cuda_row("graphed", 0.080, 0.094, 0.090, 0.098, wall_samples_ms=steady_wall)]
                ).wall_best is None


def test_a_variant_measured_at_a_halved_batch_never_wins_and_says_why() -> None:
    """--oom-retry keeps the key's batch (32) and records the batch measured (16): its latency is of
    half the work, so ranking it, or dividing eager's batch-32 latency by it, would be wrong."""
    rows = [row("eager", 10.0, batch=32, batch_run=32), row("full", 8.0, batch=32, batch_run=32),
            row("half", 6.0, batch=32, batch_run=16, reason="out of memory at batch 32; ran at batch 16")]
    rec = only(rows)
    assert rec.winner == "full" and rec.speedup == pytest.approx(1.25) and rec.runner_up == "eager"
    assert rec.not_timed == (("half", "oom: ran at batch 16"),)
    assert only(rows[2:]).winner is None  # alone, it is still no answer for batch 32
    assert only(rows[2:]).verdict() == "no variant fit in memory at this batch: half (oom: ran at batch 16)"


@pytest.mark.parametrize("device", ["cuda:0", "cuda:1"])
def test_an_indexed_cuda_device_gets_the_end_to_end_note_too(device: str) -> None:
    rows = [cuda_row("fused", 0.075, 0.17, 0.16, 0.18), cuda_row("graphed", 0.080, 0.094, 0.090, 0.098)]
    for r in rows:
        r["device"] = device  # as --device cuda:0 writes it
    assert only(rows).wall_best == "graphed"


def test_the_end_to_end_note_finds_a_clear_variant_behind_a_wide_one() -> None:
    """The lowest wall median can have an interval too wide to claim anything; another variant whose
    interval lies wholly below the winner's is the one to name."""
    rec = only([cuda_row("fused", 0.075, 0.17, 0.16, 0.18), cuda_row("wide", 0.090, 0.090, 0.05, 0.165),
                cuda_row("graphed", 0.080, 0.094, 0.090, 0.098)])  # fmt: skip
    assert rec.wall_best == "graphed"


def test_without_samples_or_a_stored_ci_the_stored_iqr_gives_the_interval() -> None:
    """results.csv has no raw samples, and a case of under 6 samples no CI: ± half its IQR, so close
    medians are a tie there as they are from results.jsonl's samples."""
    rows = [row("eager", 10.0), row("other", 10.1)]
    for r in rows:
        r["ci_low_ms"] = r["ci_high_ms"] = None
        r["iqr_ms"] = 1.0
    rec = only(rows)
    assert rec.interval_kind == "IQR width" and rec.interval_ms == pytest.approx((9.5, 10.5))
    assert table_rows([rec])[0][3] == "10.0 (IQR 1)"  # the width, as the latency cells write it
    assert rec.tied == ("other",)
    with_samples = [dict(r, samples_ms=s) for r, s in zip(rows, ([9.5, 10.0, 10.5], [9.6, 10.1, 10.6]), strict=True)]
    assert only(with_samples).tied == ("other",)


def test_no_verdict_stands_beside_a_disturbed_time() -> None:
    """On a busy 2-core VM eager took 10.6 ms against its quiet 1.2 ms, and the answer said "clear,
    13×": a disturbed time says how busy the machine was, so the verdict says to measure again. It
    is an upper bound, so a variant that read slow may be the winner: compile read 76 ms disturbed
    beside a "clear" winner at 0.4 ms, and won the same configuration's train mode."""
    quiet = [row("eager", 2.0), row("fast", 0.5), row("next", 1.0)]
    assert only(quiet).verdict() == "clear: next is next at 1.00 ms" and only(quiet).disturbed == ()
    for i, name in enumerate(("eager", "fast", "next")):
        rows = [dict(r) for r in quiet]
        rows[i]["disturbed"] = True
        rec = only(rows)
        assert rec.winner == "fast" and rec.disturbed == (name,)
        assert rec.verdict() == f"unsure: {name} ran while the CPU was busy (!); measure again"
    slow_and_busy = [*quiet, row("slow", 5.0, disturbed=True)]  # neither winner, runner-up nor eager
    assert only(slow_and_busy).disturbed == ("slow",)
    assert only(slow_and_busy).verdict() == "unsure: slow ran while the CPU was busy (!); measure again"
    from harness.results.recommend import terminal_cells

    busy = [dict(quiet[0], disturbed=True), *quiet[1:]]
    assert "unsure: CPU busy (!)" in terminal_cells(only(busy))[1]


def test_a_speedup_whose_interval_reaches_one_is_a_tie_with_eager() -> None:
    """The 95% intervals of the medians can be apart while the speedup's (each median at √95%, so
    that both hold together) reaches 1: "clear" beside "1.02× [1.00, 1.04]" would contradict itself."""
    eager = list(without_drift(np.linspace(0.93, 1.27, 60)))  # 10% apart: beyond EQUIVALENT
    fast = list(without_drift(np.linspace(0.83, 1.17, 60)))  # its 95% interval ends just below eager's
    rows = [row(name, float(np.median(x)), samples_ms=x) for name, x in (("eager", eager), ("fast", fast))]
    for r in rows:
        r["ci_low_ms"] = r["ci_high_ms"] = None  # from the samples, at 95%
    assert median_ci(fast)[1] < median_ci(eager)[0]
    rec = only(rows)
    assert rec.winner == "fast" and rec.speedup_ci[0] <= 1.0
    assert rec.tied == ("eager",)
    assert rec.verdict() == "tie: fast, eager (the speedup over eager may be 1×: any of them)"
    both = only([*rows, row("close", float(np.median(fast)) + 0.001, samples_ms=[v + 0.001 for v in fast])])
    assert both.tied == ("close", "eager")
    assert both.verdict().endswith("(intervals overlap; the speedup over eager may be 1×: any of them)")
    apart = [row("eager", 2.0, 1.9, 2.1), row("fast", 0.5, 0.45, 0.55)]
    assert only(apart).tied == ()  # a speedup surely above 1 stays clear


def test_a_lead_under_five_percent_is_a_tie_whatever_the_intervals() -> None:
    """Each interval holds for its own case, measured after the other while the machine drifts: the
    reference registered twice read up to 11% apart on the 2-core VM, "clear" by its intervals in 7
    of 20 configurations. A lead under 5% (what compare calls no change) is a tie; 6% stays clear."""
    assert EQUIVALENT == 0.05
    close = [row("eager", 1.0, 0.999, 1.001), row("fast", 0.96, 0.959, 0.961), row("slow", 1.2, 1.19, 1.21)]
    rec = only(close)
    assert rec.winner == "fast" and rec.tied == ("eager",) and rec.tied_by_margin == ("eager",)
    assert rec.verdict() == "tie: fast, eager (within 5%, which one run cannot tell apart: any of them)"
    apart = [row("eager", 1.0, 0.999, 1.001), row("fast", 0.94, 0.939, 0.941)]
    assert only(apart).tied == () and only(apart).verdict().startswith("clear")
    mixed = only([*close, row("twin", 0.9605, 0.9, 1.0)])  # overlapping, and eager within 5%
    assert mixed.tied == ("twin", "eager") and mixed.tied_by_margin == ("eager",)
    assert mixed.verdict() == ("tie: fast, twin, eager (intervals overlap; within 5%, which one run cannot tell "
                               "apart: any of them)")


def test_a_variant_that_computes_in_lower_precision_is_named_beside_the_answer() -> None:
    """amp_bf16 tied with eager on a float32 row, "any of them", with an error 20,000 times eager's."""
    exact = {"tolerance": 1e-5, "max_rel_err": 1.2e-7}
    rec = only([row("eager", 1.0, **exact), row("amp_bf16", 0.99, tolerance=0.03, max_rel_err=2.4e-3),
                row("compile", 1.01, tolerance=1e-5, max_rel_err=3e-7)])
    assert rec.winner == "amp_bf16" and "eager" in rec.tied
    assert rec.less_precise == (("amp_bf16", 2.4e-3, "eager", 1.2e-7),)
    assert "amp_bf16 computes in lower precision: error 0.0024 against eager's 1.2e-07" in rec.notes()
    fast = only([row("eager", 1.0, **exact), row("compile", 0.5, **exact), row("amp_bf16", 2.0, tolerance=0.03)])
    assert fast.less_precise == ()  # named nowhere in the answer: not flagged
    # without eager (not in --variants, or failed), the tightest-held variant timed stands in: the
    # note vanished, and a tie read as one of equals
    no_eager = only([row("amp_bf16", 0.5, tolerance=0.03, max_rel_err=3e-3),
                     row("mean_squeeze", 0.51, tolerance=1e-5, max_rel_err=1e-7), row("eager", None, status="error")])
    assert no_eager.tie and no_eager.less_precise == (("amp_bf16", 3e-3, "mean_squeeze", 1e-7),)
    assert "amp_bf16 computes in lower precision: error 0.003 against mean_squeeze's 1e-07" in no_eager.notes()
    assert only([row("amp_bf16", 0.5, tolerance=0.03)]).less_precise == ()  # nothing held tighter


def test_a_winner_that_compiles_says_what_its_first_call_costs() -> None:
    """compile won 3 of 4 default configurations; its 2.5–7.4 s first call showed only in results.csv."""
    rec = only([row("eager", 1.0), row("compile", 0.5, compile_s=7.39)])
    assert "first call compiles 7.4 s" in rec.notes()
    assert not any("compiles" in n for n in only([row("eager", 1.0), row("fast", 0.5)]).notes())


def test_a_winner_timed_in_its_own_layout_says_what_nchw_input_costs() -> None:
    """channels_last won at 0.262 ms against eager's 0.352, and took 0.747 ms given NCHW input."""
    rec = only([row("eager", 0.352), row("channels_last", 0.262, nchw_input_ms=0.747)])
    assert rec.winner == "channels_last" and rec.nchw_input == (("channels_last", 0.747),)
    assert "channels_last from NCHW input: 0.747 ms, 0.47× eager" in rec.notes()
    tied = only([row("eager", 0.352), row("fast", 0.26), row("channels_last", 0.262, nchw_input_ms=0.747)])
    assert tied.winner == "fast" and tied.nchw_input == (("channels_last", 0.747),)  # tied: named, so noted
    behind = only([row("eager", 0.352), row("fast", 0.1), row("channels_last", 0.262, nchw_input_ms=0.747)])
    assert behind.nchw_input == ()  # not part of the answer
    alone = only([row("channels_last", 0.262, nchw_input_ms=0.747)])
    assert "channels_last from NCHW input: 0.747 ms" in alone.notes()  # no eager to set it against
    # a disturbed eager is an upper bound: "3.33× eager" was quoted beside "— (CPU busy) !"
    busy = only([row("eager", 3.0, disturbed=True), row("channels_last", 0.5, nchw_input_ms=0.9)])
    assert "channels_last from NCHW input: 0.900 ms" in busy.notes() and "3.33" not in "; ".join(busy.notes())
    busy_winner = only([row("eager", 0.3, disturbed=True), row("channels_last", 0.31, nchw_input_ms=0.9)])
    assert busy_winner.winner == "eager" and "channels_last from NCHW input: 0.900 ms" in busy_winner.notes()


def test_a_speedup_bound_that_rounds_to_one_keeps_a_third_decimal() -> None:
    """A clear lead read "[1.00, 1.04]", as if its interval reached 1×."""
    from harness.results.recommend import speedup_bounds

    assert speedup_bounds(1.004, 1.04) == "[1.004, 1.04]"
    assert speedup_bounds(0.996, 1.003) == "[0.996, 1.003]"
    assert speedup_bounds(1.0004, 1.2) == "[1.0004, 1.20]"  # "1.000" reads 1× as well
    assert speedup_bounds(0.99996, 1.0) == "[0.99996, 1.00]"
    assert speedup_bounds(1.0, 1.2) == "[1.00, 1.20]" and speedup_bounds(0.05, 0.0812) == "[0.05, 0.081]"


def test_the_terminal_keeps_the_digits_of_a_speedup_far_below_one() -> None:
    from harness.results.recommend import terminal_cells

    rec = only([row("eager", 1.0, low=0.99, high=1.01), row("slow", 230.0, low=220.0, high=240.0)])
    slow = Recommendation(**{**rec.__dict__, "winner": "slow", "speedup": 1 / 230, "speedup_ci": (0.0041, 0.0046)})
    assert terminal_cells(slow)[3] == "0.0043×\n[0.0041, 0.0046]"


def test_a_cpu_variant_timed_on_its_own_thread_count_is_not_ranked_but_named() -> None:
    """A variant that set 8 threads in a 2-thread run read fastest; its lead is the threads', not its own."""
    rec = only([row("eager", 2.0, threads=2), row("greedy", 0.5, threads=8), row("fused", 1.0, threads=2)])
    assert rec.winner == "fused" and rec.threads == 2
    assert rec.other_threads == (("greedy", 8),)
    assert "greedy not ranked: timed on 8 threads, the others on 2" in rec.notes()
    assert rec.speedup == 2.0


def test_without_eager_the_count_most_rows_ran_on_ranks() -> None:
    rec = only([row("a", 1.0, threads=1), row("b", 1.5, threads=2), row("c", 2.0, threads=2)])
    assert rec.winner == "b" and rec.other_threads == (("a", 1),)
    assert "a not ranked: timed on 1 thread, the others on 2" in rec.notes()


def test_thread_counts_do_not_rank_gpu_rows_nor_rows_without_a_count() -> None:
    gpu = only([row("eager", 2.0, threads=2, device="cuda"), row("fast", 0.5, threads=8, device="cuda")])
    assert gpu.winner == "fast" and gpu.other_threads == ()
    unknown = only([row("eager", 2.0), row("fast", 0.5)])
    assert unknown.winner == "fast" and unknown.other_threads == () and unknown.threads is None
