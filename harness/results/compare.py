"""Compare two runs case by case: is the current one slower than the baseline, and do we believe it?

A ratio of medians alone cannot tell a regression from noise, so each matched case also gets a
Mann–Whitney U test on the raw samples (distribution-free: latencies are skewed). A verdict needs
both a change larger than the threshold and a p-value below alpha, as asv does. A large change
without significance, or too few samples for the test ever to be significant, is AMBIGUOUS:
the honest answer is "measure again", not "same".

Results files without raw samples (``results.csv``) fall back to the stored 95% confidence
intervals of the medians: two non-overlapping 95% intervals imply p < 0.0056 (Schenker &
Gentleman 2001, equal widths; unequal widths give a smaller p), so the fallback is used only when
``alpha`` is at least that.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from scipy import stats as sps

from harness.results.store import ENV_JSON, RESULTS_CSV, RESULTS_JSONL, truthy
from harness.sweep.cases import KEY_COLUMNS  # older schemas may lack some: only shared columns are matched

DEFAULT_THRESHOLD = 0.05
DEFAULT_ALPHA = 0.01
#: The level of the stored ``ci_low_ms``/``ci_high_ms`` (harness.measure.stats uses 95%).
CSV_CI_LEVEL = 0.95
#: Largest p-value that two non-overlapping 95% intervals can hide (equal widths: z = 1.96·√2).
CI_OVERLAP_P = float(2 * sps.norm.sf(sps.norm.ppf(0.5 + CSV_CI_LEVEL / 2) * math.sqrt(2)))
#: Environment fields whose difference makes timings incomparable, with the words to show.
ENV_FIELDS: tuple[tuple[str, str], ...] = (
    ("gpu_name", "GPU model"),
    ("cpu_model", "CPU model"),
    ("torch", "torch version"),
    ("cuda", "CUDA version"),
    ("hostname", "host"),
    ("threads", "torch threads"),
    ("steady_malloc", "steady CPU allocator"),
)
#: Of ``ENV_FIELDS``, those that only matter on one kind of device.
CPU_ONLY_FIELDS = frozenset({"cpu_model", "threads", "steady_malloc"})
CUDA_ONLY_FIELDS = frozenset({"gpu_name", "cuda"})


@dataclass(frozen=True)
class Figure:
    """Which of a row's time figures a comparison judges, and where its numbers are."""

    median: str
    samples: str
    ci_low: str
    ci_high: str
    iqr: str | None


METRIC_WORDS: dict[str, str] = {
    "median": "median latency (GPU time on CUDA)", "host": "host time per call", "wall": "synchronous wall time",
}
#: ``median``: the primary latency (GPU time on CUDA, the call's time on CPU); ``host``: the host's
#: time to issue a call; ``wall``: sync, call, sync. On CPU all three are the call's time.
METRICS: dict[str, Figure] = {
    "median": Figure("median_ms", "samples_ms", "ci_low_ms", "ci_high_ms", "iqr_ms"),
    "host": Figure("host_ms", "host_samples_ms", "host_ci_low_ms", "host_ci_high_ms", None),
    "wall": Figure("wall_ms", "wall_samples_ms", "wall_ci_low_ms", "wall_ci_high_ms", None),
}


class CompareError(ValueError):
    """Input that cannot be compared; the message is one line fit to show a user."""


class Verdict(StrEnum):
    FASTER = "FASTER"
    SLOWER = "SLOWER"
    SAME = "SAME"
    AMBIGUOUS = "AMBIGUOUS"


Key = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class LoadedRun:
    """One side of a comparison: its rows, its environment, where it came from."""

    source: str
    records: tuple[Mapping[str, Any], ...] = field(repr=False, compare=False)
    env: Mapping[str, Any] = field(repr=False, compare=False)
    has_samples: bool
    columns: frozenset[str]
    notes: tuple[str, ...] = ()

    @property
    def device(self) -> str | None:
        """The device type ("cpu"/"cuda") from env.json, else the one the rows agree on."""
        if self.env.get("device"):
            return str(self.env["device"]).split(":")[0]
        devices = {str(r["device"]).split(":")[0] for r in self.records if _normalise(r.get("device")) is not None}
        return devices.pop() if len(devices) == 1 else None

    def by_key(self, columns: Sequence[str]) -> tuple[dict[Key, Mapping[str, Any]], int]:
        """Rows keyed by ``columns`` in file order; a case seen twice keeps its last row (a resumed run)."""
        out: dict[Key, Mapping[str, Any]] = {}
        repeated = 0
        for record in self.records:
            key = tuple((c, _normalise(record.get(c))) for c in columns)
            repeated += key in out
            out.pop(key, None)
            out[key] = record
        return out, repeated


@dataclass(frozen=True)
class CaseResult:
    """The comparison of one case present, and timed, on both sides."""

    key: Key
    baseline_ms: float
    current_ms: float
    ratio: float  # current / baseline: above 1 is slower
    p_value: float | None
    n_baseline: int
    n_current: int
    verdict: Verdict
    regression: bool
    method: str  # "mann-whitney", "ci-overlap" or "none"
    noise: float = 0.0  # the larger IQR / median of the two sides
    note: str = ""

    @property
    def fields(self) -> dict[str, Any]:
        return dict(self.key)

    @property
    def change(self) -> float:
        """Relative change of the median: +0.3 is 30% slower."""
        return self.ratio - 1.0

    @property
    def label(self) -> str:
        return case_label(self.fields)


#: A case that was ``ok`` and now ends in one of these fails the comparison like a regression.
BROKEN_STATUSES = frozenset({"mismatch", "error", "oom", "crashed", "timeout"})


@dataclass(frozen=True)
class StatusChange:
    """A case timed on one side but not the other (a mismatch, an error, a skip)."""

    key: Key
    baseline_status: str
    current_status: str
    reason: str

    @property
    def broken(self) -> bool:
        """Valid before, wrong or failing now: as bad as a regression."""
        return self.baseline_status == "ok" and self.current_status in BROKEN_STATUSES

    @property
    def label(self) -> str:
        return case_label(dict(self.key))


@dataclass(frozen=True)
class Comparison:
    """Everything ``compare`` found; the CLI renders it and takes its exit code from ``failed``."""

    baseline: str
    current: str
    threshold: float
    alpha: float
    cases: tuple[CaseResult, ...]
    status_changes: tuple[StatusChange, ...]
    only_baseline: tuple[Key, ...]
    only_current: tuple[Key, ...]
    env_differences: tuple[str, ...]
    notes: tuple[str, ...] = ()
    metric: str = "median"

    @property
    def regressions(self) -> tuple[CaseResult, ...]:
        return tuple(c for c in self.cases if c.regression)

    @property
    def broken(self) -> tuple[StatusChange, ...]:
        return tuple(s for s in self.status_changes if s.broken)

    @property
    def failed(self) -> bool:
        """A significant slowdown beyond the threshold, or a case that was valid and is now wrong."""
        return bool(self.regressions or self.broken)

    def count(self, verdict: Verdict) -> int:
        return sum(c.verdict is verdict for c in self.cases)

    def frame(self) -> pd.DataFrame:
        """One row per compared case, for tables and for people who want to do their own analysis."""
        records = [
            {
                **c.fields,
                "baseline_ms": c.baseline_ms,
                "current_ms": c.current_ms,
                "ratio": c.ratio,
                "change": c.change,
                "p_value": c.p_value,
                "n_baseline": c.n_baseline,
                "n_current": c.n_current,
                "verdict": c.verdict.value,
                "regression": c.regression,
                "method": c.method,
                "noise": c.noise,
                "note": c.note,
            }
            for c in self.cases
        ]
        return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------------------------- loading


def _normalise(value: Any) -> Any:
    """One spelling per key value: 8 == 8.0 == "8" from CSV, NaN == None, "True" == True."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else float(value)
    text = str(value)
    if text in ("True", "False"):
        return text == "True"
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else number


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows, notes = [], []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            notes.append(f"{path}: line {number} is not a whole JSON row (cut off?); skipped")
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, notes


def load_run(path: str | Path) -> LoadedRun:
    """A run folder (results.jsonl preferred, else results.csv) or one results file, with its env.json."""
    p = Path(path)
    if not p.exists():
        raise CompareError(f"{p}: no such file or folder")
    if p.is_dir():
        candidates = [p / RESULTS_JSONL, p / RESULTS_CSV]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise CompareError(f"{p}: no {RESULTS_JSONL} or {RESULTS_CSV} in this folder")
        file, env_path = found, p / ENV_JSON
    else:
        file, env_path = p, p.parent / ENV_JSON
    notes: list[str] = []
    try:
        if file.suffix == ".jsonl":
            rows, notes = _read_jsonl(file)
            frame = pd.DataFrame.from_records(rows)
        elif file.suffix == ".csv":
            frame = pd.read_csv(file)
        else:
            raise CompareError(f"{file}: expected a run folder, a .jsonl or a .csv results file")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CompareError(f"{file}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    if frame.empty:
        raise CompareError(f"{file}: holds no results")
    missing = [c for c in ("variant", "status", "median_ms") if c not in frame.columns]
    if missing:
        raise CompareError(f"{file}: not a results file (no column {', '.join(missing)})")
    env: dict[str, Any] = {}
    if env_path.is_file():
        try:
            loaded = json.loads(env_path.read_text(encoding="utf-8"))
            env = loaded if isinstance(loaded, dict) else {}
        except (OSError, json.JSONDecodeError) as exc:
            notes.append(f"{env_path}: unreadable ({exc}); environment not checked")
    else:
        notes.append(f"{file}: no {ENV_JSON} beside it; its environment cannot be checked")
    records = tuple(frame.astype(object).where(frame.notna(), None).to_dict("records"))
    return LoadedRun(str(p), records, env, "samples_ms" in frame.columns, frozenset(frame.columns), tuple(notes))


# ---------------------------------------------------------------------------------------- statistics


def min_attainable_p(n1: int, n2: int) -> float:
    """The smallest two-sided exact Mann–Whitney p-value with these sample sizes (no ties).

    With 3 samples a side it is 0.1: no alpha below that can ever be met, so such a case is
    AMBIGUOUS whatever its medians say.
    """
    if n1 < 1 or n2 < 1:
        return 1.0
    log_comb = math.lgamma(n1 + n2 + 1) - math.lgamma(n1 + 1) - math.lgamma(n2 + 1)  # comb overflows a float
    return min(1.0, 2.0 * math.exp(-log_comb))


def _samples(value: Any) -> np.ndarray:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return np.array([], dtype=float)
    if not isinstance(value, (list, tuple, np.ndarray)):
        return np.array([], dtype=float)
    x = np.asarray(value, dtype=float)
    return x[np.isfinite(x)]


def _float(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def judge(
    ratio: float,
    p_value: float | None,
    significant_possible: bool,
    threshold: float,
    alpha: float,
    noise: float = 0.0,
) -> Verdict:
    """The verdict from the size of the change, its significance, and the runs' own spread.

    Slower means ``ratio > 1 + threshold``; faster means ``ratio < 1 / (1 + threshold)``, so that
    a 5% threshold is the same distance on a log scale either way. ``noise`` is the larger
    relative IQR (IQR / median) of the two sides: the test treats a run's samples as independent,
    but interference on a shared machine shifts whole runs, so a change no larger than the
    samples' own spread is AMBIGUOUS however small its p-value (see ``NOTE_LEGEND["within noise"]``).
    """
    size = abs(math.log(ratio)) if 0 < ratio < math.inf else math.inf
    if not significant_possible or p_value is None:
        return Verdict.AMBIGUOUS
    if size <= math.log1p(threshold):
        return Verdict.SAME
    if p_value >= alpha or size <= math.log1p(noise):
        return Verdict.AMBIGUOUS
    return Verdict.SLOWER if ratio > 1.0 else Verdict.FASTER


def relative_iqr(samples: np.ndarray) -> float:
    """IQR / median of the samples; 0 when there are none to judge by."""
    if samples.size < 2:
        return 0.0
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return float((q3 - q1) / med) if med > 0 else 0.0


def _figure_of(row: Mapping[str, Any], metric: str) -> tuple[np.ndarray, float, float, float, float]:
    """Samples, median, CI and IQR of ``metric`` in ``row``. A CPU row keeps one set of samples,
    which is all three figures': the device is the host there."""
    fig = METRICS["median" if str(row.get("device", "")).startswith("cpu") else metric]
    iqr = _float(row.get(fig.iqr)) if fig.iqr else math.nan
    return (_samples(row.get(fig.samples)), _float(row.get(fig.median)), _float(row.get(fig.ci_low)),
            _float(row.get(fig.ci_high)), iqr)


def compare_case(
    key: Key,
    base: Mapping[str, Any],
    cur: Mapping[str, Any],
    threshold: float,
    alpha: float,
    metric: str = "median",
) -> CaseResult:
    """Compare one case timed on both sides, from raw samples when both have them.

    A case measured while its CPU was starved (``disturbed``) on either side gets no SLOWER or
    FASTER verdict: its numbers say how busy the machine was, not how fast the code is.
    """
    b_samples, b_med, b_low, b_high, b_iqr = _figure_of(base, metric)
    c_samples, c_med, c_low, c_high, c_iqr = _figure_of(cur, metric)
    notes: list[str] = []
    if b_samples.size and c_samples.size:
        b_med, c_med = float(np.median(b_samples)), float(np.median(c_samples))
        ratio = c_med / b_med if b_med > 0 else math.inf
        possible = min_attainable_p(b_samples.size, c_samples.size) < alpha
        p_value: float | None = float(sps.mannwhitneyu(b_samples, c_samples, alternative="two-sided").pvalue)
        if not possible:
            notes.append("few samples")
        method = "mann-whitney"
        n_b, n_c = int(b_samples.size), int(c_samples.size)
        noise = max(relative_iqr(b_samples), relative_iqr(c_samples))
    else:
        ratio = c_med / b_med if b_med > 0 else math.inf
        n_b, n_c = int(_float(base.get("n_samples")) or 0), int(_float(cur.get("n_samples")) or 0)
        spreads = [iqr / m for iqr, m in ((b_iqr, b_med), (c_iqr, c_med)) if m > 0]
        noise = max([v for v in spreads if math.isfinite(v)], default=0.0)
        lows, highs = (b_low, c_low), (b_high, c_high)
        if any(math.isnan(v) for v in lows + highs) or alpha < CI_OVERLAP_P:
            p_value, possible, method = None, False, "none"
            notes.append("no raw samples")
        else:
            overlap = lows[0] <= highs[1] and lows[1] <= highs[0]
            # Non-overlapping intervals bound p below CI_OVERLAP_P; overlapping ones say nothing.
            p_value, possible, method = (1.0 if overlap else CI_OVERLAP_P), True, "ci-overlap"
            notes.append("CI overlap")
    overlap = False
    b_proc, c_proc = _samples(base.get("process_medians_ms")), _samples(cur.get("process_medians_ms"))
    if metric == "median" and b_proc.size > 1 and c_proc.size > 1 and min(b_proc.min(), c_proc.min()) > 0:
        # Several processes a side: their spread is noise too, and a change must show in every one.
        noise = max(noise, b_proc.max() / b_proc.min() - 1, c_proc.max() / c_proc.min() - 1)
        overlap = not (c_proc.min() > b_proc.max() if ratio > 1 else c_proc.max() < b_proc.min())
    verdict = judge(ratio, p_value, possible, threshold, alpha, noise)
    if verdict is Verdict.AMBIGUOUS and possible and p_value is not None and p_value < alpha:
        notes.append("within noise")
    if overlap and verdict in (Verdict.SLOWER, Verdict.FASTER):
        verdict = Verdict.AMBIGUOUS
        notes.append("processes overlap")
    if truthy(base.get("noisy")) or truthy(cur.get("noisy")):
        notes.append("noisy")
    if truthy(base.get("disturbed")) or truthy(cur.get("disturbed")):
        notes.append("disturbed")
        if verdict in (Verdict.SLOWER, Verdict.FASTER):
            verdict = Verdict.AMBIGUOUS
    if metric == "median" and (base.get("bound") == "host" or cur.get("bound") == "host"):
        hosts = [_float(r.get("host_ms")) for r in (base, cur)]
        notes.append(f"host-bound (host {hosts[0]:.4g} → {hosts[1]:.4g} ms)")
    return CaseResult(
        key=key,
        baseline_ms=b_med,
        current_ms=c_med,
        ratio=ratio,
        p_value=p_value,
        n_baseline=n_b,
        n_current=n_c,
        verdict=verdict,
        regression=verdict is Verdict.SLOWER,
        method=method,
        noise=noise,
        note="; ".join(notes),
    )


# ------------------------------------------------------------------------------------------ compare


def env_differences(baseline: LoadedRun, current: LoadedRun) -> list[str]:
    """Human lines for each environment field that differs (missing on both sides is no difference)."""
    device = current.device or baseline.device
    lines = []
    for name, words in ENV_FIELDS:
        if device == "cpu" and name in CUDA_ONLY_FIELDS or device == "cuda" and name in CPU_ONLY_FIELDS:
            continue
        b, c = baseline.env.get(name), current.env.get(name)
        if b is None and c is None:
            continue
        if b != c:
            lines.append(f"{words} differs: baseline {b!r}, current {c!r}")
    return lines


def compare(
    baseline: str | Path | LoadedRun,
    current: str | Path | LoadedRun,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    strict_env: bool = False,
    metric: str = "median",
) -> Comparison:
    """Match the two runs' cases by their key columns and judge each on ``metric`` (``METRICS``);
    raises ``CompareError``."""
    if metric not in METRICS:
        raise CompareError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    if not 0 < threshold < 10:
        raise CompareError(f"threshold must be a fraction such as 0.05, got {threshold}")
    if not 0 < alpha < 1:
        raise CompareError(f"alpha must be between 0 and 1, got {alpha}")
    base = baseline if isinstance(baseline, LoadedRun) else load_run(baseline)
    cur = current if isinstance(current, LoadedRun) else load_run(current)
    if base.device and cur.device and base.device != cur.device:
        raise CompareError(f"different devices: baseline ran on {base.device}, current on {cur.device}")
    differences = env_differences(base, cur)
    if differences and strict_env:
        raise CompareError("environments differ (--strict-env): " + "; ".join(differences))
    for run in (base, cur):
        if metric != "median" and run.device != "cpu" and METRICS[metric].median not in run.columns:
            raise CompareError(f"{run.source}: no {METRICS[metric].median} column (made before host and wall "
                               f"time were measured); compare it with --metric median")
    columns = [c for c in KEY_COLUMNS if c in base.columns and c in cur.columns]
    notes = list(base.notes) + list(cur.notes)
    one_sided = sorted((base.columns ^ cur.columns) & set(KEY_COLUMNS))
    if one_sided:
        notes.append(f"key column(s) {', '.join(one_sided)} on one side only (older file?): matched without them")
    b_rows, b_repeated = base.by_key(columns)
    c_rows, c_repeated = cur.by_key(columns)
    for run, repeated in ((base, b_repeated), (cur, c_repeated)):
        if repeated:
            notes.append(f"{run.source}: {repeated} case(s) appear more than once; the last row of each is used")
    common = [k for k in c_rows if k in b_rows]
    if not common:
        raise CompareError(f"no case in common between {base.source} and {cur.source}")
    results, changes = [], []
    for key in common:
        b_row, c_row = b_rows[key], c_rows[key]
        b_status, c_status = str(b_row.get("status")), str(c_row.get("status"))
        if b_status == "ok" and c_status == "ok":
            results.append(compare_case(key, b_row, c_row, threshold, alpha, metric))
        elif b_status != c_status:
            reason = c_row.get("reason") if c_status != "ok" else b_row.get("reason")
            changes.append(StatusChange(key, b_status, c_status, "" if _normalise(reason) is None else str(reason)))
    only_b = tuple(k for k in b_rows if k not in c_rows)
    only_c = tuple(k for k in c_rows if k not in b_rows)
    if not base.has_samples or not cur.has_samples:
        notes.append("raw samples missing on one side (a .csv file?): verdicts use 95% CI overlap where they can")
    order = {Verdict.SLOWER: 0, Verdict.AMBIGUOUS: 1, Verdict.FASTER: 2, Verdict.SAME: 3}
    results.sort(key=lambda r: (order[r.verdict], -abs(math.log(r.ratio)) if r.ratio > 0 else 0.0))
    return Comparison(
        baseline=base.source,
        current=cur.source,
        threshold=threshold,
        alpha=alpha,
        cases=tuple(results),
        status_changes=tuple(changes),
        only_baseline=only_b,
        only_current=only_c,
        env_differences=tuple(differences),
        notes=tuple(notes),
        metric=metric,
    )


# ---------------------------------------------------------------------------------------- rendering


#: Key fields besides the variant and the input shape, in the order labels show them.
CONFIG_FIELDS: tuple[str, ...] = ("device", "dtype", "mode", "reduction", "fusion", "bias")
#: What the short notes in the tables mean.
NOTE_LEGEND: dict[str, str] = {
    "noisy": "IQR above 10% of the median on one side",
    "within noise": "significant, but the change is no larger than the samples' own IQR / median (or, with "
    "--processes, than the spread of the processes' medians): whole runs shift that much on a busy machine",
    "few samples": "too few samples for the test ever to reach p < alpha",
    "CI overlap": "no raw samples: judged by whether the 95% CIs of the medians overlap",
    "no raw samples": "no raw samples and no usable confidence interval",
    "processes overlap": "with several processes a side (--processes), some process of one run was as fast as "
    "some process of the other: the change does not show in every process",
    "disturbed": "the CPU was starved on one side (its threads waited for a core); no SLOWER or FASTER verdict: "
    "measure again on a quiet machine",
    "host-bound": "the host's time to issue a call exceeds the GPU time compared here: end to end the host "
    "time is what a user gets (compare it with --metric host or wall)",
}


def _config_part(column: str, value: Any) -> str:
    if column == "reduction":
        return f"r{value}"
    if column == "bias":
        return "bias" if value else "no bias"
    return str(value)


def shape_label(fields: Mapping[str, Any]) -> str:
    return "×".join(str(fields.get(c)) for c in ("batch", "channels", "height", "width") if c in fields)


def config_label(fields: Mapping[str, Any], columns: Sequence[str] = CONFIG_FIELDS) -> str:
    """``float32 forward r2 add``: the given key fields, compactly."""
    return " ".join(_config_part(c, fields[c]) for c in columns if c in fields)


def case_label(fields: Mapping[str, Any]) -> str:
    """``eager 8×32×64×64 cpu float32 forward r2 add``: every key field, in a fixed order."""
    shown = [c for c in CONFIG_FIELDS if c != "bias" or fields.get("bias")]
    parts = [str(fields.get("variant")), shape_label(fields), config_label(fields, shown)]
    return " ".join(p for p in parts if p)


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
    if comparison.failed:
        parts = []
        if comparison.regressions:
            parts.append(f"{len(comparison.regressions)} regression(s)")
        if comparison.broken:
            parts.append(f"{len(comparison.broken)} case(s) broken")
        return f"FAIL: {' and '.join(parts)} ({counts})"
    return f"OK: no regression ({counts})"


def _case_table_frame(cases: Sequence[CaseResult], config_columns: Sequence[str]) -> pd.DataFrame:
    records = []
    for c in cases:
        record = {"variant": c.fields.get("variant"), "N×C×H×W": shape_label(c.fields)}
        if config_columns:
            record["config"] = config_label(c.fields, config_columns)
        record |= {
            "verdict": c.verdict.value,
            "change": _pct(c.change),
            "baseline ms": f"{c.baseline_ms:.4g}",
            "current ms": f"{c.current_ms:.4g}",
            "p": _p(c.p_value),
            "n": f"{c.n_baseline}/{c.n_current}",
            "note": c.note,
        }
        records.append(record)
    return pd.DataFrame.from_records(records)


def _common_line(common: Mapping[str, Any]) -> str:
    return "All cases: " + " · ".join(_config_part(c, v) for c, v in common.items()) if common else ""


def _legend(cases: Sequence[CaseResult]) -> list[str]:
    used = {part.split(" (")[0] for c in cases for part in c.note.split("; ") if part}
    return [f"{name}: {meaning}" for name, meaning in NOTE_LEGEND.items() if name in used]


def _key_frame(keys: Iterable[Key]) -> pd.DataFrame:
    return pd.DataFrame({"case": [case_label(dict(k)) for k in keys]})


def to_markdown(comparison: Comparison, *, title: str = "Benchmark comparison") -> str:
    """Markdown for a pull-request comment or ``$GITHUB_STEP_SUMMARY``: the news first, the rest folded."""
    c = comparison
    icon = "❌" if c.failed else "✅"
    lines = [f"## {icon} {title}", ""]
    if c.env_differences:
        lines += ["> [!WARNING]", "> **The environments differ; these timings may not be comparable.**"]
        lines += [f"> - {escape_md(d)}" for d in c.env_differences]
        lines.append("")
    lines += [
        f"**{headline(c)}**",
        "",
        f"Baseline `{c.baseline}` → current `{c.current}`, compared on {METRIC_WORDS[c.metric]}. "
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
        lines += [_case_table_frame(news, varying).to_markdown(index=False), ""]
    if c.status_changes:
        lines += ["### Cases whose status changed", ""]
        frame = pd.DataFrame.from_records(
            [
                {"case": s.label, "baseline": s.baseline_status, "current": s.current_status,
                 "broken": "yes" if s.broken else "", "reason": s.reason}
                for s in c.status_changes
            ]  # fmt: skip
        )
        lines += [frame.to_markdown(index=False), ""]
    for keys, words in ((c.only_baseline, "only in the baseline"), (c.only_current, "only in the current run")):
        if keys:
            lines += [f"<details><summary>{len(keys)} case(s) {words}</summary>", ""]
            lines += [_key_frame(keys).to_markdown(index=False), "", "</details>", ""]
    if same:
        lines += [f"<details><summary>{len(same)} case(s) within ±{c.threshold:.0%} (SAME)</summary>", ""]
        lines += [_case_table_frame(same, varying).to_markdown(index=False), "", "</details>", ""]
    notes = _legend(c.cases) + list(c.notes)
    if notes:
        lines += ["<details><summary>Notes</summary>", ""] + [f"- {escape_md(n)}" for n in notes]
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def escape_md(text: str) -> str:
    """Keep ``|`` and ``<`` from breaking a Markdown table or starting an HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;")


STYLES = {Verdict.SLOWER: "bold red", Verdict.FASTER: "green", Verdict.AMBIGUOUS: "yellow", Verdict.SAME: "dim"}


#: Columns a narrow terminal may drop, least useful first (the Markdown keeps them all).
OPTIONAL_COLUMNS: tuple[str, ...] = ("n", "note", "p", "baseline ms")


def rich_table(comparison: Comparison, width: int | None = None) -> Table:
    """Every compared case, worst first, coloured by verdict; fields shared by all cases go in the caption.

    Identity columns never wrap or shrink; when ``width`` is too small for everything, the
    columns in ``OPTIONAL_COLUMNS`` are left out in that order rather than truncate a verdict.
    """
    varying, common = varying_fields(comparison)
    frame = _case_table_frame(comparison.cases, varying)
    numeric = {"baseline ms", "current ms", "change", "p", "n"}
    widths = {name: max([len(str(v)) for v in frame[name]] + [len(name)]) for name in frame.columns}
    shown = list(frame.columns)
    for name in OPTIONAL_COLUMNS:
        if width is None or sum(widths[c] + 2 for c in shown) <= width:
            break
        if name in shown:
            shown.remove(name)
    table = Table(title=f"{comparison.baseline} → {comparison.current}", title_justify="left",
                  caption=_common_line(common), caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)  # fmt: skip
    for name in shown:
        table.add_column(name, justify="right" if name in numeric else "left", no_wrap=name != "note",
                         min_width=None if name == "note" else widths[name])  # fmt: skip
    for r, row in zip(comparison.cases, frame.to_dict("records"), strict=True):
        cells = {k: escape(str(v)) for k, v in row.items() if k in shown}
        cells["verdict"] = f"[{STYLES[r.verdict]}]{r.verdict.value}[/]"
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
    console.print(rich_table(c, console.width))
    parts: list[Any] = []
    for s in c.status_changes:
        style = "bold red" if s.broken else "yellow"
        parts.append(f"[{style}]{s.baseline_status} → {s.current_status}[/] {escape(s.label)}: {escape(s.reason)}")
    for keys, words in ((c.only_baseline, "only in the baseline"), (c.only_current, "only in the current run")):
        for k in keys:
            parts.append(f"[dim]{words}:[/] {escape(case_label(dict(k)))}")
    for note in _legend(c.cases) + list(c.notes):
        parts.append(f"[dim]note: {escape(note)}[/]")
    if parts:
        console.print(Group(*parts))
    style = "bold red" if c.failed else "bold green"
    console.print(f"[{style}]{escape(headline(c))}[/]")
