"""compare: verdicts from synthetic samples whose answer is known, and every way input can be bad."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from compare_helpers import CPU_ENV, case, noise, row, write_run
from rich.console import Console

from harness.results import compare as cmp
from harness.results import compare_render, compare_stats
from harness.results.compare import CompareError
from harness.results.compare_stats import Verdict


def one_case(
    tmp_path: Path, base_samples: list[float], cur_samples: list[float], **kwargs: float
) -> cmp.CaseComparison:
    base = write_run(tmp_path / "base", [row(case(), base_samples)])
    cur = write_run(tmp_path / "cur", [row(case(), cur_samples)])
    result = cmp.compare(base, cur, **kwargs)
    assert len(result.cases) == 1
    return result.cases[0]


def test_identical_runs_are_same_and_pass(tmp_path: Path) -> None:
    rows = [row(case(v, b), noise(1.0 + b, seed=b)) for v in ("eager", "other") for b in (1, 8)]
    run = write_run(tmp_path / "run", rows)
    result = cmp.compare(run, run)
    assert [c.verdict for c in result.cases] == [Verdict.SAME] * 4
    assert all(c.ratio == 1.0 for c in result.cases)
    assert not result.failed
    assert result.env_differences == ()


def test_thirty_percent_slower_is_a_regression(tmp_path: Path) -> None:
    c = one_case(tmp_path, noise(1.0, seed=1), noise(1.3, seed=2))
    assert c.verdict is Verdict.SLOWER and c.regression
    assert c.ratio == pytest.approx(1.3, rel=0.02)
    assert c.p_value is not None and c.p_value < 1e-6
    assert c.method == "mann-whitney"


def test_thirty_percent_faster_is_faster_not_a_regression(tmp_path: Path) -> None:
    c = one_case(tmp_path, noise(1.3, seed=1), noise(1.0, seed=2))
    assert c.verdict is Verdict.FASTER and not c.regression


def test_significant_but_small_change_is_same(tmp_path: Path) -> None:
    """2% slower with tight samples is real but under the 5% threshold: not worth failing a build."""
    c = one_case(tmp_path, noise(1.0, rel=0.001, seed=1), noise(1.02, rel=0.001, seed=2))
    assert c.p_value is not None and c.p_value < 1e-6
    assert c.verdict is Verdict.SAME and not c.regression


def test_threshold_is_configurable(tmp_path: Path) -> None:
    c = one_case(tmp_path, noise(1.0, rel=0.001, seed=1), noise(1.02, rel=0.001, seed=2), threshold=0.01)
    assert c.verdict is Verdict.SLOWER


def test_large_change_without_significance_is_ambiguous(tmp_path: Path) -> None:
    """Samples that overlap heavily: medians 10% apart, but the test cannot tell them apart."""
    base = [1.0, 3.0, 0.5, 2.0, 1.0, 2.5, 0.7, 1.5]
    cur = [v * 1.1 for v in base[::-1]]
    c = one_case(tmp_path, base, cur)
    assert c.ratio == pytest.approx(1.1)
    assert c.p_value is not None and c.p_value > 0.01
    assert c.verdict is Verdict.AMBIGUOUS and not c.regression


def test_too_few_samples_is_ambiguous_even_when_far_apart(tmp_path: Path) -> None:
    """Three samples a side can never give p < 0.01 (the smallest exact p is 0.1)."""
    c = one_case(tmp_path, [1.0, 1.01, 0.99], [2.0, 2.01, 1.99])
    assert compare_stats.min_attainable_p(3, 3) == pytest.approx(0.1)
    assert c.verdict is Verdict.AMBIGUOUS and not c.regression
    assert c.note == "few samples"


def test_min_attainable_p_handles_thousands_of_samples() -> None:
    assert compare_stats.min_attainable_p(5, 5) == pytest.approx(2 / 252)
    assert compare_stats.min_attainable_p(2000, 2000) == 0.0
    assert compare_stats.min_attainable_p(0, 10) == 1.0


def test_alpha_is_configurable(tmp_path: Path) -> None:
    """Five samples a side: p = 2/252 ≈ 0.008 at best, significant at 0.01, not at 0.001."""
    base, cur = [1.0, 1.01, 0.99, 1.02, 0.98], [2.0, 2.01, 1.99, 2.02, 1.98]
    assert one_case(tmp_path / "a", base, cur).verdict is Verdict.SLOWER
    assert one_case(tmp_path / "b", base, cur, alpha=0.001).verdict is Verdict.AMBIGUOUS


def test_faster_threshold_is_symmetric_on_a_log_scale() -> None:
    assert compare_stats.judge(1.06, 1e-9, True, 0.05, 0.01) is Verdict.SLOWER
    assert compare_stats.judge(1.04, 1e-9, True, 0.05, 0.01) is Verdict.SAME
    assert compare_stats.judge(1 / 1.06, 1e-9, True, 0.05, 0.01) is Verdict.FASTER
    assert compare_stats.judge(1 / 1.04, 1e-9, True, 0.05, 0.01) is Verdict.SAME


def test_change_within_the_runs_own_spread_is_ambiguous_however_significant(tmp_path: Path) -> None:
    """Relative IQR about 13%: an 8% shift over 2000 samples is 'significant' but no larger than the
    noise that moves whole runs on a busy machine; a 30% shift still stands out."""
    base = noise(1.0, n=2000, rel=0.1, seed=1)
    within = one_case(tmp_path / "a", base, noise(1.08, n=2000, rel=0.1, seed=2))
    assert within.p_value is not None and within.p_value < 1e-10
    assert within.noise == pytest.approx(0.135, abs=0.01)
    assert within.verdict is Verdict.AMBIGUOUS and within.note == "within noise; noisy"
    beyond = one_case(tmp_path / "b", base, noise(1.3, n=2000, rel=0.1, seed=3))
    assert beyond.verdict is Verdict.SLOWER


def test_noise_gate_in_judge() -> None:
    assert compare_stats.judge(1.08, 1e-9, True, 0.05, 0.01, noise=0.10) is Verdict.AMBIGUOUS
    assert compare_stats.judge(1.08, 1e-9, True, 0.05, 0.01, noise=0.05) is Verdict.SLOWER
    assert compare_stats.judge(1 / 1.08, 1e-9, True, 0.05, 0.01, noise=0.10) is Verdict.AMBIGUOUS
    assert compare_stats.judge(1.03, 1e-9, True, 0.05, 0.01, noise=0.10) is Verdict.SAME


def test_regression_is_named_among_many_cases(tmp_path: Path) -> None:
    keys = [case(v, b) for v in ("eager", "fast") for b in (1, 8)]
    base = write_run(tmp_path / "base", [row(k, noise(1.0, seed=i)) for i, k in enumerate(keys)])
    slow = {("fast", 8)}
    cur_rows = [row(k, noise(1.3 if (k["variant"], k["batch"]) in slow else 1.0, seed=10 + i))
                for i, k in enumerate(keys)]  # fmt: skip
    cur = write_run(tmp_path / "cur", cur_rows)
    result = cmp.compare(base, cur)
    assert result.failed
    assert [(r.fields["variant"], r.fields["batch"]) for r in result.regressions] == [("fast", 8)]
    assert result.cases[0].verdict is Verdict.SLOWER  # worst first
    md = compare_render.to_markdown(result)
    assert "❌" in md
    assert [line for line in md.splitlines() if "SLOWER" in line][0].startswith("| fast      | 8×32×16×16 | SLOWER")
    assert "1 regression" in compare_render.headline(result)


def test_one_sided_cases_are_listed(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case("eager"), noise(1.0)), row(case("gone"), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case("eager"), noise(1.0, seed=3)), row(case("new"), noise(1.0))])
    result = cmp.compare(base, cur)
    assert [dict(k)["variant"] for k in result.only_baseline] == ["gone"]
    assert [dict(k)["variant"] for k in result.only_current] == ["new"]
    md = compare_render.to_markdown(result)
    assert "1 case(s) only in the baseline" in md and "gone 8×32×16×16" in md
    assert "1 case(s) only in the current run" in md and "new 8×32×16×16" in md


def test_a_case_that_turns_wrong_fails_the_comparison(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case("eager"), noise(1.0)), row(case("x"), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case("eager"), noise(1.0, seed=4)),
                                       row(case("x"), status="mismatch", reason="max rel err 0.3")])  # fmt: skip
    result = cmp.compare(base, cur)
    assert not result.regressions
    assert [s.label for s in result.broken] == ["x 8×32×16×16 cpu float32 forward r2 add"]
    assert result.failed
    assert "max rel err 0.3" in compare_render.to_markdown(result)


@pytest.mark.parametrize(("status", "fails"), [("mismatch", True), ("error", True), ("skipped", False)])
def test_a_new_case_that_is_broken_fails_the_comparison(tmp_path: Path, status: str, fails: bool) -> None:
    """A pull request that adds a wrong variant to the sweep: the baseline never had its case, and it
    must fail all the same; a new case merely skipped is only listed."""
    base = write_run(tmp_path / "base", [row(case("eager"), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case("eager"), noise(1.0, seed=4)),
                                       row(case("wrong"), status=status, reason="error 0.01 > 1e-05")])  # fmt: skip
    result = cmp.compare(base, cur)
    assert result.failed is fails
    if fails:
        (change,) = result.broken
        assert (change.baseline_status, change.current_status) == ("absent", status)
        assert "1 case(s) broken" in compare_render.headline(result)
        assert "error 0.01 > 1e-05" in compare_render.to_markdown(result)
        assert not result.only_current
    else:
        assert [dict(k)["variant"] for k in result.only_current] == ["wrong"]


def test_a_new_case_out_of_memory_is_listed_but_fails_nothing_as_in_run(tmp_path: Path) -> None:
    """``run`` exits 0 on an ``oom`` (the device's limit at that size); the gate agrees. A case that
    fitted before and is out of memory now is a regression all the same."""
    base = write_run(tmp_path / "base", [row(case("eager"), noise(1.0)), row(case("x"), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case("eager"), noise(1.0, seed=4)), row(case("x"), status="oom"),
                                       row(case("big"), status="oom", reason="CUDA out of memory")])  # fmt: skip
    result = cmp.compare(base, cur)
    assert [(s.label.split()[0], s.baseline_status, s.broken) for s in result.status_changes] == [
        ("x", "ok", True), ("big", "absent", False)]  # fmt: skip
    assert [s.label.split()[0] for s in result.broken] == ["x"]
    assert "CUDA out of memory" in compare_render.to_markdown(result)


def test_a_case_broken_on_both_sides_is_listed_but_no_regression(tmp_path: Path) -> None:
    """It was left out altogether: "OK: no regression", and the wrong variant never named."""
    base = write_run(tmp_path / "base", [row(case("eager"), noise(1.0)),
                                         row(case("wrong"), status="mismatch", reason="error 0.3 > 1e-05")])
    cur = write_run(tmp_path / "cur", [row(case("eager"), noise(1.0, seed=4)),
                                       row(case("wrong"), status="mismatch", reason="error 0.2 > 1e-05")])
    result = cmp.compare(base, cur)
    (change,) = result.status_changes
    assert (change.baseline_status, change.current_status, change.reason) == ("mismatch", "mismatch",
                                                                              "error 0.2 > 1e-05")
    assert not result.failed and not change.broken
    md = compare_render.to_markdown(result)
    assert "### Cases not timed on both sides" in md and "error 0.2 > 1e-05" in md


def test_a_comparison_whose_every_case_is_ambiguous_judged_nothing(tmp_path: Path) -> None:
    """Both runs' cases disturbed (a busy CI runner): every verdict AMBIGUOUS, a 2× slowdown among them,
    which must never read "OK: no regression"."""
    base = write_run(tmp_path / "base", [row(case(v), noise(1.0, seed=i)) for i, v in enumerate("ab")])
    cur = write_run(tmp_path / "cur", [row(case(v), noise(2.0, seed=9 + i)) | {"disturbed": True}
                                       for i, v in enumerate("ab")])  # fmt: skip
    result = cmp.compare(base, cur)
    assert {c.verdict for c in result.cases} == {Verdict.AMBIGUOUS} and not result.failed
    assert result.nothing_judged == ("nothing judged: all 2 case(s) timed on both sides are AMBIGUOUS, 2 of them "
                                     "disturbed (the CPU was busy); measure again on a quiet machine")
    assert compare_render.headline(result).startswith("NOT COMPARED: nothing judged")
    assert "✅" not in compare_render.to_markdown(result)
    mixed = write_run(tmp_path / "mixed", [row(case("a"), noise(1.0, seed=5)),
                                           row(case("b"), noise(2.0, seed=6)) | {"disturbed": True}])  # fmt: skip
    assert cmp.compare(base, mixed).nothing_judged is None  # one case judged: the comparison stands


@pytest.mark.parametrize(("factor", "warned"), [(0.53, "faster"), (1.0, None), (1.06, None), (1.3, "slower")])
def test_a_whole_run_that_moved_is_warned_of(tmp_path: Path, factor: float, warned: str | None) -> None:
    """Every case 1/0.53 = 1.9× faster than its baseline, as against a baseline made on a busier machine:
    a 2× regression of one variant would read SAME. A move within twice the threshold is no warning."""
    variants = "abcdef"
    base = write_run(tmp_path / "base", [row(case(v), noise(1.0, seed=i)) for i, v in enumerate(variants)])
    cur = write_run(tmp_path / "cur", [row(case(v), noise(factor, seed=20 + i)) for i, v in enumerate(variants)])
    result = cmp.compare(base, cur)
    if warned is None:
        assert result.shift is None
        return
    assert result.shift is not None and f"the whole run is {warned} than the baseline" in result.shift
    assert f"{factor:.2f}× over 6 cases" in result.shift
    assert result.shift.endswith("or judge each case over a variant of its own run (--relative-to VARIANT)")
    assert result.shift in compare_render.to_markdown(result).replace("\\", "")
    console = Console(record=True, width=300)
    compare_render.render(result, console)
    assert "warning: the whole run is" in console.export_text()
    few = write_run(tmp_path / "few", [row(case(v), noise(factor, seed=40 + i)) for i, v in enumerate("abcd")])
    assert cmp.compare(base, few).shift is None  # four cases: too few to call it the whole run


def test_a_whole_run_that_moved_names_the_machines_copy_bandwidths_when_they_differ(tmp_path: Path) -> None:
    """A new user's unchanged sweep-cpu.toml read 3.97× slower than the committed baseline: the VM copied
    at 9.3 GB/s that day, the baseline's at 41. Bandwidths within the threshold of each other say nothing."""
    variants = "abcdef"
    base = write_run(tmp_path / "base", [row(case(v), noise(1.0, seed=i)) for i, v in enumerate(variants)],
                     CPU_ENV | {"copy_bandwidth_bytes_s": 4.1e10})  # fmt: skip
    slow = [row(case(v), noise(4.0, seed=20 + i)) for i, v in enumerate(variants)]
    result = cmp.compare(base, write_run(tmp_path / "cur", slow, CPU_ENV | {"copy_bandwidth_bytes_s": 9.3e9}))
    assert result.shift is not None
    assert ("This run's machine copied memory at 9.3 GB/s, the baseline's at 41 GB/s (4.41× slower)."
            in result.shift), result.shift
    same = cmp.compare(base, write_run(tmp_path / "same", slow, CPU_ENV | {"copy_bandwidth_bytes_s": 4.0e10}))
    assert same.shift is not None and "copied memory" not in same.shift  # the code, or the load, not the memory
    assert "6 cases. If the code did not change" in same.shift  # nothing said between the sentences
    unknown = cmp.compare(base, write_run(tmp_path / "unknown", slow, CPU_ENV))
    assert unknown.shift is not None and "6 cases. If the code did not change" in unknown.shift


#: A baseline's copy bandwidth that a power of two makes exact: now / base is the factor itself.
BASE_BW = 2.0**35  # 34.4 GB/s


@pytest.mark.parametrize(("now", "said"), [
    (BASE_BW * 1.05, None), (BASE_BW / 1.05, None),  # at the threshold either way: the same machine
    (BASE_BW * 1.5, "This run's machine copied memory at 51.5 GB/s, the baseline's at 34.4 GB/s (1.50× faster)."),
    (BASE_BW * 0.6, "This run's machine copied memory at 20.6 GB/s, the baseline's at 34.4 GB/s (1.67× slower)."),
    (0.5, "This run's machine copied memory at 5e-10 GB/s, the baseline's at 34.4 GB/s (68719476736.00× slower)."),
    (0.0, None), (-1.0, None), (math.inf, None), (math.nan, None),  # not a measurement
])  # fmt: skip
def test_copy_bandwidths_are_named_only_beyond_the_threshold(tmp_path: Path, now: float, said: str | None) -> None:
    variants = "abcdef"
    base = write_run(tmp_path / "base", [row(case(v), noise(1.0, seed=i)) for i, v in enumerate(variants)],
                     CPU_ENV | {"copy_bandwidth_bytes_s": BASE_BW})  # fmt: skip
    slow = [row(case(v), noise(2.0, seed=20 + i)) for i, v in enumerate(variants)]
    result = cmp.compare(base, write_run(tmp_path / "cur", slow, CPU_ENV | {"copy_bandwidth_bytes_s": now}))
    assert result.shift is not None
    assert f"6 cases. {said} If the code" in result.shift if said else "6 cases. If the code" in result.shift


def test_a_reason_with_a_pipe_and_a_tag_keeps_its_cell_in_the_markdown(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case("eager"), noise(1.0)), row(case("x"), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case("eager"), noise(1.0, seed=4)),
                                       row(case("x"), status="error", reason="shape a|b <class 'torch.Tensor'>")])
    md = compare_render.to_markdown(cmp.compare(base, cur))
    header = next(line for line in md.splitlines() if line.startswith("| case"))
    changed = next(line for line in md.splitlines() if line.startswith("| x "))
    assert changed.replace("\\|", "").count("|") == header.count("|")
    assert "shape a\\|b &lt;class 'torch.Tensor'>" in changed


@pytest.mark.parametrize("status", ["mismatch", "error", "oom", "crashed", "timeout"])
def test_every_failing_status_breaks_a_case_that_was_ok(tmp_path: Path, status: str) -> None:
    base = write_run(tmp_path / "base", [row(case("eager"), noise(1.0)), row(case("x"), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case("eager"), noise(1.0, seed=4)),
                                       row(case("x"), status=status, reason="worker died")])  # fmt: skip
    assert cmp.compare(base, cur).failed


def test_a_case_that_now_fits_only_a_halved_batch_is_no_timing_match_and_fails(tmp_path: Path) -> None:
    """--oom-retry keeps the key's batch and records the one measured: a batch-4 latency against a
    batch-8 one would read as a 2× speed-up. It is an oom at the batch asked for, after an ok."""
    base = write_run(tmp_path / "base", [row(case("x", batch_run=8), noise(1.0))])
    halved = dict(row(case("x", batch_run=4), noise(0.5, seed=4)), reason="out of memory at batch 8; ran at batch 4")
    result = cmp.compare(base, write_run(tmp_path / "cur", [halved]))
    assert result.cases == () and result.failed
    change = result.status_changes[0]
    assert (change.baseline_status, change.current_status, change.reason) == (
        "ok", "oom", "out of memory at batch 8; ran at batch 4")
    both = cmp.compare(write_run(tmp_path / "base2", [halved]), write_run(tmp_path / "cur2", [halved]))
    assert len(both.cases) == 1 and not both.status_changes  # the same halved batch on both sides: comparable
    quarter = dict(row(case("x", batch_run=2), noise(0.25, seed=5)), reason="out of memory at batch 8, 4")
    worse = cmp.compare(write_run(tmp_path / "base3", [halved]), write_run(tmp_path / "cur3", [quarter]))
    change = worse.status_changes[0]
    assert (change.baseline_status, change.current_status, change.reason) == (
        "oom", "oom", "ran at batch 4 before, 2 now")
    nothing = row(case("x"), status="oom", reason="out of memory at batch 8, 4, 2, 1")  # no batch fit at all
    for before, now, said in ((nothing, halved, "ran at batch none before, 4 now"),
                              (halved, nothing, "ran at batch 4 before, none now")):
        (change,) = cmp.compare(write_run(tmp_path / "b4", [before]), write_run(tmp_path / "c4", [now])).status_changes
        assert (change.baseline_status, change.current_status, change.reason) == ("oom", "oom", said)


def test_a_newly_skipped_case_is_listed_but_does_not_fail(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case("eager"), noise(1.0)), row(case("x"), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case("eager"), noise(1.0, seed=4)),
                                       row(case("x"), status="skipped", reason="needs CUDA")])  # fmt: skip
    result = cmp.compare(base, cur)
    assert len(result.status_changes) == 1 and not result.broken and not result.failed
    # not a failure, but the headline a CI summary shows says it: "OK" alone hid a variant gone missing
    assert compare_render.headline(result).endswith("; 1 timed before, not now)")


def test_different_devices_is_an_error(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case(), noise(1.0))])
    cuda_env = CPU_ENV | {"device": "cuda", "gpu_name": "NVIDIA H100"}
    cur = write_run(tmp_path / "cur", [row(case(device="cuda"), noise(1.0))], env=cuda_env)
    with pytest.raises(CompareError, match="different devices: baseline ran on cpu, current on cuda"):
        cmp.compare(base, cur)


def test_no_case_in_common_is_an_error(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case(batch=1), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case(batch=2), noise(1.0))])
    with pytest.raises(CompareError, match="no case in common"):
        cmp.compare(base, cur)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file or folder"),
        ("", "holds no results"),
        ('{"a": 1}\n', "not a results file"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, content: str | None, message: str) -> None:
    good = write_run(tmp_path / "good", [row(case(), noise(1.0))])
    bad = tmp_path / "bad.jsonl"
    if content is not None:
        bad.write_text(content)
    with pytest.raises(CompareError, match=message) as info:
        cmp.compare(good, bad)
    assert "\n" not in str(info.value)


def test_a_folder_without_results_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match="no results.jsonl or results.csv"):
        cmp.load_run(tmp_path / "empty")


def test_a_cut_off_last_line_is_skipped_with_a_note(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [row(case(), noise(1.0))])
    with (run / "results.jsonl").open("a") as f:
        f.write('{"variant": "eag')
    loaded = cmp.load_run(run)
    assert len(loaded.records) == 1
    assert any("not a whole JSON row" in n for n in loaded.notes)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [("torch", "2.99.0", "torch version"), ("hostname", "other-host", "host"), ("cpu_model", "Other", "CPU model")],
)
def test_environment_differences_warn_and_strict_env_errors(tmp_path: Path, field: str, value: str,
                                                           words: str) -> None:  # fmt: skip
    base = write_run(tmp_path / "base", [row(case(), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.0, seed=5))], env=CPU_ENV | {field: value})
    result = cmp.compare(base, cur)
    assert len(result.env_differences) == 1 and result.env_differences[0].startswith(f"{words} differs")
    assert "[!WARNING]" in compare_render.to_markdown(result)
    with pytest.raises(CompareError, match="environments differ"):
        cmp.compare(base, cur, strict_env=True)


@pytest.mark.parametrize("env_text", [None, "{not json"])
def test_a_baseline_without_a_readable_env_json_is_unchecked_not_called_different(
    tmp_path: Path, capsys: pytest.CaptureFixture, env_text: str | None
) -> None:
    """Its settings are unknown: no line may claim the baseline ran with one process (a fact's default)
    and tell the user to match it; one note says the environment was not checked."""
    from harness.cli import main

    base = write_run(tmp_path / "base", [row(case(), noise(1.0))])
    if env_text is None:
        (base / "env.json").unlink()
    else:
        (base / "env.json").write_text(env_text)
    config = {"config": {"processes": 5, "threads": 1}}
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.0, seed=5))], env=CPU_ENV | config)
    result = cmp.compare(base, cur, strict_env=True)  # nothing known to differ: strict passes
    assert result.env_differences == ()
    assert any("environment" in n and "not" in n and "checked" in n for n in result.notes)
    assert main(["compare", str(base), str(cur)]) == 0
    out = capsys.readouterr().out
    assert "rerun with" not in out and "differ" not in out
    # a real run's rows record their threads: the lost env.json's other facts, read "unknown" against
    # the known side's, had the steady allocator "differ" and every case left not judged (exit 2)
    threaded = write_run(tmp_path / "threaded", [row(case(), noise(1.0)) | {"threads": 2}])
    (threaded / "env.json").unlink()
    known = write_run(tmp_path / "known", [row(case(), noise(1.0, seed=5)) | {"threads": 2}],
                      env=CPU_ENV | {"steady_malloc": True, "torch": "2.13.0+cpu"})  # fmt: skip
    for pair in ((threaded, known), (known, threaded)):
        result = cmp.compare(*pair)
        assert result.env_differences == () and result.unlike_settings == () and not result.failed
        assert main(["compare", *map(str, pair)]) == 0
    capsys.readouterr()
    other = write_run(tmp_path / "other", [row(case(), noise(1.0, seed=6))], env=CPU_ENV | {"threads": 1})
    assert cmp.compare(threaded, other).unlike_settings == (
        "torch threads differ: baseline 2, this run 1; rerun with --threads 2",)  # what the rows say still counts


def test_a_name_run_from_other_code_is_an_environment_difference(tmp_path: Path) -> None:
    """A plugin that replaced eager in one run: every speedup there is over the plugin's code."""
    ours = {"eager": "built-in", "mine": "plugin 'p' (p)"}
    base = write_run(tmp_path / "base", [row(case(), noise(1.0))], env=CPU_ENV | {"variant_sources": ours})
    other = ours | {"eager": "plugin 'fast' (fast_eager)", "new": "built-in"}
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.0, seed=5))], env=CPU_ENV | {"variant_sources": other})
    (line,) = cmp.compare(base, cur).env_differences
    assert line.startswith("variants' code differs: baseline {'eager': 'built-in'}, this run {'eager': \"plugin "
                           "'fast' (fast_eager)\"}; run each name from the same code")
    same_names = write_run(tmp_path / "more", [row(case(), noise(1.0, seed=6))],
                           env=CPU_ENV | {"variant_sources": ours | {"new": "built-in"}})  # fmt: skip
    older = write_run(tmp_path / "older", [row(case(), noise(1.0, seed=7))])  # recorded since 2026-11-28
    assert cmp.compare(base, same_names).env_differences == ()  # a name only one run ran: nothing to compare
    assert cmp.compare(base, older).env_differences == ()


def test_gpu_model_difference_is_reported_on_cuda(tmp_path: Path) -> None:
    env = CPU_ENV | {"device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3"}
    base = write_run(tmp_path / "base", [row(case(device="cuda"), noise(1.0))], env=env)
    cur = write_run(tmp_path / "cur", [row(case(device="cuda"), noise(1.0, seed=6))],
                    env=env | {"gpu_name": "NVIDIA A100", "cpu_model": "whatever"})  # fmt: skip
    result = cmp.compare(base, cur)
    assert result.env_differences == ("GPU model differs: baseline NVIDIA H100 80GB HBM3, this run NVIDIA A100; "
                                      "timings from another machine are not comparable: compare runs from one "
                                      "machine, or save a baseline on this one (run --save-baseline)",)


def test_csv_keys_match_jsonl_keys_and_use_ci_overlap(tmp_path: Path) -> None:
    """A .csv has no samples: cases still match (8 == 8.0, "False" == False) and the CIs decide."""
    base = write_run(tmp_path / "base", [row(case(), noise(1.0, seed=1)), row(case("b"), noise(1.0, seed=2))])
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.3, seed=3)), row(case("b"), noise(1.0, seed=4))])
    result = cmp.compare(base / "results.csv", cur)
    by_variant = {c.fields["variant"]: c for c in result.cases}
    assert by_variant["eager"].method == "ci-overlap" and by_variant["eager"].verdict is Verdict.SLOWER
    assert by_variant["b"].verdict is Verdict.SAME
    assert compare_stats.CI_OVERLAP_P == pytest.approx(0.0056, abs=1e-4)


def test_csv_without_usable_intervals_is_ambiguous(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case(), noise(1.0, seed=1))])
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.3, seed=3))])
    c = cmp.compare(base / "results.csv", cur / "results.csv", alpha=0.001).cases[0]
    assert c.verdict is Verdict.AMBIGUOUS and c.note == "no raw samples"


def test_repeated_case_keeps_the_last_row(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [row(case(), noise(5.0)), row(case(), noise(1.0))])
    other = write_run(tmp_path / "other", [row(case(), noise(1.0, seed=9))])
    result = cmp.compare(run, other)
    assert result.cases[0].baseline_ms == pytest.approx(1.0, rel=0.02)
    assert [n for n in result.notes if "more than once" in n] == [
        f"{run}: 1 case(s) appear more than once; the last row of each is used"]
    flipped = cmp.compare(other, run)  # repeated in the current run: said of it
    assert [n for n in flipped.notes if "more than once" in n] == [
        f"{run}: 1 case(s) appear more than once; the last row of each is used"]


def test_older_file_without_bias_column_still_matches(tmp_path: Path) -> None:
    old = case()
    del old["bias"]
    base = write_run(tmp_path / "base", [row(old, noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.0, seed=2))])
    result = cmp.compare(base, cur)
    assert len(result.cases) == 1
    assert any("bias on one side only" in n for n in result.notes)


def test_rich_rendering_puts_the_environment_warning_first(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case(), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.3, seed=7))], env=CPU_ENV | {"hostname": "elsewhere"})
    console = Console(record=True, width=200, color_system=None)
    compare_render.render(cmp.compare(base, cur), console)
    text = console.export_text()
    assert text.index("WARNING") < text.index("SLOWER") < text.index("FAIL: 1 regression")


def test_markdown_puts_same_cases_in_a_folded_section(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [row(case(), noise(1.0))])
    md = compare_render.to_markdown(cmp.compare(run, run))
    assert md.startswith("## ✅ Benchmark comparison")
    assert "<details><summary>1 case(s) within ±5% (SAME)</summary>" in md
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table_lines) == 3  # header, rule, one case


def test_narrow_terminal_drops_optional_columns_not_the_verdict(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case("a_rather_long_variant_name"), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case("a_rather_long_variant_name"), noise(1.3, seed=7))])
    result = cmp.compare(base, cur)
    narrow = [c.header for c in compare_render.rich_table(result, width=80).columns]
    assert "verdict" in narrow and "change" in narrow and "n" not in narrow
    plain = write_run(tmp_path / "plain", [row(case("eager_factored"), noise(1.0))])
    disturbed = write_run(tmp_path / "dist", [row(case("eager_factored"), noise(40.0, seed=7)) | {"disturbed": True}])
    why = cmp.compare(plain, disturbed)
    assert "disturbed" in why.cases[0].note
    assert "note" in [c.header for c in compare_render.rich_table(why, width=80).columns]  # why it is AMBIGUOUS
    two = [row(case("mean_squeeze", mode=m), noise(1.0)) for m in ("forward", "train")]
    busy = [row(case("mean_squeeze", mode=m), noise(41.0, seed=7)) | {"disturbed": True, "noisy": True}
            for m in ("forward", "train")]  # fmt: skip
    modes = cmp.compare(write_run(tmp_path / "two", two), write_run(tmp_path / "busy", busy))
    table = compare_render.rich_table(modes, width=80)  # a CI log: +3995% AMBIGUOUS said nothing of why
    assert [c.header for c in table.columns][-1] == "note"
    console = Console(width=80, record=True)
    console.print(table)
    assert max(len(line) for line in console.export_text().splitlines()) <= 80
    wide = [c.header for c in compare_render.rich_table(result, width=200).columns]
    assert wide == ["variant", "N×C×H×W", "verdict", "change", "baseline ms", "current ms", "p", "n", "note"]


def test_fields_that_vary_get_a_config_column_and_shared_ones_a_caption(tmp_path: Path) -> None:
    keys = [case(mode=m) for m in ("forward", "train")]
    run = write_run(tmp_path / "run", [row(k, noise(1.0, seed=i)) for i, k in enumerate(keys)])
    result = cmp.compare(run, run)
    table = compare_render.rich_table(result, width=200)
    assert [c.header for c in table.columns][:3] == ["variant", "N×C×H×W", "config"]
    assert table.caption == "All cases: cpu · float32 · r2 · add · no bias"


CUDA_ENV = CPU_ENV | {"device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3"}


def cuda_row(gpu: list[float], host: list[float], wall: list[float]) -> dict:
    out = row(case(device="cuda"), gpu)
    med = lambda x: sorted(x)[len(x) // 2]  # noqa: E731
    return out | {"host_samples_ms": host, "wall_samples_ms": wall, "host_ms": med(host), "wall_ms": med(wall),
                  "bound": "host" if med(host) > med(gpu) else "device"}


def test_a_disturbed_side_gets_no_slower_verdict(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case(), noise(1.0, seed=1))])
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.5, seed=2)) | {"disturbed": True}])
    (c,) = cmp.compare(base, cur).cases
    assert c.verdict is Verdict.AMBIGUOUS and not c.regression
    assert "disturbed" in c.note
    assert any(line.startswith("disturbed:") for line in compare_render._legend([c]))
    clean = write_run(tmp_path / "clean", [row(case(), noise(1.5, seed=2)) | {"disturbed": False}])
    assert cmp.compare(base, clean).cases[0].verdict is Verdict.SLOWER


def test_cuda_compare_judges_gpu_time_by_default_and_host_or_wall_when_asked(tmp_path: Path) -> None:
    """A change that only adds launch overhead: GPU time the same, host and wall time 40% slower."""
    before = cuda_row(noise(0.12, seed=1), noise(0.30, seed=2), noise(0.32, seed=3))
    after = cuda_row(noise(0.12, seed=4), noise(0.42, seed=5), noise(0.44, seed=6))
    base = write_run(tmp_path / "base", [before], env=CUDA_ENV)
    cur = write_run(tmp_path / "cur", [after], env=CUDA_ENV)
    gpu = cmp.compare(base, cur).cases[0]
    assert gpu.verdict is Verdict.SAME
    assert "host-bound (host 0.3" in gpu.note and "→ 0.41" in gpu.note
    for metric in ("host", "wall"):
        c = cmp.compare(base, cur, metric=metric).cases[0]
        assert c.verdict is Verdict.SLOWER and c.ratio == pytest.approx(1.4, rel=0.03), metric
    assert "host time per call" in compare_render.to_markdown(cmp.compare(base, cur, metric="host"))


def test_host_metric_on_cpu_uses_the_call_time_and_old_cuda_files_are_refused(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case(), noise(1.0, seed=1))])
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.3, seed=2))])
    assert cmp.compare(base, cur, metric="wall").cases[0].verdict is Verdict.SLOWER
    old = write_run(tmp_path / "old", [row(case(device="cuda"), noise(1.0))], env=CUDA_ENV)
    with pytest.raises(CompareError, match="no host_ms column"):
        cmp.compare(old, old, metric="host")
    with pytest.raises(CompareError, match="unknown metric"):
        cmp.compare(base, cur, metric="p99")


def pooled(medians: list[float], seed: int) -> dict:
    samples = [v for i, m in enumerate(medians) for v in noise(m, n=20, seed=seed + i)]
    return row(case(), samples) | {"process_medians_ms": medians, "processes": len(medians)}


def test_with_several_processes_a_change_must_show_in_every_process(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [pooled([1.0, 1.02, 1.01], seed=1)])
    slower = write_run(tmp_path / "slower", [pooled([1.3, 1.32, 1.31], seed=10)])
    assert cmp.compare(base, slower).cases[0].verdict is Verdict.SLOWER
    # the same pooled median shift, but one current process is as fast as the baseline's
    mixed = write_run(tmp_path / "mixed", [pooled([1.3, 1.32, 1.0], seed=10)])
    (c,) = cmp.compare(base, mixed).cases
    assert c.verdict is Verdict.AMBIGUOUS and ("processes overlap" in c.note or "within noise" in c.note)


def test_the_process_gate_holds_on_cuda_for_the_gpu_time(tmp_path: Path) -> None:
    """The GPU time's median is judged by every process on CUDA as on the CPU: one process of five as
    fast as the baseline's reads SLOWER without the gate."""
    def on_gpu(medians: list[float], seed: int) -> dict:
        samples = [v for i, m in enumerate(medians) for v in noise(m, n=20, seed=seed + i)]
        return row(case(device="cuda"), samples) | {"process_medians_ms": medians, "processes": len(medians)}

    base = write_run(tmp_path / "base", [on_gpu([1.0, 1.01, 1.0, 1.02, 1.01], seed=1)], env=CUDA_ENV)
    cur = write_run(tmp_path / "cur", [on_gpu([1.3, 1.31, 1.3, 1.32, 1.0], seed=10)], env=CUDA_ENV)
    (c,) = cmp.compare(base, cur).cases
    assert c.verdict is Verdict.AMBIGUOUS and c.noise == pytest.approx(0.32)


def test_a_results_csv_keeps_the_process_medians_and_gets_the_same_verdict(tmp_path: Path) -> None:
    """The CSV dropped them: one process of five as fast as the baseline read SLOWER from results.csv
    (the pooled quartiles hide one process in five) and AMBIGUOUS from results.jsonl of the same runs."""
    base = write_run(tmp_path / "base", [pooled([1.0, 1.01, 1.0, 1.02, 1.01], seed=1)])
    cur = write_run(tmp_path / "cur", [pooled([1.3, 1.31, 1.3, 1.32, 1.0], seed=10)])
    assert json.loads(pd.read_csv(cur / "results.csv")["process_medians_ms"][0]) == [1.3, 1.31, 1.3, 1.32, 1.0]
    from_csv = cmp.compare(base / "results.csv", cur / "results.csv").cases[0]
    from_jsonl = cmp.compare(base, cur).cases[0]
    assert from_csv.method == "ci-overlap" and from_jsonl.method == "mann-whitney"
    assert from_csv.verdict is from_jsonl.verdict is Verdict.AMBIGUOUS
    assert from_csv.noise == pytest.approx(0.32) and "within noise" in from_csv.note


def test_the_spread_between_processes_is_noise(tmp_path: Path) -> None:
    """Processes 40% apart in the baseline: a 29% change, though it shows in every process, is within noise."""
    base = write_run(tmp_path / "base", [pooled([0.7, 0.9, 0.98], seed=1)])
    cur = write_run(tmp_path / "cur", [pooled([1.15, 1.16, 1.17], seed=10)])
    (c,) = cmp.compare(base, cur).cases
    assert c.verdict is Verdict.AMBIGUOUS and "within noise" in c.note
    assert c.noise == pytest.approx(0.98 / 0.7 - 1)


def test_runs_of_other_settings_are_not_judged_but_a_broken_case_still_fails(tmp_path: Path) -> None:
    """One thread against two read +86% on unchanged code: a setting the user can match is no
    regression, and the gate says how to match it (exit 2 through ``nothing_judged``)."""
    base = write_run(tmp_path / "base", [row(case("eager"), noise(1.0)), row(case("x"), noise(1.0))],
                     env=CPU_ENV | {"threads": 1})  # fmt: skip
    slower = write_run(tmp_path / "slow", [row(case("eager"), noise(2.0, seed=3)), row(case("x"), noise(1.0, seed=4))])
    result = cmp.compare(base, slower)
    assert result.regressions and not result.failed
    assert result.unlike_settings == ("torch threads differ: baseline 1, this run 2; rerun with --threads 1",)
    assert result.nothing_judged.startswith("timings not judged: the runs were measured under different settings")
    assert compare_render.headline(result).startswith("NOT COMPARED: timings not judged")
    console = Console(record=True, width=160)
    compare_render.render(result, console)
    shown = console.export_text() + compare_render.to_markdown(result)
    assert "not judged" in shown and "SLOWER" not in shown  # the change is shown, never a verdict on it
    assert "+" in shown and "%" in shown
    assert not cmp.compare(base, slower.parent / "base").unlike_settings
    wrong = write_run(tmp_path / "wrong", [row(case("eager"), noise(1.0, seed=3)),
                                           row(case("x"), status="mismatch", reason="error 0.3")])  # fmt: skip
    broken = cmp.compare(base, wrong)
    assert broken.unlike_settings and broken.failed and broken.nothing_judged is None
    other_host = write_run(tmp_path / "host", [row(case("eager"), noise(2.0, seed=3)), row(case("x"), noise(1.0))],
                           env=CPU_ENV | {"threads": 1, "hostname": "other"})  # fmt: skip
    assert cmp.compare(base, other_host).failed  # a fact no flag sets is advice only, as before


def test_a_pass_that_judged_few_cases_or_lost_some_says_so(tmp_path: Path) -> None:
    """Ten of eleven cases AMBIGUOUS passed as "OK" without a word, and so did a run that lost a case."""
    base = write_run(tmp_path / "base", [row(case(v), noise(1.0, seed=i)) for i, v in enumerate("abcd")])
    shaky = [row(case(v), noise(1.0, seed=9 + i)) | {"disturbed": v != "a"} for i, v in enumerate("abc")]
    result = cmp.compare(base, write_run(tmp_path / "cur", shaky))
    assert not result.failed and result.nothing_judged is None
    assert result.warnings == (
        "2 of 3 case(s) timed on both sides are AMBIGUOUS: the gate judged few of them; measure again on a quiet "
        "machine",
        "1 case(s) the baseline timed are missing from this run, so not judged: if the sweep did not change on "
        "purpose, it lost them")  # fmt: skip
    md = compare_render.to_markdown(result)
    assert md.count("> [!WARNING]") == 2 and "missing from this run" in md
    half = [row(case(v), noise(1.0, seed=9 + i)) | {"disturbed": v == "a"} for i, v in enumerate("abcd")]
    assert cmp.compare(base, write_run(tmp_path / "half", half)).warnings == ()  # half is not most


def test_a_run_compared_with_itself_says_so(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case("eager"), noise(1.0))])
    assert any("are the same file" in n for n in cmp.compare(base, base).notes)
    other = write_run(tmp_path / "other", [row(case("eager"), noise(1.0))])
    assert not any("same file" in n for n in cmp.compare(base, other).notes)


def test_a_cpu_failure_names_how_the_ci_job_judges(tmp_path: Path) -> None:
    """A new user's unchanged sweep-cpu.toml run failed at 5% (+5.0%, +5.4%), and on 2026-11-29 every case
    at any threshold (the VM 2.1-4.9x slower than its baseline's day): the CI job judges CPU runs over
    eager of each run at 25%, and a failing CPU comparison says so."""
    base = write_run(tmp_path / "base", [row(case(v), noise(1.0, seed=i)) for i, v in enumerate("abc")])
    cur = write_run(tmp_path / "cur", [row(case("a"), noise(1.1, seed=7)), row(case("b"), noise(1.2, seed=8)),
                                       row(case("c"), noise(1.6, seed=9))])  # fmt: skip
    result = cmp.compare(base, cur)
    assert len(result.regressions) == 3 and result.device == "cpu"
    (warning,) = result.warnings
    assert warning == ("whole CPU runs drift by more than 5% on a shared machine, by 2-5× between days (README, "
                       "Noise): the CI job judges CPU runs with --relative-to eager --threshold 0.25, each case "
                       "over eager of its own run")
    assert cmp.compare(base, cur, threshold=0.75).warnings == ()  # nothing failed: no hint
    over = cmp.compare(base, cur, relative_to="a")  # b +9%, c +45% over a
    assert len(over.regressions) == 2
    assert over.warnings == ("CPU cases drift by more than 5% even over a (README, Noise): the CI job judges them "
                             "with --relative-to eager --threshold 0.25, at which 1 of these 2 regression(s) would "
                             "still fail",)
    assert cmp.compare(base, cur, relative_to="a", threshold=0.25).warnings == ()  # failing at the CI's own
    gpu = {**CPU_ENV, "device": "cuda", "gpu_name": "NVIDIA H100"}
    on_gpu = cmp.compare(write_run(tmp_path / "gb", [row(case("a", device="cuda"), noise(1.0))], env=gpu),
                         write_run(tmp_path / "gc", [row(case("a", device="cuda"), noise(2.0, seed=3))], env=gpu))
    assert on_gpu.regressions and not on_gpu.warnings


def test_fail_on_missing_fails_a_run_that_lost_or_skips_a_baseline_case(tmp_path: Path) -> None:
    """A sweep that lost a variant passed on the rest with a warning: a gate that must see every case asks."""
    base = write_run(tmp_path / "base", [row(case(v), noise(1.0, seed=i)) for i, v in enumerate("abc")])
    same = [row(case("a"), noise(1.0, seed=5))]
    lost = cmp.compare(base, write_run(tmp_path / "lost", same + [row(case("b"), status="skipped", reason="no")]))
    assert not lost.failed and len(lost.missing) == 2  # "c" absent, "b" skipped now
    strict = cmp.compare(base, lost.current, fail_on_missing=True)
    assert strict.failed and strict.nothing_judged is None
    assert compare_render.headline(strict).startswith("FAIL: 2 baseline case(s) not timed now (")
    whole = cmp.compare(base, write_run(tmp_path / "whole", [row(case(v), noise(1.0, seed=7 + i))
                                                             for i, v in enumerate("abc")]), fail_on_missing=True)
    assert not whole.failed and whole.missing == ()


def test_fail_on_missing_on_the_command_line_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    base = write_run(tmp_path / "base", [row(case(v), noise(1.0, seed=i)) for i, v in enumerate("ab")])
    cur = write_run(tmp_path / "cur", [row(case("a"), noise(1.0, seed=5))])
    assert main(["compare", str(base), str(cur)]) == 0
    assert main(["compare", str(base), str(cur), "--fail-on-missing"]) == 1
    assert "FAIL: 1 baseline case(s) not timed now" in capsys.readouterr().out


def test_threads_are_read_from_the_rows_when_env_json_is_lost(tmp_path: Path) -> None:
    """A user deleted env.json: 1 thread against 2 read FAIL, SLOWER +243%, with only a note."""
    base = write_run(tmp_path / "base", [row(case(), noise(1.0)) | {"threads": 1}], env=CPU_ENV | {"threads": 1})
    cur = write_run(tmp_path / "cur", [row(case(), noise(3.4, seed=2)) | {"threads": 2}])
    (cur / "env.json").unlink()
    result = cmp.compare(base, cur)
    assert not result.failed
    assert result.unlike_settings == ("torch threads differ: baseline 1, this run 2; rerun with --threads 1",)
    same = write_run(tmp_path / "same", [row(case(), noise(3.4, seed=2)) | {"threads": 1}])
    (same / "env.json").unlink()
    assert cmp.compare(base, same).failed  # the same setting: judged, and a regression
    # env.json, where it says, is the run's setting; the rows stand in only where it is silent
    assert cmp.with_row_settings({"threads": 2}, [{"threads": 1}])["threads"] == 2
    assert cmp.with_row_settings({}, [{"threads": 1}, {"threads": 2}]).get("threads") is None  # rows disagree


def test_a_new_broken_case_without_a_reason_and_a_run_of_unknown_device(tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [row(case("eager"), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case("eager"), noise(1.0, seed=4)), row(case("wrong"), status="error")])
    (change,) = cmp.compare(base, cur).broken
    assert change.reason == ""  # never "None"
    # rows of two device types and no env.json: the baseline's device stands for the comparison
    mixed = write_run(tmp_path / "mixed", [row(case("eager"), noise(1.0, seed=5)),
                                           row(case("other", device="cuda"), noise(1.0, seed=6))])  # fmt: skip
    (mixed / "env.json").unlink()
    assert cmp.compare(base, mixed).device == "cpu"


def test_an_unwritable_markdown_path_is_refused_before_any_verdict(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``--markdown /proc/x.md`` printed the whole table and "OK: no regression", then failed, exit 2."""
    from harness.cli import main

    base = write_run(tmp_path / "base", [row(case(), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.0, seed=2))])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["compare", str(base), str(cur), "--markdown", str(blocker / "x.md")]) == 2
    out, err = capsys.readouterr()
    assert "no regression" not in out and err.startswith(f"error: cannot write {blocker / 'x.md'}")


@pytest.mark.parametrize("config", ["x", [1], None])
def test_an_env_json_whose_config_is_not_an_object_is_compared_without_it(tmp_path: Path, config: object) -> None:
    """``"config": "x"`` ended compare in an AttributeError; merge already refuses it in one line."""
    base = write_run(tmp_path / "base", [row(case(), noise(1.0))])
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.0, seed=5))], env=CPU_ENV | {"config": config})
    result = cmp.compare(base, cur)
    assert not result.failed and [c.verdict for c in result.cases] == [Verdict.SAME]
