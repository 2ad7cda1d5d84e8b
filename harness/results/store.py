"""The results store: one run folder, rows appended and flushed the moment a case finishes.

``results.jsonl`` is the source of truth (one JSON object a line, raw samples included);
``results.csv``, ``report.md`` and ``env.json`` are derived from it and can be rebuilt.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from harness.measure.figures import FIGURE_COLUMNS, RAW_FIGURE_COLUMNS
from harness.sweep.cases import KEY_COLUMNS

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
REPORT_MD = "report.md"
ENV_JSON = "env.json"

#: ``crashed`` and ``timeout`` come from cases run in a worker process (issue 7, harness.sweep.isolation).
STATUSES: tuple[str, ...] = ("ok", "mismatch", "error", "oom", "skipped", "crashed", "timeout")

#: The columns every row has, in the order the CSV shows them. Metrics modules add more.
COLUMNS: tuple[str, ...] = KEY_COLUMNS + (
    "status", "reason",
    "median_ms", "iqr_ms", "ci_low_ms", "ci_high_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "p05_ms", "p95_ms",
    "n_samples", "noisy", "throughput_img_s",
    *FIGURE_COLUMNS,
    "max_rel_err", "grad_rel_err", "tolerance", "grad_tolerance", "eager_rel_err",
    "calls_per_sample", "warmup_calls", "stop_reason", "first_call_s", "compile_s", "recompiles", "threads", "cache",
    "finished_at",
)  # fmt: skip
#: Raw data kept in results.jsonl but left out of the CSV.
RAW_COLUMNS: tuple[str, ...] = ("samples_ms", *RAW_FIGURE_COLUMNS)


class OutputError(OSError):
    """The run folder cannot be created or written."""


def default_run_dir(device: str, root: str | Path = "results/runs") -> Path:
    """``results/runs/<UTC time>-<device>``: sortable, and never the same twice in a second."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{device.replace(':', '')}"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _clean(value: Any) -> Any:
    """JSON has no NaN: store it as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


class RunFolder:
    """A folder holding one run's results; ``append`` makes a finished row durable at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise OutputError(f"output folder {str(self.path)!r} cannot be written: {exc.strerror or exc}") from None

    @property
    def jsonl(self) -> Path:
        return self.path / RESULTS_JSONL

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row as a line, flush and fsync: a kill a moment later loses nothing."""
        line = json.dumps({k: _clean(v) for k, v in row.items()}, default=_json_default, allow_nan=True)
        with self.jsonl.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.jsonl)

    def write_env(self, env: Mapping[str, Any]) -> Path:
        path = self.path / ENV_JSON
        path.write_text(json.dumps(dict(env), indent=2, default=_json_default) + "\n", encoding="utf-8")
        return path

    def read_env(self) -> dict[str, Any]:
        path = self.path / ENV_JSON
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def write_csv(self, frame: pd.DataFrame) -> Path:
        path = self.path / RESULTS_CSV
        frame.drop(columns=[c for c in RAW_COLUMNS if c in frame.columns]).to_csv(path, index=False)
        return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All whole rows of a results.jsonl; a last line cut off by a kill is skipped with a warning."""
    p = Path(path)
    if not p.exists():
        return []
    rows: list[dict[str, Any]] = []
    lines = p.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            where = "its last line" if number == len(lines) else f"line {number}"
            warnings.warn(f"{p}: {where} is not a whole JSON row (cut off?); skipped", RuntimeWarning, stacklevel=2)
    return rows


def truthy(value: Any) -> bool:
    """A stored flag (``noisy``, ``disturbed``): True from JSON, numpy or a CSV's ``"True"``; empty is False."""
    return str(value) == "True"


def to_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows to a DataFrame with the standard columns first (missing ones present and empty)."""
    frame = pd.DataFrame(list(rows))
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[list(COLUMNS) + extra]
