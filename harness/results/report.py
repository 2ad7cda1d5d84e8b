"""Reports from a results DataFrame: Markdown tables per device, dtype and mode, and a rich summary.

Rows are variants; columns are ``shape × batch`` (with reduction/fusion/bias when the sweep varied
them). Speedups are over the seed's ``eager`` of the same configuration, measured in the same run.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.results.profile_report import profiling_markdown
from harness.results.record import BROKEN, Status, truthy
from harness.results.tables import CONFIG_COLUMNS, GROUP_COLUMNS, config_label, groups, pivot

BASELINE_VARIANT = "eager"


def with_speedup(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``speedup_vs_eager``: eager's median over the variant's, same configuration, valid rows only."""
    out = frame.copy()
    out["speedup_vs_eager"] = float("nan")
    ok = out[out["status"] == "ok"]
    keys = list(GROUP_COLUMNS + CONFIG_COLUMNS)
    base = ok[ok["variant"] == BASELINE_VARIANT].set_index(keys)["median_ms"]
    if base.empty:
        return out
    joined = ok.join(base.rename("_eager_ms"), on=keys)
    out.loc[joined.index, "speedup_vs_eager"] = joined["_eager_ms"] / joined["median_ms"]
    return out


#: The marks a timed cell may carry, and what they mean (the legend under the tables).
MARKS: dict[str, str] = {
    "~": "noisy: IQR above 10% of the median; compare such cells with care",
    "!": "disturbed: the CPU was starved while this case ran (its threads waited for a core, and it stayed so "
         "when measured again); the number says how busy the machine was: measure again on a quiet machine",
    "host-bound": "the host's time to issue one call (shown) exceeds the GPU time; end to end, a program that "
                  "does not overlap it pays the host time",
}


def marks(row: Mapping[str, Any]) -> list[str]:
    """The ``MARKS`` keys that apply to a timed row."""
    found = []
    if truthy(row.get("noisy")):
        found.append("~")
    if truthy(row.get("disturbed")):
        found.append("!")
    if row.get("bound") == "host":
        found.append("host-bound")
    return found


def _cell(row: Mapping[str, Any]) -> str:
    status = row["status"]
    if status != "ok":
        return status.upper()
    text = f"{row['median_ms']:.4g} ± {row['iqr_ms']:.2g}"
    for mark in marks(row):
        text += f" (host-bound: host {row['host_ms']:.4g})" if mark == "host-bound" else f" {mark}"
    return text


def _host_cell(row: Mapping[str, Any]) -> str:
    if row["status"] != "ok" or pd.isna(row.get("host_ms")):
        return ""
    return f"{row['host_ms']:.4g} / {row['wall_ms']:.4g}"


def legend(frame: pd.DataFrame) -> list[str]:
    """Lines explaining the marks that appear in ``frame``'s timed rows."""
    used = {m for r in frame[frame["status"] == "ok"].to_dict("records") for m in marks(r)}
    return [f"- `{mark}` {meaning}" for mark, meaning in MARKS.items() if mark in used]


def markdown(frame: pd.DataFrame, env: Mapping[str, Any] | None = None) -> str:
    """The whole report.md."""
    frame = with_speedup(frame)
    lines = ["# scSE benchmark report", ""]
    if env:
        where = env.get("gpu_name") or env.get("cpu_model")
        lines += [
            f"- device: {env.get('device_name', env.get('device'))} ({where}), threads: {env.get('threads')}",
            f"- torch {env.get('torch')}, CUDA {env.get('cuda')}, Python {env.get('python')}, "
            f"commit {str(env.get('git_commit'))[:10]}{' (dirty)' if env.get('git_dirty') else ''}, {env.get('date')}",
            "",
        ]
    lines += [
        "Cells: median latency in ms ± IQR (on CUDA the GPU time, without the host's launch gaps). "
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
        speed = pivot(group, "speedup_vs_eager")
        if speed.notna().any().any():
            lines += [f"Speedup over `{BASELINE_VARIANT}` (×, higher is faster):", ""]
            lines += [speed.map(lambda v: f"{v:.2f}" if pd.notna(v) else "").to_markdown(disable_numparse=True), ""]
        lines += profiling_markdown(group)  # FLOPs, peak memory, GPU telemetry
    problems = frame[frame["status"] != "ok"]
    if not problems.empty:
        lines += ["## Cases not timed", ""]
        cols = ["variant", "device", "dtype", "mode", "batch", "channels", "height", "width", "status", "reason"]
        lines += [problems[cols].to_markdown(index=False), ""]
    return "\n".join(lines)


#: How the terminal summary shows each of ``MARKS``.
SUMMARY_MARKS: dict[str, str] = {
    "~": " [yellow]~[/]", "!": " [bold red]![/]", "host-bound": " [magenta]host-bound: host {host:.3g}[/]",
}

STYLES: dict[str, str] = {Status.MISMATCH: "bold red", Status.ERROR: "yellow", Status.OOM: "magenta",
                          Status.SKIPPED: "dim", Status.CRASHED: "bold red", Status.TIMEOUT: "red"}  # fmt: skip


def summary_tables(frame: pd.DataFrame) -> list[Table]:
    """Rich tables, variants × configurations: median, IQR and speedup over eager; failures in colour."""
    frame = with_speedup(frame)
    tables = []
    for (device, dtype, mode), group in groups(frame):
        g = group.assign(config=config_label(group))
        configs = list(dict.fromkeys(g["config"]))
        table = Table(title=f"{device} · {dtype} · {mode}  (median ms ± IQR, ×speedup over {BASELINE_VARIANT})")
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
                    speed = r["speedup_vs_eager"]
                    tail = f" [cyan]{speed:.2f}×[/]" if pd.notna(speed) else ""
                    flags = "".join(SUMMARY_MARKS[m].format(host=r.get("host_ms")) for m in marks(r))
                    cells.append(f"{r['median_ms']:.4g} ± {r['iqr_ms']:.2g}{tail}{flags}")
                else:
                    cells.append(f"[{STYLES.get(r['status'], 'red')}]{str(r['status']).upper()}[/]")
            table.add_row(str(variant), *cells)
        tables.append(table)
    return tables


def print_summary(frame: pd.DataFrame, console: Console) -> None:
    for table in summary_tables(frame):
        console.print(table)
    problems = frame[frame["status"].isin(BROKEN)]
    for r in problems.to_dict("records"):
        style = STYLES.get(r["status"], "red")
        console.print(f"[{style}]{r['status'].upper()}[/] {r['variant']} {r['channels']}x{r['height']}x{r['width']} "
                      f"b{r['batch']} {r['dtype']} {r['mode']}: {r['reason']}")
    for line in legend(frame):
        console.print(escape(line.removeprefix("- ").replace("`", "")))
