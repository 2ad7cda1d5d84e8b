"""Which variant to run: for each device, dtype, mode and configuration, the fastest correct variant.

Only ``ok`` rows compete: a variant whose numbers were wrong (``mismatch``) or that failed never wins,
however fast it was. The winner's speedup over ``eager`` of the same configuration comes with a 95%
confidence interval, and a winner whose interval overlaps another variant's is a tie: the data
cannot tell them apart, so any of the tied variants is as good an answer.

On CUDA the ranking is by GPU time, what the kernels cost. A program that waits for each call pays
the wall time (``wall_ms``: sync, call, sync), host launch time included: where another variant's
wall-time interval lies wholly below the winner's, the answer says so beside it ("end to end").

A winner ``EQUIVALENT`` (5%) or less faster than another variant is tied with it too, whatever
the intervals say: each interval holds for its own case, its build and its window of time, not for
the next. Two identical variants (the reference registered twice) measured side by side on the
2-core VM, 20 configurations a run, differed by a standard deviation of 3–4% and up to 11%, and 7
of the 20 read "clear" by their intervals alone. Measuring each case in three rounds instead,
alternating the twins' order, with a third of the budget each and the samples pooled, did not
narrow it (standard deviations of the log ratio 2.7% and 5.4%, against 2.8% and 4.1% in one round,
two runs each; the largest deviations, up to 48% in one round, came from the 2-thread
train cases at 8×32×64×64): the spread is each case's own, not drift between cases that
interleaving would cancel. 5% is also what ``compare`` calls a change (``compare_stats.DEFAULT_THRESHOLD``).

Where the run measured the control (``CONTROL_VARIANT``: eager built and timed a second time, an A/A
test), the run says how far apart identical code read on its own machine that day, and the margin
is the largest such distance over the device's configurations where both were timed undisturbed,
if above 5%. On 2026-11-29, a slow day on the 2-core VM, eager and an identical twin read "clear"
in 3 and 2 of 24 configurations at the default budget (one at 1.26× [1.13, 1.41]), and in 1 of 24
with the control beside them (``results/baselines/noise-cpu/2026-11-29/twins/``). One pair per
configuration is one draw of that noise: the largest of the run's draws is a high quantile of it,
not its bound. The control itself is never ranked.

On the CPU the thread count is part of what was measured. A variant timed on another count than
the ranked ones (one that sets its own, which the runner sets back after the case, the row's
``threads`` being the count its timing ran on; or a row merged from another run) is not ranked
against them: its rows are named in the notes instead. The count that
ranks is ``eager``'s, or, without eager, the one most of the configuration's timed rows ran on.

The speedup's interval is built from the two medians' intervals (``stats.median_ci``), the
conservative way: ``eager_low / winner_high`` to ``eager_high / winner_low``. With raw samples each
median's interval is taken at √95%, so that both hold together with 95% probability (the runs are
independent) and so does the ratio's; from results.csv's stored 95% intervals alone the same
formula holds with at least 90% (both intervals hold with 95%²), usually more, as the formula is
conservative.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.measure.stats import median_ci, steady
from harness.results.compare_stats import CSV_CI_LEVEL, DEFAULT_THRESHOLD, Timing
from harness.results.tables import (
    BASELINE_VARIANT,
    CONFIG_COLUMNS,
    CONTROL_VARIANT,
    GROUP_COLUMNS,
    at_batch_asked,
    config_label,
    decimals,
    groups,
    last_rows,
    marks,
    number,
    ratio_text,
    raw_samples,
    smaller_batch,
    timing_of,
)

#: The level of the speedup's interval, as of the stored medians' intervals.
CONFIDENCE = CSV_CI_LEVEL
#: A lead of this share of the winner's median or less is a tie (see the module docstring), on the log
#: scale ``compare`` judges no change on (``within_margin``).
EQUIVALENT = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class ControlSpread:
    """How far the control read from eager on one device, at most: the ratio of the two medians
    (≥ 1, whichever was faster), the configuration where it did (``float32 · forward 32x64x64 b8``),
    and how many processes each of the two was measured in (``--processes``)."""

    ratio: float
    where: str
    processes: int = 1

    @property
    def margin(self) -> float:
        """The lead this spread makes a tie: the ratio less 1, at least ``EQUIVALENT``."""
        return max(EQUIVALENT, self.ratio - 1)


@dataclass(frozen=True)
class Recommendation:
    """The answer for one configuration of one device · dtype · mode.

    ``winner`` is None when no variant ran correctly there; ``speedup`` is NaN when ``eager`` did not
    (then there is nothing to compare with, but still a winner). ``tied`` are the other variants whose
    interval overlaps the winner's, fastest first; ``marks`` are the winner's ``tables.MARKS`` keys
    and ``eager_marks`` eager's, which make the speedup as doubtful as the winner's own.
    """

    device: str
    dtype: str
    mode: str
    config: str  # the configuration's column label in the report's tables
    winner: str | None
    median_ms: float = math.nan
    interval_ms: tuple[float, float] = (math.nan, math.nan)  # the winner's interval, of ``interval_kind``
    #: "95% CI"; "IQR" (too few samples for a CI: their quartiles); "IQR width" (no samples at hand, as
    #: in results.csv: the median, less and plus half the stored IQR); or "" (none: the median alone)
    interval_kind: str = ""
    speedup: float = math.nan  # eager's median over the winner's
    speedup_ci: tuple[float, float] = (math.nan, math.nan)
    speedup_method: str = ""  # "samples", "stored CIs", or "" (no interval)
    tied: tuple[str, ...] = ()
    #: ``eager`` is among ``tied`` because the speedup's interval reaches 1, not by overlapping intervals.
    tied_by_speedup: bool = False
    #: Of ``tied``, those whose intervals are apart from the winner's but whose medians lie within
    #: ``EQUIVALENT`` of it.
    tied_by_margin: tuple[str, ...] = ()
    runner_up: str | None = None
    runner_up_ms: float = math.nan
    marks: tuple[str, ...] = ()
    eager_marks: tuple[str, ...] = ()
    host_ms: float = math.nan
    not_timed: tuple[tuple[str, str], ...] = ()  # (variant, status) of the configuration's failed rows
    wall_ms: float = math.nan  # the winner's wall time per call (CUDA)
    #: The variant clearly fastest end to end (its wall interval below the winner's), when not the winner.
    wall_best: str | None = None
    wall_best_ms: float = math.nan
    #: Variants the answer rests on (the winner, the runner-up or a tied one, eager) that ran while the
    #: CPU was starved (``!``): their times say how busy the machine was, so no verdict is drawn.
    disturbed: tuple[str, ...] = ()
    #: Variants the answer rests on with too few samples for a 95% interval of their median (under
    #: 6 independent samples' worth): their stand-in, the quartiles, covered the median in 30–63% of
    #: draws, so no "clear".
    few_samples: tuple[str, ...] = ()
    #: The winner and tied variants judged at a looser tolerance than eager (an AMP variant computing
    #: float32 input in bfloat16), each with its error, and eager's name and error (without eager,
    #: the tightest-held variant's): faster, but not the same numbers.
    less_precise: tuple[tuple[str, float, str, float], ...] = ()
    #: What the winner's first call cost to compile or capture (``compile_s``), paid once per process
    #: and never in its latency: 2.5–7.4 s for ``compile`` on the 2-core VM. NaN: it compiles nothing.
    compile_s: float = math.nan
    #: The winner and tied variants timed on input in their own layout (``channels_last``: NHWC), each
    #: with its time given NCHW input, the conversion counted (``nchw_input_ms``): 0.26 ms became 0.75
    #: on the 2-core VM, slower than eager, as converting 8×64×32×32 alone takes 0.45 ms.
    nchw_input: tuple[tuple[str, float], ...] = ()
    #: Eager's median, which ``nchw_input``'s times are set against.
    eager_ms: float = math.nan
    #: CPU variants timed on another thread count than the ranked ones, each with its count, and
    #: that count (see the module docstring): not ranked, whatever their time.
    other_threads: tuple[tuple[str, int], ...] = ()
    threads: int | None = None
    #: A lead this share of the winner's median or less is a tie: ``EQUIVALENT``, or more where the
    #: run's control read further from eager (``control``).
    margin: float = EQUIVALENT
    control: ControlSpread | None = None

    @property
    def tie(self) -> bool:
        return bool(self.tied)

    @property
    def unsure(self) -> str | None:
        """Why no verdict can be drawn where one would be (disturbed, or too few samples for a clear
        lead; a tie stays a tie), in a few words; None when the data can carry one."""
        if self.disturbed:
            return "CPU busy (!)"
        if self.few_samples and not self.tie and self.runner_up is not None:
            return "too few samples"
        return None

    @property
    def host_bound(self) -> bool:
        return "host-bound" in self.marks

    def verdict(self) -> str:
        """One phrase: why this is the answer, and how sure it is."""
        if self.winner is None:
            failed = ", ".join(f"{v} ({s})" for v, s in self.not_timed)
            return no_winner(tuple(s for _, s in self.not_timed)) + (f": {failed}" if failed else "")
        if self.disturbed:
            return f"unsure: {', '.join(self.disturbed)} ran while the CPU was busy (!); measure again"
        if self.unsure:
            return (f"unsure: {', '.join(self.few_samples)} took too few independent samples for a 95% interval "
                    "(under 6's worth: too few, or drifting); measure longer (--max-time)")
        if self.tie:
            why = ["intervals overlap"] if len(self.tied) > self.tied_by_speedup + len(self.tied_by_margin) else []
            why += [self.margin_text()] if self.tied_by_margin else []
            why += [f"the speedup over {BASELINE_VARIANT} may be 1×"] if self.tied_by_speedup else []
            return f"tie: {', '.join((self.winner, *self.tied))} ({'; '.join(why)}: any of them)"
        if self.runner_up is None:
            return "the only variant timed"
        return f"clear: next is {self.runner_up} at {self.runner_up_ms:.{decimals(self.runner_up_ms)}f} ms"

    def margin_text(self) -> str:
        """Why a lead within the margin is a tie: one run cannot tell so little apart, or, where the
        control set the margin, eager read that far from itself."""
        if self.control is not None and self.margin > EQUIVALENT:
            return f"within {self.margin:.0%}, as far as {BASELINE_VARIANT} read from itself ({CONTROL_VARIANT})"
        return f"within {self.margin:.0%}, which one run cannot tell apart"

    def notes(self) -> list[str]:
        """What to keep in mind: the winner's marks, and eager's when it makes the speedup doubtful."""
        found = []
        if self.host_bound:
            found.append(f"host-bound: host {self.host_ms:.3g} ms per call")
        if self.wall_best is not None:
            found.append(f"end to end: {self.wall_best} is faster, {self.wall_best_ms:.3g} against "
                         f"{self.wall_ms:.3g} ms wall")  # fmt: skip
        if "~" in self.marks:
            found.append("~ noisy")
        if "!" in self.marks:
            found.append("! disturbed")
        flagged = [m for m in self.eager_marks if m in ("~", "!")]
        if flagged and math.isfinite(self.speedup):
            found.append(f"{BASELINE_VARIANT} {' '.join(flagged)}")
        if self.winner is not None and not math.isfinite(self.speedup) and self.winner != BASELINE_VARIANT:
            found.append(f"no {BASELINE_VARIANT} timed to compare with" if not math.isfinite(self.eager_ms)
                         else f"no speedup: {self.winner}'s median reads {self.median_ms:g} ms")
        if self.compile_s > 0:
            found.append(f"first call compiles {self.compile_s:.2g} s")  # once per process, never in its latency
        eager_busy = "!" in (self.marks if self.winner == BASELINE_VARIANT else self.eager_marks)
        for variant, ms in self.nchw_input:  # never set against a disturbed eager: an upper bound
            versus = (f", {ratio_text(self.eager_ms / ms)}× {BASELINE_VARIANT}"
                      if math.isfinite(self.eager_ms) and not eager_busy else "")
            found.append(f"{variant} from NCHW input: {ms:.{decimals(ms)}f} ms{versus}")  # its layout's copy counted
        for variant, count in self.other_threads:
            found.append(f"{variant} not ranked: timed on {count} thread{'s' * (count != 1)}, the others on "
                         f"{self.threads}")  # fmt: skip
        for variant, error, reference, reference_error in self.less_precise:
            found.append(f"{variant} computes in lower precision: error {error:.2g} against "
                         f"{reference}'s {reference_error:.2g}")  # fmt: skip
        return found

    @property
    def speedup_disturbed(self) -> bool:
        """The winner's or eager's time is disturbed, so their ratio is no figure."""
        return "!" in self.marks or "!" in self.eager_marks

    def speedup_marks(self) -> str:
        """The ``~`` and ``!`` that apply to the speedup: from either side."""
        both = set(self.marks) | set(self.eager_marks)
        return "".join(f" {m}" for m in ("~", "!") if m in both)


def interval(t: Timing) -> tuple[float, float, str]:
    """The 95% CI of the median (stored, else from the samples); without one the samples' 25th to 75th
    percentiles, or, without raw samples (results.csv), the median ± half the stored IQR; else the
    median alone. Its kind is the third item. Only a 95% CI can carry a verdict: the quartiles of
    2 to 5 samples held the median in 30–63% of draws, so an answer resting on them is unsure."""
    if math.isfinite(t.ci_low) and math.isfinite(t.ci_high):
        return (t.ci_low, t.ci_high, "95% CI")
    if t.samples.size:
        low, high = median_ci(t.samples, CONFIDENCE)
        if math.isfinite(low) and math.isfinite(high):
            return (low, high, "95% CI")
        if t.samples.size >= 2:
            q1, q3 = np.percentile(t.samples, [25, 75])
            return (float(q1), float(q3), "IQR")
    elif math.isfinite(t.iqr) and t.iqr > 0:
        return (t.median - t.iqr / 2, t.median + t.iqr / 2, "IQR width")
    return (t.median, t.median, "")


def speedup_interval(eager: Timing, winner: Timing, confidence: float = CONFIDENCE) -> tuple[float, float, str]:
    """The interval of eager's median over the winner's, and how it was made ("samples", "stored CIs" or "").

    Raw samples on both sides: each median's interval at ``√confidence`` (see the module docstring);
    otherwise the stored intervals; NaNs when neither side can give one.
    """
    if eager.samples.size and winner.samples.size:
        level = math.sqrt(confidence)
        e_low, e_high = median_ci(eager.samples, level)
        w_low, w_high = median_ci(winner.samples, level)
        if all(math.isfinite(v) for v in (e_low, e_high, w_low, w_high)) and w_low > 0:
            return (e_low / w_high, e_high / w_low, "samples")
    bounds = (eager.ci_low, eager.ci_high, winner.ci_low, winner.ci_high)
    if all(math.isfinite(v) for v in bounds) and winner.ci_low > 0:
        return (eager.ci_low / winner.ci_high, eager.ci_high / winner.ci_low, "stored CIs")
    return (math.nan, math.nan, "")


def within_margin(best_ms: float, other_ms: float, margin: float = EQUIVALENT) -> bool:
    """Whether ``other_ms`` is within ``margin`` of ``best_ms``, as ``compare_stats.judge`` reads
    no change (``|log ratio| <= log1p(threshold)``): 0.21 against 0.20 ms and 1.05 against 1.00
    differ in the last bit of their ratio, and the answer table and ``compare`` must not disagree there."""
    if other_ms == best_ms:
        return True
    return best_ms > 0 and abs(math.log(other_ms / best_ms)) <= math.log1p(margin)


def _overlap(a: tuple[float, float, str], b: tuple[float, float, str]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def wall_interval(row: Mapping[str, Any]) -> tuple[float, float]:
    """The 95% CI of a row's wall-time median (NaN where the run has none: CPU rows, old runs)."""
    return number(row.get("wall_ci_low_ms")), number(row.get("wall_ci_high_ms"))


def _wall_usable(row: Mapping[str, Any]) -> bool:
    """A wall time with an interval and, where its raw samples are at hand, no level shift between
    their halves (``stats.steady``)."""
    if not all(math.isfinite(v) for v in (number(row.get("wall_ms")), *wall_interval(row))):
        return False
    samples = raw_samples(row.get("wall_samples_ms"))
    return samples.size == 0 or steady(samples)


def fastest_end_to_end(best: Mapping[str, Any], ranked: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of the variants whose wall-time interval lies wholly below ``best``'s, the one with the lowest
    wall time, else None; never a claim resting on unsteady wall samples, on either side."""
    if str(best.get("device")).split(":")[0] != "cuda":  # on the CPU the wall time is the latency itself
        return None
    if not _wall_usable(best):
        return None
    below = [r for r in ranked if r is not best and _wall_usable(r) and wall_interval(r)[1] < wall_interval(best)[0]]
    return min(below, key=lambda r: number(r["wall_ms"])) if below else None


def no_winner(statuses: tuple[str, ...]) -> str:
    """Why a configuration has no answer, by what became of its variants: "ran correctly" only where
    one gave a wrong result or failed; every variant out of memory read as if they were all wrong."""
    if statuses and all(s == "skipped" for s in statuses):
        return "no variant could run here"
    if statuses and all(s.startswith("oom") for s in statuses):
        return "no variant fit in memory at this batch"
    if any(s in ("mismatch", "error", "crashed", "timeout") for s in statuses):
        return "no variant ran correctly"
    return "no variant was timed"


def _untimed_status(row: Mapping[str, Any]) -> str:
    """Why a row of the configuration is not ranked: its status, or the halved batch it ran at."""
    return str(row["status"]) if row["status"] != "ok" else f"oom: ran at batch {smaller_batch(row)}"


def recommend_one(rows: pd.DataFrame, device: str, dtype: str, mode: str, config: str,
                  control: ControlSpread | None = None) -> Recommendation:
    """The recommendation for one configuration's rows (one per variant; a repeated variant's last
    row counts; the control is never ranked), ties judged within ``control``'s margin."""
    rows = last_rows(rows)
    rows = rows[rows["variant"] != CONTROL_VARIANT]
    margin = control.margin if control is not None else EQUIVALENT
    asked = at_batch_asked(rows)  # a latency of a halved batch (--oom-retry) is not this column's
    timed = rows[(rows["status"] == "ok") & asked & rows["median_ms"].map(lambda v: math.isfinite(number(v)))]
    untimed = rows[(rows["status"] != "ok") | ~asked]
    failed = tuple((str(r["variant"]), _untimed_status(r)) for r in untimed.to_dict("records"))
    timed, other_threads, threads = same_threads(timed, device)
    if timed.empty:
        return Recommendation(device, dtype, mode, config, None, not_timed=failed)
    ranked = sorted(timed.to_dict("records"), key=lambda r: (number(r["median_ms"]), str(r["variant"])))
    best, others = ranked[0], ranked[1:]
    best_t = timing_of(best)
    best_interval = interval(best_t)
    overlapping = {str(r["variant"]) for r in others if _overlap(best_interval, interval(timing_of(r)))}
    close = {str(r["variant"]) for r in others if within_margin(best_t.median, number(r["median_ms"]), margin)}
    tied = tuple(str(r["variant"]) for r in others if str(r["variant"]) in overlapping | close)
    by_margin = tuple(v for v in tied if v not in overlapping)
    eager = next((r for r in ranked if r["variant"] == BASELINE_VARIANT), None)
    speedup, speedup_ci, method, tied_by_speedup = math.nan, (math.nan, math.nan), "", False
    if eager is not None and best_t.median > 0:
        eager_t = timing_of(eager)
        speedup = eager_t.median / best_t.median
        if eager is not best:
            low, high, method = speedup_interval(eager_t, best_t)
            speedup_ci = (low, high)
            if low <= 1 and BASELINE_VARIANT not in tied:  # "clear" beside a speedup that may be 1× reads false
                tied, tied_by_speedup = (*tied, BASELINE_VARIANT), True
    wall_best = fastest_end_to_end(best, ranked)
    rested_on = [best, *(r for r in others if str(r["variant"]) in tied), *others[:1], *([eager] if eager else [])]
    # a disturbed time is an upper bound, so any disturbed variant, however slow it read, may be the winner
    disturbed = tuple(dict.fromkeys(str(r["variant"]) for r in [*rested_on, *ranked] if "!" in marks(r)))
    few = tuple(dict.fromkeys(str(r["variant"]) for r in rested_on if interval(timing_of(r))[2] != "95% CI"))
    named = [best, *(r for r in others if str(r["variant"]) in tied)]
    return Recommendation(
        device, dtype, mode, config, str(best["variant"]),
        median_ms=best_t.median,
        interval_ms=best_interval[:2],
        interval_kind=best_interval[2],
        speedup=speedup,
        speedup_ci=speedup_ci,
        speedup_method=method,
        tied=tied,
        tied_by_speedup=tied_by_speedup,
        tied_by_margin=by_margin,
        runner_up=str(others[0]["variant"]) if others else None,
        runner_up_ms=number(others[0]["median_ms"]) if others else math.nan,
        marks=tuple(marks(best)),
        eager_marks=tuple(marks(eager)) if eager is not None and eager is not best else (),
        host_ms=number(best.get("host_ms")),
        not_timed=failed,
        wall_ms=number(best.get("wall_ms")),
        wall_best=str(wall_best["variant"]) if wall_best is not None else None,
        wall_best_ms=number(wall_best["wall_ms"]) if wall_best is not None else math.nan,
        disturbed=disturbed,
        few_samples=few,
        less_precise=less_precise(named, ranked),
        compile_s=number(best.get("compile_s")),
        nchw_input=tuple((str(r["variant"]), number(r.get("nchw_input_ms"))) for r in named
                         if math.isfinite(number(r.get("nchw_input_ms")))),
        eager_ms=number(eager["median_ms"]) if eager is not None else math.nan,
        other_threads=other_threads,
        threads=threads,
        margin=margin,
        control=control,
    )  # fmt: skip


def same_threads(timed: pd.DataFrame, device: str) -> tuple[pd.DataFrame, tuple[tuple[str, int], ...], int | None]:
    """On the CPU, the timed rows on the ranking thread count (eager's, else the most common), the
    others as (variant, threads), and that count; elsewhere, or without counts, every row."""
    counts = timed["threads"].map(number) if "threads" in timed.columns else None
    if device.split(":")[0] != "cpu" or counts is None or not counts.map(math.isfinite).any():
        return timed, (), None
    eager = counts[(timed["variant"] == BASELINE_VARIANT) & counts.map(math.isfinite)]
    ranking = eager.iloc[0] if len(eager) else counts[counts.map(math.isfinite)].mode().min()
    apart = counts.map(math.isfinite) & (counts != ranking)
    others = tuple((str(v), int(c)) for v, c in zip(timed.loc[apart, "variant"], counts[apart], strict=True))
    return timed[~apart], others, int(ranking)


def less_precise(named: list[dict[str, Any]], timed: list[dict[str, Any]]
                 ) -> tuple[tuple[str, float, str, float], ...]:  # fmt: skip
    """Of ``named``, the variants checked at a looser tolerance than ``eager`` in the same configuration
    (without eager, than the tightest-held variant timed there), with their error, and that
    variant's name and error. The tolerance follows the dtype a variant computes in, so a float32
    row of an AMP variant carries float16's or bfloat16's: a tie with it is a tie of speed only."""
    held = [r for r in timed if math.isfinite(number(r.get("tolerance")))]
    reference = next((r for r in held if r["variant"] == BASELINE_VARIANT), None) or min(
        held, key=lambda r: (number(r.get("tolerance")), str(r["variant"])), default=None)
    if reference is None:
        return ()
    bound, own = number(reference.get("tolerance")), number(reference.get("max_rel_err"))
    return tuple((str(r["variant"]), number(r.get("max_rel_err")), str(reference["variant"]), own) for r in named
                 if r is not reference and number(r.get("tolerance")) > bound)  # fmt: skip


def recommend(frame: pd.DataFrame) -> list[Recommendation]:
    """One recommendation per device · dtype · mode and configuration, in the report's order."""
    found = []
    spreads = control_spreads(frame)
    for (device, dtype, mode), rows, config in configurations(frame):
        found.append(recommend_one(rows, device, dtype, mode, config, spreads.get(device)))
    return found


def configurations(frame: pd.DataFrame) -> list[tuple[tuple[str, str, str], pd.DataFrame, str]]:
    """Each device · dtype · mode with one configuration's rows and its column label, in report order."""
    found = []
    for group_key, group in groups(frame):
        g = group.assign(_config=config_label(group))
        keys = [c for c in CONFIG_COLUMNS if c in g.columns]
        for _, rows in g.groupby(keys, sort=False, dropna=False):
            found.append((group_key, rows, str(rows["_config"].iloc[0])))
    return found


def control_spreads(frame: pd.DataFrame) -> dict[str, ControlSpread]:
    """Per device, the largest ratio between the control's median and eager's in one configuration,
    over the configurations where both were timed at the batch asked and neither was disturbed (a
    disturbed time says how busy the machine was, not how far apart identical code reads)."""
    spreads: dict[str, ControlSpread] = {}
    for (device, dtype, mode), rows, config in configurations(frame):
        rows = last_rows(rows)
        ok = rows[(rows["status"] == "ok") & at_batch_asked(rows)]
        pair = {str(r["variant"]): r for r in ok.to_dict("records")
                if r["variant"] in (BASELINE_VARIANT, CONTROL_VARIANT) and "!" not in marks(r)}
        if len(pair) < 2:
            continue
        eager_ms, control_ms = (number(pair[v]["median_ms"]) for v in (BASELINE_VARIANT, CONTROL_VARIANT))
        if not (eager_ms > 0 and control_ms > 0):
            continue
        ratio = max(eager_ms / control_ms, control_ms / eager_ms)
        if device not in spreads or ratio > spreads[device].ratio:
            processes = number(pair[CONTROL_VARIANT].get("processes"))
            spreads[device] = ControlSpread(ratio, f"{dtype} · {mode} {config}",
                                            int(processes) if processes >= 1 else 1)  # fmt: skip
    return spreads


#: What narrows the control's spread, said where a run measured in one process widened the margin: on
#: the 2-core VM, eager and an identical twin read up to 1.10-1.48× apart a run in one process and
#: 1.05-1.17× in rounds across three (results/baselines/noise-cpu/2026-11-29/twins).
NARROWER = "measured in one process: rounds across processes (--processes 3) narrow such noise"


def control_line(frame: pd.DataFrame) -> list[str]:
    """One line per device whose run measured the control: how far eager read from itself, where,
    what lead that makes a tie, and, when that is above 5% in one process, how to narrow it."""
    lines = []
    for device, spread in control_spreads(frame).items():
        advice = f"; {NARROWER}" if spread.margin > EQUIVALENT and spread.processes == 1 else ""
        lines.append(f"control on {device}: {BASELINE_VARIANT} measured twice read up to {spread.ratio:.2f}× apart "
                     f"({spread.where}), noise no single case's interval shows; a lead within {spread.margin:.0%} "
                     f"is called a tie{advice}")  # fmt: skip
    return lines


#: The columns of the recommendation table, in report.md and the terminal.
TABLE_COLUMNS: tuple[str, ...] = (
    " · ".join(GROUP_COLUMNS), "case", "run", "median ms [95% CI]", f"speedup over {BASELINE_VARIANT} [95% CI]",
    "verdict", "notes",
)


#: The speedup cell where either side's time is disturbed: a ratio of times that each say how busy
#: the machine was (upper bounds) is no figure, and a tight interval on it ("149.58× [143.71,
#: 157.31]" for amp_bf16 on a loaded VM) was quoted as one.
DISTURBED_SPEEDUP = "— (CPU busy) !"


def _bound_text(value: float) -> str:
    """A speedup bound as ``ratio_text`` writes it, with decimals added while it would round to 1 and is not."""
    text, digits = ratio_text(value), 3
    # 1.0004 reads 1.0004, never 1.000; ends by 16 decimals, where 1's neighbours (1 ± 2.2e-16) differ from it
    while float(text) == 1 and value != 1:
        text, digits = f"{value:.{digits}f}", digits + 1
    return text


def speedup_bounds(low: float, high: float) -> str:
    """``[1.05, 1.12]``; a bound that is not 1 but rounds to it gets a third decimal (``[1.004, 1.04]``),
    so that a clear lead never shows an interval that reads as reaching 1×, nor a tie one that misses it."""
    return f"[{_bound_text(low)}, {_bound_text(high)}]"


def speedup_point(speedup: float, low: float, high: float) -> str:
    """The speedup to as many decimals as a bound that would have rounded to 1 was given (``1.004`` beside
    ``[1.004, 1.004]``, never ``1.00``, outside the interval printed next to it); else ``ratio_text``."""
    widened = [_bound_text(v) for v in (low, high) if _bound_text(v) != ratio_text(v)]  # near 1, so is the point
    places = max((len(b.partition(".")[2]) for b in widened), default=0)
    return f"{speedup:.{places}f}" if places else ratio_text(speedup)


def speedup_text(rec: Recommendation) -> str:
    """``4.00× [3.45, 4.67]``, with the ``~``/``!`` of either side; empty when there is no eager;
    ``DISTURBED_SPEEDUP`` when either side was disturbed."""
    if not math.isfinite(rec.speedup):
        return ""
    if rec.winner == BASELINE_VARIANT:
        return f"1× (is {BASELINE_VARIANT})"
    if rec.speedup_disturbed:
        return DISTURBED_SPEEDUP
    low, high = rec.speedup_ci
    ci = f" {speedup_bounds(low, high)}" if math.isfinite(low) and math.isfinite(high) else ""
    return f"{speedup_point(rec.speedup, low, high)}×{ci}{rec.speedup_marks()}"


def spread_text(rec: Recommendation) -> str:
    """The winner's interval as report.md and the terminal both write it: ``[0.90, 1.10]`` (95% CI),
    ``(IQR 0.90–1.10)`` (quartiles), ``(IQR 0.2)`` (a stored IQR's width); empty without one."""
    low, high = rec.interval_ms
    d = decimals(rec.median_ms)
    return {"95% CI": f"[{low:.{d}f}, {high:.{d}f}]", "IQR": f"(IQR {low:.{d}f}–{high:.{d}f})",
            "IQR width": f"(IQR {high - low:.2g})"}.get(rec.interval_kind, "")


def table_rows(recs: list[Recommendation]) -> list[tuple[str, ...]]:
    """The recommendation table's cells, ``TABLE_COLUMNS`` in order."""
    rows = []
    for rec in recs:
        if rec.winner is None:
            latency = ""
        else:
            spread = spread_text(rec)
            latency = f"{rec.median_ms:.{decimals(rec.median_ms)}f}" + (f" {spread}" if spread else "")
        rows.append((f"{rec.device} · {rec.dtype} · {rec.mode}", rec.config, rec.winner or "—", latency,
                     speedup_text(rec), rec.verdict(), "; ".join(rec.notes())))  # fmt: skip
    return rows


def terminal_cells(rec: Recommendation) -> tuple[str, str, str, str]:
    """The terminal table's cells, plain text: case; the winner over its verdict and any note a mark
    doesn't carry; the median with the winner's marks over its interval; the speedup with either
    side's marks over its interval. Each fits a column of 14 to 24 characters, so four fit 80."""
    if rec.winner is None:
        return (rec.config, rec.verdict(), "", "")
    if rec.unsure:
        verdict = f"unsure: {rec.unsure}"
    elif rec.tie:
        verdict = f"tie: {', '.join(rec.tied)}"
    elif rec.runner_up is None:
        verdict = "only one timed"
    else:
        verdict = f"next: {rec.runner_up} {rec.runner_up_ms:.{decimals(rec.runner_up_ms)}f} ms"
    # eager's own marks and the end-to-end note are shown otherwise; eager_amp's notes are not eager's
    notes = [n for n in rec.notes() if not n.startswith(("~", "!", f"{BASELINE_VARIANT} ", "end to end"))]
    if rec.wall_best is not None:  # the long note would not fit the column
        notes.append(f"end to end: {rec.wall_best}")
    own = "".join(f" {m}" for m in ("~", "!") if m in rec.marks)
    spread = spread_text(rec)
    latency = f"{rec.median_ms:.{decimals(rec.median_ms)}f}{own}" + (f"\n{spread}" if spread else "")
    speedup = speedup_text(rec).replace(" (", "\n(")  # "1× (is eager)", "— (CPU busy) !": the words go below
    if math.isfinite(rec.speedup) and rec.winner != BASELINE_VARIANT and not rec.speedup_disturbed:
        s_low, s_high = rec.speedup_ci
        ci = f"\n{speedup_bounds(s_low, s_high)}" if math.isfinite(s_low) and math.isfinite(s_high) else ""
        speedup = f"{speedup_point(rec.speedup, s_low, s_high)}×{rec.speedup_marks()}{ci}"
    return (rec.config, "\n".join([rec.winner, verdict, *notes]), latency, speedup)
