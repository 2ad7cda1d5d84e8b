"""The control (eager measured a second time, an A/A test) in the answer table: never ranked, and how
far it read from eager makes the lead the run calls a tie. On 2026-11-29 the 2-core VM read eager
and an identical twin 1.26× apart with intervals that did not overlap."""
from __future__ import annotations

import pytest
from test_recommend import only, row

from harness.results.recommend import EQUIVALENT, control_line, control_spreads, recommend
from harness.results.report import answers_text, markdown, recommendation_table
from harness.results.store import to_frame


def test_a_lead_within_the_controls_spread_is_a_tie_and_says_why() -> None:
    """fast leads eager by 1.15× with intervals apart: clear at 5%, a tie once eager read 1.18× from itself."""
    rows = [row("eager", 1.15, 1.14, 1.16), row("fast", 1.0, 0.99, 1.01)]
    assert only(rows).verdict() == "clear: next is eager at 1.15 ms"
    rec = only([*rows, row("control", 1.357, 1.35, 1.36)])
    assert rec.margin == pytest.approx(0.18, abs=1e-3) and rec.tied == ("eager",)
    assert rec.tied_by_margin == ("eager",)
    assert rec.verdict() == "tie: fast, eager (within 18%, as far as eager read from itself (control): any of them)"


def test_a_lead_beyond_the_controls_spread_stays_clear() -> None:
    rec = only([row("eager", 1.3, 1.29, 1.31), row("fast", 1.0, 0.99, 1.01), row("control", 1.2, 1.19, 1.21)])
    assert rec.margin == pytest.approx(1.3 / 1.2 - 1) and not rec.tie
    assert rec.verdict() == "clear: next is eager at 1.30 ms"


def test_the_control_is_never_ranked_even_when_it_reads_fastest() -> None:
    rec = only([row("eager", 1.0), row("control", 0.8), row("other", 0.9)])
    assert rec.winner == "other" and "control" not in (rec.runner_up, *rec.tied)
    assert answers_text("control", [rec]) == "the control: never ranked"


def test_a_control_within_five_percent_leaves_the_margin_at_five() -> None:
    rec = only([row("eager", 1.0), row("control", 1.02), row("fast", 0.5)])
    assert rec.margin == EQUIVALENT and rec.control is not None and rec.control.ratio == pytest.approx(1.02)
    assert rec.margin_text() == "within 5%, which one run cannot tell apart"


def test_the_largest_spread_over_the_devices_configurations_sets_every_margin() -> None:
    """One pair per configuration is one draw of the noise: the margin is the run's largest draw,
    applied to every configuration of the device; a configuration without the control uses it too."""
    near = [row("eager", 1.0, batch=1), row("control", 1.04, batch=1), row("fast", 0.85, 0.84, 0.86, batch=1)]
    far = [row("eager", 1.0, batch=2), row("control", 1.25, batch=2)]
    alone = [row("eager", 1.0, batch=4), row("fast", 0.85, 0.84, 0.86, batch=4)]
    recs = recommend(to_frame(near + far + alone))
    assert [r.config for r in recs] == ["32x16x16 b1", "32x16x16 b2", "32x16x16 b4"]
    assert all(r.margin == pytest.approx(0.25) for r in recs)
    assert recs[0].tied == ("eager",) and recs[2].tied == ("eager",)  # 1.18× is within the 1.25× eager read
    assert control_spreads(to_frame(near + far + alone))["cpu"].where == "float32 · forward 32x16x16 b2"


def test_a_disturbed_or_failed_control_says_nothing() -> None:
    """A disturbed time says how busy the machine was, not how far identical code reads apart."""
    base = [row("eager", 1.15, 1.14, 1.16), row("fast", 1.0, 0.99, 1.01)]
    for control in (row("control", 2.0, disturbed=True), row("control", None, status="error")):
        frame = to_frame([*base, control])
        assert control_spreads(frame) == {} and control_line(frame) == []
        assert recommend(frame)[0].margin == EQUIVALENT


def test_the_report_says_what_the_control_read() -> None:
    frame = to_frame([row("eager", 1.15, 1.14, 1.16), row("fast", 1.0, 0.99, 1.01), row("control", 1.357, 1.35, 1.36)])
    line = ("control on cpu: eager measured twice read up to 1.18× apart (float32 · forward 32x16x16 b8), noise "
            "no single case's interval shows; a lead within 18% is called a tie; measured in one process: rounds "
            "across processes (--processes 3) narrow such noise")
    assert control_line(frame) == [line]
    assert line in markdown(frame)


@pytest.mark.parametrize(("control", "processes", "advised"), [
    (1.357, 1, True),  # 1.18× apart, a margin of 18%, in one process: the remedy is named
    (1.357, 3, False),  # already in rounds across processes
    (1.22, None, True),  # 1.06× apart, in a run from before the column: one process
    (1.2, 1, False),  # 1.04× apart: the margin stays at 5%, nothing to narrow
])  # fmt: skip
def test_the_control_line_names_rounds_across_processes_only_where_they_would_narrow_it(
        control: float, processes: int | None, advised: bool) -> None:  # fmt: skip
    extra = {} if processes is None else {"processes": processes}
    frame = to_frame([row("eager", 1.15, **extra), row("fast", 1.0, **extra), row("control", control, **extra)])
    assert control_spreads(frame)["cpu"].processes == (processes or 1)
    [line] = control_line(frame)
    assert line.endswith("narrow such noise") is advised, line
    if not advised:
        assert line.endswith(" is called a tie"), line  # the sentence ends there, with nothing put in its place


def test_the_terminal_title_names_the_margin_the_control_set() -> None:
    frame = to_frame([row("eager", 1.15, 1.14, 1.16), row("fast", 1.0, 0.99, 1.01), row("control", 1.357, 1.35, 1.36)])
    table = recommendation_table(frame)
    assert table is not None and str(table.title).endswith("within 18%)")
    plain = recommendation_table(to_frame([row("eager", 1.15, 1.14, 1.16), row("fast", 1.0, 0.99, 1.01)]))
    assert plain is not None and str(plain.title).endswith("within 5%)")


def test_a_control_at_another_batch_or_that_missed_the_reference_says_nothing() -> None:
    """--oom-retry's halved batch, or a wrong result: neither is eager's code measured twice at one batch."""
    base = [row("eager", 1.15, 1.14, 1.16), row("fast", 1.0, 0.99, 1.01)]
    for control in (row("control", 0.6, batch_run=4), row("control", 0.6, status="mismatch")):
        assert control_spreads(to_frame([*base, control])) == {}


def test_configurations_without_a_usable_pair_are_passed_over_not_the_end() -> None:
    """Before the pair that counts: a configuration without the control, and two whose medians are no
    times (a zero on either side, as a hand-edited CSV may hold), which must divide nothing."""
    rows = [row("eager", 1.0, batch=1),
            row("eager", 0.0, batch=2), row("control", 1.2, batch=2),
            row("eager", 1.2, batch=4), row("control", 0.0, batch=4),
            row("eager", 0.10, batch=8), row("control", 0.12, batch=8)]  # fmt: skip
    spread = control_spreads(to_frame(rows))["cpu"]
    assert spread.ratio == pytest.approx(1.2) and spread.where == "float32 · forward 32x16x16 b8"


def test_the_first_of_two_equal_spreads_names_where() -> None:
    rows = [row("eager", 1.0, batch=1), row("control", 1.2, batch=1),
            row("eager", 2.0, batch=2), row("control", 2.4, batch=2)]  # fmt: skip
    assert 2.4 / 2.0 == 1.2 / 1.0  # the two ratios are one double
    assert control_spreads(to_frame(rows))["cpu"].where == "float32 · forward 32x16x16 b1"
