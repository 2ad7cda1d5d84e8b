"""One case's result, typed: what the runner returns, the store writes and every reader reads.

A row (one line of results.jsonl, one line of results.csv) is the record's stored form.
``CaseResult.to_row`` and ``CaseResult.from_row`` are the only code that maps between the two, and
``failure`` is the only way to make a row for a case that produced no measurement.

Schema versions (the ``schema`` column):

- 1: rows written before the column existed (no ``schema``). Read as they are: the columns they
  lack are empty.
- 2: this layout. A row from a newer harness is refused rather than misread.
"""
from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from harness.measure.correctness import Check
from harness.measure.figures import FIGURE_COLUMNS, RAW_COLUMNS_ALL, Figures, pooled
from harness.measure.stats import STATS_COLUMNS
from harness.sweep.cases import KEY_COLUMNS, Case
from variants.registry import MODES
from variants.tags import DTYPE_NAMES as DTYPES

SCHEMA_VERSION = 2


class SchemaError(ValueError):
    """A row this harness cannot read; the message is one line fit to show a user."""


class Status(StrEnum):
    """How a case ended."""

    OK = "ok"  # checked and timed
    MISMATCH = "mismatch"  # wrong numbers: not timed
    ERROR = "error"  # any other exception
    OOM = "oom"  # out of memory at this size
    SKIPPED = "skipped"  # unsupported or unavailable here
    CRASHED = "crashed"  # the worker process died, or a sticky CUDA error
    TIMEOUT = "timeout"  # no result within --case-timeout

    @property
    def broken(self) -> bool:
        """A case that ran and failed: after ``ok`` in a baseline, as bad as a regression."""
        return self not in (Status.OK, Status.SKIPPED)

    @property
    def failed(self) -> bool:
        """A case the variant got wrong, or that raised, crashed or hung: fails ``run``, and a new case
        in ``compare``. ``oom`` is not: it is the device's limit at that size, said in its row."""
        return self.broken and self is not Status.OOM


#: The statuses of a case that ran and failed.
BROKEN: frozenset[str] = frozenset(s.value for s in Status if s.broken)
#: The statuses of a case that failed through the variant (``Status.failed``).
FAILED: frozenset[str] = frozenset(s.value for s in Status if s.failed)


#: The correctness columns, and the ``Check`` field each holds.
CHECK_COLUMNS: tuple[str, ...] = ("max_rel_err", "grad_rel_err", "tolerance", "grad_tolerance", "eager_rel_err")
#: What the first call cost: all of it for ``first_call_s``, compilation for ``compile_s``.
FIRST_CALL_COLUMNS: tuple[str, ...] = ("first_call_s", "compile_s", "recompiles")


@dataclass(frozen=True)
class FirstCall:
    """The first call, timed apart from the samples: a compiling variant's compile time is here."""

    first_call_s: float | None = None
    #: Set for variants that compile (or capture) on their first call.
    compile_s: float | None = None
    #: Graphs compiled after the first call, by warm-up and timed calls.
    recompiles: int | None = None


#: Where the case's wall time went, phase by phase (seconds; empty for a phase the case never reached).
PHASE_COLUMNS: tuple[str, ...] = (
    "phase_setup_s", "phase_first_call_s", "phase_check_s", "phase_timing_s", "phase_memory_s", "phase_metrics_s",
    "phase_flops_s", "phase_total_s",
)  # fmt: skip


@dataclass(frozen=True)
class Phases:
    """Where one case's wall time went, so a slow sweep says what to cut. The phases never overlap,
    so they sum to at most ``phase_total_s`` (the rest: skip checks, memory released, the row made)."""

    #: Reference module, input and cotangent, and the variant built.
    phase_setup_s: float | None = None
    #: The first call (compilation included) and its gradients.
    phase_first_call_s: float | None = None
    #: The correctness check against float64.
    phase_check_s: float | None = None
    #: The timed loop (warm-up, samples, a re-measure, CUDA wall time).
    phase_timing_s: float | None = None
    #: The peak-memory call after the loop.
    phase_memory_s: float | None = None
    #: The other metrics after the loop: telemetry, bandwidth, a profiler trace.
    phase_metrics_s: float | None = None
    #: FLOP counting and the other columns the configuration alone decides.
    phase_flops_s: float | None = None
    #: The whole case, from the runner's start to its row.
    phase_total_s: float | None = None


@dataclass(frozen=True)
class CaseResult:
    """A finished case: its identity, how it ended, and what was measured."""

    case: Case
    status: Status
    reason: str | None = None
    #: torch's intra-op threads, and the cache policy (``cold``/``hot``) the case ran under.
    threads: int | None = None
    cache: str | None = None
    check: Check | None = None
    first_call: FirstCall | None = None
    figures: Figures | None = None
    phases: Phases | None = None
    #: The metric columns (FLOPs, memory, telemetry, bandwidth, trace), by column name.
    metrics: Mapping[str, Any] = field(default_factory=dict)
    #: With ``--oom-retry``: the batch actually measured (``case.batch`` is the one asked for).
    batch_run: int | None = None
    #: The process-wide settings the variant changed during the case, set back after it
    #: (``process_state``): ``default_dtype float32 → float64; threads 2 → 1``. None: none changed.
    settings_changed: str | None = None
    finished_at: str | None = None
    #: Columns this harness does not know (a plugin's, a newer minor version's): kept as they are.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def failure(cls, case: Case, status: Status, reason: str | None, *, threads: int | None, cache: str | None,
                metrics: Mapping[str, Any] | None = None) -> CaseResult:
        """A case that ended without a measurement: skipped, crashed, timed out or failed."""
        return cls(case, Status(status), reason, threads, cache, metrics=dict(metrics or {}), finished_at=now())

    def finished(self) -> CaseResult:
        """This result stamped with the time it finished."""
        return replace(self, finished_at=now())

    @property
    def median_ms(self) -> float | None:
        """The primary latency of an ``ok`` case."""
        return self.figures.stats.median_ms if self.figures is not None else None

    def to_row(self) -> dict[str, Any]:
        """The stored form: key columns, status, then every measured column."""
        row: dict[str, Any] = self.case.as_dict() | {
            "schema": SCHEMA_VERSION, "status": self.status.value, "reason": self.reason,
            "threads": self.threads, "cache": self.cache,
        }  # fmt: skip
        if self.check is not None:
            row |= {name: getattr(self.check, name) for name in CHECK_COLUMNS}
        if self.first_call is not None:
            row |= {name: getattr(self.first_call, name) for name in FIRST_CALL_COLUMNS}
        if self.figures is not None:
            row |= self.figures.as_row()
        if self.phases is not None:
            row |= {name: getattr(self.phases, name) for name in PHASE_COLUMNS}
        row |= dict(self.metrics)
        if self.batch_run is not None:
            row["batch_run"] = self.batch_run
        if self.settings_changed is not None:
            row["settings_changed"] = self.settings_changed
        row["finished_at"] = self.finished_at
        return row | dict(self.extra)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CaseResult:
        """A stored row back as a record; ``SchemaError`` when the row cannot be one. The columns this
        module does not know (the metrics among them) are kept in ``extra``; rows of schema 1 are read
        as they are."""
        check_schema(row)
        missing = [c for c in ("variant", "status") if _empty(row.get(c))]
        if missing:
            raise SchemaError(f"a row without {' or '.join(missing)}")
        try:
            status = Status(str(row["status"]))
        except ValueError:
            raise SchemaError(f"unknown status {row['status']!r}") from None
        used = {"schema", "status", "reason", "threads", "cache", "batch_run", "settings_changed", "finished_at",
                *KEY_COLUMNS}
        check = None
        if not all(_empty(row.get(c)) for c in CHECK_COLUMNS):
            values = {c: None if _empty(row.get(c)) else row.get(c) for c in CHECK_COLUMNS}
            problem = row.get("reason") if status is Status.MISMATCH else None
            check = Check(problem=problem, **values)  # type: ignore[arg-type]
            used |= set(CHECK_COLUMNS)
        first = None
        if any(c in row for c in FIRST_CALL_COLUMNS):
            first = FirstCall(**{c: row.get(c) for c in FIRST_CALL_COLUMNS})
            used |= set(FIRST_CALL_COLUMNS)
        phases = None
        if any(c in row for c in PHASE_COLUMNS):  # rows from before the phases were recorded have none
            phases = Phases(**{c: _float(row.get(c)) for c in PHASE_COLUMNS})
            used |= set(PHASE_COLUMNS)
        figures = Figures.from_row(row) if status is Status.OK else None
        if figures is not None:
            used |= {*STATS_COLUMNS, *FIGURE_COLUMNS, *RAW_COLUMNS_ALL, "throughput_img_s", "calls_per_sample",
                     "warmup_calls", "stop_reason"}  # fmt: skip
        return cls(
            case=case_of(row), status=status, reason=_text(row.get("reason")), threads=_int(row.get("threads")),
            cache=_text(row.get("cache")), check=check, first_call=first, figures=figures, phases=phases,
            batch_run=_int(row.get("batch_run")), settings_changed=_text(row.get("settings_changed")),
            finished_at=_text(row.get("finished_at")),
            extra={k: v for k, v in row.items() if k not in used},
        )  # fmt: skip


#: Columns that hold a number or nothing: a hand-edited ``"fast"`` there ended ``report`` in a pandas TypeError.
NUMERIC_COLUMNS: tuple[str, ...] = (
    "batch", "channels", "height", "width", "reduction", "threads", *CHECK_COLUMNS, *FIRST_CALL_COLUMNS,
    *PHASE_COLUMNS, *(name for name in STATS_COLUMNS if name != "noisy"),
    *(name for name in FIGURE_COLUMNS if name not in ("bound", "disturbed", "remeasured")),
)  # fmt: skip


def check_schema(row: Any) -> None:
    """Refuse what is not a results row this harness can read: not a JSON object, text where a
    number belongs (a number written as text, as CSV holds it, is one), or a row written by a newer
    harness (rows without a ``schema`` are version 1)."""
    if not isinstance(row, Mapping):
        shown = repr(row) if len(repr(row)) <= 60 else repr(row)[:57] + "..."
        raise SchemaError(f"{shown} is not a results row (a JSON object)")
    for column in NUMERIC_COLUMNS:
        value = row.get(column)
        if not (_empty(value) or _numeric(value)):
            raise SchemaError(f"a row of {row.get('variant')} holds {column} = {value!r}, not a number")
    check_values(row)
    schema = row.get("schema")
    try:
        version = 1 if _empty(schema) else _whole(schema)
    except (TypeError, ValueError):
        raise SchemaError(f"a row whose schema is {schema!r}, not a version number: not a results row") from None
    if version > SCHEMA_VERSION:
        raise SchemaError(f"a row of schema {version}, newer than this harness's {SCHEMA_VERSION}: "
                          "update the harness to read it")  # fmt: skip


def pool(results: list[CaseResult]) -> CaseResult:
    """One case measured in several processes as one result, its samples pooled.

    A result that is not ``ok`` (a mismatch, an error, a crash in one process) is returned as it
    is: one failing process is enough to distrust the case. Otherwise the first result's
    correctness and metrics are kept and every timing figure is derived again from all samples;
    so are the rates the first process derived from its own median (``MEDIAN_RATES``), which are
    inversely proportional to it.
    """
    k = len(results)
    for result in results:
        if result.status is not Status.OK or result.figures is None:
            return replace(result, extra=dict(result.extra) | {"processes": k})
    first = results[0]
    figures = pooled([r.figures for r in results if r.figures is not None], first.case.device.startswith("cuda"),
                     first.batch_run or first.case.batch)  # fmt: skip
    own, whole = first.figures.stats.median_ms, figures.stats.median_ms  # type: ignore[union-attr]
    # a worker's row comes back with its metrics in ``extra``: rescale them wherever they are
    metrics, extra = dict(first.metrics), dict(first.extra)
    for columns in (metrics, extra):
        for column in MEDIAN_RATES:
            if isinstance(columns.get(column), (int, float)) and own and whole:
                columns[column] = columns[column] * own / whole
    return replace(first, figures=figures, metrics=metrics, extra=extra)


#: Metrics a case derives from its median time as work over time (``bandwidth.bandwidth_columns``).
MEDIAN_RATES: tuple[str, ...] = ("achieved_gbps", "pct_of_peak_bw")


def case_of(row: Mapping[str, Any]) -> Case:
    """The row's case, its key values in their types whatever file they were read from."""
    values: dict[str, Any] = {}
    for name in KEY_COLUMNS:
        value = row.get(name)
        kind = Case.__dataclass_fields__[name].type
        if kind == "int":
            values[name] = _int(value)
        elif kind == "bool":
            values[name] = str(value) in ("True", "true", "1") if not isinstance(value, bool) else value
        elif name == "context":  # rows from before contexts existed, and a CSV's empty cell: the block alone
            values[name] = "" if _empty(value) else str(value)
        else:
            values[name] = None if _empty(value) else str(value)
    return Case(**values)


def truthy(value: Any) -> bool:
    """A stored flag (``noisy``, ``disturbed``): True from JSON, numpy or a CSV's ``"True"``; empty is False."""
    return str(value) == "True"


def jsonable(value: Any) -> Any:
    """For ``json.dumps``: numpy and torch scalars as numbers, tuples and sets as lists."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


#: The key columns that hold text, and those that hold a count of at least 1.
TEXT_KEYS: tuple[str, ...] = ("variant", "device", "dtype", "mode", "fusion", "context")
COUNT_KEYS: tuple[str, ...] = ("batch", "channels", "height", "width", "reduction")


def check_values(row: Mapping[str, Any]) -> None:
    """Refuse values no run writes, which the reports would otherwise fail on deep inside pandas
    (an unhashable variant, a status that is a number, a null batch) or show as measured (a negative
    latency): the case's key, its status, an ``ok`` row's median and its raw samples."""
    who = row.get("variant")

    def bad(column: str, why: str) -> SchemaError:
        return SchemaError(f"a row of {who!r} holds {column} = {row.get(column)!r}: {why}")

    for column in TEXT_KEYS:
        if column in row and not (_empty(row[column]) or isinstance(row[column], str)):
            raise bad(column, "not text")
    status = row.get("status")
    if not _empty(status) and status not in {s.value for s in Status}:
        raise bad("status", f"not one of {', '.join(s.value for s in Status)}")
    if not _empty(row.get("dtype")) and row["dtype"] not in DTYPES:
        raise bad("dtype", f"not one of {', '.join(DTYPES)}")
    if not _empty(row.get("mode")) and row["mode"] not in MODES:
        raise bad("mode", f"not one of {', '.join(MODES)}")
    for column in (c for c in COUNT_KEYS if c in row):
        if _empty(row[column]) or not _numeric(row[column]) or not _count(row[column]):
            raise bad(column, "not a whole number of at least 1")
    median = row.get("median_ms", 0.0)
    if status == Status.OK and "median_ms" in row and not (_numeric(median) and 0 <= float(median) < math.inf):
        raise bad("median_ms", "an ok row's latency must be a finite number of at least 0")
    samples = row.get("samples_ms")
    if not _empty(samples) and not (  # none: a row not timed (NaN in a frame)
            isinstance(samples, (list, tuple)) and all(_numeric(v) and not isinstance(v, str) for v in samples)):
        raise bad("samples_ms", "not a list of numbers")


def _count(value: Any) -> bool:
    number = float(value)
    return math.isfinite(number) and number >= 1 and number == int(number)


def _whole(value: Any) -> int:
    """A version number: an integer, or its text; 2.7 is none."""
    number = float(value)
    if isinstance(value, bool) or not number.is_integer() or number < 1:
        raise ValueError(value)
    return int(number)


def _numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _int(value: Any) -> int | None:
    return None if _empty(value) else int(float(value))


def _float(value: Any) -> float | None:
    return None if _empty(value) else float(value)


def _text(value: Any) -> str | None:
    return None if _empty(value) else str(value)
