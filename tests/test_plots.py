"""Figures: drawn from the right numbers, labelled with units, and left out when the data can't make them."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from compare_helpers import case
from matplotlib.figure import Figure

from harness.results import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


def drawn(draw: Any, *args: Any, **kwargs: Any) -> Figure:
    """``draw``'s figure, failing with its reason when it drew none."""
    fig = draw(*args, **kwargs)
    assert isinstance(fig, Figure), fig
    return fig


def frame(with_roofline: bool = True, batches: tuple[int, ...] = (1, 8), eager: bool = True) -> pd.DataFrame:
    """eager at 1 ms per image, ``fast`` twice as fast; two shapes; a mismatch that must be ignored."""
    rows = []
    speed = {"eager": 1.0, "fast": 2.0} if eager else {"fast": 2.0, "other": 1.0}
    for channels, side in ((32, 16), (64, 8)):
        for batch in batches:
            for variant, s in speed.items():
                ms = batch * (channels / 32) / s
                r = case(variant, batch, channels, side, side)
                r |= {"status": "ok", "median_ms": ms, "ci_low_ms": ms * 0.95, "ci_high_ms": ms * 1.05}
                if with_roofline:
                    r |= {"achieved_gbps": 100.0 * s, "arithmetic_intensity": 0.75, "peak_bw_gbps": 400.0}
                rows.append(r)
    rows.append(case("broken") | {"status": "mismatch", "median_ms": None})
    return pd.DataFrame(rows)


def test_a_row_measured_at_a_halved_batch_is_not_plotted_at_the_batch_asked() -> None:
    """--oom-retry's row keeps batch 8 and ran at 4: at batch 8 it would show twice the speed it has."""
    rows = frame()
    rows["batch_run"] = rows["batch"]
    halved = (rows["variant"] == "fast") & (rows["batch"] == 8) & (rows["channels"] == 32)
    rows.loc[halved, "batch_run"] = 4
    assert halved.sum() == 1 and len(plots.valid_rows(rows)) == len(plots.valid_rows(frame())) - 1
    assert len(plots.speedup_table(rows)) == len(plots.speedup_table(frame())) - 1


def test_speedup_table_is_eager_over_variant_on_the_same_configuration() -> None:
    table = plots.speedup_table(frame())
    assert sorted(table["variant"].unique()) == ["fast"]
    assert table["speedup"].tolist() == pytest.approx([2.0] * 4)


def test_speedup_bars_have_the_speedup_heights_and_labels() -> None:
    fig = drawn(plots.draw_speedup, frame())
    assert fig is not None
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4  # one panel per N×C×H×W
    assert {ax.get_title() for ax in axes} == {
        "input 1×32×16×16 (N×C×H×W)", "input 8×32×16×16 (N×C×H×W)",
        "input 1×64×8×8 (N×C×H×W)", "input 8×64×8×8 (N×C×H×W)",
    }  # fmt: skip
    for ax in axes:
        assert [p.get_height() for p in ax.patches] == pytest.approx([2.0])
        assert ax.get_ylabel() == "speedup over eager (×)"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["fast"]
    assert "Speedup over eager" in fig.get_suptitle()


def test_speedup_bars_carry_the_speedups_95_percent_interval() -> None:
    """The bars showed point ratios only: a noisy 9.17× looked as sure as a steady 2×. Each carries
    the interval the answer table gives (stored CIs here: eager's over fast's, 0.95/1.05 each side)."""
    table = plots.speedup_table(frame())
    assert table["speedup_low"].tolist() == pytest.approx([2.0 * 0.95 / 1.05] * 4)
    assert table["speedup_high"].tolist() == pytest.approx([2.0 * 1.05 / 0.95] * 4)
    fig = drawn(plots.draw_speedup, frame())
    assert fig is not None and "whiskers: its 95% interval" in fig.get_suptitle()
    for ax in (a for a in fig.axes if a.get_visible()):
        (whisker,) = [c for c in ax.collections if c.get_segments()]  # errorbar's vertical line
        (segment,) = whisker.get_segments()
        assert [y for _, y in segment] == pytest.approx([2.0 * 0.95 / 1.05, 2.0 * 1.05 / 0.95])
    bare = frame().drop(columns=["ci_low_ms", "ci_high_ms"])  # nothing to make an interval from
    fig = drawn(plots.draw_speedup, bare)
    assert fig is not None and "whiskers" not in fig.get_suptitle()


def test_a_whisker_cut_at_the_top_ends_in_an_arrowhead() -> None:
    """The scale is set by the bars, so a wide interval is cut at the panel's top: a plain cap there
    read as the interval's end (a new user's noisy 1.43× whose interval reached far above)."""
    rows = frame()
    wide = (rows["variant"] == "fast") & (rows["channels"] == 32) & (rows["batch"] == 1)
    rows.loc[wide, "ci_low_ms"] = rows.loc[wide, "median_ms"] * 0.1  # speedup up to 10× the bar
    fig = drawn(plots.draw_speedup, rows)
    heads = {ax.get_title(): [tuple(line.get_xydata()[0]) for line in ax.lines if line.get_marker() == "^"]
             for ax in fig.axes if ax.get_visible()}  # fmt: skip
    top = next(ax for ax in fig.axes if ax.get_visible()).get_ylim()[1]
    assert heads.pop("input 1×32×16×16 (N×C×H×W)") == [(pytest.approx(0.0), pytest.approx(top))]
    assert all(not h for h in heads.values()), heads  # the others end within the panel


def test_latency_panels_are_log_log_with_units() -> None:
    fig = drawn(plots.draw_latency, frame(batches=(1, 8, 32)), env={"cpu_model": "Test CPU", "torch": "2.13.0"})
    assert fig is not None
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["C×H×W = 32×16×16", "C×H×W = 64×8×8"]
    for ax in axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert ax.get_xlabel() == "batch size N (images)"
        assert ax.get_ylabel() == "median latency per call (ms)"
        eager_line = ax.get_lines()[0]
        assert list(eager_line.get_xdata()) == [1, 8, 32]
    assert list(axes[0].get_lines()[0].get_ydata()) == pytest.approx([1.0, 8.0, 32.0])
    assert "Test CPU · torch 2.13.0" in fig.get_suptitle()


def test_roofline_plots_achieved_bandwidth_under_the_ceiling() -> None:
    fig = drawn(plots.draw_roofline, frame())
    assert fig is not None
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("arithmetic intensity (FLOP per byte")
    assert ax.get_ylabel().startswith("achieved bandwidth (GB/s")
    ceilings = [line for line in ax.get_lines() if list(line.get_ydata()) == [400.0, 400.0]]
    assert len(ceilings) == 1
    points = sorted(float(y) for coll in ax.collections for _, y in coll.get_offsets())
    assert points == pytest.approx([100.0] * 4 + [200.0] * 4)


def test_figures_the_data_cannot_make_are_none() -> None:
    assert isinstance(plots.draw_speedup(frame(eager=False)), str)
    assert isinstance(plots.draw_latency(frame(batches=(8,))), str)
    assert isinstance(plots.draw_roofline(frame(with_roofline=False)), str)
    untimed = pd.DataFrame({"variant": ["eager"], "status": ["error"], "median_ms": [None]})
    assert isinstance(plots.draw_speedup(untimed), str)


def test_write_plots_writes_pngs_and_removes_stale_ones(tmp_path: Path) -> None:
    written = plots.write_plots(frame(), tmp_path)
    assert [p.name for p in written.paths] == ["speedup.png", "latency_vs_batch.png", "roofline.png"]
    for path in written.paths:
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
    again = plots.write_plots(frame(with_roofline=False), tmp_path)
    assert [p.name for p in again.paths] == ["speedup.png", "latency_vs_batch.png"]
    assert not (tmp_path / "roofline.png").exists()


def test_markdown_embeds_relative_paths(tmp_path: Path) -> None:
    figs = tmp_path / "figs"
    figs.mkdir()
    written = plots.Written(tuple(figs / plots.FILENAMES[name] for name in ("speedup", "roofline")))
    md = plots.markdown(written, tmp_path)
    assert "![Speedup over eager](figs/speedup.png)" in md
    assert "![Bandwidth roofline](figs/roofline.png)" in md
    assert plots.markdown(plots.Written(), tmp_path) == ""


def test_roofline_ceiling_from_the_runs_measured_copy_bandwidth() -> None:
    rows = frame().drop(columns=["peak_bw_gbps"])
    fig = drawn(plots.draw_roofline, rows, env={"copy_bandwidth_bytes_s": 250e9})
    assert fig is not None
    assert [list(line.get_ydata()) for line in fig.axes[0].get_lines()] == [[250.0, 250.0]]
    bare = drawn(plots.draw_roofline, rows)
    assert bare is not None and bare.axes[0].get_lines() == []


def test_a_figure_not_drawn_says_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="harness.results.plots"):
        written = plots.write_plots(frame(batches=(8,), with_roofline=False), tmp_path)
    assert [p.name for p in written.paths] == ["speedup.png"]
    assert set(written.skipped) == {"latency_vs_batch.png", "roofline.png"}
    assert "single batch size" in written.skipped["latency_vs_batch.png"]
    assert "no bandwidth columns" in written.skipped["roofline.png"]
    assert "latency_vs_batch.png not drawn: every shape was timed at a single batch size" in caplog.text
    md = plots.markdown(written, tmp_path)  # report.md's Figures section says it too
    assert "![Speedup over eager](speedup.png)" in md
    assert "- not drawn: Latency against batch size (`latency_vs_batch.png`): every shape" in md
    assert plots.draw_speedup(frame(eager=False)) == "eager was not timed, so there is nothing to compare with"
    assert plots.draw_latency(frame().assign(status="error")) == "no case was timed (status ok)"


def test_report_md_says_why_when_no_figure_could_be_drawn(tmp_path: Path) -> None:
    """With every figure skipped (no case timed), report.md lost the reasons along with the section."""
    from harness.results.report import write_reports
    from harness.results.store import REPORT_MD, RunFolder, to_frame

    rows = to_frame(frame().assign(status="error").to_dict("records"))
    assert write_reports(RunFolder(tmp_path), rows, {}, plots=True) == ()
    md = (tmp_path / REPORT_MD).read_text()
    assert "## Figures" in md and md.count("- not drawn: ") == len(plots.FILENAMES), md


def test_report_plots_prints_why_a_figure_is_missing(tmp_path: Path) -> None:
    """The CLI shows the reason: write_plots' warning reaches stderr with no logging set up."""
    rows = frame(batches=(8,), with_roofline=False).assign(schema=2)
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows.to_dict("records")) + "\n")
    done = subprocess.run([sys.executable, "-m", "harness", "report", str(tmp_path), "--plots"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "speedup.png" in done.stdout
    assert "latency_vs_batch.png not drawn: every shape was timed at a single batch size" in done.stderr


def test_noisy_and_disturbed_speedups_carry_their_marks() -> None:
    rows = frame()
    rows.loc[(rows["variant"] == "eager") & (rows["channels"] == 32), "noisy"] = True
    rows.loc[(rows["variant"] == "fast") & (rows["batch"] == 8), "disturbed"] = True
    table = plots.speedup_table(rows).set_index(["channels", "batch"])["marks"]
    assert table.to_dict() == {(32, 1): "~", (32, 8): "~!", (64, 1): "", (64, 8): "!"}
    fig = drawn(plots.draw_speedup, rows)
    assert fig is not None
    labels = {ax.get_title(): [t.get_text() for t in ax.texts] for ax in fig.axes if ax.get_visible()}
    # a disturbed side: no bar, as the tables give no figure ("1.62× !" beside "— (CPU busy) !")
    assert labels["input 8×32×16×16 (N×C×H×W)"] == ["", "— !"]
    assert labels["input 8×64×8×8 (N×C×H×W)"] == ["", "— !"]
    assert labels["input 1×64×8×8 (N×C×H×W)"] == ["2.00×"] and labels["input 1×32×16×16 (N×C×H×W)"] == ["2.00× ~"]
    busy = {ax.get_title(): ax.patches[0].get_height() for ax in fig.axes if ax.get_visible()}
    assert np.isnan(busy["input 8×32×16×16 (N×C×H×W)"]) and busy["input 1×64×8×8 (N×C×H×W)"] == 2.0
    hatched = {ax.get_title(): ax.patches[0].get_hatch() for ax in fig.axes if ax.get_visible()}
    assert hatched["input 1×32×16×16 (N×C×H×W)"] == "///" and hatched["input 1×64×8×8 (N×C×H×W)"] is None
    title = " ".join(fig.get_suptitle().split())  # wrapped to the figure's width
    assert "hatched: '~' noisy (IQR > 10% of the median) on either side" in title
    assert "'— !': disturbed (CPU starved) on either side, so no ratio" in title
    clean = drawn(plots.draw_speedup, frame())
    assert clean is not None and "hatched" not in clean.get_suptitle()


def test_one_disturbed_outlier_does_not_set_the_speedup_scale() -> None:
    """A disturbed 198× bar set the shared scale and squashed every trusted 2× bar to a sliver."""
    rows = frame()
    outlier = (rows["variant"] == "fast") & (rows["channels"] == 64) & (rows["batch"] == 8)
    rows.loc[outlier, "median_ms"] = rows.loc[outlier, "median_ms"] / 99
    rows.loc[outlier, "disturbed"] = True
    fig = drawn(plots.draw_speedup, rows)
    assert fig is not None
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert all(ax.get_ylim() == (0, 2.4) for ax in panels.values())  # 1.2 × the trusted 2×
    texts = [t.get_text() for t in panels["input 8×64×8×8 (N×C×H×W)"].texts if t.get_text()]
    assert texts == ["— !"]  # not drawn at all
    assert drawn(plots.draw_speedup, rows.assign(disturbed=True)).axes[0].get_ylim() == (0, 1.2)  # no bar at all
    noisy = rows.assign(disturbed=False, noisy=outlier)
    cut = {ax.get_title(): ax for ax in drawn(plots.draw_speedup, noisy).axes if ax.get_visible()}
    assert cut["input 8×64×8×8 (N×C×H×W)"].get_ylim() == (0, 2.4)  # a noisy outlier is cut at the top
    assert [t.get_text() for t in cut["input 8×64×8×8 (N×C×H×W)"].texts if t.get_text()] == ["↑ 198.00× ~"]


def test_the_speedup_legend_stays_clear_of_a_long_title() -> None:
    rows = frame(batches=(8,))  # two panels: the wrapped title spans the whole width
    rows = pd.concat([rows, rows.assign(mode="train")], ignore_index=True)  # two modes: a legend
    rows.loc[rows["variant"] == "fast", ["noisy", "disturbed"]] = True  # the caution line lengthens the title
    fig = drawn(plots.draw_speedup, rows, {"gpu_name": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130"})
    assert fig is not None and fig.legends
    with warnings.catch_warnings():  # "constrained_layout not applied": a panel squeezed to no height
        warnings.simplefilter("error")
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    legend = fig.legends[0].get_window_extent(renderer)
    assert not title.overlaps(legend)
    assert all(not ax.get_window_extent(renderer).overlaps(legend) for ax in fig.axes if ax.get_visible())


def _inside(inner: Any, outer: Any) -> bool:
    return outer.x0 <= inner.x0 and inner.x1 <= outer.x1 and outer.y0 <= inner.y0 and inner.y1 <= outer.y1


@pytest.mark.parametrize("shapes", [1, 4], ids=["one panel", "four panels"])
def test_the_latency_title_shows_whole_and_the_legend_covers_neither_it_nor_the_data(shapes: int) -> None:
    """One panel is 5 in wide: the title ran off both edges and the legend at the upper right sat on it."""
    rows = frame(batches=(1, 8, 32))
    rows = pd.concat([rows, rows.assign(mode="train")], ignore_index=True)  # four panels: two shapes × two modes
    if shapes == 1:
        rows = rows[(rows["channels"] == 32) & (rows["mode"] == "forward")]
    rows = rows.assign(disturbed=rows["batch"] == 8)  # the longest legend entry
    fig = drawn(plots.draw_latency, rows, {"cpu_model": "AMD EPYC 9654 96-Core Processor", "torch": "2.13.0+cpu"})
    assert fig is not None and len([ax for ax in fig.axes if ax.get_visible()]) == shapes and fig.legends
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    legend = fig.legends[0].get_window_extent(renderer)
    assert _inside(title, fig.bbox) and _inside(legend, fig.bbox)
    assert not title.overlaps(legend)
    assert all(not ax.get_window_extent(renderer).overlaps(legend) for ax in fig.axes if ax.get_visible())
    title_text = " ".join(fig.get_suptitle().split())  # wrapped to the figure's width, not cut
    assert title_text.startswith("Latency against batch size (log–log; error bars: 95% CI of the median)")


def _disturbed_marks(fig: Any) -> list[Any]:
    return [c for ax in fig.axes for c in ax.collections if c.get_label() == "disturbed (CPU starved)"]


def test_the_roofline_marks_disturbed_points_as_the_latency_plot_does() -> None:
    rows = frame()
    rows.loc[rows["channels"] == 64, "arithmetic_intensity"] = 0.9
    rows["disturbed"] = (rows["variant"] == "fast") & (rows["batch"] == 8)
    fig = drawn(plots.draw_roofline, rows)
    assert fig is not None
    marks = _disturbed_marks(fig)
    assert len(marks) == 1
    assert sorted(map(tuple, marks[0].get_offsets().tolist())) == [(0.75, 200.0), (0.9, 200.0)]
    latency = drawn(plots.draw_latency, rows)
    assert latency is not None
    same = _disturbed_marks(latency)[0]  # the same red cross, size and layer
    assert marks[0].get_paths()[0].vertices.tolist() == same.get_paths()[0].vertices.tolist()
    assert marks[0].get_sizes().tolist() == same.get_sizes().tolist()
    assert marks[0].get_edgecolor().tolist() == same.get_edgecolor().tolist()
    assert marks[0].get_zorder() == same.get_zorder()
    entries = [t.get_text() for t in fig.legends[0].get_texts()]
    assert entries.count("disturbed (CPU starved)") == 1
    clean = drawn(plots.draw_roofline, frame())
    assert clean is not None and not _disturbed_marks(clean)
    assert "disturbed (CPU starved)" not in [t.get_text() for t in clean.legends[0].get_texts()]


def test_a_repeated_case_is_drawn_from_its_last_row_as_the_tables_show_it() -> None:
    """A resumed run holds a case twice: the figures, like every table, use its last row, and a case
    whose last row failed is no bar at all (its earlier ``ok`` row is history)."""
    rows = frame()
    first = rows[(rows["variant"] == "fast") & (rows["batch"] == 1) & (rows["channels"] == 32)]
    again = first.assign(median_ms=first["median_ms"] * 4)  # measured again, 4× slower: the last word
    failed = rows[(rows["variant"] == "fast") & (rows["batch"] == 8) & (rows["channels"] == 32)]
    failed = failed.assign(status="error", median_ms=None)
    table = plots.speedup_table(pd.concat([rows, again, failed], ignore_index=True))
    fast = table[(table["variant"] == "fast") & (table["channels"] == 32)]
    assert fast["batch"].tolist() == [1]  # one bar, and none for the case that failed last
    assert fast["speedup"].tolist() == pytest.approx([0.5])


def test_a_speedup_far_below_one_is_labelled_with_its_digits() -> None:
    """speedup.png labelled a 0.0046× bar "0.00×", as report.md once did."""
    rows = frame()
    slow = rows["variant"] == "fast"
    rows.loc[slow, ["median_ms", "ci_low_ms", "ci_high_ms"]] *= 435  # 2 / 435 = 0.0046
    fig = drawn(plots.draw_speedup, rows)
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert "0.0046×" in texts and "0.00×" not in texts
