"""Figures for report.md: speedup over eager, latency against batch size, and a bandwidth roofline.

Built on ``matplotlib.figure.Figure`` with the Agg canvas, never ``pyplot``: no display is needed
and the caller's global backend (a notebook's, say) is left alone. Only valid (``status == "ok"``)
rows are drawn. Each ``draw_*`` returns its figure, or a string saying why the data cannot make it
(no ``eager`` to compare with, a single batch size, no bandwidth columns), so a report never shows an
empty plot; ``write_plots`` logs that reason and keeps it in ``Written.skipped`` (report.md's Figures
section lists it), so that ``report --plots`` never leaves a figure missing unexplained.
"""
from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogFormatter

from harness.measure.bandwidth import ENV_KEY as COPY_BANDWIDTH_KEY
from harness.results.recommend import speedup_interval
from harness.results.record import truthy
from harness.results.store import FIGURE_FILES
from harness.results.tables import BASELINE_VARIANT, METRICS, at_batch_asked, last_rows, ratio_text, timing_of

#: Columns that, with the shape and batch, say which rows are the same configuration.
CONFIG_COLUMNS: tuple[str, ...] = ("context", "device", "dtype", "mode", "reduction", "fusion", "bias")
SHAPE_COLUMNS: tuple[str, ...] = ("channels", "height", "width")
ROOFLINE_COLUMNS: tuple[str, ...] = ("achieved_gbps", "arithmetic_intensity")
FILENAMES: dict[str, str] = FIGURE_FILES
DPI = 110
#: How a speedup bar is labelled when either side is noisy or disturbed (as report.md's ``~`` and ``!``).
SPEEDUP_MARKS: dict[str, str] = {"noisy": "~", "disturbed": "!"}
#: How a disturbed row's point is marked wherever points are drawn (latency, roofline): a red cross over it.
DISTURBED_MARK: dict[str, Any] = {"marker": "x", "s": 70, "color": "red", "zorder": 5,
                                  "label": "disturbed (CPU starved)"}  # fmt: skip

log = logging.getLogger(__name__)
#: Per-variant markers and line styles, so that variants whose numbers coincide stay visible.
MARKERS = "osD^vPX*<>"
LINESTYLES = ("-", "--", ":", "-.")


class PlainLogFormatter(LogFormatter):
    """Matplotlib's choice of which log ticks to label, written as 0.04 rather than 4e-02."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def valid_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Each case's last row (``tables.last_rows``, as every table shows it) where it was timed, at the
    batch asked for (not ``--oom-retry``'s halved ones), with the columns the figures group on
    present (older files lack ``bias``)."""
    needed = {"variant", "status", "median_ms", "batch", *SHAPE_COLUMNS}
    if not needed <= set(frame.columns):
        return pd.DataFrame(columns=sorted(needed | set(CONFIG_COLUMNS)))
    frame = last_rows(frame)
    ok = frame[(frame["status"] == "ok") & frame["median_ms"].notna() & at_batch_asked(frame)].copy()
    for column in CONFIG_COLUMNS:
        if column not in ok.columns:
            ok[column] = ""
    ok["median_ms"] = ok["median_ms"].astype(float)
    return ok


def flagged(frame: pd.DataFrame, column: str) -> pd.Series:
    """A boolean column that older files may lack or hold as text (``disturbed``, ``noisy``)."""
    if column not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame[column].map(truthy).astype(bool)


def _varying(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c in frame.columns and frame[c].astype(str).nunique() > 1]


def _config_label(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """``float16 train r4`` from the columns that vary; empty when none does."""
    parts = []
    for c in columns:
        value = row[c]
        if c == "reduction":
            parts.append(f"r{value}")
        elif c == "bias":
            parts.append("bias" if str(value) == "True" else "no bias")
        elif c == "context":
            parts.append(str(value) or "block alone")
        else:
            parts.append(str(value))
    return " ".join(parts)


def _grid(n: int, width: float = 5.0, height: float = 3.6, max_cols: int = 3) -> tuple[Figure, list[Any]]:
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _subtitle(env: Mapping[str, Any] | None) -> str:
    if not env:
        return ""
    where = env.get("gpu_name") or env.get("cpu_model") or env.get("device") or ""
    return f"\n{where} · torch {env.get('torch', '?')}"


def speedup_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Eager's median over each variant's, matched on shape, batch and configuration (same run)."""
    ok = valid_rows(frame)
    keys = list(CONFIG_COLUMNS + SHAPE_COLUMNS) + ["batch"]
    ok = ok.assign(**{column: flagged(ok, column) for column in SPEEDUP_MARKS})
    base = ok[ok["variant"] == BASELINE_VARIANT].set_index(keys)  # one row a case: valid_rows keeps the last
    latency = METRICS["median"]  # what the speedup's interval is made from
    spread = [c for c in (latency.samples, latency.ci_low, latency.ci_high, latency.iqr) if c in ok.columns]
    base = base[["median_ms", *SPEEDUP_MARKS, *spread]].rename(columns={"median_ms": "eager_ms"} | {
        column: f"eager_{column}" for column in (*SPEEDUP_MARKS, *spread)})  # fmt: skip
    others = ok[ok["variant"] != BASELINE_VARIANT]
    joined = others.join(base, on=keys, how="inner")
    either = {column: joined[column] | joined[f"eager_{column}"] for column in SPEEDUP_MARKS}
    marks = ["".join(mark for mark, flag in zip(SPEEDUP_MARKS.values(), flags, strict=True) if flag)
             for flags in zip(*(either[column].tolist() for column in SPEEDUP_MARKS), strict=True)]
    bounds = [speedup_interval(timing_of({"median_ms": r["eager_ms"]} | {c: r.get(f"eager_{c}") for c in spread}),
                               timing_of(r))[:2] for r in joined.to_dict("records")]  # fmt: skip
    low, high = zip(*bounds, strict=True) if bounds else ((), ())
    speedup = joined["eager_ms"] / joined["median_ms"]
    speedup = speedup.where(np.isfinite(speedup.astype(float)))  # a median of 0: no bar (its axis went to inf)
    return joined.assign(speedup=speedup, **either,
                         untrusted=either["noisy"] | either["disturbed"], marks=marks,
                         speedup_low=list(low), speedup_high=list(high))  # fmt: skip


def draw_speedup(frame: pd.DataFrame, env: Mapping[str, Any] | None = None) -> Figure | str:
    """Bars of speedup over eager per variant, one panel per input shape N×C×H×W, or why the data
    cannot make them."""
    table = speedup_table(frame)
    if table.empty:
        ok = valid_rows(frame)
        if ok.empty:
            return "no case was timed (status ok)"
        if not (ok["variant"] == BASELINE_VARIANT).any():
            return f"{BASELINE_VARIANT} was not timed, so there is nothing to compare with"
        return f"no variant other than {BASELINE_VARIANT} was timed on a configuration {BASELINE_VARIANT} ran"
    hue_columns = _varying(table, CONFIG_COLUMNS)
    table = table.assign(hue=[_config_label(r, hue_columns) for r in table.to_dict("records")])
    panels = list(table.groupby(["batch", *SHAPE_COLUMNS], sort=True))
    hues = list(dict.fromkeys(table["hue"]))
    variants = list(dict.fromkeys(table["variant"]))
    colours = {h: f"C{i % 10}" for i, h in enumerate(hues)}
    fig, axes = _grid(len(panels), width=max(4.5, 0.9 * len(variants) * max(1, len(hues)) + 1.5))
    bar_width = 0.8 / max(1, len(hues))
    # one scale for every panel, so bar heights compare across shapes; set by the trusted bars where
    # there are any: one disturbed 198× bar squashed every other to a sliver. Taller noisy bars are
    # cut at the top, their figure written inside with an arrow; disturbed ones are not drawn.
    trusted = table.loc[~table["untrusted"], "speedup"]
    drawn = table.loc[~table["disturbed"], "speedup"]
    scale = trusted if trusted.notna().any() else drawn
    ceiling = max(1.2, 1.2 * float(np.nanmax(scale))) if scale.notna().any() else 1.2
    for ax, ((batch, c, h, w), group) in zip(axes, panels, strict=True):
        x = np.arange(len(variants))
        for i, hue in enumerate(hues):
            sub = group[group["hue"] == hue].set_index("variant")[["speedup", "marks"]]
            sub = sub[~sub.index.duplicated(keep="last")]
            flags = [str(sub["marks"].get(v, "")) for v in variants]
            # a disturbed side leaves no bar, as the tables leave no figure: a ratio of upper bounds
            busy = ["!" in flag for flag in flags]
            values = [np.nan if b else float(sub["speedup"].get(v, np.nan))
                      for v, b in zip(variants, busy, strict=True)]  # fmt: skip
            offsets = x - 0.4 + bar_width * (i + 0.5)
            bars = ax.bar(offsets, values, bar_width, color=colours[hue], label=hue or None)
            sub_ci = group[group["hue"] == hue].set_index("variant")[["speedup_low", "speedup_high"]]
            sub_ci = sub_ci[~sub_ci.index.duplicated(keep="last")]
            lows = np.array([float(sub_ci["speedup_low"].get(v, np.nan)) for v in variants])
            highs = np.array([float(sub_ci["speedup_high"].get(v, np.nan)) for v in variants])
            heights = np.asarray(values, dtype=float)
            # the speedup's 95% interval, as the answer table gives it; none on a bar cut at the top
            shown = np.isfinite(lows) & np.isfinite(highs) & np.isfinite(heights) & (heights <= ceiling)
            if shown.any():
                centre = heights[shown]
                below = np.clip(centre - lows[shown], 0, None)
                above = np.clip(np.minimum(highs[shown], ceiling) - centre, 0, None)
                ax.errorbar(offsets[shown], centre, yerr=[below, above], fmt="none", ecolor="black",
                            elinewidth=0.8, capsize=2)  # fmt: skip
                past = highs[shown] > ceiling  # a whisker cut at the top: an arrowhead says it goes on
                if past.any():
                    ax.plot(offsets[shown][past], np.full(int(past.sum()), ceiling), linestyle="none", marker="^",
                            color="black", markersize=4, clip_on=False)  # fmt: skip
            for bar, flag in zip(bars, flags, strict=True):
                if flag:  # a noisy or disturbed side: hatched and pale, its label's mark says which
                    bar.set_hatch("///")
                    bar.set_alpha(0.45)
            labels = [(f"{ratio_text(v)}×" + (f" {flag}" if flag else "")) if np.isfinite(v) else ""
                      for v, flag in zip(values, flags, strict=True)]
            cut = [np.isfinite(v) and v > ceiling for v in values]
            box = {"facecolor": "white", "edgecolor": "none", "pad": 0.5}  # readable where it crosses the 1× line
            ax.bar_label(bars, labels=["" if over else text for text, over in zip(labels, cut, strict=True)],
                         fontsize=7, padding=2, bbox=box)
            for offset, b in zip(offsets, busy, strict=True):
                if b:
                    ax.text(offset, 0.02 * ceiling, "— !", ha="center", va="bottom", fontsize=7, bbox=box)
            for bar, text, over in zip(bars, labels, cut, strict=True):
                if over:
                    ax.text(bar.get_x() + bar.get_width() / 2, 0.97 * ceiling, f"↑ {text}", ha="center",
                            va="top", fontsize=7, bbox=box)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xticks(x, variants, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"input {batch}×{c}×{h}×{w} (N×C×H×W)", fontsize=10)
        ax.set_ylabel(f"speedup over {BASELINE_VARIANT} (×)")
        # every variant's slot, bar or not: autoscaling skips the NaN bars of disturbed ratios, and a
        # panel of those alone shrank to ±0.05 around its tick, its "— !" marks far outside the axes,
        # and constrained layout gave the panels no width (the title and legend then sat on them)
        ax.set_xlim(-0.5, len(variants) - 0.5)
    for ax in axes:
        ax.set_ylim(0, ceiling)
    if any(hues):
        handles, labels = axes[0].get_legend_handles_labels()
        # below the panels, in one row: at the upper right it sat on the title's longer lines
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=8,
                   title=" · ".join(hue_columns), title_fontsize=8)  # fmt: skip
    caution = ""
    if table["untrusted"].any():  # say what the marks that appear mean
        if table["noisy"].any():
            caution += "\nhatched: '~' noisy (IQR > 10% of the median) on either side; trust such a ratio less"
        if table["disturbed"].any():
            caution += "\n'— !': disturbed (CPU starved) on either side, so no ratio (each time is an upper bound)"
    whiskers = "; whiskers: its 95% interval" if np.isfinite(table["speedup_low"].astype(float)).any() else ""
    title = (f"Speedup over {BASELINE_VARIANT} (median latency ratio; higher is faster, dashed line = "
             f"{BASELINE_VARIANT}{whiskers})" + caution + _subtitle(env))  # fmt: skip
    fig.suptitle(_wrapped(title, fig), fontsize=11)
    return fig


def _wrapped(title: str, fig: Figure, fontsize: float = 11) -> str:
    """Each line of ``title`` wrapped to the figure's width, so that a narrow figure does not cut it off."""
    width = max(30, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))  # characters of about 0.55 em
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


def draw_latency(frame: pd.DataFrame, env: Mapping[str, Any] | None = None) -> Figure | str:
    """Median latency against batch size, log–log, one line per variant and one panel per C×H×W; or why
    the data cannot make it.

    Error bars are the 95% confidence interval of the median where the rows have one. A slope of
    1 means latency grows in proportion to the batch (no fixed overhead left to amortise).
    """
    ok = valid_rows(frame)
    if ok.empty:
        return "no case was timed (status ok)"
    ok = ok.assign(disturbed=flagged(ok, "disturbed"))
    panel_columns = [*SHAPE_COLUMNS, *_varying(ok, CONFIG_COLUMNS)]
    panels = [(k, g) for k, g in ok.groupby(panel_columns, sort=True) if g["batch"].nunique() > 1]
    if not panels:
        return "every shape was timed at a single batch size; a line needs two or more (--batch-sizes 1,8,32)"
    fig, axes = _grid(len(panels))
    variants = list(dict.fromkeys(ok["variant"]))
    colours = {v: f"C{i % 10}" for i, v in enumerate(variants)}
    extra = panel_columns[len(SHAPE_COLUMNS):]
    for ax, (key, group) in zip(axes, panels, strict=True):
        key = key if isinstance(key, tuple) else (key,)
        for variant, lines in group.groupby("variant", sort=False):
            lines = lines.sort_values("batch").drop_duplicates("batch", keep="last")
            y = lines["median_ms"].to_numpy(dtype=float)
            yerr = None
            if {"ci_low_ms", "ci_high_ms"} <= set(lines.columns):
                low = lines["ci_low_ms"].to_numpy(dtype=float)
                high = lines["ci_high_ms"].to_numpy(dtype=float)
                if np.isfinite(low).all() and np.isfinite(high).all():
                    yerr = np.vstack([np.clip(y - low, 0, None), np.clip(high - y, 0, None)])
            i = variants.index(variant)
            ax.errorbar(lines["batch"].to_numpy(dtype=float), y, yerr=yerr, marker=MARKERS[i % len(MARKERS)],
                        markersize=5, linestyle=LINESTYLES[i % len(LINESTYLES)], capsize=2, color=colours[variant],
                        markerfacecolor="none", label=str(variant))  # fmt: skip
            bad = lines[lines["disturbed"]]
            if not bad.empty:
                ax.scatter(bad["batch"].to_numpy(dtype=float), bad["median_ms"].to_numpy(dtype=float),
                           **DISTURBED_MARK)  # fmt: skip
        batches = sorted(group["batch"].unique())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size N (images)")
        ax.set_ylabel("median latency per call (ms)")
        label = _config_label(dict(zip(extra, key[len(SHAPE_COLUMNS):], strict=True)), extra)
        ax.set_title(f"C×H×W = {key[0]}×{key[1]}×{key[2]}" + (f" · {label}" if label else ""), fontsize=10)
        ax.grid(True, which="both", linewidth=0.3)
    legend = {}
    for ax in axes:  # one entry per label, the disturbed mark included wherever it appears
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    _legend_below(fig, list(legend.values()), list(legend.keys()), title="variant")
    title = "Latency against batch size (log–log; error bars: 95% CI of the median)" + _subtitle(env)
    fig.suptitle(_wrapped(title, fig), fontsize=11)
    return fig


def _legend_below(fig: Figure, handles: list[Any], labels: list[str], title: str) -> None:
    """A legend under the panels, in as many columns as the figure's width holds, the figure made taller
    by its height: at the upper right it sat on the title of a one-panel figure (5 in wide)."""
    renderer = fig.canvas.get_renderer()
    for ncols in range(len(labels), 0, -1):
        legend = fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8, title=title,
                            title_fontsize=8)  # fmt: skip
        box = legend.get_window_extent(renderer)
        if box.width <= 0.95 * fig.bbox.width or ncols == 1:
            break
        legend.remove()
    fig.set_figheight(fig.get_figheight() + box.height / fig.dpi)


def draw_roofline(frame: pd.DataFrame, env: Mapping[str, Any] | None = None) -> Figure | str:
    """Achieved bandwidth against arithmetic intensity, under the measured copy-bandwidth ceiling.

    The ceiling is a ``peak_bw_gbps`` column, else the copy bandwidth the run
    measured (env.json's ``copy_bandwidth_bytes_s``); without any, the points are drawn alone.
    Disturbed rows carry the latency plot's red cross (``DISTURBED_MARK``), so no plot shows them unflagged.

    scSE is memory-bound, so the ceiling that matters is bandwidth: a point's height is how much
    of the device's measured copy speed a variant reaches on the bytes the case must move.
    """
    ok = valid_rows(frame)
    if ok.empty:
        return "no case was timed (status ok)"
    if not set(ROOFLINE_COLUMNS) <= set(ok.columns):
        return f"the rows have no bandwidth columns ({', '.join(ROOFLINE_COLUMNS)})"
    ok = ok.assign(**{c: pd.to_numeric(ok[c], errors="coerce") for c in ROOFLINE_COLUMNS})
    ok = ok.dropna(subset=list(ROOFLINE_COLUMNS))
    ok = ok[(ok["arithmetic_intensity"] > 0) & (ok["achieved_gbps"] > 0)]
    if ok.empty:
        return "no timed case has a positive achieved bandwidth and arithmetic intensity"
    peak_gbps = None
    if "peak_bw_gbps" in ok.columns:
        measured = pd.to_numeric(ok["peak_bw_gbps"], errors="coerce").dropna()
        peak_gbps = float(measured.median()) if not measured.empty else None
    if peak_gbps is None and env and env.get(COPY_BANDWIDTH_KEY):  # bytes/s, measured once per run
        peak_gbps = float(env[COPY_BANDWIDTH_KEY]) / 1e9
    fig = Figure(figsize=(9.0, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    dtypes = list(dict.fromkeys(ok["dtype"].astype(str)))
    for i, (variant, group) in enumerate(ok.groupby("variant", sort=False)):
        for j, (dtype, sub) in enumerate(group.groupby(group["dtype"].astype(str), sort=False)):
            colour = f"C{i % 10}"  # hollow markers, so coinciding variants show through one another
            ax.scatter(sub["arithmetic_intensity"], sub["achieved_gbps"], marker=MARKERS[i % len(MARKERS)], s=36,
                       facecolors="none" if j == 0 else colour, edgecolors=colour, linewidths=1.2,
                       label=f"{variant}" + (f" ({dtype})" if len(dtypes) > 1 else ""))  # fmt: skip
    bad = ok[flagged(ok, "disturbed")]
    if not bad.empty:  # one artist for every variant, so the legend has the entry once
        ax.scatter(bad["arithmetic_intensity"], bad["achieved_gbps"], **DISTURBED_MARK)
    low, top = float(ok["achieved_gbps"].min()), float(ok["achieved_gbps"].max())
    if peak_gbps:
        ax.axhline(peak_gbps, color="black", linewidth=1.5)
        ax.annotate(f"measured copy bandwidth {peak_gbps:,.0f} GB/s", (0.01, peak_gbps), xytext=(0, 4),
                    xycoords=("axes fraction", "data"), textcoords="offset points", fontsize=8)  # fmt: skip
        top = max(top, peak_gbps)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(low / 2, top * 2)
    ax.yaxis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))  # scSE's intensities span under a decade
    ax.tick_params(axis="x", which="minor", labelsize=7)
    if peak_gbps:  # after the log scale is set, or the secondary axis keeps linear tick labels
        ceiling = peak_gbps
        share = ax.secondary_yaxis("right", functions=(lambda v: v / ceiling * 100, lambda p: p * ceiling / 100))
        share.set_ylabel("% of measured copy bandwidth")
        share.yaxis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
        share.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))
    ax.set_xlabel("arithmetic intensity (FLOP per byte of bytes_min)")
    ax.set_ylabel("achieved bandwidth (GB/s, bytes_min / median time)")
    ax.grid(True, which="both", linewidth=0.3)
    fig.legend(loc="outside right upper", fontsize=8, title="variant", title_fontsize=8)
    ax.set_title("Bandwidth roofline: how close each case comes to the device's copy speed" + _subtitle(env),
                 fontsize=11)  # fmt: skip
    return fig


@dataclass(frozen=True)
class Written:
    """What ``write_plots`` did: the figures it wrote, in order, and, for each other figure's file
    name, why the data could not make it."""

    paths: tuple[Path, ...] = ()
    skipped: Mapping[str, str] = field(default_factory=dict)


def write_plots(frame: pd.DataFrame, out_dir: str | Path, env: Mapping[str, Any] | None = None) -> Written:
    """Write every figure the data supports as PNG into ``out_dir``; returns the paths written, with the
    reason for each figure not drawn (also logged as a warning, which ``report --plots`` shows).

    A figure the data no longer supports is removed, so a rebuilt report never embeds a stale one.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    makers = {"speedup": draw_speedup, "latency": draw_latency, "roofline": draw_roofline}
    paths, skipped = [], {}
    for name, draw in makers.items():
        path = out / FILENAMES[name]
        fig = draw(frame, env)
        if isinstance(fig, str):
            path.unlink(missing_ok=True)
            skipped[path.name] = fig
            log.warning("%s not drawn: %s", path.name, fig)
            continue
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    return Written(tuple(paths), skipped)


CAPTIONS: dict[str, str] = {
    FILENAMES["speedup"]: "Speedup over eager",
    FILENAMES["latency"]: "Latency against batch size",
    FILENAMES["roofline"]: "Bandwidth roofline",
}


def markdown(written: Written, relative_to: str | Path) -> str:
    """A ``## Figures`` section embedding the figures written by paths relative to report.md's folder,
    and saying why each other was not drawn."""
    skipped = written.skipped
    if not written.paths and not skipped:
        return ""
    lines = ["## Figures", ""]
    for path in written.paths:
        caption = CAPTIONS.get(path.name, path.stem)
        rel = Path(path).resolve().relative_to(Path(relative_to).resolve()).as_posix()
        lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    lines += [f"- not drawn: {CAPTIONS.get(name, name)} (`{name}`): {why}" for name, why in skipped.items()]
    return "\n".join(lines + ([""] if skipped else []))
