"""Show a ``Comparison``: the terminal table (rich) and the Markdown for a pull request or a CI job summary."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from harness.results.compare import (
    CONFIG_FIELDS,
    METRIC_WORDS,
    CaseComparison,
    Comparison,
    Key,
    _config_part,
    case_label,
    config_label,
    shape_label,
    variant_label,
)
from harness.results.compare_stats import Verdict
from harness.results.tables import escape_md, md_table

#: What the short notes in the tables mean.
NOTE_LEGEND: dict[str, str] = {
    "noisy": "IQR above 10% of the median on one side",
    "within noise": "significant, but the change is no larger than the samples' own IQR / median (or, with "
    "--processes, than the spread of the processes' medians; with --relative-to, than the reference's own): whole "
    "runs shift that much on a busy machine",
    "few samples": "too few samples for the test ever to reach p < alpha",
    "by CIs": "no raw samples: judged by whether the 95% CIs of the medians overlap",
    "no raw samples": "no raw samples and no usable confidence interval",
    "processes overlap": "with several processes a side (--processes), some process of one run was as fast as "
    "some process of the other: the change does not show in every process",
    "disturbed": "the CPU was starved on one side (its threads waited for a core); no SLOWER or FASTER verdict: "
    "measure again on a quiet machine",
    "host-bound": "the host's time to issue a call exceeds the GPU time compared here: end to end the host "
    "time is what a user gets (compare it with --metric host or wall)",
}


def varying_fields(comparison: Comparison) -> tuple[list[str], dict[str, Any]]:
    """Config fields that differ between the comparison's cases, and the values all of them share."""
    keys = [c.key for c in comparison.cases] + [s.key for s in comparison.status_changes]
    keys += list(comparison.only_baseline) + list(comparison.only_current)
    values: dict[str, set[Any]] = {}
    for key in keys:
        for column, value in key:
            values.setdefault(column, set()).add(value)
    varying = [c for c in CONFIG_FIELDS if len(values.get(c, ())) > 1]
    common = {c: next(iter(values[c])) for c in CONFIG_FIELDS if len(values.get(c, ())) == 1}
    return varying, common


def _pct(change: float) -> str:
    return f"{change * 100:+.1f}%" if math.isfinite(change) else "n/a"


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2g}" if value >= 1e-4 else "<1e-4"


def headline(comparison: Comparison) -> str:
    """One line: did it regress, and the counts per verdict."""
    counts = ", ".join(f"{comparison.count(v)} {v.value.lower()}" for v in Verdict)
    if comparison.nothing_judged:  # never "no regression": a change that made every case skip passed so
        return f"NOT COMPARED: {comparison.nothing_judged}"
    lost = sum(1 for s in comparison.status_changes if s.baseline_status == "ok" and not s.broken)
    if lost:  # a variant now skipped is no regression, but its cases were not judged: said in the headline
        counts += f"; {lost} timed before, not now"
    if comparison.failed:
        parts = []
        if comparison.regressions:
            parts.append(f"{len(comparison.regressions)} regression(s)")
        if comparison.broken:
            parts.append(f"{len(comparison.broken)} case(s) broken")
        if comparison.fail_on_missing and comparison.missing:
            parts.append(f"{len(comparison.missing)} baseline case(s) not timed now")
        return f"FAIL: {' and '.join(parts)} ({counts})"
    return f"OK: no regression ({counts})"


#: The verdict cell of a case whose runs were measured under different settings (``unlike_settings``):
#: its change is shown, but judging it SLOWER there read as a regression the gate then did not count.
NOT_JUDGED = "not judged"


def value_columns(comparison: Comparison) -> tuple[str, str]:
    """The headings of the two sides' figures: ``baseline ms``, or ``baseline /eager`` with ``--relative-to``."""
    return f"baseline {comparison.unit}", f"current {comparison.unit}"


def _case_table_frame(cases: Sequence[CaseComparison], config_columns: Sequence[str], judged: bool = True,
                      values: tuple[str, str] = ("baseline ms", "current ms")) -> pd.DataFrame:  # fmt: skip
    records = []
    for c in cases:
        record = {"variant": variant_label(c.fields), "N×C×H×W": shape_label(c.fields)}
        if config_columns:
            record["config"] = config_label(c.fields, config_columns)
        record |= {
            "verdict": c.verdict.value if judged else NOT_JUDGED,
            "change": _pct(c.change),
            values[0]: f"{c.baseline_ms:.4g}",
            values[1]: f"{c.current_ms:.4g}",
            "p": _p(c.p_value),
            "n": f"{c.n_baseline}/{c.n_current}",
            "note": c.note,
        }
        records.append(record)
    return pd.DataFrame.from_records(records)


def _common_line(common: Mapping[str, Any]) -> str:
    return "All cases: " + " · ".join(_config_part(c, v) for c, v in common.items()) if common else ""


def _legend(cases: Sequence[CaseComparison]) -> list[str]:
    used = {part.split(" (")[0] for c in cases for part in c.note.split("; ") if part}
    return [f"{name}: {meaning}" for name, meaning in NOTE_LEGEND.items() if name in used]


def _key_frame(keys: Iterable[Key]) -> pd.DataFrame:
    return pd.DataFrame({"case": [case_label(dict(k)) for k in keys]})


def to_markdown(comparison: Comparison, *, title: str = "Benchmark comparison") -> str:
    """Markdown for a pull-request comment or ``$GITHUB_STEP_SUMMARY``: the news first, the rest folded."""
    c = comparison
    icon = "❌" if c.failed else "⚠️" if c.nothing_judged else "✅"
    lines = [f"## {icon} {title}", ""]
    if c.env_differences:
        lines += ["> [!WARNING]", "> **The environments differ; these timings may not be comparable.**"]
        lines += [f"> - {escape_md(d)}" for d in c.env_differences]
        lines.append("")
    for warning in c.warnings:
        lines += ["> [!WARNING]", f"> {escape_md(warning)}", ""]
    lines += [
        f"**{headline(c)}**",
        "",
        f"Baseline `{c.baseline}` → current `{c.current}`, compared on {METRIC_WORDS[c.metric]}"
        f"{_relative_words(c)}. "
        f"A regression is a case slower by more than "
        f"{c.threshold:.0%} with Mann–Whitney p < {c.alpha:g} on the raw samples.",
        "",
    ]
    varying, common = varying_fields(c)
    if common:
        lines += [_common_line(common) + ".", ""]
    news = [r for r in c.cases if r.verdict is not Verdict.SAME]
    same = [r for r in c.cases if r.verdict is Verdict.SAME]
    if news:
        lines += [md_table(_case_table_frame(news, varying, not c.unlike_settings, value_columns(c)), index=False), ""]
    if c.status_changes:
        lines += ["### Cases not timed on both sides", ""]
        frame = pd.DataFrame.from_records(
            [
                {"case": s.label, "baseline": s.baseline_status, "current": s.current_status,
                 "broken": "yes" if s.broken else "", "reason": s.reason}
                for s in c.status_changes
            ]  # fmt: skip
        )
        lines += [md_table(frame, index=False), ""]
    if c.reference_line:
        lines += [escape_md(c.reference_line) + ".", ""]
    for keys, words in ((c.only_baseline, "only in the baseline"), (c.only_current, "only in the current run"),
                        (c.unreferenced, f"not judged: no {c.relative_to} beside them")):  # fmt: skip
        if keys:
            lines += [f"<details><summary>{len(keys)} case(s) {words}</summary>", ""]
            lines += [md_table(_key_frame(keys), index=False), "", "</details>", ""]
    if same:
        lines += [f"<details><summary>{len(same)} case(s) within ±{c.threshold:.0%} (SAME)</summary>", ""]
        frame = _case_table_frame(same, varying, not c.unlike_settings, value_columns(c))
        lines += [md_table(frame, index=False), "", "</details>", ""]
    notes = _legend(c.cases) + list(c.notes)
    if notes:
        lines += ["<details><summary>Notes</summary>", ""] + [f"- {escape_md(n)}" for n in notes]
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def _relative_words(comparison: Comparison) -> str:
    """How the figures were made comparable, with ``--relative-to``: each over the reference in its own run."""
    ref = comparison.relative_to
    if ref is None:
        return ""
    return (f", each case divided by {ref}'s at its configuration in the same run (`--relative-to {ref}`: a machine "
            f"slower that day cancels)")


STYLES = {Verdict.SLOWER: "bold red", Verdict.FASTER: "green", Verdict.AMBIGUOUS: "yellow", Verdict.SAME: "dim"}


#: Columns a narrow terminal may drop, least useful first (the Markdown keeps them all; "baseline" is
#: the baseline's figure, ``value_columns``). The note goes last: it says why a large change is
#: AMBIGUOUS (disturbed, noisy), and it wraps instead.
OPTIONAL_COLUMNS: tuple[str, ...] = ("n", "p", "baseline", "note")


def rich_table(comparison: Comparison, width: int | None = None) -> Table:
    """Every compared case, worst first, coloured by verdict; fields shared by all cases go in the caption.

    Identity columns never wrap or shrink; when ``width`` is too small for everything, the
    columns in ``OPTIONAL_COLUMNS`` are left out in that order rather than truncate a verdict.
    """
    varying, common = varying_fields(comparison)
    judged = not comparison.unlike_settings
    values = value_columns(comparison)
    frame = _case_table_frame(comparison.cases, varying, judged, values)
    numeric = {*values, "change", "p", "n"}
    widths = {name: max([len(str(v)) for v in frame[name]] + [len(name)]) for name in frame.columns}
    if "note" in widths:  # it wraps between words: its longest word, up to a dozen columns, holds it legibly
        words = [len(w) for note in frame["note"] for w in str(note).replace(";", "; ").split()]
        widths["note"] = min(12, max([6, *words]))
    shown = list(frame.columns)
    for name in (values[0] if n == "baseline" else n for n in OPTIONAL_COLUMNS):
        if width is None or sum(widths[c] + 2 for c in shown) <= width:
            break
        if name in shown:
            shown.remove(name)
    table = Table(caption=_common_line(common), caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)  # fmt: skip
    for name in shown:
        table.add_column(name, justify="right" if name in numeric else "left", no_wrap=name != "note",
                         min_width=None if name == "note" else widths[name])  # fmt: skip
    for r, row in zip(comparison.cases, frame.to_dict("records"), strict=True):
        cells = {k: escape(str(v)) for k, v in row.items() if k in shown}
        cells["verdict"] = f"[{STYLES[r.verdict]}]{r.verdict.value}[/]" if judged else f"[dim]{NOT_JUDGED}[/]"
        table.add_row(*cells.values())
    return table


def render(comparison: Comparison, console: Console) -> None:
    """The terminal view: environment warning first and loud, then the table, then the leftovers."""
    c = comparison
    if c.env_differences:
        console.print(
            Panel(
                "\n".join(escape(d) for d in c.env_differences),
                title="[bold]WARNING: the environments differ; timings may not be comparable[/]",
                border_style="bold yellow",
            )
        )
    # the runs' paths on a line of their own that never wraps inside a path: they are copied from here
    console.print(f"{escape(str(c.baseline))} → {escape(str(c.current))}", soft_wrap=True, highlight=False)
    console.print(rich_table(c, console.width))
    parts: list[Any] = []
    for s in c.status_changes:
        style = "bold red" if s.broken else "yellow"
        parts.append(f"[{style}]{s.baseline_status} → {s.current_status}[/] {escape(s.label)}: {escape(s.reason)}")
    for keys, words in ((c.only_baseline, "only in the baseline"), (c.only_current, "only in the current run"),
                        (c.unreferenced, f"not judged, no {c.relative_to} beside it")):  # fmt: skip
        for k in keys:
            parts.append(f"[dim]{words}:[/] {escape(case_label(dict(k)))}")
    if c.reference_line:
        parts.append(f"[dim]{escape(c.reference_line)}[/]")
    for note in _legend(c.cases) + list(c.notes):
        parts.append(f"[dim]note: {escape(note)}[/]")
    if parts:
        console.print(Group(*parts))
    for warning in c.warnings:
        console.print(f"[bold yellow]warning: {escape(warning)}[/]", soft_wrap=True)
    style = "bold red" if c.failed else "bold yellow" if c.nothing_judged else "bold green"
    console.print(f"[{style}]{escape(headline(c))}[/]")
