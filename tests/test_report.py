"""Reports: speedups over eager from the same run, failures shown, one table per device/dtype/mode."""
from __future__ import annotations

import pandas as pd
from rich.console import Console

from harness.results.report import markdown, print_summary, recommendation_table, with_speedup
from harness.results.store import to_frame


def row(variant: str, median: float, status: str = "ok", mode: str = "forward", batch: int = 8,
        device: str = "cpu", **kw) -> dict:
    return {"variant": variant, "device": device, "dtype": "float32", "mode": mode, "batch": batch, "channels": 32,
            "height": 64, "width": 64, "reduction": 2, "fusion": "add", "bias": False, "status": status,
            "reason": None if status == "ok" else "output error 0.3 > tolerance 1e-05",
            "median_ms": median if status == "ok" else None, "iqr_ms": 0.1 if status == "ok" else None,
            "noisy": False, **kw}


FRAME = to_frame([
    row("eager", 2.0), row("fast", 0.5), row("wrong", None, status="mismatch"),
    row("eager", 4.0, batch=16), row("fast", 2.0, batch=16),
    row("eager", 10.0, mode="train"), row("fast", 5.0, mode="train"),
])


def test_speedup_is_eager_over_variant_for_the_same_configuration() -> None:
    s = with_speedup(FRAME).set_index(["variant", "mode", "batch"])["speedup_vs_eager"]
    assert s[("fast", "forward", 8)] == 4.0
    assert s[("fast", "forward", 16)] == 2.0
    assert s[("fast", "train", 8)] == 2.0
    assert s[("eager", "forward", 8)] == 1.0
    assert pd.isna(s[("wrong", "forward", 8)])


def test_markdown_has_a_table_per_mode_and_lists_failures() -> None:
    md = markdown(FRAME, {"device": "cpu", "cpu_model": "Test CPU", "torch": "2.x"})
    assert "## cpu · float32 · forward" in md and "## cpu · float32 · train" in md
    assert "| fast      | 0.500 (IQR 0.1)" in md  # no CI and no raw samples: the IQR's width, never "±"
    assert "±" not in md
    assert "MISMATCH" in md and "output error 0.3" in md
    assert "4.00" in md  # the speedup table
    assert "Test CPU" in md
    assert "errors.log" not in md  # a mismatch has no traceback
    raised = markdown(to_frame([row("eager", 2.0), row("broken", None, status="error")]))
    assert "The whole traceback of each `error` case is in `errors.log` beside this report" in raised
    assert "workers.log" not in raised
    hung = markdown(to_frame([row("eager", 2.0), row("slow", None, status="timeout")]))
    assert "errors.log" not in hung and "is in `workers.log` beside this report" in hung  # no traceback there


def test_rich_summary_marks_mismatches() -> None:
    console = Console(record=True, width=200)
    print_summary(FRAME, console)
    text = console.export_text()
    assert "MISMATCH wrong" in text
    assert "4.00×" in text


def test_a_reason_with_brackets_is_printed_as_written() -> None:
    """rich read ``[/tmp/x.so]`` in an error's text as a closing tag and ended the run with a
    traceback after every case had finished; ``tensor[dtype=f]`` vanished from the line."""
    reason = "RuntimeError: boom at [/tmp/x.so] in tensor[dtype=f]"
    frame = to_frame([row("eager", 2.0), row("bad", None, status="error") | {"reason": reason}])
    console = Console(record=True, width=200)
    print_summary(frame, console)
    assert reason in console.export_text()


def test_a_cuda_row_without_a_wall_time_still_reports() -> None:
    """A hand-made or older CUDA row with a host time and no wall time ended ``report`` in a TypeError."""
    frame = to_frame([cuda_row("eager", 2.0, 0.5) | {"wall_ms": None}, cuda_row("fast", 1.0, 0.5)])
    md = markdown(frame, {"device": "cuda"})
    assert "0.5 / ?" in md and "0.5 / 1.01" in md


def test_failures_name_the_fusion_the_sweep_varied() -> None:
    """Two failed cases that differ only by fusion read as one row twice."""
    frame = to_frame([row("eager", 2.0), row("eager", 2.0, fusion="concat"),
                      row("bad", None, status="error"), row("bad", None, status="error", fusion="concat")])
    console = Console(record=True, width=200)
    print_summary(frame, console)
    lines = [line for line in console.export_text().splitlines() if line.startswith("ERROR bad")]
    assert len(lines) == 2 and "add" in lines[0] and "concat" in lines[1], lines
    section = markdown(frame, {"device": "cpu"}).split("## Cases not timed")[1]
    rows = [line for line in section.splitlines() if line.startswith("| bad")]
    assert len(rows) == 2 and "add" in rows[0] and "concat" in rows[1], rows


def cuda_row(variant: str, median: float, host: float, **kw) -> dict:
    return row(variant, median, device="cuda", host_ms=host, wall_ms=max(median, host) + 0.01,
               bound="host" if host > median else "device", **kw)


def test_marks_show_noisy_disturbed_and_host_bound_cells_with_a_legend() -> None:
    frame = to_frame([
        row("eager", 2.0, disturbed=True, wait_share=0.4), row("fast", 0.5, noisy=True),
        cuda_row("eager", 0.335, 0.288), cuda_row("fused", 0.118, 0.299),
    ])
    md = markdown(frame)
    assert "2.00 (IQR 0.1) !" in md and "0.500 (IQR 0.1) ~" in md
    assert "0.118 (IQR 0.1) (host-bound: host 0.299)" in md
    assert "0.335 (IQR 0.1) (host-bound" not in md  # device-bound: no host mark
    # the speedup carries fast's noise and eager's disturbance, and no figure: a ratio of upper bounds
    assert "| fast      | — ~ !" in md and "4.00" not in md
    assert "| fused     | 2.84   " in md  # neither side flagged: no mark
    assert "- `!` disturbed" in md and "- `~` noisy" in md and "- `host-bound`" in md
    assert "0.299 / 0.309" in md  # the CUDA group's host / wall table
    console = Console(record=True, width=200)
    print_summary(frame, console)
    text = console.export_text()
    assert "host-bound: host 0.299" in text and "disturbed: the CPU was starved" in text
    assert "— ! " in text and "4.00×" not in text and "2.84×" in text


def test_no_marks_no_legend() -> None:
    md = markdown(FRAME)
    assert "disturbed" not in md and "host-bound" not in md and "Host time per call" not in md


def timed(variant: str, median: float, low: float, high: float, **kw) -> dict:
    return row(variant, median, ci_low_ms=low, ci_high_ms=high, **kw)


CI_FRAME = to_frame([
    timed("eager", 0.8639, 0.8512, 0.8811), timed("fast", 0.4, 0.38, 0.41), timed("fused", 0.405, 0.40, 0.42),
    row("wrong", 0.01, status="mismatch"),
    timed("eager", 4.0, 3.9, 4.1, batch=16), timed("fast", 2.0, 1.9, 2.1, batch=16),
])


def test_report_starts_with_which_variant_to_run() -> None:
    md = markdown(CI_FRAME, {"device": "cpu", "cpu_model": "Test CPU"})
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[:3] == ["## Which variant to run", "## Variants", "## cpu · float32 · forward"]
    answer = md[md.index("## Which variant to run"):md.index("## Variants")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in answer.splitlines() if line.startswith("|")]
    assert cells[0][:6] == ["device · dtype · mode", "case", "run", "median ms [95% CI]",
                            "speedup over eager [95% CI]", "verdict"]  # fmt: skip
    assert cells[2:] == [
        # 0.8512 / 0.41, 0.8811 / 0.38; fused's 0.40–0.42 overlaps fast's 0.38–0.41
        ["cpu · float32 · forward", "32x64x64 b8", "fast", "0.400 [0.380, 0.410]", "2.16× [2.08, 2.32]",
         "tie: fast, fused (intervals overlap: any of them)"],
        ["cpu · float32 · forward", "32x64x64 b16", "fast", "2.00 [1.90, 2.10]", "2.00× [1.86, 2.16]",
         "clear: next is eager at 4.00 ms"],
    ]  # fmt: skip
    assert "wrong" not in answer  # the fastest row, but a mismatch


def test_cells_are_the_median_with_its_confidence_interval_or_quartiles() -> None:
    md = markdown(CI_FRAME)
    assert "| eager     | 0.864 [0.851, 0.881]" in md and "±" not in md
    few = to_frame([row("eager", 1.0, samples_ms=[0.8, 0.9, 1.0, 1.1, 1.2])])  # too few for a CI
    assert "| eager     | 1.00 (IQR 0.90–1.10)" in markdown(few)
    one = to_frame([row("eager", 1.0, samples_ms=[1.0], n_samples=1, iqr_ms=0.0)])  # --max-samples 1
    assert "| eager     | 1.00 (1 sample)" in markdown(one) and "IQR 0" not in markdown(one)


def test_summary_answers_first_and_ends_pointing_to_the_plots() -> None:
    console = Console(record=True, width=250)
    frame = CI_FRAME.copy()
    frame.attrs["run_dir"] = "results/runs/x"
    print_summary(frame, console)
    lines = [line for line in console.export_text().splitlines() if line.strip()]
    assert "Which variant to run" in lines[0]
    text = "\n".join(lines)
    assert text.index("tie: fused") < text.index("cpu · float32 · forward  (median ms [95% CI]")
    assert "0.864 [0.851, 0.881] 1.00×" in text
    assert lines[-1].endswith(": python -m harness report results/runs/x --plots")
    console = Console(record=True, width=250)
    print_summary(CI_FRAME, console)  # no run folder (harness.run without one)
    assert console.export_text().rstrip().endswith("python -m harness report RUN --plots")


def test_the_answer_fits_an_80_column_terminal_without_cutting_a_name() -> None:
    console = Console(record=True, width=80)
    console.print(recommendation_table(CI_FRAME))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    rows = [line for line in text.splitlines() if "32x64x64 b8" in line]
    assert len(rows) == 1 and "fast" in rows[0] and "2.16×" in rows[0]  # case, winner, speedup on one line


def test_a_halved_batch_is_shown_with_its_batch_but_gets_no_speedup() -> None:
    """--oom-retry's row keeps batch 8 as its key and ran at 4: its latency is shown, marked with the
    batch, and divides into no speedup, in report.md and the terminal alike."""
    frame = to_frame([row("eager", 2.0, batch_run=8), row("half", 0.5, batch_run=4)])
    speedups = with_speedup(frame).set_index("variant")["speedup_vs_eager"]
    assert speedups["eager"] == 1.0 and pd.isna(speedups["half"])
    md = markdown(frame)
    assert "| half      | 0.500 (IQR 0.1) (at batch 4)" in md
    assert "- `batch` measured at a smaller batch" in md
    assert "4.00" not in md
    console = Console(record=True, width=200)
    print_summary(frame, console)
    text = console.export_text()
    assert "0.500 (IQR 0.1) (at batch 4)" in text and "4.00×" not in text


def test_a_zero_median_gives_no_infinite_speedup() -> None:
    """A median of 0 (a coarse timer) read "inf" in the speedup table, and `report --plots` failed on
    an infinite axis."""
    from harness.results import plots

    frame = to_frame([row("eager", 1.0), row("fast", 0.0), row("other", 0.5)])
    s = with_speedup(frame).set_index("variant")["speedup_vs_eager"]
    assert pd.isna(s["fast"]) and s["other"] == 2.0
    assert "inf" not in markdown(frame)
    figure = plots.draw_speedup(frame)
    assert not isinstance(figure, str) and figure.axes[0].get_ylim() == (0, 2.4)


def test_a_repeated_case_shows_its_last_row_everywhere() -> None:
    """A resumed run may hold a case twice: the tables, like the recommendation and compare, use the last."""
    frame = to_frame([row("eager", 2.0), row("fast", 0.5), row("fast", 1.5)])
    md = markdown(frame)
    assert "| fast      | 1.50 (IQR 0.1)" in md and "0.500" not in md
    assert "1.33" in md and "4.00" not in md
    # a case that failed, then ran: not listed as not timed, not counted as failed, its old marks unexplained
    from harness.results.report import failure_line, legend

    resumed = to_frame([row("eager", 2.0), row("fast", None, status="error"), row("fast", 0.5),
                        row("slow", 3.0, disturbed=True), row("slow", 3.0)])  # fmt: skip
    assert "Cases not timed" not in markdown(resumed)
    assert failure_line(resumed) is None and legend(resumed) == []


def test_the_terminal_speedup_carries_the_marks_of_either_side() -> None:
    frame = to_frame([row("eager", 2.0, noisy=True), row("fast", 0.5)])
    console = Console(record=True, width=200)
    print_summary(frame, console)
    text = console.export_text()
    table = text[text.index("×speedup over eager"):]  # the per-variant table, not the answer
    assert "0.500 (IQR 0.1) 4.00× ~" in table  # eager's noise makes fast's speedup doubtful
    assert "2.00 (IQR 0.1) ~ 1.00×" in table  # eager's own mark, once, on its latency


def test_a_network_measured_at_a_halved_batch_gets_no_ratio_against_the_eager_network() -> None:
    from harness.results.networks import table_rows

    net = {"context": "unet", "network": "unet", "form": "eager", "channels": 3, "height": 64, "width": 64}
    rows = to_frame([row("eager", 8.0, batch_run=8, **net), row("fast", 3.0, batch_run=4, **net),
                     row("fused", 6.0, batch_run=8, **net)])  # fmt: skip
    lines = {line["variant"]: line for line in table_rows(rows)}
    assert lines["fused"]["× eager network"] == "1.33" and lines["fused"]["saved vs eager blocks"] == "25.0%"
    assert lines["fast"]["× eager network"] == "" and lines["fast"]["saved vs eager blocks"] == ""
    assert lines["fast"]["median ms [95% CI]"].endswith("(at batch 4)")


def test_disturbed_cases_are_counted_beside_the_answer() -> None:
    frame = to_frame([row("eager", 10.6, disturbed=True), row("fast", 0.8), row("next", 1.0, disturbed=True)])
    md = markdown(frame)
    answer = md[md.index("## Which variant to run"):md.index("## cpu · float32 · forward")]
    assert "**! 2 of 3 timed cases ran while the CPU was busy" in answer
    assert "unsure: eager, next ran while the CPU was busy" in answer or "unsure: next, eager" in answer
    console = Console(record=True, width=250)
    print_summary(frame, console)
    assert "! 2 of 3 timed cases ran while the CPU was busy" in console.export_text()
    assert "--threads 1" not in md  # the rows say no thread count: no advice about it


def test_busy_cases_run_with_several_threads_are_told_to_try_one() -> None:
    """On a shared 2-core VM a default run (2 threads) read 95.7 ms where --threads 1 read 27.5 ms."""
    frame = to_frame([row("eager", 10.6, disturbed=True, threads=2), row("fast", 0.8, threads=2)])
    assert markdown(frame).count("with --threads 1 (these ran 2 threads") == 1
    alone = to_frame([row("eager", 10.6, disturbed=True, threads=1), row("fast", 0.8, threads=1)])
    assert "--threads 1" not in markdown(alone)
    assert "timed cases ran while" not in markdown(FRAME)


def test_a_run_where_nothing_could_run_says_so_and_why() -> None:
    frame = to_frame([row("graphed_x", None, status="skipped", reason="needs a CUDA GPU"),
                      row("triton_x", None, status="skipped", reason="triton is not installed"),
                      row("graphed_y", None, status="skipped", reason="needs a CUDA GPU")])  # fmt: skip
    console = Console(record=True, width=250)
    print_summary(frame, console)
    text = console.export_text()
    assert "no variant could run here: graphed_x (skipped)" in text
    assert "SKIPPED graphed_x, graphed_y: needs a CUDA GPU" in text
    assert "SKIPPED triton_x: triton is not installed" in text
    assert "--plots" not in text  # nothing timed, nothing to draw
    mixed = to_frame([row("eager", None, status="mismatch"), row("graphed_x", None, status="skipped")])
    assert "no variant ran correctly: eager (mismatch)" in markdown(mixed)


def test_a_network_ratio_carries_the_marks_of_either_side() -> None:
    from harness.results.networks import table_rows

    net = {"context": "unet", "network": "unet", "form": "eager", "channels": 3, "height": 64, "width": 64}
    rows = to_frame([row("eager", 545.0, noisy=True, disturbed=True, **net), row("fused", 300.0, **net),
                     row("quiet", 500.0, **net)])  # fmt: skip
    lines = {line["variant"]: line for line in table_rows(rows)}
    assert lines["fused"]["× eager network"] == "1.82 ~ !" and lines["fused"]["saved vs eager blocks"] == "45.0% ~ !"
    assert lines["eager"]["× eager network"] == "1.00 ~ !"


def test_a_case_repeated_after_its_eager_failed_gives_no_stale_speedup_or_count() -> None:
    """The last row of a repeated case stands: eager's earlier ok row serves no ratio once its last
    row is an error or a halved batch, and a case counts once among the disturbed."""
    from harness.results.networks import table_rows
    from harness.results.report import disturbed_count

    for again in (row("eager", None, status="error"), row("eager", 4.0, batch_run=4)):
        frame = to_frame([row("eager", 2.0), row("fast", 0.5), again])
        assert with_speedup(frame)["speedup_vs_eager"].isna().iloc[1:].all()
        assert "| fast      | 4.00" not in markdown(frame)  # the speedup table has no ratio for fast
    busy = to_frame([row("eager", 2.0, disturbed=True), row("fast", 0.5), row("eager", 2.1, disturbed=True)])
    assert disturbed_count(busy).startswith("! 1 of 2 timed cases")
    net = {"context": "unet", "network": "unet", "form": "eager", "channels": 3, "height": 64, "width": 64}
    lines = table_rows(to_frame([row("eager", 8.0, **net), row("fused", 6.0, **net),
                                 row("eager", None, status="error", **net)]))  # fmt: skip
    assert [line["variant"] for line in lines] == ["fused", "eager"]
    assert lines[0]["× eager network"] == "" and lines[1]["median ms [95% CI]"] == "ERROR"


def test_a_reason_with_a_pipe_a_tag_and_a_line_break_stays_in_its_table_cell() -> None:
    """An error's text is the reason: ``a|b`` split the row into more cells, ``<class ...>`` was
    swallowed as an HTML tag, and a traceback's line break ended the table."""
    reason = "RuntimeError: shapes a|b\n<class 'torch.Tensor'>"
    frame = to_frame([row("eager", 2.0), row("bad", None, status="error") | {"reason": reason}])
    section = markdown(frame, {"device": "cpu"}).split("## Cases not timed")[1].splitlines()
    header, line = section[2], next(line for line in section if line.startswith("| bad"))
    assert line.replace("\\|", "").count("|") == header.count("|")
    assert "shapes a\\|b &lt;class 'torch.Tensor'>" in line


def test_a_network_saving_beyond_the_blocks_share_is_called_drift() -> None:
    """The blocks took a tenth of the network's time, yet a run read 40% saved: the rest of the
    network moved between the runs. A saving within their share carries no such mark."""
    from harness.results.networks import BEYOND_BLOCKS, table_rows

    net = {"context": "unet", "network": "unet", "form": "eager", "channels": 3, "height": 64, "width": 64}
    rows = to_frame([row("eager", 58.5, scse_share=0.10, **net), row("drifted", 41.7, scse_share=0.12, **net),
                     row("fused", 54.0, scse_share=0.03, **net), row("costly", 70.0, scse_share=0.11, **net)])
    lines = {line["variant"]: line["saved vs eager blocks"] for line in table_rows(rows)}
    assert lines["drifted"] == "28.7%" + BEYOND_BLOCKS
    assert lines["fused"] == "7.7%"  # within the 10% the eager blocks take
    assert lines["costly"] == "-19.7%" + BEYOND_BLOCKS  # more than its own blocks' 11% could cost
    compiled = to_frame([row("eager", 58.5, **(net | {"context": "c", "form": "compile"})),
                         row("drifted", 41.7, **(net | {"context": "c", "form": "compile"}))])  # no profile
    assert BEYOND_BLOCKS not in str(table_rows(compiled))


def test_only_a_clear_answer_is_green_in_the_terminal() -> None:
    """An answer resting on a disturbed time read "unsure" in green, the colour of a clear one."""
    def run_cell(frame: pd.DataFrame) -> str:
        table = recommendation_table(frame)
        assert table is not None
        return str(table.columns[1]._cells[-1])

    ci = lambda m: {"ci_low_ms": 0.98 * m, "ci_high_ms": 1.02 * m}  # noqa: E731
    assert "[green]" in run_cell(to_frame([row("eager", 2.0, **ci(2.0)), row("fast", 0.5, **ci(0.5))]))
    busy = run_cell(to_frame([row("eager", 2.0, **ci(2.0)), row("fast", 0.5, disturbed=True, **ci(0.5))]))
    assert "unsure" in busy and "[yellow]" in busy and "[green]" not in busy, busy


def test_an_answer_resting_on_too_few_samples_for_an_interval_is_unsure() -> None:
    """Five samples a side, 8% apart: their quartiles do not overlap, and the answer read "clear",
    though such quartiles hold the median in under two draws of three."""
    from harness.results.recommend import recommend

    def sampled(variant: str, centre: float) -> dict:
        samples = [centre * (1 + d) for d in (-0.004, -0.002, 0.0, 0.002, 0.004)]
        return row(variant, centre, samples_ms=samples, iqr_ms=0.004 * centre)

    rec = recommend(to_frame([sampled("eager", 1.0), sampled("fast", 0.92)]))[0]
    assert rec.winner == "fast" and rec.unsure == "too few samples"
    assert rec.verdict().startswith("unsure: fast, eager took too few independent samples"), rec.verdict()
    enough = [row("eager", 1.0, ci_low_ms=0.998, ci_high_ms=1.002), row("fast", 0.92, ci_low_ms=0.918,
                                                                          ci_high_ms=0.922)]  # fmt: skip
    assert recommend(to_frame(enough))[0].verdict().startswith("clear")


def test_a_speedup_far_below_one_keeps_its_digits() -> None:
    """A variant 250 times slower than eager read "0.00 !" in the speedup table."""
    from harness.results.tables import ratio_text

    assert [ratio_text(v) for v in (1.554, 0.1, 0.0996, 0.004, 0.00123, 12.0)] == [
        "1.55", "0.10", "0.1", "0.004", "0.0012", "12.00"]


def test_the_variants_section_says_what_each_is_and_how_often_it_was_the_answer() -> None:
    def ci(variant: str, median: float, **kw) -> dict:  # a ±2% interval: enough samples for a verdict
        return row(variant, median, ci_low_ms=median * 0.98, ci_high_ms=median * 1.02, **kw)

    frame = to_frame([
        ci("eager", 2.0), ci("fast", 0.5), row("wrong", None, status="mismatch"),  # fast: clear
        ci("eager", 4.0, batch=16), ci("fast", 2.0, batch=16), ci("twin", 2.02, batch=16),  # a tie
        ci("eager", 10.0, mode="train"), ci("fast", 5.0, mode="train", disturbed=True),  # unsure
    ])  # fmt: skip
    env = {"variant_descriptions": {"eager": "the seed's module", "fast": "a fused kernel"},
           "variant_sources": {"eager": "built-in", "fast": "plugin 'p' (p.mod)"}}
    md = markdown(frame, env)
    section = md[md.index("## Variants"):md.index("Cells:")]
    assert "answer in 3 configuration(s)" in section
    lines = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert "the seed's module" in lines["eager"] and "never first" in lines["eager"]
    assert "plugin 'p' (p.mod)" in lines["fast"]
    assert "clear winner in 1 of 3; tied for first in 1; first but unsure in 1" in lines["fast"]
    assert "tied for first in 1" in lines["twin"] and "never first" in lines["wrong"]
    assert "## Variants" in markdown(frame)  # an older run's env.json without descriptions: the counts alone
