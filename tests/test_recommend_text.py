"""The answer table as a user reads it: every verdict, note, mark and interval the terminal and
report.md write for a recommendation, to the character (the words are the product here)."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from harness.results.recommend import (
    DISTURBED_SPEEDUP,
    Recommendation,
    no_winner,
    speedup_text,
    spread_text,
    table_rows,
    terminal_cells,
)

WON = Recommendation("cpu", "float32", "forward", "32x16x16 b8", "fast", median_ms=1.0, interval_ms=(0.9, 1.1),
                     interval_kind="95% CI", speedup=2.0, speedup_ci=(1.8, 2.2), speedup_method="samples",
                     runner_up="other", runner_up_ms=1.5, eager_ms=2.0)  # fmt: skip


@pytest.mark.parametrize("failed", ["mismatch", "error", "crashed", "timeout"])
def test_a_configuration_where_a_variant_failed_says_none_ran_correctly(failed: str) -> None:
    """Beside skipped variants, any one that ran and failed makes the answer "none ran correctly":
    not "none was timed", which would send the user to look for a filter."""
    assert no_winner(("skipped", failed)) == "no variant ran correctly"
    assert no_winner((failed,)) == "no variant ran correctly"


def test_why_no_variant_answers() -> None:
    assert no_winner(("skipped", "skipped")) == "no variant could run here"
    assert no_winner(("oom", "oom: ran at batch 4")) == "no variant fit in memory at this batch"
    assert no_winner(()) == "no variant was timed"
    none = replace(WON, winner=None)
    assert none.verdict() == "no variant was timed"  # nothing failed: nothing to list after a colon
    failed = replace(WON, winner=None, not_timed=(("fast", "error"), ("slow", "skipped")))
    assert failed.verdict() == "no variant ran correctly: fast (error), slow (skipped)"
    assert terminal_cells(failed) == ("32x16x16 b8", "no variant ran correctly: fast (error), slow (skipped)", "", "")


def test_the_verdicts_read_as_written() -> None:
    assert WON.verdict() == "clear: next is other at 1.50 ms"
    assert replace(WON, runner_up=None).verdict() == "the only variant timed"
    few = replace(WON, few_samples=("fast", "other"))
    assert few.verdict() == ("unsure: fast, other took too few independent samples for a 95% interval (under 6's "
                             "worth: too few, or drifting); measure longer (--max-time)")


def test_the_notes_name_each_mark_and_the_compile_cost() -> None:
    """The winner's own ~ and !, eager's when they touch the speedup, and a compile cost only where
    the first call compiled something (0 s: nothing to say; NaN: it compiles nothing)."""
    marked = replace(WON, marks=("~", "!"), eager_marks=("~", "!"), compile_s=0.5)
    assert marked.notes() == ["~ noisy", "! disturbed", "eager ~ !", "first call compiles 0.5 s"]
    assert marked.speedup_marks() == " ~ !"
    assert replace(WON, marks=("~",), eager_marks=("!",)).speedup_marks() == " ~ !"  # from either side
    assert replace(WON, marks=("!",)).notes() == ["! disturbed"]
    assert replace(WON, compile_s=0.0).notes() == []
    assert replace(WON, compile_s=math.nan).notes() == []


def test_a_speedup_without_both_bounds_shows_none() -> None:
    """Half an interval is no interval: the figure alone, in the table and in the terminal."""
    for ci in [(math.nan, 2.2), (1.8, math.nan), (math.nan, math.nan)]:
        rec = replace(WON, speedup_ci=ci)
        assert speedup_text(rec) == "2.00×"
        assert terminal_cells(rec)[3] == "2.00×"
    assert speedup_text(WON) == "2.00× [1.80, 2.20]"
    assert terminal_cells(WON)[3] == "2.00×\n[1.80, 2.20]"
    assert terminal_cells(replace(WON, marks=("~",)))[3] == "2.00× ~\n[1.80, 2.20]"


def test_a_table_row_writes_the_latency_with_its_interval_of_each_kind() -> None:
    def latency(kind: str) -> str:
        return table_rows([replace(WON, interval_kind=kind)])[0][3]

    assert latency("95% CI") == "1.00 [0.90, 1.10]"
    assert latency("IQR") == "1.00 (IQR 0.90–1.10)"
    assert latency("IQR width") == "1.00 (IQR 0.2)"
    assert latency("") == "1.00"  # the median alone
    (cells,) = table_rows([replace(WON, marks=("~", "!"))])
    assert cells == ("cpu · float32 · forward", "32x16x16 b8", "fast", "1.00 [0.90, 1.10]", DISTURBED_SPEEDUP,
                     "clear: next is other at 1.50 ms", "~ noisy; ! disturbed")


def test_the_terminal_cell_of_the_latency_carries_the_winners_marks_over_its_interval() -> None:
    def latency(**kw: object) -> str:
        return terminal_cells(replace(WON, **kw))[2]

    assert latency() == "1.00\n[0.90, 1.10]"
    assert latency(marks=("~", "!", "host-bound")) == "1.00 ~ !\n[0.90, 1.10]"
    assert latency(marks=("!",)) == "1.00 !\n[0.90, 1.10]"
    assert latency(interval_kind="IQR") == "1.00\n(IQR 0.90–1.10)"  # as report.md writes quartiles
    assert latency(interval_kind="IQR width") == "1.00\n(IQR 0.2)"
    assert latency(interval_kind="") == "1.00"


def test_the_terminal_cell_of_the_winner_gives_its_verdict_in_a_few_words() -> None:
    """Next, tie, only one, unsure; then only the notes no mark carries (the marks sit by the
    figures, eager's by the speedup), and the end-to-end winner's name, not the long note."""
    def run(**kw: object) -> list[str]:
        return terminal_cells(replace(WON, **kw))[1].splitlines()

    assert run() == ["fast", "next: other 1.50 ms"]
    assert run(runner_up=None) == ["fast", "only one timed"]
    assert run(tied=("other", "eager")) == ["fast", "tie: other, eager"]
    assert run(disturbed=("eager",)) == ["fast", "unsure: CPU busy (!)"]
    assert run(marks=("~", "!"), eager_marks=("~",), compile_s=3.0) == [
        "fast", "next: other 1.50 ms", "first call compiles 3 s"]
    assert run(wall_best="graphed", wall_best_ms=0.5, wall_ms=0.8) == ["fast", "next: other 1.50 ms",
                                                                     "end to end: graphed"]
    assert terminal_cells(replace(WON, winner="eager", speedup=1.0))[3] == "1×\n(is eager)"
    # eager over itself is 1× however busy the CPU was (README: "whatever its time")
    assert terminal_cells(replace(WON, winner="eager", speedup=1.0, marks=("!",)))[3] == "1×\n(is eager)"


def test_a_speedup_is_written_to_its_intervals_precision_so_it_lies_inside_it() -> None:
    """1.004× with both bounds above 1 read "1.00× [1.004, 1.004]": a point outside the interval printed
    beside it, in report.md and in the terminal."""
    close = replace(WON, speedup=1.00400, speedup_ci=(1.00393, 1.00408))
    assert speedup_text(close) == "1.004× [1.004, 1.004]"
    assert terminal_cells(close)[3] == "1.004×\n[1.004, 1.004]"
    assert speedup_text(replace(WON, speedup=1.00004, speedup_ci=(1.00002, 1.03))) == "1.00004× [1.00002, 1.03]"
    # two decimals where the bounds need no more, and with no interval at all
    assert speedup_text(replace(WON, speedup=1.004, speedup_ci=(0.98, 1.03))) == "1.00× [0.98, 1.03]"
    assert speedup_text(replace(WON, speedup=1.004, speedup_ci=(math.nan, math.nan))) == "1.00×"


@pytest.mark.parametrize(("kind", "cell"), [
    ("95% CI", "1.00\n[0.90, 1.10]"), ("IQR", "1.00\n(IQR 0.90–1.10)"), ("IQR width", "1.00\n(IQR 0.2)"), ("", "1.00"),
])  # fmt: skip
def test_the_terminal_writes_a_winners_spread_as_report_md_does(kind: str, cell: str) -> None:
    """Quartiles in the terminal read ``[0.90, 1.10] IQR``, a CI's brackets, where report.md wrote
    ``(IQR 0.90–1.10)``: one notation for each kind of spread in both."""
    rec = replace(WON, interval_kind=kind)
    assert terminal_cells(rec)[2] == cell
    assert table_rows([rec])[0][3] == cell.replace("\n", " ")
    assert spread_text(rec) == cell.partition("\n")[2]  # a string either way: "" without an interval
