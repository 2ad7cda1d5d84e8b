"""Compare two runs case by case: is the current one slower than the baseline, and do we believe it?

This module holds the comparison's model (``LoadedRun``, ``CaseComparison``, ``StatusChange``,
``Comparison``), loads runs, matches their cases and judges each one with the statistics of
``harness.results.compare_stats``; ``harness.results.compare_render`` shows the result.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.measure.bandwidth import ENV_KEY as COPY_BANDWIDTH_KEY
from harness.results.compare_stats import (
    DEFAULT_ALPHA,
    DEFAULT_THRESHOLD,
    Verdict,
    divided,
    judge,
    own_noise,
    process_gate,
    significance,
)
from harness.results.environment import EnvFact, device_type
from harness.results.environment import env_differences as store_env_differences
from harness.results.record import BROKEN, FAILED, Status, truthy
from harness.results.store import ResultsError, key_value, load_results
from harness.results.tables import METRICS, number, raw_samples, smaller_batch, timing_of
from harness.sweep.cases import KEY_COLUMNS  # older schemas may lack some: only shared columns are matched

METRIC_WORDS: dict[str, str] = {
    "median": "median latency (GPU time on CUDA)", "host": "host time per call", "wall": "synchronous wall time",
}


#: ``Comparison.shift`` warns when the cases' median ratio is beyond ``1 + SHIFT_FACTOR × threshold``
#: (or below its inverse), over at least ``SHIFT_CASES`` cases.
SHIFT_FACTOR = 2.0
SHIFT_CASES = 5
#: How the CI job judges CPU runs (.github/workflows/bench.yml): each case over eager of its own run, at
#: 25%. A hosted runner is another machine of the baseline's model, and the 2-core VM read whole runs
#: 2.1–4.9× slower than its baseline on 2026-11-29, and up to 2× between runs minutes apart (README, Noise).
CPU_CI_REFERENCE = "eager"
CPU_CI_THRESHOLD = 0.25


class CompareError(ValueError):
    """Input that cannot be compared; the message is one line fit to show a user."""


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
    #: Whether ``env`` is its env.json's (False: none was beside it, or it could not be read; ``env``
    #: then holds only what the rows record, ``ROW_SETTINGS``).
    env_known: bool = True

    @property
    def device(self) -> str | None:
        """The device type ("cpu"/"cuda") from env.json, else the one the rows agree on."""
        if self.env.get("device"):
            return device_type(self.env["device"])
        devices = {device_type(r.get("device")) for r in self.records} - {None}
        return devices.pop() if len(devices) == 1 else None

    def by_key(self, columns: Sequence[str]) -> tuple[dict[Key, Mapping[str, Any]], int]:
        """Rows keyed by ``columns`` in file order; a case seen twice keeps its last row (a resumed run).
        The device is keyed by its type: a run on ``cuda:1`` matches one on ``cuda``."""
        out: dict[Key, Mapping[str, Any]] = {}
        repeated = 0
        for record in self.records:
            key = tuple((c, device_type(record.get(c)) if c == "device" else key_value(record.get(c)))
                        for c in columns)  # fmt: skip
            repeated += key in out
            out.pop(key, None)
            out[key] = record
        return out, repeated


@dataclass(frozen=True)
class CaseComparison:
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


#: The baseline status of a case the baseline does not have.
ABSENT = "absent"


@dataclass(frozen=True)
class StatusChange:
    """A case not timed on both sides: timed on one only (a mismatch, an error, a skip on the other),
    new and broken (``baseline_status`` ``ABSENT``), or broken on both (listed, but no regression)."""

    key: Key
    baseline_status: str
    current_status: str
    reason: str
    #: The largest batch each side measured (``--oom-retry`` may have halved the one asked for; 0: none).
    baseline_fit: int = 0
    current_fit: int = 0

    @property
    def broken(self) -> bool:
        """As bad as a regression: failed now (``Status.failed``) where the baseline had not, whether
        the baseline timed it, skipped it, ran out of memory or never had it (a pull request that adds
        a wrong variant, or makes one that was unavailable run wrong, must not pass); or out of memory
        now at a batch the baseline measured (``ok`` → ``oom``, or halved to 4 then and to 2 now).
        A new case out of memory is the device's limit, as ``run`` judges it."""
        if self.current_status in FAILED:
            return self.baseline_status not in FAILED
        return self.current_status == Status.OOM and self.current_fit < self.baseline_fit

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
    cases: tuple[CaseComparison, ...]
    status_changes: tuple[StatusChange, ...]
    only_baseline: tuple[Key, ...]
    only_current: tuple[Key, ...]
    env_differences: tuple[str, ...]
    notes: tuple[str, ...] = ()
    metric: str = "median"
    #: Those of ``env_differences`` that are settings of the sweep (``--threads``, ``--processes``,
    #: ``--cache``...): the runs measured different things, so no slowdown between them is judged.
    unlike_settings: tuple[str, ...] = ()
    #: The device type both runs timed ("cpu", "cuda"), None when unknown.
    device: str | None = None
    #: ``--fail-on-missing``: a case timed in the baseline and not now (``missing``) fails the comparison.
    fail_on_missing: bool = False
    #: Of ``only_baseline``, the cases the baseline timed (``ok`` at the batch asked): its skipped
    #: or failed rows missing now lose nothing.
    only_baseline_timed: tuple[Key, ...] = ()
    #: The copy bandwidth each run measured on its machine (env.json, bytes/s; baseline, current):
    #: when the whole run moved, a machine that copies slower says why (None: not measured).
    copy_bandwidths: tuple[float | None, float | None] = (None, None)
    #: ``--relative-to``: the variant each other case is divided by, within its own run, before it is
    #: judged (``cases`` then hold ratios to it, not ms), so that a machine slower that day cancels.
    relative_to: str | None = None
    #: With ``relative_to``: the reference's own cases, compared in ms and not judged (its change is
    #: what the division cancels).
    reference_cases: tuple[CaseComparison, ...] = ()
    #: With ``relative_to``: cases timed on both sides that have no reference timed at their
    #: configuration and batch on both sides, so not judged.
    unreferenced: tuple[Key, ...] = ()

    @property
    def regressions(self) -> tuple[CaseComparison, ...]:
        return tuple(c for c in self.cases if c.regression)

    @property
    def broken(self) -> tuple[StatusChange, ...]:
        return tuple(s for s in self.status_changes if s.broken)

    @property
    def missing(self) -> tuple[Key, ...]:
        """Cases the baseline timed that this run did not: absent from it, or now skipped (a variant
        unavailable here, say). Neither is a regression, but a CI gate may want them to be
        (``fail_on_missing``): a sweep that lost a variant would otherwise pass on the rest."""
        lost = (s.key for s in self.status_changes if s.baseline_status == "ok" and not s.broken)
        return (*self.only_baseline_timed, *lost)

    @property
    def failed(self) -> bool:
        """A significant slowdown beyond the threshold between runs of the same settings, a case that
        was valid and is now wrong, or, with ``fail_on_missing``, a case timed before and not now."""
        lost = self.fail_on_missing and bool(self.missing)
        return bool(self.broken or lost or (self.regressions and not self.unlike_settings))

    @property
    def nothing_judged(self) -> str | None:
        """Why the comparison judged nothing, when no case was timed on both sides and none broke, or
        when every one timed is AMBIGUOUS: "no regression" then would pass a change that made every
        case skip, or a regression measured on a busy machine. None otherwise."""
        if self.failed:
            return None
        if self.unlike_settings:  # 1 thread against 2 read as regressions of +86% on unchanged code
            return (f"timings not judged: the runs were measured under different settings "
                    f"({'; '.join(self.unlike_settings)})")
        if self.cases:
            if any(c.verdict is not Verdict.AMBIGUOUS for c in self.cases):
                return None
            disturbed = sum("disturbed" in c.note for c in self.cases)
            why = f", {disturbed} of them disturbed (the CPU was busy)" if disturbed else ""
            return (f"nothing judged: all {len(self.cases)} case(s) timed on both sides are AMBIGUOUS{why}; "
                    "measure again on a quiet machine")
        if self.unreferenced:
            return (f"nothing judged: {self.relative_to} was not timed beside any of the {len(self.unreferenced)} "
                    f"case(s) timed on both sides, at its configuration in both runs")
        statuses = Counter(f"{s.baseline_status} → {s.current_status}" for s in self.status_changes)
        changed = f" ({', '.join(f'{n} {s}' for s, n in statuses.most_common())})" if statuses else ""
        return f"nothing to compare: no case in common was timed on both sides{changed}"

    @property
    def shift(self) -> str | None:
        """A warning when the whole run moved: the median ratio over at least ``SHIFT_CASES`` cases
        beyond twice the threshold. A baseline measured on a slower or busier machine reads every case
        faster, and a regression smaller than that hides under it (a committed baseline 1.9× slower than
        the runs of the day let a 2× slowdown of eager pass)."""
        ratios = [c.ratio for c in self.cases if c.ratio > 0 and math.isfinite(c.ratio)]
        if len(ratios) < SHIFT_CASES:
            return None
        middle = float(pd.Series(ratios).median())
        limit = 1 + SHIFT_FACTOR * self.threshold
        if 1 / limit <= middle <= limit:
            return None
        way = "faster" if middle < 1 else "slower"
        if self.relative_to is not None:  # the machine's drift cancels: what moved them all is the reference
            return (f"the variants all moved {way} against {self.relative_to}: their median ratio is {middle:.2f}× "
                    f"over {len(ratios)} cases. If they did not change, {self.relative_to} did, or the machine "
                    f"favours them differently; compare without --relative-to to judge {self.relative_to} itself")
        return (f"the whole run is {way} than the baseline: its cases' median ratio is {middle:.2f}× over "
                f"{len(ratios)} cases.{self._copy_speeds()} If the code did not change, the machines or their "
                f"load differ, and a change smaller than that hides under it; make the baseline again on this "
                f"machine, idle, or judge each case over a variant of its own run ({self._relative_flag()})")

    def _relative_flag(self) -> str:
        """``--relative-to eager`` where eager was compared, else the flag with a placeholder."""
        variants = {dict(c.key).get("variant") for c in self.cases}
        return f"--relative-to {CPU_CI_REFERENCE if CPU_CI_REFERENCE in variants else 'VARIANT'}"

    def _copy_speeds(self) -> str:
        """The two runs' copy bandwidths, when they differ beyond the threshold: the memory system's speed
        that day (on the 2-core VM a run 3.97× slower than its baseline copied at 9.3 GB/s against 41)."""
        base, now = self.copy_bandwidths  # each positive, or None (``_bandwidth``)
        if base is None or now is None:
            return ""
        if 1 / (1 + self.threshold) <= now / base <= 1 + self.threshold:
            return ""
        return (f" This run's machine copied memory at {now / 1e9:.3g} GB/s, the baseline's at {base / 1e9:.3g} "
                f"GB/s ({max(base / now, now / base):.2f}× {'slower' if now < base else 'faster'}).")

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the verdict alone does not say: the whole run moved (``shift``), most cases could not
        be judged, a CPU failure would read otherwise at the CI job's threshold, or cases of the
        baseline are missing from this run (a sweep that lost them would pass in silence)."""
        out = [self.shift] if self.shift else []
        ambiguous = self.count(Verdict.AMBIGUOUS)
        if not self.nothing_judged and 2 * ambiguous > len(self.cases):
            out.append(f"{ambiguous} of {len(self.cases)} case(s) timed on both sides are AMBIGUOUS: the gate "
                       "judged few of them; measure again on a quiet machine")
        if self.device == "cpu" and self.failed and self.regressions and not self.unlike_settings:
            out += self._cpu_ci_hint()  # under unlike settings the regressions fail at no threshold
        if self.only_baseline_timed:
            out.append(f"{len(self.only_baseline_timed)} case(s) the baseline timed are missing from this run, "
                       "so not judged: if the sweep did not change on purpose, it lost them")
        if self.unreferenced:
            out.append(f"{len(self.unreferenced)} case(s) timed on both sides are not judged: {self.relative_to} was "
                       "not timed at their configuration and batch in both runs, so there is nothing to divide by")
        return tuple(out)

    def _cpu_ci_hint(self) -> list[str]:
        """How the CI job would judge these CPU regressions: over eager of each run, at 25%."""
        flags = f"--relative-to {CPU_CI_REFERENCE} --threshold {CPU_CI_THRESHOLD}"
        if self.relative_to is None:
            return [f"whole CPU runs drift by more than {self.threshold:.0%} on a shared machine, by 2-5× between "
                    f"days (README, Noise): the CI job judges CPU runs with {flags}, each case over "
                    f"{CPU_CI_REFERENCE} of its own run"]
        if self.threshold >= CPU_CI_THRESHOLD:
            return []
        gross = sum(c.change > CPU_CI_THRESHOLD for c in self.regressions)
        return [f"CPU cases drift by more than {self.threshold:.0%} even over {self.relative_to} (README, Noise): the "
                f"CI job judges them with {flags}, at which {gross} of these {len(self.regressions)} "
                f"regression(s) would still fail"]

    @property
    def reference_line(self) -> str | None:
        """With ``relative_to``: how far the reference itself moved, which the verdicts do not judge."""
        if self.relative_to is None:
            return None
        ratios = [c.ratio for c in self.reference_cases if c.ratio > 0 and math.isfinite(c.ratio)]
        if not ratios:
            return f"{self.relative_to}, the reference, was timed on both sides in no case"
        spread = f", {min(ratios):.2f}–{max(ratios):.2f}×" if len(ratios) > 1 else ""
        middle = float(pd.Series(ratios).median())
        return (f"{self.relative_to}, the reference, is not judged: its own time moved {middle:.2f}× "
                f"(the median of {len(ratios)} case(s){spread}); compare without --relative-to to judge it")

    @property
    def unit(self) -> str:
        """What ``baseline_ms`` and ``current_ms`` of the cases hold: ms, or ratios to the reference."""
        return "ms" if self.relative_to is None else f"/{self.relative_to}"

    def count(self, verdict: Verdict) -> int:
        return sum(c.verdict is verdict for c in self.cases)

    def frame(self) -> pd.DataFrame:
        """One row per compared case, for tables and for people who want to do their own analysis."""
        base, cur = ("baseline_ms", "current_ms") if self.relative_to is None else (
            f"baseline_over_{self.relative_to}", f"current_over_{self.relative_to}")
        records = [
            {
                **c.fields,
                base: c.baseline_ms,
                cur: c.current_ms,
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


def load_run(path: str | Path) -> LoadedRun:
    """A run folder (results.jsonl preferred, else results.csv) or one results file, with its env.json."""
    try:
        loaded = load_results(path)  # requires variant and status only: no median_ms where no case was timed
    except ResultsError as exc:
        raise CompareError(str(exc)) from None
    return LoadedRun(loaded.source, loaded.rows, with_row_settings(loaded.env, loaded.rows),
                     "samples_ms" in loaded.columns, loaded.columns, loaded.notes, bool(loaded.env))  # fmt: skip


#: The settings every row records too (``with_row_settings``), so they are compared when an env.json is missing.
ROW_SETTINGS: tuple[str, ...] = ("threads",)


def with_row_settings(env: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``env``, with the torch threads every row records where env.json does not say (lost, or a
    bare results file): 1 thread against 2 read SLOWER +243% without it, judged as a regression."""
    out = dict(env)
    threads = {int(n) for r in rows if math.isfinite(n := number(r.get("threads")))}
    if out.get("threads") is None and len(threads) == 1:
        out["threads"] = threads.pop()
    return out


# -------------------------------------------------------------------------------------------- labels


#: Key fields besides the variant and the input shape, in the order labels show them.
CONFIG_FIELDS: tuple[str, ...] = ("device", "dtype", "mode", "reduction", "fusion", "bias")


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


def variant_label(fields: Mapping[str, Any]) -> str:
    """The variant, after the network it ran in when it ran in one: ``unet/eager``."""
    context = fields.get("context")
    return f"{context}/{fields.get('variant')}" if context else str(fields.get("variant"))


def case_label(fields: Mapping[str, Any]) -> str:
    """``eager 8×32×64×64 cpu float32 forward r2 add``: every key field, in a fixed order."""
    shown = [c for c in CONFIG_FIELDS if c != "bias" or fields.get("bias")]
    parts = [variant_label(fields), shape_label(fields), config_label(fields, shown)]
    return " ".join(p for p in parts if p)


# ------------------------------------------------------------------------------------------ judging


def _count(value: Any) -> int:
    """A stored sample count; 0 when it is empty or not a number (a CSV cell may be blank)."""
    n = number(value)
    return int(n) if math.isfinite(n) else 0


def compare_case(
    key: Key,
    base: Mapping[str, Any],
    cur: Mapping[str, Any],
    threshold: float,
    alpha: float,
    metric: str = "median",
    references: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
) -> CaseComparison:
    """Compare one case timed on both sides, from raw samples when both have them; with ``references``
    (``--relative-to``: the reference's row at this case's configuration in each run), each side is
    first divided by its reference's median, and the references' own noise joins the gate's.

    A case measured while its CPU was starved (``disturbed``) on either side is AMBIGUOUS: its
    numbers say how busy the machine was, not how fast the code is, so neither a change nor SAME
    (two stalls alike read SAME at 40 ms for a 0.04 ms case, and would hide a regression under them).
    """
    b_fig, c_fig = timing_of(base, metric), timing_of(cur, metric)
    b_proc, c_proc = _processes(base, metric), _processes(cur, metric)
    reference_noise = 0.0
    if references is not None:
        (b_ref, b_ref_proc), (c_ref, c_ref_proc) = ((timing_of(r, metric), _processes(r, metric)) for r in references)
        b_fig, c_fig = divided(b_fig, b_ref.median), divided(c_fig, c_ref.median)
        b_proc, c_proc = b_proc / b_ref.median, c_proc / c_ref.median
        reference_noise = max(own_noise(b_ref, b_ref_proc), own_noise(c_ref, c_ref_proc))
    test = significance(b_fig, c_fig, alpha)
    ratio, p_value, possible, noise = test.ratio, test.p_value, test.possible, max(test.noise, reference_noise)
    notes: list[str] = [test.note] if test.note else []
    if test.method == "mann-whitney":
        n_b, n_c = int(b_fig.samples.size), int(c_fig.samples.size)
    else:
        n_b, n_c = _count(base.get("n_samples")), _count(cur.get("n_samples"))
    noise, overlap = process_gate(b_proc, c_proc, ratio, noise)
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
        verdict = Verdict.AMBIGUOUS
    if metric == "median" and (base.get("bound") == "host" or cur.get("bound") == "host"):
        hosts = [number(r.get("host_ms")) for r in (base, cur)]
        notes.append(f"host-bound (host {hosts[0]:.4g} → {hosts[1]:.4g} ms)")
    return CaseComparison(
        key=key,
        baseline_ms=test.baseline_ms,
        current_ms=test.current_ms,
        ratio=ratio,
        p_value=p_value,
        n_baseline=n_b,
        n_current=n_c,
        verdict=verdict,
        regression=verdict is Verdict.SLOWER,
        method=test.method,
        noise=noise,
        note="; ".join(notes),
    )


def _processes(row: Mapping[str, Any], metric: str) -> np.ndarray:
    """The medians of the worker processes a row's ``metric`` was pooled from (``--processes``): they
    are of the primary latency, which on the CPU is host and wall time too (``timing_of``); none else."""
    if metric == "median" or device_type(row.get("device")) == "cpu":
        return raw_samples(row.get("process_medians_ms"))
    return np.empty(0)


# ------------------------------------------------------------------------------------------ compare


def _bandwidth(env: Mapping[str, Any]) -> float | None:
    """The copy bandwidth a run's env.json recorded (bytes/s), or None."""
    value = number(env.get(COPY_BANDWIDTH_KEY))
    return value if math.isfinite(value) and value > 0 else None


def env_facts(baseline: LoadedRun, current: LoadedRun) -> list[tuple[EnvFact, Any, Any]]:
    """Each fact of ``environment.ENVIRONMENT`` that differs, with both values (missing on both sides
    is no difference), judged for the device type whichever side knows it. Where a side has no
    env.json (a bare results file, or one that could not be read: the loader's note says its
    environment was not checked), only the settings its rows record are: else each other fact read
    "unknown" against the known side, and its steady allocator "differing" had every case not judged."""
    device = current.device or baseline.device
    if baseline.env_known and current.env_known:
        return store_env_differences(baseline.env, current.env, device, "compare")
    base, cur = ({k: run.env[k] for k in ROW_SETTINGS if k in run.env} for run in (baseline, current))
    return store_env_differences(base, cur, device, "compare")  # [] where a side has none


def _at_batch(status: str, batch: int | None) -> str:
    """A status as ``compare`` judges it: an ``ok`` that ``--oom-retry`` measured at a halved batch is
    an ``oom`` at the batch asked for (its ``reason`` says which batch ran)."""
    return Status.OOM.value if status == Status.OK and batch is not None else status


def _fit(status: str, batch: int | None, row: Mapping[str, Any]) -> int:
    """The largest batch a row measured: the halved one ``--oom-retry`` ran, the one asked for, or 0
    when it was not timed."""
    if status != Status.OK:
        return 0
    return batch if batch is not None else _count(row.get("batch"))


def compare(
    baseline: str | Path | LoadedRun,
    current: str | Path | LoadedRun,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    strict_env: bool = False,
    fail_on_missing: bool = False,
    metric: str = "median",
    relative_to: str | None = None,
) -> Comparison:
    """Match the two runs' cases by their key columns and judge each on ``metric`` (``METRICS``);
    with ``relative_to``, each case divided by that variant's at its configuration in the same run
    (``Comparison.relative_to``). Raises ``CompareError``."""
    _check_arguments(metric, threshold, alpha)
    base = baseline if isinstance(baseline, LoadedRun) else load_run(baseline)
    cur = current if isinstance(current, LoadedRun) else load_run(current)
    if base.device and cur.device and base.device != cur.device:
        raise CompareError(f"different devices: baseline ran on {base.device}, current on {cur.device}")
    facts = env_facts(base, cur)
    differences = [fact.advice(b, c) for fact, b, c in facts]
    unlike = tuple(fact.advice(b, c) for fact, b, c in facts if fact.flag is not None)
    if differences and strict_env:
        raise CompareError("environments differ (--strict-env): " + "; ".join(differences))
    for run in (base, cur):
        if metric != "median" and run.device != "cpu" and METRICS[metric].median not in run.columns:
            raise CompareError(f"{run.source}: no {METRICS[metric].median} column (made before host and wall "
                               f"time were measured); compare it with --metric median")
    columns = [c for c in KEY_COLUMNS if c in base.columns and c in cur.columns]
    b_rows, b_repeated = base.by_key(columns)
    c_rows, c_repeated = cur.by_key(columns)
    notes = _matching_notes(base, cur, b_repeated, c_repeated)
    common = [k for k in c_rows if k in b_rows]
    if not common:
        raise CompareError(f"no case in common between {base.source} and {cur.source}")
    if relative_to is not None:
        _check_reference(relative_to, common)
    results, changes, reference_cases, unreferenced = [], [], [], []
    for key in common:
        b_row, c_row = b_rows[key], c_rows[key]
        references = None
        if relative_to is not None and dict(key)["variant"] != relative_to and _timed_alike(b_row, c_row):
            references = _reference(b_rows, key, b_row, relative_to, metric), _reference(
                c_rows, key, c_row, relative_to, metric)
            if None in references:
                unreferenced.append(key)
                continue
        judged = _judge_pair(key, b_row, c_row, threshold, alpha, metric, references)  # type: ignore[arg-type]
        if isinstance(judged, CaseComparison):
            own = relative_to is not None and dict(key)["variant"] == relative_to
            (reference_cases if own else results).append(judged)
        elif judged is not None:
            changes.append(judged)
    only_b = tuple(k for k in b_rows if k not in c_rows)
    only_c = []
    for key in (k for k in c_rows if k not in b_rows):
        status = str(c_rows[key].get("status"))
        if status in BROKEN:  # new and broken: listed (a failure unless oom), not merely missing from the baseline
            reason = key_value(c_rows[key].get("reason"))
            changes.append(StatusChange(key, ABSENT, status, "" if reason is None else str(reason)))
        else:
            only_c.append(key)
    if results and (not base.has_samples or not cur.has_samples):  # none timed: none missing
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
        only_current=tuple(only_c),
        env_differences=tuple(differences),
        notes=tuple(notes),
        metric=metric,
        unlike_settings=unlike,
        device=cur.device or base.device,
        fail_on_missing=fail_on_missing,
        copy_bandwidths=(_bandwidth(base.env), _bandwidth(cur.env)),
        relative_to=relative_to,
        reference_cases=tuple(reference_cases),
        unreferenced=tuple(unreferenced),
        only_baseline_timed=tuple(k for k in only_b if _fit(str(b_rows[k].get("status")), None, b_rows[k])
                                  and smaller_batch(b_rows[k]) is None),
    )


def _check_arguments(metric: str, threshold: float, alpha: float) -> None:
    if metric not in METRICS:
        raise CompareError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    if not 0 < threshold <= 1:  # 5 meant as 5% would be 500%, and turn the gate off
        raise CompareError(f"threshold must be a fraction such as 0.05 (5%), at most 1 (twice as slow), "
                           f"got {threshold}")
    if not 0 < alpha < 1:
        raise CompareError(f"alpha must be between 0 and 1, got {alpha}")


def _check_reference(variant: str, common: Sequence[Key]) -> None:
    """``--relative-to`` names a variant both runs hold, beside another one to divide by it."""
    held = sorted({str(dict(k)["variant"]) for k in common})
    if variant not in held:
        raise CompareError(f"--relative-to {variant}: no such variant in both runs (both hold {', '.join(held)})")
    if held == [variant]:
        raise CompareError(f"--relative-to {variant}: the runs hold no other variant in common to divide by it")


def _reference(rows: Mapping[Key, Mapping[str, Any]], key: Key, row: Mapping[str, Any], variant: str,
               metric: str) -> Mapping[str, Any] | None:
    """``variant``'s row at ``key``'s configuration in the same run, when it was timed at the batch ``row``
    was (``--oom-retry`` may have halved either) and has a median to divide by; else None."""
    reference = rows.get(tuple((c, variant if c == "variant" else v) for c, v in key))
    if reference is None or str(reference.get("status")) != Status.OK or smaller_batch(reference) != smaller_batch(row):
        return None
    median = timing_of(reference, metric).median
    return reference if math.isfinite(median) and median > 0 else None


def _timed_alike(b_row: Mapping[str, Any], c_row: Mapping[str, Any]) -> bool:
    """Whether both runs timed a case at one batch, so that its timings are compared."""
    statuses = str(b_row.get("status")), str(c_row.get("status"))
    return statuses == ("ok", "ok") and smaller_batch(b_row) == smaller_batch(c_row)


def _matching_notes(base: LoadedRun, cur: LoadedRun, b_repeated: int, c_repeated: int) -> list[str]:
    """What the reader must know of how the two files' cases were matched."""
    notes = list(base.notes) + list(cur.notes)
    if Path(base.source).resolve() == Path(cur.source).resolve():  # "OK" here says nothing about any change
        notes.append(f"the baseline and the current run are the same file ({cur.source}): nothing changed to judge")
    one_sided = sorted((base.columns ^ cur.columns) & set(KEY_COLUMNS))
    if "context" in one_sided and not any(key_value(r.get("context")) for r in (*base.records, *cur.records)):
        one_sided.remove("context")  # rows from before contexts are blocks alone, as the others: an exact match
    if one_sided:
        notes.append(f"key column(s) {', '.join(one_sided)} on one side only (older file?): matched without them")
    for run, repeated in ((base, b_repeated), (cur, c_repeated)):
        if repeated:
            notes.append(f"{run.source}: {repeated} case(s) appear more than once; the last row of each is used")
    return notes


def _judge_pair(key: Key, b_row: Mapping[str, Any], c_row: Mapping[str, Any], threshold: float, alpha: float,
                metric: str, references: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
                ) -> CaseComparison | StatusChange | None:
    """A case both runs hold: its timing judged when both timed it at one batch, else its change of
    status, or None when it was skipped alike on both sides. A case broken on both sides is listed,
    never silently dropped; a latency of another batch (``--oom-retry``) is no match."""
    if _timed_alike(b_row, c_row):
        return compare_case(key, b_row, c_row, threshold, alpha, metric, references)
    b_status, c_status = str(b_row.get("status")), str(c_row.get("status"))
    b_batch, c_batch = smaller_batch(b_row), smaller_batch(c_row)
    if b_status == c_status and b_batch == c_batch and b_status not in BROKEN:
        return None
    fits = (_fit(b_status, b_batch, b_row), _fit(c_status, c_batch, c_row))
    b_status, c_status = _at_batch(b_status, b_batch), _at_batch(c_status, c_batch)
    reason = c_row.get("reason") if c_status != "ok" else b_row.get("reason")
    if b_status == c_status and b_batch != c_batch:  # an oom on both sides, halved to different batches
        reason = f"ran at batch {fits[0] or 'none'} before, {fits[1] or 'none'} now"
    return StatusChange(key, b_status, c_status, "" if key_value(reason) is None else str(reason), *fits)
