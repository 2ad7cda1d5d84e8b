"""``compare --relative-to VARIANT``: each case divided by the reference variant of its own run.

On 2026-11-29 the 2-core VM copied memory at 13 GB/s against the committed baseline's 41: an
unchanged ``sweep-cpu.toml`` run read all 40 cases SLOWER (2.1–4.9×) at every threshold, and divided
by eager of the same run, 1 of the 32 others (results/baselines/noise-cpu/README.md).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from compare_helpers import case, noise, row, write_run

from harness.cli import main
from harness.results import compare as cmp
from harness.results.compare_render import rich_table, to_markdown, value_columns
from harness.results.compare_stats import Verdict

VARIANTS = ("eager", "fused", "factored", "linear")


def sweep(folder: Path, scale: float = 1.0, own: dict[str, float] | None = None, seed: int = 0,
          **rows: dict) -> Path:  # fmt: skip
    """A run of ``VARIANTS`` at two batches, every time times ``scale`` (the machine's speed that day) and
    each variant's times ``own`` (its code); a keyword replaces that variant's row of batch 8."""
    own = own or {}
    out = []
    for i, (variant, batch) in enumerate((v, b) for v in VARIANTS for b in (1, 8)):
        base = {"eager": 1.0, "fused": 0.5, "factored": 0.8, "linear": 1.1}[variant] * batch
        if batch == 8 and variant in rows:
            out.append(rows[variant])
            continue
        out.append(row(case(variant, batch=batch), noise(base * scale * own.get(variant, 1.0), seed=seed + i)))
    return write_run(folder, out)


def test_a_machine_slower_that_day_cancels(tmp_path: Path) -> None:
    """Every case 3× slower: absolute, all SLOWER; over eager of the same run, all SAME, and eager's own
    move is said, not judged."""
    base, cur = sweep(tmp_path / "base"), sweep(tmp_path / "cur", scale=3.0, seed=50)
    absolute = cmp.compare(base, cur)
    assert absolute.count(Verdict.SLOWER) == 8 and absolute.failed
    assert (absolute.shift or "").endswith("judge each case over a variant of its own run (--relative-to eager)")
    relative = cmp.compare(base, cur, relative_to="eager")
    assert not relative.failed and relative.nothing_judged is None
    assert {c.verdict for c in relative.cases} == {Verdict.SAME}
    assert {dict(c.key)["variant"] for c in relative.cases} == {"fused", "factored", "linear"}
    assert len(relative.cases) == 6 and len(relative.reference_cases) == 2
    fused = next(c for c in relative.cases if dict(c.key)["variant"] == "fused" and dict(c.key)["batch"] == 8)
    assert fused.baseline_ms == pytest.approx(0.5, rel=0.02) and fused.current_ms == pytest.approx(0.5, rel=0.02)
    line = relative.reference_line or ""
    moved = re.fullmatch(r"eager, the reference, is not judged: its own time moved (\S+)× \(the median of 2 "
                         r"case\(s\), \S+–\S+×\); compare without --relative-to to judge it", line)
    assert moved and float(moved[1]) == pytest.approx(3.0, abs=0.02)
    assert not relative.warnings  # the drift cancelled: no "whole run moved", no copy bandwidths


def test_a_regression_shows_through_the_days_drift(tmp_path: Path) -> None:
    """fused 1.5× slower on a machine 3× slower: it alone is SLOWER, by 1.5×, and fails the gate."""
    base = sweep(tmp_path / "base")
    cur = sweep(tmp_path / "cur", scale=3.0, own={"fused": 1.5}, seed=50)
    result = cmp.compare(base, cur, relative_to="eager")
    assert result.failed
    assert sorted(c.label for c in result.regressions) == sorted(
        cmp.case_label(case("fused", batch=b)) for b in (1, 8))
    assert all(c.ratio == pytest.approx(1.5, rel=0.03) for c in result.regressions)
    assert result.count(Verdict.SAME) == 4


def test_the_references_noise_joins_the_gate(tmp_path: Path) -> None:
    """A reference read 30% wide makes every case it divides move as much: a 20% change is AMBIGUOUS
    "within noise" beside it, and SLOWER beside a tight one."""
    wide = row(case("eager", batch=8), noise(8.0, rel=0.3, n=400, seed=3))
    base = sweep(tmp_path / "base")
    cur_tight = sweep(tmp_path / "tight", own={"fused": 1.2}, seed=50)
    cur_wide = sweep(tmp_path / "wide", own={"fused": 1.2}, seed=50, eager=wide)

    def fused8(result: cmp.Comparison) -> cmp.CaseComparison:
        return next(c for c in result.cases if c.label == cmp.case_label(case("fused", batch=8)))

    tight = fused8(cmp.compare(base, cur_tight, relative_to="eager"))
    assert tight.verdict is Verdict.SLOWER and tight.p_value < 0.01
    loose = fused8(cmp.compare(base, cur_wide, relative_to="eager"))
    assert loose.p_value < 0.01 and loose.ratio > 1.15
    assert loose.verdict is Verdict.AMBIGUOUS and "within noise" in loose.note
    assert loose.noise > 0.3  # the reference's IQR / median, not the case's own 1%


def test_processes_are_divided_by_the_reference_too(tmp_path: Path) -> None:
    """Each process median over its run's reference: the gate's "a change must show in every process"
    then compares like with like. Undivided, every process of a run 3× slower would clear the baseline's."""
    def with_processes(variant: str, median: float, processes: list[float], seed: int) -> dict:
        return row(case(variant, batch=8), noise(median, seed=seed)) | {"process_medians_ms": processes}

    base = sweep(tmp_path / "base", fused=with_processes("fused", 4.0, [4.0, 4.0, 4.0, 4.0, 5.2], 1),
                 eager=with_processes("eager", 8.0, [8.0] * 5, 2))  # fmt: skip
    cur = sweep(tmp_path / "cur", scale=3.0, seed=50,
                fused=with_processes("fused", 18.0, [15.0, 18.0, 18.0, 18.0, 18.0], 3),
                eager=with_processes("eager", 24.0, [24.0] * 5, 4))  # fmt: skip
    result = cmp.compare(base, cur, relative_to="eager")
    fused = next(c for c in result.cases if c.label == cmp.case_label(case("fused", batch=8)))
    assert fused.ratio == pytest.approx(1.5, rel=0.02)  # 0.75 of eager now, 0.5 before
    assert fused.verdict is Verdict.AMBIGUOUS and "processes overlap" in fused.note  # 15/24 ≤ 5.2/8


def test_the_reference_alone_slower_reads_as_every_other_faster_and_is_named(tmp_path: Path) -> None:
    """eager 2× slower and nothing else: no regression (its own cases are not judged), every other
    variant FASTER against it, and the warning says the reference is what moved."""
    base = sweep(tmp_path / "base")
    cur = sweep(tmp_path / "cur", own={"eager": 2.0}, seed=50)
    result = cmp.compare(base, cur, relative_to="eager")
    assert not result.failed and result.count(Verdict.FASTER) == 6
    (warning,) = result.warnings
    assert warning.startswith("the variants all moved faster against eager: their median ratio is 0.50× over")
    assert warning.endswith("If they did not change, eager did, or the machine favours them differently; "
                            "compare without --relative-to to judge eager itself")
    assert "2.00×" in (result.reference_line or "")
    assert cmp.compare(base, cur).regressions  # judged as it is, eager fails


def test_a_broken_reference_still_fails_and_leaves_its_configuration_unjudged(tmp_path: Path) -> None:
    """eager wrong now at batch 8: its status change fails the gate, and the cases beside it, having
    nothing to divide by, are listed as not judged rather than judged in ms."""
    base = sweep(tmp_path / "base")
    broken = row(case("eager", batch=8), status="mismatch", reason="max_rel_err 0.3 > tolerance")
    cur = sweep(tmp_path / "cur", scale=3.0, seed=50, eager=broken)
    result = cmp.compare(base, cur, relative_to="eager")
    assert result.failed and [s.label for s in result.broken] == [cmp.case_label(case("eager", batch=8))]
    assert sorted(cmp.case_label(dict(k)) for k in result.unreferenced) == sorted(
        cmp.case_label(case(v, batch=8)) for v in ("fused", "factored", "linear"))
    assert {dict(c.key)["batch"] for c in result.cases} == {1}
    assert any(w.startswith("3 case(s) timed on both sides are not judged: eager was not timed")
               for w in result.warnings)  # fmt: skip
    markdown = to_markdown(result)
    assert "3 case(s) not judged: no eager beside them" in markdown


def test_a_reference_measured_at_a_halved_batch_divides_nothing(tmp_path: Path) -> None:
    """``--oom-retry`` ran eager at batch 4 where the others ran at 8: a time of half the work is no reference."""
    halved = row(case("eager", batch=8), noise(4.0, seed=9)) | {"batch_run": 4, "reason": "ran at batch 4"}
    result = cmp.compare(sweep(tmp_path / "base"), sweep(tmp_path / "cur", eager=halved, seed=50),
                         relative_to="eager")  # fmt: skip
    assert len(result.unreferenced) == 3 and {dict(c.key)["batch"] for c in result.cases} == {1}


def test_nothing_to_divide_by_is_nothing_judged(tmp_path: Path) -> None:
    """No eager timed in the current run: every case unjudged, and the comparison says why (exit 2)."""
    base = sweep(tmp_path / "base")
    skipped = {b: row(case("eager", batch=b), status="skipped", reason="not here") for b in (1, 8)}
    rows = [row(case(v, batch=b), noise(1.0, seed=b)) for v in ("fused", "factored") for b in (1, 8)]
    cur = write_run(tmp_path / "cur", [*skipped.values(), *rows])
    result = cmp.compare(base, cur, relative_to="eager")
    assert not result.cases and len(result.unreferenced) == 4
    assert result.nothing_judged == ("nothing judged: eager was not timed beside any of the 4 case(s) timed on "
                                     "both sides, at its configuration in both runs")


def test_tables_name_what_the_figures_are(tmp_path: Path) -> None:
    result = cmp.compare(sweep(tmp_path / "base"), sweep(tmp_path / "cur", scale=3.0, seed=50), relative_to="eager")
    assert value_columns(result) == ("baseline /eager", "current /eager")
    frame = result.frame()
    assert {"baseline_over_eager", "current_over_eager"} <= set(frame.columns) and "baseline_ms" not in frame
    assert frame["current_over_eager"].between(0.45, 1.15).all()  # 0.5, 0.8 and 1.1 of eager, as in ms before
    markdown = to_markdown(result)
    assert "each case divided by eager's at its configuration in the same run (`--relative-to eager`" in markdown
    assert re.search(r"\| +baseline /eager +\| +current /eager +\|", markdown)
    headers = [c.header for c in rich_table(result).columns]
    assert "current /eager" in headers and "current ms" not in headers
    plain = cmp.compare(sweep(tmp_path / "b2"), sweep(tmp_path / "c2", seed=50))
    assert value_columns(plain) == ("baseline ms", "current ms") and plain.reference_line is None


@pytest.mark.parametrize(("variant", "message"), [
    ("eagr", "--relative-to eagr: no such variant in both runs (both hold eager, factored, fused, linear)"),
    ("only", "--relative-to only: the runs hold no other variant in common to divide by it"),
])  # fmt: skip
def test_a_reference_the_runs_cannot_divide_by_is_refused(tmp_path: Path, variant: str, message: str) -> None:
    if variant == "only":
        base = write_run(tmp_path / "base", [row(case("only"), noise(1.0))])
        cur = write_run(tmp_path / "cur", [row(case("only"), noise(1.0, seed=2))])
    else:
        base, cur = sweep(tmp_path / "base"), sweep(tmp_path / "cur", seed=50)
    with pytest.raises(cmp.CompareError) as info:
        cmp.compare(base, cur, relative_to=variant)
    assert str(info.value) == message


def test_the_cli_judges_relative_to_a_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, cur = sweep(tmp_path / "base"), sweep(tmp_path / "cur", scale=3.0, seed=50)
    assert main(["compare", str(base), str(cur)]) == 1
    capsys.readouterr()
    assert main(["compare", str(base), str(cur), "--relative-to", "eager"]) == 0
    out = capsys.readouterr().out
    assert "OK: no regression (0 faster, 0 slower, 6 same, 0 ambiguous)" in out
    assert main(["compare", str(base), str(cur), "--relative-to", "eagr"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --relative-to eagr: no such variant in both runs (both hold eager, factored, fused, linear)"]


def test_a_reference_absent_at_one_configuration_divides_nothing_there(tmp_path: Path) -> None:
    """eager not in the current run at batch 8 (a sweep that lost it): the cases beside it are not judged."""
    cur = sweep(tmp_path / "cur", seed=50)
    kept = write_run(tmp_path / "kept", [r for r in map(dict, cmp.load_run(cur).records)
                                         if not (r["variant"] == "eager" and r["batch"] == 8)])  # fmt: skip
    result = cmp.compare(sweep(tmp_path / "base"), kept, relative_to="eager")
    assert len(result.unreferenced) == 3 and {dict(c.key)["batch"] for c in result.cases} == {1}


def test_a_reference_with_a_zero_median_divides_nothing(tmp_path: Path) -> None:
    """An ``ok`` row with a median of 0 (a hand-made results file: the loader refuses a blank one) has
    nothing to divide by."""
    broken = row(case("eager", batch=8), noise(8.0, seed=9)) | {"median_ms": 0.0}
    result = cmp.compare(sweep(tmp_path / "base"), sweep(tmp_path / "cur", eager=broken, seed=50),
                         relative_to="eager")  # fmt: skip
    assert len(result.unreferenced) == 3 and {dict(c.key)["batch"] for c in result.cases} == {1}


def test_tight_processes_divided_by_the_reference_show_a_change_in_every_one(tmp_path: Path) -> None:
    """The processes' medians over the reference, 0.5 of eager before and 0.75 now in each: SLOWER."""
    def with_processes(variant: str, median: float, processes: list[float], seed: int) -> dict:
        return row(case(variant, batch=8), noise(median, seed=seed)) | {"process_medians_ms": processes}

    base = sweep(tmp_path / "base", fused=with_processes("fused", 4.0, [4.0] * 5, 1),
                 eager=with_processes("eager", 8.0, [8.0] * 5, 2))  # fmt: skip
    cur = sweep(tmp_path / "cur", scale=3.0, seed=50, fused=with_processes("fused", 18.0, [18.0] * 5, 3),
                eager=with_processes("eager", 24.0, [24.0] * 5, 4))  # fmt: skip
    fused = next(c for c in cmp.compare(base, cur, relative_to="eager").cases
                 if c.label == cmp.case_label(case("fused", batch=8)))  # fmt: skip
    assert fused.verdict is Verdict.SLOWER and "processes overlap" not in fused.note


GPU_ENV = {"device": "cuda", "gpu_name": "NVIDIA H100", "torch": "2.11.0", "hostname": "h"}


def gpu_row(variant: str, gpu_ms: float, host_ms: float, seed: int, processes: list[float] | None = None) -> dict:
    """A CUDA row: GPU time in ``median_ms``, host time per call in ``host_ms``, each with its samples."""
    out = row(case(variant, device="cuda"), noise(gpu_ms, seed=seed))
    host = noise(host_ms, seed=seed + 100)
    out |= {"host_ms": float(np.median(host)), "host_samples_ms": host, "host_ci_low_ms": min(host),
            "host_ci_high_ms": max(host), "process_medians_ms": processes}  # fmt: skip
    return out


def test_on_cuda_the_metric_chosen_is_divided_by_the_references_own(tmp_path: Path) -> None:
    """--metric host: fused's host time over eager's host time, 0.5 of it before and 1.0 now (over eager's
    GPU time it would read 0.1 and 0.27); its GPU time over eager's GPU time, 0.5 both times, reads SAME."""
    base = write_run(tmp_path / "base", [gpu_row("eager", 1.0, 0.2, 1), gpu_row("fused", 0.5, 0.1, 2)], GPU_ENV)
    cur = write_run(tmp_path / "cur", [gpu_row("eager", 1.5, 0.4, 3), gpu_row("fused", 0.75, 0.4, 4)], GPU_ENV)
    (host,) = cmp.compare(base, cur, relative_to="eager", metric="host").cases
    assert host.verdict is Verdict.SLOWER and host.ratio == pytest.approx(2.0, rel=0.03)
    (gpu,) = cmp.compare(base, cur, relative_to="eager").cases
    assert gpu.verdict is Verdict.SAME and gpu.ratio == pytest.approx(1.0, rel=0.03)


def test_on_cuda_a_reference_is_needed_in_the_metric_compared(tmp_path: Path) -> None:
    """eager's host time read 0 (a hand-made file): nothing to divide fused's host time by, though its GPU
    time divides fused's GPU time."""
    base = write_run(tmp_path / "base", [gpu_row("eager", 1.0, 0.2, 1), gpu_row("fused", 0.5, 0.1, 2)], GPU_ENV)
    zero = gpu_row("eager", 1.0, 0.2, 3) | {"host_ms": 0.0}
    cur = write_run(tmp_path / "cur", [zero, gpu_row("fused", 0.5, 0.1, 4)], GPU_ENV)
    host = cmp.compare(base, cur, relative_to="eager", metric="host")
    assert not host.cases and len(host.unreferenced) == 1
    assert len(cmp.compare(base, cur, relative_to="eager").cases) == 1


def test_on_cuda_the_references_process_spread_joins_the_gate(tmp_path: Path) -> None:
    """GPU time: eager's processes 1.0-1.6 ms apart make fused's 30% move within noise."""
    base = write_run(tmp_path / "base", [gpu_row("eager", 1.0, 0.2, 1, [1.0] * 5),
                                         gpu_row("fused", 0.5, 0.1, 2, [0.5] * 5)], GPU_ENV)  # fmt: skip
    wide = [1.0, 1.0, 1.0, 1.0, 1.6]
    cur = write_run(tmp_path / "cur", [gpu_row("eager", 1.0, 0.2, 3, wide),
                                       gpu_row("fused", 0.65, 0.1, 4, [0.65] * 5)], GPU_ENV)  # fmt: skip
    (fused,) = cmp.compare(base, cur, relative_to="eager").cases
    assert fused.ratio == pytest.approx(1.3, rel=0.03) and fused.noise == pytest.approx(0.6)
    assert fused.verdict is Verdict.AMBIGUOUS and "within noise" in fused.note


def test_a_cpu_hint_over_the_reference_counts_only_changes_beyond_the_ci_threshold(tmp_path: Path) -> None:
    """A change of exactly +25% over eager does not fail at the CI job's 25%: it is not counted."""
    flat = [1.0] * 20
    base = write_run(tmp_path / "base", [row(case("eager"), flat), row(case("a"), flat), row(case("b"), flat)])
    cur = write_run(tmp_path / "cur", [row(case("eager"), flat), row(case("a"), [1.25] * 20),
                                       row(case("b"), [1.5] * 20)])  # fmt: skip
    result = cmp.compare(base, cur, relative_to="eager")
    assert [c.change for c in result.regressions] == [0.5, 0.25]
    assert result.warnings[-1].endswith("at which 1 of these 2 regression(s) would still fail")
