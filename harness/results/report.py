"""Reports from a results DataFrame: the recommendation first, then Markdown tables per device, dtype and
mode, and a rich summary.

Rows are variants; columns are ``shape × batch`` (with reduction/fusion/bias when the sweep varied
them). Cells are medians with their 95% confidence interval. Speedups are over the seed's ``eager``
of the same configuration, measured in the same run.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.results.networks import networks_markdown
from harness.results.profile_report import profiling_markdown
from harness.results.recommend import (
    EQUIVALENT,
    TABLE_COLUMNS,
    Recommendation,
    control_line,
    recommend,
    table_rows,
    terminal_cells,
)
from harness.results.record import BROKEN, FAILED, Status
from harness.results.store import REPORT_MD, RunFolder, write_whole
from harness.results.tables import (
    BASELINE_VARIANT,
    CONFIG_COLUMNS,
    CONTROL_VARIANT,
    GROUP_COLUMNS,
    LATENCY_CAPTION,
    MARKS,
    at_batch_asked,
    config_label,
    groups,
    last_rows,
    latency_text,
    mark_text,
    marks,
    md_table,
    number,
    pivot,
    ratio_text,
    smaller_batch,
)

__all__ = ["MARKS", "marks", "markdown", "print_summary", "summary_tables", "with_speedup", "write_reports",
           "write_unfinished", "cases_left"]

#: The terminal summary's last line: where the figures come from (``python -m harness report``).
PLOTS_HINT = "figures (speedup, latency against batch, roofline): python -m harness report {run} --plots"


def with_speedup(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``speedup_vs_eager`` (eager's median over the variant's, same configuration, valid rows only) and
    ``speedup_marks``: the ``~`` and ``!`` of either side, which make the ratio as doubtful as its parts."""
    out = frame.copy()
    out["speedup_vs_eager"] = float("nan")
    out["speedup_marks"] = ""
    last = last_rows(out)  # a case's earlier row (an error, say) never serves as its eager
    ok = last[(last["status"] == "ok") & at_batch_asked(last)]  # a halved batch's latency divides into nothing
    keys = list(GROUP_COLUMNS + CONFIG_COLUMNS)
    base = ok[ok["variant"] == BASELINE_VARIANT].set_index(keys)
    if base.empty:
        return out
    eager_marks = [set(marks(r)) for r in base.to_dict("records")]
    flags = pd.DataFrame({"_eager_ms": base["median_ms"], "_eager_marks": eager_marks}, index=base.index)
    joined = ok.join(flags, on=keys, how="inner")
    ratio = joined["_eager_ms"] / joined["median_ms"]
    # a median of 0 (below a coarse timer's resolution) gives no ratio, never "inf"
    out.loc[joined.index, "speedup_vs_eager"] = ratio.where(np.isfinite(ratio.astype(float)))
    out.loc[joined.index, "speedup_marks"] = [
        "".join(f" {m}" for m in ("~", "!") if m in theirs | set(marks(r)))
        for r, theirs in zip(joined.to_dict("records"), joined["_eager_marks"], strict=True)
    ]
    return out


def _cell(row: Mapping[str, Any]) -> str:
    status = row["status"]
    if status != "ok":
        return status.upper()
    return latency_text(row) + "".join(mark_text(mark, row) for mark in marks(row))


def _speedup_text(row: Mapping[str, Any]) -> str:
    """The ratio, or ``—`` where either side is disturbed (``!``): a ratio of upper bounds is no figure."""
    return "—" if "!" in row["speedup_marks"] else ratio_text(row["speedup_vs_eager"])


def _speedup_cell(row: Mapping[str, Any]) -> str:
    speed = row["speedup_vs_eager"]
    return f"{_speedup_text(row)}{row['speedup_marks']}" if pd.notna(speed) else ""


def _host_cell(row: Mapping[str, Any]) -> str:
    if row["status"] != "ok" or pd.isna(row.get("host_ms")):
        return ""
    wall = row.get("wall_ms")
    return f"{row['host_ms']:.4g} / " + ("?" if wall is None or pd.isna(wall) else f"{wall:.4g}")  # older rows: no wall


def legend(frame: pd.DataFrame) -> list[str]:
    """Lines explaining the marks that appear in ``frame``'s timed rows (each case's last row: the one shown)."""
    last = last_rows(frame)
    used = {m for r in last[last["status"] == "ok"].to_dict("records") for m in marks(r)}
    return [f"- `{mark}` {meaning}" for mark, meaning in MARKS.items() if mark in used]


def disturbed_count(frame: pd.DataFrame) -> str | None:
    """One line when timed cases were disturbed: how many, and what that means for the answer."""
    last = last_rows(frame)
    ok = last[(last["status"] == "ok") & at_batch_asked(last)]
    busy = [r for r in ok.to_dict("records") if "!" in marks(r)]
    if not busy:
        return None
    line = (f"! {len(busy)} of {len(ok)} timed cases ran while the CPU was busy (their threads waited for a core): "
            "their times say how busy the machine was, so no verdict rests on them; measure again on a quiet "
            "machine")  # fmt: skip
    threads = max((int(t) for r in busy if str(r.get("device")) == "cpu" and (t := number(r.get("threads"))) > 1),
                  default=None)  # fmt: skip
    if threads:  # on a shared 2-core VM: 27.5 ms undisturbed with one thread, 95.7 ms with two
        line += (f", or, where none is at hand, with --threads 1 (these ran {threads} threads, each of which "
                 "must find a free core)")
    return line


def failure_line(frame: pd.DataFrame) -> str | None:
    """One line when a run must not pass: the cases that failed (``Status.failed``: not ``oom``, the
    device's limit at that size), by status and variant; or, when none failed, that no case was timed
    at all (every one skipped or out of memory: nothing answers which variant to run). Else None.
    Each case counts by its last row: a case that failed and then ran (a resumed run) has not failed."""
    if frame.empty or "status" not in frame:
        return None
    frame = last_rows(frame)
    bad = frame[frame["status"].isin(FAILED)]
    if not bad.empty:
        counts = bad.groupby(["status", "variant"], sort=True).size()
        parts = ", ".join(f"{variant} {n}× {status}" for (status, variant), n in counts.items())
        return (f"{len(bad)} of {len(frame)} case(s) failed ({parts}): not timed; each row's reason is in "
                f"results.csv and report.md")
    if (frame["status"] == Status.OK).any():
        return None
    why = (frame["status"] + ": " + frame["reason"].fillna("no reason given").astype(str)).value_counts()
    parts = "; ".join(f"{n}× {text}" for text, n in why.items())
    return f"no case was timed, of {len(frame)} ({parts})"


def recommendation_markdown(frame: pd.DataFrame, recs: list[Recommendation]) -> list[str]:
    """The "Which variant to run" section: one line per configuration, the answer before the details."""
    if not recs:
        return []
    table = pd.DataFrame(table_rows(recs), columns=list(TABLE_COLUMNS))
    table = table.loc[:, (table != "").any()]  # no empty notes (or speedup) column
    return [
        "## Which variant to run",
        "",
        "Per configuration, the fastest variant that matched the float64 reference (a `mismatch` never wins), "
        f"its median latency, and its speedup over `{BASELINE_VARIANT}` with a 95% confidence interval. "
        "A *tie* means the winner's interval overlaps another variant's, or leads it by under "
        f"{EQUIVALENT:.0%} (variants are measured one after the other, and the machine drifts between them; "
        f"more, where `{CONTROL_VARIANT}`, eager measured twice, read further apart), "
        f"or its speedup's interval over `{BASELINE_VARIANT}` reaches 1: the data cannot tell them apart, so "
        "run whichever of them suits you. "
        "*unsure*: a variant the answer rests on ran while the CPU was busy. Marks as in the tables below.",
        "",
        *([f"**{busy}**", ""] if (busy := disturbed_count(frame)) else []),
        *[line for said in control_line(frame) for line in (said, "")],
        table.to_markdown(index=False, disable_numparse=True),
        "",
    ]


#: The env key a report is given when its run stopped before its last case: how many cases are left.
UNFINISHED = "cases_left"
#: The env key of how many cases the run set out to have (those a resume kept included): a run killed
#: before it could write ``UNFINISHED`` is still known to be unfinished by its rows' count.
CASES_PLANNED = "cases_planned"
#: The env key of a merged run's warnings about its rows (variants from different runs), quoted at the top.
MERGE_WARNINGS = "merge_warnings"
#: The env key of a resumed run's warnings about its rows (variants from before and after), quoted at the top.
RESUME_WARNINGS = "resume_warnings"
#: The env key holding each variant's registered description, by name, as the run found them.
VARIANT_DESCRIPTIONS = "variant_descriptions"


def answers_text(variant: str, recs: list[Recommendation]) -> str:
    """How often ``variant`` is the answer: ``clear winner in 2 of 8; tied for first in 3``, and
    apart, where it read fastest on a disturbed time or too few samples, ``first but unsure``."""
    if variant == CONTROL_VARIANT:
        return "the control: never ranked"
    sure = [r for r in recs if r.winner is not None and not r.unsure]
    clear = sum(r.winner == variant and not r.tie for r in sure)
    tied = sum(r.tie and variant in (r.winner, *r.tied) for r in sure)
    parts = [f"clear winner in {clear} of {len(recs)}"] if clear else []
    parts += [f"tied for first in {tied}"] if tied else []
    unsure = sum(r.winner == variant and r.unsure is not None for r in recs)
    parts += [f"first but unsure in {unsure}"] if unsure else []
    return "; ".join(parts) or "never first"


def variants_markdown(frame: pd.DataFrame, recs: list[Recommendation], env: Mapping[str, Any] | None) -> list[str]:
    """The "Variants" section: what each variant of the run is (its registered description, kept in
    env.json, so a plugin's variant reads the same when the plugin is gone), where its code came
    from, and how often it was the answer."""
    variants = list(dict.fromkeys(frame["variant"].astype(str)))
    if not variants or not recs:
        return []
    described = (env or {}).get(VARIANT_DESCRIPTIONS) or {}
    sources = (env or {}).get("variant_sources") or {}
    table = pd.DataFrame({
        "variant": variants,
        "what it is": [str(described.get(v, "")) for v in variants],
        "code": [str(sources.get(v) or "") for v in variants],
        f"answer in {len(recs)} configuration(s)": [answers_text(v, recs) for v in variants],
    })  # fmt: skip
    table = table.loc[:, (table != "").any()]
    return ["## Variants", "", md_table(table, index=False), ""]


def markdown(frame: pd.DataFrame, env: Mapping[str, Any] | None = None) -> str:
    """The whole report.md: the recommendation first, then the tables per device · dtype · mode."""
    frame = with_speedup(frame)
    lines = ["# scSE benchmark report", ""]
    if env:
        where = env.get("gpu_name") or env.get("cpu_model")
        lines += [
            f"- device: {env.get('device')} ({where}), threads: {env.get('threads')}",
            f"- torch {env.get('torch')}, CUDA {env.get('cuda')}, Python {env.get('python')}, "
            f"commit {str(env.get('git_commit'))[:10]}{' (dirty)' if env.get('git_dirty') else ''}, {env.get('date')}",
            "",
        ]
    left = cases_left(env or {}, len(frame))
    if left:
        lines += [f"> **Unfinished run: {left} case(s) did not run** (the run stopped before them), so the "
                  "answers below weigh only the variants that did. Finish it with "
                  "`python -m harness run --resume RUN`, RUN being this folder.", ""]
    for key, title in ((MERGE_WARNINGS, "Merged runs"), (RESUME_WARNINGS, "Resumed run")):
        said = (env or {}).get(key) or []
        for warning in [said] if isinstance(said, str) else said:  # hand-edited to one string: still one line
            lines += [f"> **{title}:** {warning}", ""]
    recs = recommend(frame)
    lines += recommendation_markdown(frame, recs)
    lines += variants_markdown(frame, recs, env)
    lines += networks_markdown(frame)
    lines += [
        f"Cells: {LATENCY_CAPTION}. On CUDA the latency is the GPU time, without the host's launch gaps. "
        "Only cases that matched the float64 reference are timed.",
        "",
    ]
    marked = legend(frame)
    if marked:
        lines += marked + [""]
    for (device, dtype, mode), group in groups(frame):
        lines += [f"## {device} · {dtype} · {mode}", ""]
        cells = group.assign(cell=[_cell(r) for r in group.to_dict("records")])
        lines += [pivot(cells, "cell").fillna("").to_markdown(disable_numparse=True), ""]
        if str(device).startswith("cuda") and "host_ms" in group and group["host_ms"].notna().any():
            hosts = group.assign(cell=[_host_cell(r) for r in group.to_dict("records")])
            lines += ["Host time per call (enqueue, no sync) / synchronous wall time (sync, call, sync), ms:", ""]
            lines += [pivot(hosts, "cell").fillna("").to_markdown(disable_numparse=True), ""]
        if group["speedup_vs_eager"].notna().any():
            speeds = group.assign(cell=[_speedup_cell(r) for r in group.to_dict("records")])
            lines += [f"Speedup over `{BASELINE_VARIANT}` (×, higher is faster; `~` `!`: on either side):", ""]
            lines += [pivot(speeds, "cell").fillna("").to_markdown(disable_numparse=True), ""]
        lines += profiling_markdown(group)  # FLOPs, peak memory, GPU telemetry
    last = last_rows(frame)  # a case that failed, then ran (resumed), is timed
    not_ok = (last["status"] != "ok").to_numpy()
    if not_ok.any():
        lines += ["## Cases not timed", ""]
        # labelled over the whole run: a fusion or reduction the sweep varied tells two rows apart
        cases = last[not_ok].assign(case=config_label(last).to_numpy()[not_ok],
                                    reason=last["reason"][not_ok].fillna("no reason given"))
        cols = ["variant", "case", "device", "dtype", "mode", "status", "reason"]
        lines += [md_table(cases[cols], index=False), ""]
        if (cases["status"] == "error").any():  # the table gives the exception's first line only
            lines += ["The whole traceback of each `error` case is in `errors.log` beside this report.", ""]
        if cases["status"].isin(["crashed", "timeout"]).any():  # no Python traceback to keep
            lines += ["What a `crashed` or `timeout` case's worker wrote (faulthandler's stack) is in "
                      "`workers.log` beside this report.", ""]
    lines += settings_markdown(frame)
    lines += traces_markdown(frame)
    return "\n".join(lines)


def settings_markdown(frame: pd.DataFrame) -> list[str]:
    """The variants that changed process-wide settings (grad mode, default dtype, threads, …): set
    back after each case, so no other row is touched, but a program using such a variant is."""
    if "settings_changed" not in frame:
        return []
    changed = frame[frame["settings_changed"].map(lambda v: isinstance(v, str) and bool(v))]
    if changed.empty:
        return []
    lines = ["## Variants that change process-wide settings", "",
             "Each changed what outlives a call, in its build or its forward; the harness set it back after the "
             "case, so no other row is affected. A program that uses the variant keeps the change.", ""]  # fmt: skip
    for variant, rows in changed.groupby("variant", sort=True):
        lines.append(f"- `{variant}` ({len(rows)} case(s)): {'; '.join(dict.fromkeys(rows['settings_changed']))}")
    return lines + [""]


def traces_markdown(frame: pd.DataFrame) -> list[str]:
    """Where ``run --profile``'s traces are and how to open them (nothing said of them before)."""
    if "trace_file" not in frame:
        return []
    traces = [str(t) for t in frame["trace_file"] if isinstance(t, str) and t]
    if not traces:
        return []
    return ["## Profiler traces", "",
            f"{len(traces)} Chrome trace(s) of the timed cases, one per case (the `trace_file` column), e.g. "
            f"`{traces[0]}`: open one in https://ui.perfetto.dev or chrome://tracing.", ""]  # fmt: skip


#: How the terminal summary shows each of ``MARKS``.
SUMMARY_MARKS: dict[str, str] = {
    "~": " [yellow]~[/]", "!": " [bold red]![/]", "host-bound": " [magenta]host-bound: host {host:.3g}[/]",
    "batch": " [magenta](at batch {batch})[/]",
}

STYLES: dict[str, str] = {Status.MISMATCH: "bold red", Status.ERROR: "yellow", Status.OOM: "magenta",
                          Status.SKIPPED: "dim", Status.CRASHED: "bold red", Status.TIMEOUT: "red"}  # fmt: skip


def recommendation_table(frame: pd.DataFrame) -> Table | None:
    """The terminal's "Which variant to run": report.md's answers in four columns that fit 80
    characters (``recommend.terminal_cells``), a section per device · dtype · mode, in colour."""
    recs = recommend(frame)
    if not recs:
        return None
    margin = max((r.margin for r in recs), default=EQUIVALENT)  # the control's spread, where it is wider
    table = Table(title=f"Which variant to run (fastest correct variant; tie: 95% intervals overlap or "
                        f"within {margin:.0%})")
    table.add_column("case")
    table.add_column("run", style="bold")
    table.add_column("median ms", justify="right", no_wrap=True)
    table.add_column(f"× {BASELINE_VARIANT}", justify="right", no_wrap=True)
    group = None
    for rec in recs:
        if (rec.device, rec.dtype, rec.mode) != group:
            if group is not None:
                table.add_section()
            group = (rec.device, rec.dtype, rec.mode)
            table.add_row(f"[bold cyan]{' · '.join(group)}[/]", "", "", "")
        case, run, latency, speedup = (escape(c) for c in terminal_cells(rec))
        # green only for a clear answer: not a tie, nor one resting on a disturbed time or too few samples
        style = "red" if rec.winner is None else "yellow" if rec.tie or rec.unsure else "green"
        name, _, rest = run.partition("\n")
        run = f"{name}\n[{style}]{rest}[/]" if rest else f"[{style}]{name}[/]"
        table.add_row(case, run, latency, speedup)
    return table


def summary_tables(frame: pd.DataFrame) -> list[Table]:
    """Rich tables, variants × configurations: median [95% CI] and speedup over eager; failures in colour."""
    frame = with_speedup(frame)
    tables = []
    for (device, dtype, mode), group in groups(frame):
        g = group.assign(config=config_label(group))
        configs = list(dict.fromkeys(g["config"]))
        table = Table(title=f"{device} · {dtype} · {mode}  (median ms [95% CI], ×speedup over {BASELINE_VARIANT})")
        table.add_column("variant", style="bold")
        for config in configs:
            table.add_column(config, justify="right")
        for variant, rows in g.groupby("variant", sort=False):
            by_config = {r["config"]: r for r in rows.to_dict("records")}
            cells = []
            for config in configs:
                r = by_config.get(config)
                if r is None:
                    cells.append("")
                elif r["status"] == "ok":
                    speed, own = r["speedup_vs_eager"], marks(r)
                    # the ratio carries eager's ~ and ! too, as report.md's speedup table does
                    eager_only = "".join(f" {m}" for m in r["speedup_marks"].split() if m not in own)
                    ratio = _speedup_text(r)
                    ratio += "" if ratio == "—" else "×"
                    tail = f" [cyan]{ratio}{eager_only}[/]" if pd.notna(speed) else ""
                    flags = "".join(SUMMARY_MARKS[m].format(host=r.get("host_ms"), batch=smaller_batch(r))
                                    for m in own)
                    cells.append(f"{escape(latency_text(r))}{flags}{tail}")
                else:
                    cells.append(f"[{STYLES.get(r['status'], 'red')}]{str(r['status']).upper()}[/]")
            table.add_row(str(variant), *cells)
        tables.append(table)
    return tables


def print_summary(frame: pd.DataFrame, console: Console) -> None:
    """The answer first (which variant to run), then the tables, the failures, the marks' legend, and
    where the figures come from."""
    answer = recommendation_table(frame)
    if answer is not None:
        console.print(answer)
    busy = disturbed_count(frame)
    if busy:
        console.print(f"[bold red]{escape(busy)}[/]")
    for line in control_line(frame):
        console.print(escape(line), soft_wrap=True)
    for table in summary_tables(frame):
        console.print(table)
    broken = frame["status"].isin(BROKEN).to_numpy()
    labels = config_label(frame).to_numpy()[broken]  # over the whole run, as the tables name a case
    for r, label in zip(frame[broken].to_dict("records"), labels, strict=True):
        style = STYLES.get(r["status"], "red")
        case = f"{r['variant']} {label} {r['dtype']} {r['mode']}: {r['reason']}"
        console.print(f"[{style}]{r['status'].upper()}[/] {escape(case)}", soft_wrap=True)  # a reason's [brackets]
    skipped = frame[frame["status"] == Status.SKIPPED]
    for reason, rows in skipped.groupby(skipped["reason"].fillna("no reason given"), sort=False):
        names = ", ".join(dict.fromkeys(rows["variant"].astype(str)))
        console.print(f"[dim]SKIPPED {escape(names)}: {escape(str(reason))}[/]", soft_wrap=True)
    for line in legend(frame):
        console.print(escape(line.removeprefix("- ").replace("`", "")))
    if (frame["status"] == Status.OK).any():  # else there is nothing to draw
        console.print(escape(PLOTS_HINT.format(run=frame.attrs.get("run_dir") or "RUN")), soft_wrap=True)


def cases_left(env: Mapping[str, Any], done: int) -> int:
    """The cases a run did not run: what it said when it stopped (``UNFINISHED``), or, when it was
    killed before it could say, those it planned (``CASES_PLANNED``) less the ``done`` rows it holds."""
    if env.get(UNFINISHED):
        try:
            return int(env[UNFINISHED])
        except (TypeError, ValueError):  # hand-edited: the rows' count below still says something
            pass
    planned = env.get(CASES_PLANNED)
    return max(0, planned - done) if isinstance(planned, int) and not isinstance(planned, bool) else 0


def write_unfinished(folder: RunFolder, cases: int, started: str) -> Path:
    """report.md while the run is under way, replaced by the real one at its end: a process ended
    from outside (SIGKILL, a node's time limit) or from inside (a variant's ``os._exit`` or crash
    without ``--isolate``) runs no ``finally``, and left a folder of rows with nothing saying that
    the run was cut short or how to get its report."""
    run = folder.path
    text = (
        "# Run not finished\n\n"
        f"This run of {cases} case(s), started {started}, has not written its report yet. If this text "
        "is still here after the run ended, its process was ended before it could write one: killed from "
        "outside, or ended by a variant (`--isolate` runs each case in a worker process, so that a crash "
        "becomes a row).\n\n"
        "Every case that finished is in results.jsonl, one row each. To rebuild this report from them:\n\n"
        f"    python -m harness report {run}\n\n"
        "To run the cases that are left:\n\n"
        f"    python -m harness run --resume {run}\n"
    )
    path = run / REPORT_MD
    write_whole(path, text)
    return path


def write_reports(folder: RunFolder, frame: pd.DataFrame, env: Mapping[str, Any],
                  plots: bool = False) -> tuple[Path, ...]:  # fmt: skip
    """Rebuild what is derived from a run's rows: results.csv, report.md and (``plots``) the PNGs,
    returned; a figure the data cannot make is said why in report.md."""
    text = markdown(frame, env)
    written: tuple[Path, ...] = ()
    if plots:
        from harness.results import plots as plotting  # matplotlib: only when asked

        drawn = plotting.write_plots(frame, folder.path, env)
        figures = plotting.markdown(drawn, folder.path)  # none drawn: still why each was not
        if figures:
            text = text.rstrip("\n") + "\n\n" + figures
        written = drawn.paths
    failed: list[OSError] = []
    for write in (lambda: write_whole(folder.path / REPORT_MD, text), lambda: folder.write_csv(frame)):
        try:  # each whole or not at all, and one's failure (a full disk) does not stop the other
            write()
        except OSError as exc:
            failed.append(exc)
    if failed:
        raise failed[0]
    return written
