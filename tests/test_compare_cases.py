"""compare, case by case: each flag from either side, exact notes and counts, the bounds of the
options, the order of the cases, and the small helpers (labels, samples, figures, keys)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from compare_helpers import CPU_ENV, case, noise, row, write_run

from harness.results import compare as cmp
from harness.results import environment as env_rules
from harness.results.compare import CompareError
from harness.results.compare_stats import CI_OVERLAP_P, Verdict
from harness.results.tables import raw_samples, timing_of

KEY = tuple(case().items())
FIVE_BASE = [1.0, 1.01, 0.99, 1.02, 0.98]  # median 1.0, relative IQR 0.02
FIVE_DOUBLE = [2.0, 2.01, 1.99, 2.02, 1.98]  # median 2.0: p = 2/252 against FIVE_BASE, the smallest there is


def quiet(fields: dict[str, Any], samples: list[float], **extra: Any) -> dict[str, Any]:
    """A row with its samples and no flags set (row() derives ``noisy`` from the samples)."""
    return row(fields, samples) | {"noisy": False, "disturbed": False} | extra


def no_samples(fields: dict[str, Any], samples: list[float], **extra: Any) -> dict[str, Any]:
    """A row as read from a .csv: its statistics, no raw samples."""
    return quiet(fields, samples, **extra) | {"samples_ms": None}


def in_memory(source: str, rows: list[dict[str, Any]], env: dict[str, Any] | None = None,
              columns: set[str] | None = None) -> cmp.LoadedRun:  # fmt: skip
    cols = frozenset(columns if columns is not None else {c for r in rows for c in r})
    return cmp.LoadedRun(source, tuple(rows), dict(CPU_ENV if env is None else env), "samples_ms" in cols, cols)


# ------------------------------------------------------------------------------------ compare_case


@pytest.mark.parametrize("side", ["base", "cur"])
def test_noisy_from_either_side_alone_is_noted(side: str) -> None:
    flagged = {"base": (True, False), "cur": (False, True)}[side]
    base = quiet(case(), noise(1.0, seed=1), noisy=flagged[0])
    cur = quiet(case(), noise(1.0, seed=2), noisy=flagged[1])
    c = cmp.compare_case(KEY, base, cur, 0.05, 0.01)
    assert c.verdict is Verdict.SAME
    assert c.note == "noisy"
    assert cmp.compare_case(KEY, quiet(case(), noise(1.0, seed=1)), quiet(case(), noise(1.0, seed=2)),
                            0.05, 0.01).note == ""  # fmt: skip


@pytest.mark.parametrize("side", ["base", "cur"])
def test_disturbed_from_either_side_alone_blocks_a_verdict(side: str) -> None:
    flagged = {"base": (True, False), "cur": (False, True)}[side]
    base = quiet(case(), noise(1.0, seed=1), disturbed=flagged[0])
    cur = quiet(case(), noise(1.5, seed=2), disturbed=flagged[1])
    c = cmp.compare_case(KEY, base, cur, 0.05, 0.01)
    assert c.verdict is Verdict.AMBIGUOUS and not c.regression
    assert c.note == "disturbed"
    faster = cmp.compare_case(KEY, cur, base, 0.05, 0.01)
    assert faster.verdict is Verdict.AMBIGUOUS and faster.note == "disturbed"


def test_two_disturbed_sides_alike_are_ambiguous_never_same() -> None:
    """Both sides measured the same 40 ms stall of a 0.04 ms case: SAME would say the code did not
    change, where a regression could hide under the stall."""
    base = quiet(case(), noise(40.0, seed=1), disturbed=True)
    cur = quiet(case(), noise(40.0, seed=2), disturbed=True)
    c = cmp.compare_case(KEY, base, cur, 0.05, 0.01)
    assert c.verdict is Verdict.AMBIGUOUS and c.note == "disturbed"
    assert cmp.compare_case(KEY, {**base, "disturbed": False}, {**cur, "disturbed": False}, 0.05,
                            0.01).verdict is Verdict.SAME  # fmt: skip


def test_disturbed_as_csv_text_counts_and_false_text_does_not() -> None:
    base = quiet(case(), noise(1.0, seed=1), disturbed="True")
    cur = quiet(case(), noise(1.5, seed=2), disturbed="False")
    assert cmp.compare_case(KEY, base, cur, 0.05, 0.01).verdict is Verdict.AMBIGUOUS
    base["disturbed"] = "False"
    assert cmp.compare_case(KEY, base, cur, 0.05, 0.01).verdict is Verdict.SLOWER


@pytest.mark.parametrize("side", ["base", "cur"])
def test_host_bound_from_either_side_alone_is_noted_with_both_host_times(side: str) -> None:
    bounds = {"base": ("host", "device"), "cur": ("device", "host")}[side]
    base = quiet(case(), noise(1.0, seed=1), host_ms=0.3, bound=bounds[0])
    cur = quiet(case(), noise(1.0, seed=2), host_ms=0.42, bound=bounds[1])
    c = cmp.compare_case(KEY, base, cur, 0.05, 0.01)
    assert c.note == "host-bound (host 0.3 → 0.42 ms)"
    # the default metric is the median: the note is there without naming it, and not for the host metric
    assert cmp.compare_case(KEY, base, cur, 0.05, 0.01, "median").note == c.note
    assert cmp.compare_case(KEY, base, cur, 0.05, 0.01, "host").note == ""


def test_device_bound_on_both_sides_is_not_host_bound() -> None:
    base = quiet(case(), noise(1.0, seed=1), host_ms=0.3, bound="device")
    cur = quiet(case(), noise(1.0, seed=2), host_ms=0.42, bound="device")
    assert cmp.compare_case(KEY, base, cur, 0.05, 0.01).note == ""


def test_default_metric_is_the_median_on_cuda_rows() -> None:
    gpu = case(device="cuda")
    base = quiet(gpu, noise(1.0, seed=1), host_samples_ms=noise(5.0, seed=3), host_ms=5.0)
    cur = quiet(gpu, noise(1.0, seed=2), host_samples_ms=noise(9.0, seed=4), host_ms=9.0)
    c = cmp.compare_case(KEY, base, cur, 0.05, 0.01)
    assert c.verdict is Verdict.SAME
    assert c.baseline_ms == pytest.approx(1.0, rel=0.02)
    assert cmp.compare_case(KEY, base, cur, 0.05, 0.01, "host").verdict is Verdict.SLOWER


def test_mann_whitney_counts_the_samples_not_the_stored_n() -> None:
    base = quiet(case(), FIVE_BASE, n_samples=99)
    cur = quiet(case(), FIVE_DOUBLE, n_samples=77)
    c = cmp.compare_case(KEY, base, cur, 0.05, 0.01)
    assert c.method == "mann-whitney"
    assert (c.n_baseline, c.n_current) == (5, 5)


def test_without_samples_the_stored_n_is_reported() -> None:
    base = no_samples(case(), noise(1.0, seed=1), n_samples=30)
    cur = no_samples(case(), noise(1.3, seed=2), n_samples=12)
    c = cmp.compare_case(KEY, base, cur, 0.05, 0.01)
    assert c.method == "ci-overlap"
    assert (c.n_baseline, c.n_current) == (30, 12)
    assert c.verdict is Verdict.SLOWER and c.note == "by CIs"


def test_without_samples_a_stored_n_of_zero_stays_zero() -> None:
    base = no_samples(case(), noise(1.0, seed=1), n_samples=0)
    cur = no_samples(case(), noise(1.3, seed=2), n_samples=0.0)
    c = cmp.compare_case(KEY, base, cur, 0.05, 0.01)
    assert (c.n_baseline, c.n_current) == (0, 0)


@pytest.mark.parametrize("blank", [None, "", "n/a", float("nan")])
def test_without_samples_a_blank_stored_n_reads_as_zero_not_a_crash(blank: Any) -> None:
    base = no_samples(case(), noise(1.0, seed=1), n_samples=blank)
    cur = no_samples(case(), noise(1.3, seed=2), n_samples=12)
    c = cmp.compare_case(KEY, base, cur, 0.05, 0.01)
    assert (c.n_baseline, c.n_current) == (0, 12)
    assert c.verdict is Verdict.SLOWER


def test_a_p_value_equal_to_alpha_is_not_significant() -> None:
    """Non-overlapping CIs give p = their overlap bound (at least CI_OVERLAP_P): at alpha equal to it,
    a 30% change is AMBIGUOUS without the "within noise" note (that note is for p < alpha); just
    above it, SLOWER."""
    base = no_samples(case(), noise(1.0, seed=1))
    cur = no_samples(case(), noise(1.3, seed=2))
    bound = cmp.compare_case(KEY, base, cur, 0.05, 0.5).p_value
    assert bound is not None and CI_OVERLAP_P <= bound < 0.05
    at = cmp.compare_case(KEY, base, cur, 0.05, bound)
    assert at.p_value == bound
    assert at.verdict is Verdict.AMBIGUOUS and at.note == "by CIs"
    above = cmp.compare_case(KEY, base, cur, 0.05, math.nextafter(bound, 1.0))
    assert above.verdict is Verdict.SLOWER and above.note == "by CIs"


def test_a_clear_regression_has_no_note() -> None:
    c = cmp.compare_case(KEY, quiet(case(), noise(1.0, seed=1)), quiet(case(), noise(1.3, seed=2)), 0.05, 0.01)
    assert c.verdict is Verdict.SLOWER and c.regression
    assert c.note == ""


def test_within_noise_alone_is_the_note_of_a_significant_change_inside_the_spread() -> None:
    base = quiet(case(), noise(1.0, n=400, rel=0.1, seed=1))
    cur = quiet(case(), noise(1.08, n=400, rel=0.1, seed=2))
    c = cmp.compare_case(KEY, base, cur, 0.05, 0.01)
    assert c.p_value is not None and c.p_value < 0.01
    assert c.verdict is Verdict.AMBIGUOUS and c.note == "within noise"


def procs(samples: list[float], medians: list[float]) -> dict[str, Any]:
    return quiet(case(), samples, process_medians_ms=medians, processes=len(medians))


def test_overlapping_processes_turn_slower_into_ambiguous() -> None:
    """The pooled samples are 50% slower, beyond the processes' 30% spread, but one current process
    is as fast as a baseline one."""
    base = procs(noise(1.0, seed=1), [1.0, 1.01])
    cur = procs(noise(1.5, seed=2), [1.0, 1.3])
    c = cmp.compare_case(KEY, base, cur, 0.05, 0.01)
    assert c.verdict is Verdict.AMBIGUOUS and not c.regression
    assert c.note == "processes overlap"
    assert c.noise == pytest.approx(0.3)
    faster = cmp.compare_case(KEY, cur, base, 0.05, 0.01)
    assert faster.verdict is Verdict.AMBIGUOUS and faster.note == "processes overlap"
    # on the CPU host and wall time are the median itself: the same figure gets the same verdict
    for metric in ("host", "wall"):
        assert cmp.compare_case(KEY, base, cur, 0.05, 0.01, metric).verdict is Verdict.AMBIGUOUS
    # on CUDA the process medians are GPU times: for the host's figures the pooled samples decide
    on_gpu = [r | {"device": "cuda", "wall_samples_ms": r["samples_ms"], "wall_ms": float(np.median(r["samples_ms"]))}
              for r in (base, cur)]  # fmt: skip
    assert cmp.compare_case(KEY, *on_gpu, 0.05, 0.01, "wall").verdict is Verdict.SLOWER


def test_overlapping_processes_leave_same_as_same() -> None:
    base = procs(noise(1.0, seed=1), [1.0, 1.01])
    cur = procs(noise(1.0, seed=2), [1.0, 1.02])
    c = cmp.compare_case(KEY, base, cur, 0.05, 0.01)
    assert c.verdict is Verdict.SAME and c.note == ""


def test_compare_case_fields_exactly() -> None:
    c = cmp.compare_case(KEY, quiet(case(), FIVE_BASE), quiet(case(), FIVE_DOUBLE), 0.05, 0.01)
    assert c.key == KEY and c.fields == case()
    assert (c.baseline_ms, c.current_ms, c.ratio, c.change) == (1.0, 2.0, 2.0, 1.0)
    assert c.p_value == pytest.approx(2 / 252)
    assert (c.n_baseline, c.n_current) == (5, 5)
    assert c.verdict is Verdict.SLOWER and c.regression is True
    assert c.method == "mann-whitney" and c.noise == pytest.approx(0.02) and c.note == ""
    assert c.label == "eager 8×32×16×16 cpu float32 forward r2 add"


# ------------------------------------------------------------------------------- Comparison views


def test_frame_has_every_column_with_exact_values(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [quiet(case(), FIVE_BASE)])
    cur = write_run(tmp_path / "cur", [quiet(case(), FIVE_DOUBLE)])
    frame = cmp.compare(base, cur).frame()
    assert list(frame.columns) == [*case(), "baseline_ms", "current_ms", "ratio", "change", "p_value", "n_baseline",
                                   "n_current", "verdict", "regression", "method", "noise", "note"]  # fmt: skip
    (record,) = frame.to_dict("records")
    assert {k: record[k] for k in case()} == case()
    assert record["baseline_ms"] == 1.0 and record["current_ms"] == 2.0
    assert record["ratio"] == 2.0 and record["change"] == 1.0
    assert record["p_value"] == pytest.approx(2 / 252)
    assert record["n_baseline"] == 5 and record["n_current"] == 5
    assert record["verdict"] == "SLOWER" and bool(record["regression"]) is True
    assert record["method"] == "mann-whitney"
    assert record["noise"] == pytest.approx(0.02)
    assert record["note"] == ""


def test_frame_of_several_cases_follows_the_case_order(tmp_path: Path) -> None:
    keys = [case("a"), case("b")]
    base = write_run(tmp_path / "base", [quiet(k, FIVE_BASE) for k in keys])
    cur = write_run(tmp_path / "cur", [quiet(keys[0], FIVE_BASE), quiet(keys[1], FIVE_DOUBLE)])
    result = cmp.compare(base, cur)
    frame = result.frame()
    assert list(frame["variant"]) == ["b", "a"]
    assert list(frame["verdict"]) == ["SLOWER", "SAME"]
    assert list(frame["ratio"]) == [2.0, 1.0]
    assert [bool(v) for v in frame["regression"]] == [True, False]


def test_count_counts_only_the_verdict_asked_for(tmp_path: Path) -> None:
    keys = [case("a"), case("b"), case("c")]
    base = write_run(tmp_path / "base", [quiet(k, FIVE_BASE) for k in keys])
    cur = write_run(tmp_path / "cur", [quiet(keys[0], FIVE_DOUBLE), quiet(keys[1], FIVE_BASE),
                                       quiet(keys[2], FIVE_BASE)])  # fmt: skip
    result = cmp.compare(base, cur)
    assert result.count(Verdict.SLOWER) == 1
    assert result.count(Verdict.SAME) == 2
    assert result.count(Verdict.FASTER) == 0
    assert result.count(Verdict.AMBIGUOUS) == 0


# ---------------------------------------------------------------------------------- case ordering


def test_cases_sort_by_verdict_then_by_the_size_of_the_change(tmp_path: Path) -> None:
    """SLOWER, AMBIGUOUS, FASTER, SAME; within each, the largest change first (either direction)."""
    base_samples = noise(1.0, seed=1)
    three = [1.0, 1.01, 0.99]
    plan = [  # variant, baseline samples, current samples: in file order, each group smallest first
        ("slow", base_samples, noise(1.3, seed=2)),
        ("slower", base_samples, noise(1.6, seed=3)),
        ("amb_big", three, [2 * v for v in three]),  # few samples: a 100% change, still AMBIGUOUS
        ("fast_small", base_samples, noise(0.7, seed=4)),
        ("fast_big", base_samples, noise(0.1, seed=5)),  # a larger change than amb_big's
        ("same", base_samples, [1.01 * v for v in base_samples]),
    ]
    base = write_run(tmp_path / "base", [quiet(case(v), b) for v, b, _ in plan])
    cur = write_run(tmp_path / "cur", [quiet(case(v), c) for v, _, c in plan])
    result = cmp.compare(base, cur)
    got = [(c.fields["variant"], c.verdict) for c in result.cases]
    assert got == [
        ("slower", Verdict.SLOWER), ("slow", Verdict.SLOWER), ("amb_big", Verdict.AMBIGUOUS),
        ("fast_big", Verdict.FASTER), ("fast_small", Verdict.FASTER), ("same", Verdict.SAME),
    ]  # fmt: skip


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # row()'s noisy of zeros
def test_a_current_median_of_zero_sorts_without_error(tmp_path: Path) -> None:
    """A ratio of 0 has no logarithm: it sorts as no change within its verdict, in file order."""
    base_samples = noise(1.0, seed=1)
    three = [1.0, 1.01, 0.99]
    plan = [
        ("amb_zero", three, [0.0, 0.0, 0.0]),
        ("amb_one", three, list(three)),
        ("fast", base_samples, noise(0.7, seed=4)),
        ("zero", base_samples, [0.0] * 30),
        ("same", base_samples, [1.01 * v for v in base_samples]),
    ]
    base = write_run(tmp_path / "base", [quiet(case(v), b) for v, b, _ in plan])
    cur = write_run(tmp_path / "cur", [quiet(case(v), c) for v, _, c in plan])
    result = cmp.compare(base, cur)
    got = [(c.fields["variant"], c.verdict) for c in result.cases]
    assert got == [
        ("amb_zero", Verdict.AMBIGUOUS), ("amb_one", Verdict.AMBIGUOUS),
        ("fast", Verdict.FASTER), ("zero", Verdict.FASTER), ("same", Verdict.SAME),
    ]  # fmt: skip
    assert [c.ratio for c in result.cases if c.fields["variant"] in ("amb_zero", "zero")] == [0.0, 0.0]


# ----------------------------------------------------------------------------- compare's options


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    base = write_run(tmp_path / "base", [quiet(case(), FIVE_BASE)])
    cur = write_run(tmp_path / "cur", [quiet(case(), FIVE_DOUBLE)])
    return base, cur


@pytest.mark.parametrize("threshold", [0, 0.0, -0.05, 1.0001, 5, 10, 10.5])
def test_threshold_outside_the_interval_is_refused(pair: tuple[Path, Path], threshold: float) -> None:
    """5 meant as 5% is 500%: a gate that lets a 2× slowdown through. Refused, as is anything above 1."""
    with pytest.raises(CompareError) as info:
        cmp.compare(*pair, threshold=threshold)
    assert str(info.value) == (f"threshold must be a fraction such as 0.05 (5%), at most 1 (twice as slow), "
                               f"got {threshold}")


@pytest.mark.parametrize("threshold", [1e-9, 0.05, 0.75, 1, 1.0])
def test_threshold_inside_the_interval_is_accepted(pair: tuple[Path, Path], threshold: float) -> None:
    assert cmp.compare(*pair, threshold=threshold).threshold == threshold


@pytest.mark.parametrize("alpha", [0, 0.0, -0.01, 1, 1.0, 1.5, 2])
def test_alpha_outside_the_open_interval_is_refused(pair: tuple[Path, Path], alpha: float) -> None:
    with pytest.raises(CompareError) as info:
        cmp.compare(*pair, alpha=alpha)
    assert str(info.value) == f"alpha must be between 0 and 1, got {alpha}"


@pytest.mark.parametrize("alpha", [1e-9, 0.01, 0.999])
def test_alpha_inside_the_open_interval_is_accepted(pair: tuple[Path, Path], alpha: float) -> None:
    assert cmp.compare(*pair, alpha=alpha).alpha == alpha


def test_unknown_metric_message_lists_the_metrics(pair: tuple[Path, Path]) -> None:
    with pytest.raises(CompareError) as info:
        cmp.compare(*pair, metric="p99")
    assert str(info.value) == "unknown metric 'p99'; choose from median, host, wall"


def test_strict_env_message_joins_every_difference(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [quiet(case(), FIVE_BASE)])
    cur = write_run(tmp_path / "cur", [quiet(case(), FIVE_BASE)],
                    env=CPU_ENV | {"torch": "2.99.0", "hostname": "other"})  # fmt: skip
    lines = ("torch version differs: baseline 2.13.0, this run 2.99.0; install the baseline's torch, or save a "
             "baseline with this one (run --save-baseline)",
             "host differs: baseline bench-1, this run other; run on the baseline's host, or save a baseline on "
             "this one (run --save-baseline)")  # fmt: skip
    assert cmp.compare(base, cur).env_differences == lines
    with pytest.raises(CompareError) as info:
        cmp.compare(base, cur, strict_env=True)
    assert str(info.value) == "environments differ (--strict-env): " + "; ".join(lines)


CUDA_ENV = CPU_ENV | {"device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3"}


@pytest.mark.parametrize(("metric", "column"), [("host", "host_ms"), ("wall", "wall_ms")])
def test_host_or_wall_on_a_cuda_run_without_the_column_is_refused(tmp_path: Path, metric: str,
                                                                  column: str) -> None:  # fmt: skip
    old = write_run(tmp_path / "old", [quiet(case(device="cuda"), FIVE_BASE)], env=CUDA_ENV)
    with pytest.raises(CompareError) as info:
        cmp.compare(old, old, metric=metric)
    assert str(info.value) == (f"{old}: no {column} column (made before host and wall time were measured); "
                               "compare it with --metric median")  # fmt: skip


def test_the_median_metric_never_asks_for_a_column() -> None:
    """The column check is for host and wall time only: a run in memory that lists no median_ms is compared."""
    rows = [quiet(case(device="cuda"), FIVE_BASE)]
    columns = {c for c in rows[0] if c != "median_ms"}
    base = in_memory("mem-base", rows, CUDA_ENV, columns)
    cur = in_memory("mem-cur", [quiet(case(device="cuda"), FIVE_DOUBLE)], CUDA_ENV, columns)
    assert cmp.compare(base, cur).cases[0].verdict is Verdict.SLOWER


def test_loaded_runs_are_used_as_they_are() -> None:
    base = in_memory("mem-base", [quiet(case(), FIVE_BASE)])
    cur = in_memory("mem-cur", [quiet(case(), FIVE_DOUBLE)])
    result = cmp.compare(base, cur)
    assert (result.baseline, result.current) == ("mem-base", "mem-cur")
    assert result.cases[0].verdict is Verdict.SLOWER
    assert result.notes == ()


def test_sources_are_the_paths_given(pair: tuple[Path, Path]) -> None:
    result = cmp.compare(*pair)
    assert (result.baseline, result.current) == (str(pair[0]), str(pair[1]))
    assert result.metric == "median" and result.threshold == 0.05 and result.alpha == 0.01


def test_key_columns_on_one_side_are_named_in_the_note(tmp_path: Path) -> None:
    old = case()
    del old["bias"], old["fusion"]
    base = write_run(tmp_path / "base", [quiet(old, FIVE_BASE)])
    cur = write_run(tmp_path / "cur", [quiet(case(), FIVE_BASE)])
    result = cmp.compare(base, cur)
    assert result.notes == ("key column(s) bias, fusion on one side only (older file?): matched without them",)


RAW_NOTE = "raw samples missing on one side (a .csv file?): verdicts use 95% CI overlap where they can"


@pytest.mark.parametrize(("base_csv", "cur_csv", "noted"),
                         [(False, False, False), (True, False, True), (False, True, True), (True, True, True)])
def test_raw_samples_note_when_either_side_lacks_them(tmp_path: Path, base_csv: bool, cur_csv: bool,
                                                      noted: bool) -> None:  # fmt: skip
    base = write_run(tmp_path / "base", [quiet(case(), noise(1.0, seed=1))])
    cur = write_run(tmp_path / "cur", [quiet(case(), noise(1.0, seed=2))])
    result = cmp.compare(base / "results.csv" if base_csv else base, cur / "results.csv" if cur_csv else cur)
    assert result.notes == ((RAW_NOTE,) if noted else ())


def test_status_change_reason_comes_from_the_side_that_is_not_ok(tmp_path: Path) -> None:
    keys = [case("was_error"), case("now_error"), case("no_reason"), case("both_bad")]
    base = write_run(tmp_path / "base", [
        row(keys[0], status="error", reason="boom before"), row(keys[1], noise(1.0)),
        row(keys[2], noise(1.0)), row(keys[3], status="skipped", reason="needs CUDA"),
    ])  # fmt: skip
    cur = write_run(tmp_path / "cur", [
        row(keys[0], noise(1.0), reason="ignored"), row(keys[1], status="error", reason="boom now"),
        row(keys[2], status="timeout"), row(keys[3], status="error", reason="boom too"),
    ])  # fmt: skip
    result = cmp.compare(base, cur)
    got = [(dict(s.key)["variant"], s.baseline_status, s.current_status, s.reason) for s in result.status_changes]
    assert got == [
        ("was_error", "error", "ok", "boom before"),
        ("now_error", "ok", "error", "boom now"),
        ("no_reason", "ok", "timeout", ""),
        ("both_bad", "skipped", "error", "boom too"),
    ]


# ------------------------------------------------------------------------------------- load_run


def test_load_run_keeps_source_and_knows_about_samples(pair: tuple[Path, Path]) -> None:
    base, _ = pair
    loaded = cmp.load_run(base)
    assert loaded.source == str(base)
    assert loaded.has_samples is True
    from_csv = cmp.load_run(base / "results.csv")
    assert from_csv.source == str(base / "results.csv")
    assert from_csv.has_samples is False


def test_load_run_requires_a_status_column(tmp_path: Path) -> None:
    bad = tmp_path / "nostatus.jsonl"
    bad.write_text('{"variant": "eager", "median_ms": 1.0}\n')
    with pytest.raises(CompareError) as info:
        cmp.load_run(bad)
    assert str(info.value) == f"{bad}: not a results file (no column status)"


# -------------------------------------------------------------------------------------- by_key


def test_by_key_counts_repeats_and_moves_a_repeated_case_to_its_last_place() -> None:
    rows = [{"variant": "a", "n": 1}, {"variant": "b", "n": 2}, {"variant": "a", "n": 3}, {"variant": "a", "n": 4}]
    run = in_memory("mem", rows)
    out, repeated = run.by_key(["variant"])
    assert repeated == 2
    assert list(out) == [(("variant", "b"),), (("variant", "a"),)]
    assert [r["n"] for r in out.values()] == [2, 4]


def test_by_key_without_repeats_counts_none() -> None:
    run = in_memory("mem", [{"variant": "a", "batch": 8}, {"variant": "a", "batch": "8.0"}, {"variant": "b"}])
    out, repeated = run.by_key(["variant", "batch"])
    assert repeated == 1  # 8 and "8.0" are one key
    out, repeated = in_memory("mem", [{"variant": "a"}, {"variant": "b"}, {"variant": "c"}]).by_key(["variant"])
    assert repeated == 0
    assert list(out) == [(("variant", "a"),), (("variant", "b"),), (("variant", "c"),)]


# ---------------------------------------------------------------------------------- env_differences


def test_env_differences_use_whichever_side_knows_its_device() -> None:
    """cpu_model is a CPU fact: on CUDA it is not compared, even when only one side says it is CUDA."""
    cuda_env = {"device": "cuda", "cpu_model": "A"}
    unknown_env = {"cpu_model": "B"}  # no device in env.json nor in the rows
    cuda_run = in_memory("cuda", [{"variant": "x"}], cuda_env)
    unknown_run = in_memory("unknown", [{"variant": "x"}], unknown_env)
    assert unknown_run.device is None and cuda_run.device == "cuda"
    assert cmp.env_facts(cuda_run, unknown_run) == []
    assert cmp.env_facts(unknown_run, cuda_run) == []
    both_unknown = in_memory("unknown2", [{"variant": "x"}], {"cpu_model": "A"})
    ((fact, before, after),) = cmp.env_facts(both_unknown, unknown_run)
    line = fact.advice(before, after)
    assert line.startswith("CPU model differs: baseline A, this run B; timings from another machine")


def test_env_differences_read_a_gpus_index_as_its_device_type() -> None:
    """merge and resume pass env.json's device, ``cuda:0`` after ``--device cuda:0``: the GPU facts
    must still be compared (two shards on different GPU models were merged silently), and the same
    GPU model at another index is the same environment."""
    h200 = {"device": "cuda:0", "gpu_name": "NVIDIA H200", "cuda": "13.0"}
    h100 = {"device": "cuda:0", "gpu_name": "NVIDIA H100 80GB HBM3", "cuda": "12.8"}
    found = env_rules.env_differences(h200, h100, "cuda:0", "merge")
    assert [(fact.key, a, b) for fact, a, b in found] == [("gpu_name", "NVIDIA H200", "NVIDIA H100 80GB HBM3"),
                                                          ("cuda", "13.0", "12.8")]  # fmt: skip
    assert env_rules.env_differences(h200, h200 | {"device": "cuda:1"}, "cuda:1", "merge") == []
    on_cpu = env_rules.env_differences(h200, h200 | {"device": "cpu"}, "cuda", "merge")
    assert [f.key for f, _, _ in on_cpu] == ["device"]
    assert env_rules.device_type("cuda:3") == "cuda" and env_rules.device_type(None) is None


def test_a_baseline_from_before_contexts_matches_blocks_alone_without_a_note() -> None:
    """The committed CPU baseline has no context column: every CPU compare said 'older file?'."""
    old_rows = [{k: v for k, v in quiet(case(), FIVE_BASE).items() if k != "context"}]
    base = in_memory("base", old_rows)
    cur = in_memory("cur", [quiet(case(context=""), FIVE_BASE)])
    assert "context" not in base.columns and "context" in cur.columns
    result = cmp.compare(base, cur)
    assert len(result.cases) == 1 and not any("older file" in n for n in result.notes)
    network = in_memory("cur", [quiet(case(context="unet"), FIVE_BASE), quiet(case(), FIVE_BASE)])
    assert any("key column(s) context on one side only" in n for n in cmp.compare(base, network).notes)


def test_a_different_number_of_worker_processes_is_said_with_how_to_match_it() -> None:
    """The committed CPU baseline pools 5 processes a case, a default run has one: its medians drift
    more between runs (README, Noise), so compare says so, and a run from before the setting is 1."""
    pooled = {"device": "cpu", "config": {"processes": 5}}
    assert env_rules.env_advice(pooled, {"device": "cpu", "config": {}}, "cpu") == [
        "worker processes per case differs: baseline 5, this run 1; rerun with --processes 5"]
    assert env_rules.env_advice(pooled, {"device": "cpu"}, "cpu") != []
    assert env_rules.env_advice(pooled, pooled, "cpu") == []
    assert env_rules.env_differences(pooled, {"device": "cpu"}, "cpu", "merge") == []  # merge: its own config checks


def test_a_hot_run_against_a_cold_baseline_on_cuda_is_said() -> None:
    """A hot L2 reads faster than the cold baseline's: no speed-up. On the CPU nothing is flushed."""
    cold = {"device": "cuda", "config": {"cache": "cold"}}
    assert env_rules.env_advice(cold, {"device": "cuda", "config": {"cache": "hot"}}, "cuda") == [
        "L2 cache mode differs: baseline cold, this run hot; rerun with --cache cold"]
    assert env_rules.env_advice({"device": "cuda"}, cold, "cuda") == []  # from before the setting: cold
    assert env_rules.env_advice({"device": "cpu", "config": {"cache": "cold"}},
                            {"device": "cpu", "config": {"cache": "hot"}}, "cpu") == []  # fmt: skip


def test_the_network_librarys_version_matters_only_to_runs_of_networks() -> None:
    """Another smp release may be another U-Net: merge refuses it, compare warns; for blocks alone
    neither library runs, and a baseline made without them installed must not warn."""
    old = {"device": "cpu", "smp": "0.5.0", "torchvision": "0.26.0", "config": {"contexts": ["unet"]}}
    new = old | {"smp": "0.6.0"}
    found = env_rules.env_differences(old, new, "cpu", "merge")
    assert [(f.key, a, b) for f, a, b in found] == [("smp", "0.5.0", "0.6.0")]
    assert [f.key for f, _, _ in env_rules.env_differences(old, new, "cpu", "compare")] == ["smp"]
    older = {"device": "cpu", "config": {"contexts": ["unet"]}}  # a network run from before they were recorded
    assert env_rules.env_differences(older, new, "cpu", "merge") == []
    blocks = {"device": "cpu", "smp": None, "torchvision": None, "config": {"contexts": []}}
    newer = blocks | {"smp": "0.6.0", "torchvision": "0.28.0"}
    assert env_rules.env_differences(blocks, newer, "cpu", "compare") == []


# -------------------------------------------------------------------------------------- labels


def test_labels_show_bias_only_when_set() -> None:
    assert cmp.case_label(case(bias=True)) == "eager 8×32×16×16 cpu float32 forward r2 add bias"
    assert cmp.case_label(case(bias=False)) == "eager 8×32×16×16 cpu float32 forward r2 add"
    assert cmp.config_label(case(bias=True)) == "cpu float32 forward r2 add bias"
    assert cmp.config_label(case(bias=False)) == "cpu float32 forward r2 add no bias"
    assert cmp.config_label(case(reduction=16), ("reduction", "bias")) == "r16 no bias"


def test_labels_name_the_network_a_variant_ran_in() -> None:
    """A run with ``--context unet,unet_compiled`` has two eager rows per configuration: they must
    read apart in every verdict line and table."""
    assert cmp.case_label(case(context="unet_compiled")).startswith("unet_compiled/eager 8×32×16×16 ")
    assert cmp.variant_label(case(context="unet")) == "unet/eager"
    assert cmp.variant_label(case(context="")) == cmp.variant_label(case(context=None)) == "eager"


# ---------------------------------------------------------------------------- samples and figures


def test_samples_from_json_text_as_a_csv_holds_them() -> None:
    x = raw_samples("[1.0, 2, NaN, 3.5, Infinity]")
    assert x.dtype == np.float64
    assert x.tolist() == [1.0, 2.0, 3.5]


@pytest.mark.parametrize("value", ["not json", "[1.0, 2.0", "", None, 3.0, "3.0", {"a": 1}])
def test_samples_from_anything_else_are_an_empty_float_array(value: Any) -> None:
    x = raw_samples(value)
    assert x.shape == (0,)
    assert x.dtype == np.float64


def test_samples_of_integers_are_floats() -> None:
    x = raw_samples([1, 2, 3])
    assert x.dtype == np.float64 and x.tolist() == [1.0, 2.0, 3.0]
    assert raw_samples((4, 5)).dtype == np.float64
    assert raw_samples(np.array([6, 7])).dtype == np.float64


FIGURES = {
    "median_ms": 1.0, "samples_ms": [1.0, 1.1], "ci_low_ms": 0.9, "ci_high_ms": 1.2, "iqr_ms": 0.1,
    "host_ms": 2.0, "host_samples_ms": [2.0, 2.1], "host_ci_low_ms": 1.9, "host_ci_high_ms": 2.2,
    "wall_ms": 3.0, "wall_samples_ms": "[3.0, 3.1]", "wall_ci_low_ms": 2.9, "wall_ci_high_ms": 3.2,
}  # fmt: skip


def test_timing_of_the_median_has_its_iqr() -> None:
    t = timing_of(FIGURES | {"device": "cuda"}, "median")
    assert t.samples.tolist() == [1.0, 1.1]
    assert (t.median, t.ci_low, t.ci_high, t.iqr) == (1.0, 0.9, 1.2, 0.1)


def test_timing_of_host_and_wall_have_no_iqr() -> None:
    host = timing_of(FIGURES | {"device": "cuda:0"}, "host")
    assert host.samples.tolist() == [2.0, 2.1]
    assert (host.median, host.ci_low, host.ci_high) == (2.0, 1.9, 2.2) and math.isnan(host.iqr)
    wall = timing_of(FIGURES | {"device": "cuda"}, "wall")
    assert wall.samples.tolist() == [3.0, 3.1]
    assert (wall.median, wall.ci_low, wall.ci_high) == (3.0, 2.9, 3.2) and math.isnan(wall.iqr)


def test_timing_of_a_cpu_row_is_always_the_median() -> None:
    t = timing_of(FIGURES | {"device": "cpu"}, "host")
    assert (t.median, t.iqr) == (1.0, 0.1)


def test_timing_of_a_row_without_a_device_uses_the_metric_asked_for() -> None:
    t = timing_of(FIGURES, "host")
    assert t.median == 2.0 and math.isnan(t.iqr)
    assert timing_of(FIGURES, "median").iqr == 0.1


def test_timing_of_missing_numbers_are_nan() -> None:
    t = timing_of({"device": "cuda", "median_ms": None, "iqr_ms": "n/a"}, "median")
    assert t.samples.shape == (0,)
    assert all(math.isnan(v) for v in (t.median, t.ci_low, t.ci_high, t.iqr))


# ------------------------------------------------------------------- what a comparison must judge


def test_a_run_on_cuda_1_matches_a_baseline_made_on_cuda() -> None:
    """Which of a machine's GPUs ran a case is no part of it: the key holds the device's type."""
    gpu = {"device": "cuda", "gpu_name": "NVIDIA H200", "cuda": "13.0", "torch": "2.11.0"}
    base = in_memory("base", [quiet(case(device="cuda"), FIVE_BASE)], env=gpu)
    cur = in_memory("cur", [quiet(case(device="cuda:1"), FIVE_DOUBLE)], env=gpu | {"device": "cuda:1"})
    result = cmp.compare(base, cur)
    assert [c.verdict for c in result.cases] == [Verdict.SLOWER] and result.failed
    assert result.env_differences == ()


def test_nothing_timed_on_both_sides_is_no_pass() -> None:
    """'No regression' over zero judged cases would pass a PR that made every case skip."""
    base = in_memory("base", [quiet(case(), FIVE_BASE), quiet(case(batch=1), FIVE_BASE),
                              row(case(batch=2), status="error", reason="fixed since")])  # fmt: skip
    cur = in_memory("cur", [row(case(), status="skipped", reason="triton: not installed"),
                            row(case(batch=1), status="skipped", reason="triton: not installed"),
                            row(case(batch=2), status="skipped", reason="triton: not installed")])  # fmt: skip
    result = cmp.compare(base, cur)
    assert not result.cases and not result.failed
    assert result.nothing_judged == ("nothing to compare: no case in common was timed on both sides "
                                     "(2 ok → skipped, 1 error → skipped)")
    cur = in_memory("cur", [row(case(batch=2), status="error", reason="fixed since")])
    assert cmp.compare(base, cur).nothing_judged == ("nothing to compare: no case in common was timed on both sides "
                                                     "(1 error → error)")  # broken on both: said, never dropped
    one_timed = in_memory("cur", [row(case(), status="skipped"), quiet(case(batch=1), FIVE_BASE)])
    assert cmp.compare(base, one_timed).nothing_judged is None


def test_a_case_that_broke_still_fails_when_nothing_else_was_timed() -> None:
    base = in_memory("base", [quiet(case(), FIVE_BASE)])
    cur = in_memory("cur", [row(case(), status="error", reason="RuntimeError: boom")])
    result = cmp.compare(base, cur)
    assert result.failed and [c.current_status for c in result.broken] == ["error"]
    assert result.nothing_judged is None


def test_a_run_where_no_case_was_timed_is_read_and_its_broken_cases_fail(tmp_path: Path) -> None:
    """Rows that were never timed carry no median_ms at all: the file is still a results file."""
    base = write_run(tmp_path / "base", [quiet(case(), FIVE_BASE)])
    cur = tmp_path / "cur.jsonl"
    cur.write_text(json.dumps(case() | {"status": "error", "reason": "RuntimeError: boom"}) + "\n")
    result = cmp.compare(base, cur)
    assert result.failed and [c.current_status for c in result.broken] == ["error"]


@pytest.mark.parametrize(("before", "now", "broken"), [
    ({"status": "skipped", "reason": "triton: not installed"}, {"status": "mismatch"}, True),
    ({"status": "oom"}, {"status": "error"}, True),
    ({"batch_run": 4}, {"status": "mismatch"}, True),  # checked and timed at batch 4, wrong now
    ({"batch_run": 4}, {"batch_run": 2}, True),  # fits half the batch it did: a memory regression
    ({"batch_run": 4}, {"status": "oom", "batch_run": 1}, True),  # fits no batch now
    ({"batch_run": 2}, {"batch_run": 4}, False),  # fits more now
    ({"status": "oom", "batch_run": 1}, {"status": "oom", "batch_run": 1}, False),
    ({"status": "mismatch"}, {"status": "error"}, False),  # broken before: listed, not new
    ({}, {"status": "skipped", "reason": "needs CUDA"}, False),
])  # fmt: skip
def test_a_case_that_fails_now_fails_the_gate_whatever_it_was_unless_it_failed_before(
        tmp_path: Path, before: dict[str, Any], now: dict[str, Any], broken: bool) -> None:  # fmt: skip
    """A wrong case passed with exit 0 when the baseline had skipped it, run out of memory, or timed
    it at a halved batch: only ``ok`` before counted."""
    def made(name: str, fields: dict[str, Any], seed: int) -> Path:
        timed = fields.get("status", "ok") == "ok"
        r = row(case(), noise(1.0, seed=seed)) if timed else row(case(), status=fields["status"],
                                                                 reason=fields.get("reason", "boom"))
        return write_run(tmp_path / name, [r | {k: v for k, v in fields.items() if k != "status"},
                                           row(case("other"), noise(1.0, seed=seed + 5))])  # fmt: skip

    result = cmp.compare(made("base", before, 1), made("cur", now, 2))
    assert [s.broken for s in result.status_changes] == [broken]
    assert result.failed is broken


def test_only_cases_the_baseline_timed_count_as_missing(tmp_path: Path) -> None:
    """The committed H200 baseline holds 8 skipped cuda_graph train rows: a run without them lost nothing."""
    base = write_run(tmp_path / "base", [row(case(), noise(1.0, seed=1)),
                                         row(case("cuda_graph"), status="skipped", reason="forward only"),
                                         row(case("wrong"), status="mismatch", reason="error 0.3"),
                                         row(case("halved"), noise(1.0, seed=2)) | {"batch_run": 4},
                                         row(case("lost"), noise(1.0, seed=3))])  # fmt: skip
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.0, seed=4))])
    result = cmp.compare(base, cur, fail_on_missing=True)
    assert [dict(k)["variant"] for k in result.missing] == ["lost"] and result.failed
    assert result.warnings == ("1 case(s) the baseline timed are missing from this run, so not judged: if the "
                               "sweep did not change on purpose, it lost them",)  # fmt: skip
    assert len(result.only_baseline) == 4  # all still listed


def test_a_different_tf32_setting_on_cuda_is_warned_of() -> None:
    """float32 1x1 convolutions run in TF32 where cuDNN allows it: two such runs time different arithmetic."""
    on = {"device": "cuda", "gpu_name": "NVIDIA H200", "tf32": True}
    assert env_rules.env_advice(on, on | {"tf32": False}, "cuda") == [
        "TF32 setting differs: baseline True, this run False; set torch.backends.cudnn.allow_tf32 and "
        "torch.backends.cuda.matmul.allow_tf32 as the baseline had them"]
    assert env_rules.env_advice({"device": "cpu", "tf32": True}, {"device": "cpu", "tf32": False}, "cpu") == []
