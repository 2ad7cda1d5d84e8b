"""The results store: run folders read and written, rows appended and flushed the moment a case finishes.

``results.jsonl`` is the source of truth (one ``CaseResult`` row a line, raw samples included);
``results.csv`` and ``report.md`` are derived from it and can be rebuilt; ``env.json`` holds the
sweep's configuration and the environment it ran in. Everything that reads a run (report,
compare, merge, resume) reads it here; ``harness.results.environment`` says which of env.json's
facts must match between runs whose timings are put side by side.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.measure.figures import CSV_LIST_COLUMNS, FIGURE_COLUMNS, RAW_FIGURE_COLUMNS
from harness.results.record import NUMERIC_COLUMNS, SCHEMA_VERSION, CaseResult, SchemaError, check_schema, jsonable
from harness.sweep.cases import KEY_COLUMNS

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
REPORT_MD = "report.md"
ENV_JSON = "env.json"
#: The tracebacks of the run's failed cases (``RunFolder.append_error``).
ERRORS_LOG = "errors.log"
#: The figures ``report --plots`` writes into the run folder (``harness.results.plots``), by name.
FIGURE_FILES: dict[str, str] = {
    "speedup": "speedup.png",
    "latency": "latency_vs_batch.png",
    "roofline": "roofline.png",
}

#: The columns every row has, in the order the CSV shows them. Metrics modules add more.
COLUMNS: tuple[str, ...] = KEY_COLUMNS + (
    "status", "reason",
    "median_ms", "iqr_ms", "ci_low_ms", "ci_high_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "p05_ms", "p95_ms",
    "n_samples", "noisy", "throughput_img_s",
    *FIGURE_COLUMNS,
    "max_rel_err", "grad_rel_err", "tolerance", "grad_tolerance", "eager_rel_err",
    "calls_per_sample", "warmup_calls", "stop_reason", "first_call_s", "compile_s", "recompiles", "threads", "cache",
    "finished_at", "schema",
)  # fmt: skip
#: Raw data kept in results.jsonl but left out of the CSV.
RAW_COLUMNS: tuple[str, ...] = tuple(c for c in ("samples_ms", *RAW_FIGURE_COLUMNS) if c not in CSV_LIST_COLUMNS)
#: The files that say a folder holds a run: a new run there is refused unless it overwrites or resumes.
RUN_MARKERS: tuple[str, ...] = (RESULTS_JSONL, ENV_JSON)


class OutputError(OSError):
    """The run folder cannot be created or written."""


class RunWriteError(OutputError):
    """A run's file could not be written once the run was under way (a full disk, a lost mount): the
    run failed (exit 1), where a folder refused at the start is the user's to fix (exit 2).
    ``unwritten``: a finished row that no file holds, as its results.jsonl line, for the user to keep."""

    def __init__(self, message: str, unwritten: str | None = None) -> None:
        super().__init__(message)
        self.unwritten = unwritten


class RowNotWritten(RunWriteError):
    """A finished row could not be appended to results.jsonl: the sweep stops there, as later rows
    would fail the same way, and its report keeps the row."""


def write_whole(path: Path, text: str) -> None:
    """``text`` into ``path``, written beside it and renamed over it: a kill or a full disk mid-write
    leaves the old file (or none), never half of the new one."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with staging.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, path)
    except OSError as exc:  # named by the file meant, not the staging one
        with contextlib.suppress(OSError):  # never made, or its folder unusable
            staging.unlink()
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            staging.unlink()
        raise


def default_run_dir(device: str, root: str | Path = "results/runs") -> Path:
    """``results/runs/<UTC time>-<device>``, sortable, made here, empty, and this run's alone: a
    name already there (a run started in the same second, in this process or another) gets ``-2``,
    ``-3``, …. Each name is taken by creating its folder, which fails where it exists, so two runs
    choosing at once never get the same one: the second of two default-named runs started in one
    second was refused, as if it had named another run's ``--out``."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    first = Path(root) / f"{stamp}-{device.replace(':', '')}"
    path, n = first, 1
    try:
        first.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                path.mkdir()
                return path
            except FileExistsError:  # taken (or a file of that name): the next one
                n += 1
                path = first.with_name(f"{first.name}-{n}")
    except OSError as exc:
        raise OutputError(f"output folder {str(path)!r} cannot be written: {exc.strerror or exc}") from None


def run_folder_of(path: str | Path) -> Path:
    """The run folder ``path`` names: itself, or the folder of the results.jsonl it points at
    (what a shell's tab completion often gives)."""
    p = Path(path)
    return p.parent if p.name == RESULTS_JSONL and p.is_file() else p


def _clean(value: Any) -> Any:
    """JSON has no NaN: store it as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


class RunFolder:
    """A folder holding one run's results; ``append`` makes a finished row durable at once."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        """``create=False`` opens an existing run to read it, and writes nothing there. The path is
        made absolute now: a variant that changes the working directory in-process sent every later
        row, and the report, to a folder of that name under its directory (or to nowhere)."""
        self.path = Path(path).absolute()
        if not create:
            return
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"output folder {str(self.path)!r} is a file; name a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise OutputError(f"output folder {str(self.path)!r} cannot be written: {exc.strerror or exc}") from None

        for name in (RESULTS_JSONL, RESULTS_CSV, REPORT_MD, ENV_JSON):  # found now, not after the whole sweep
            if (self.path / name).exists() and not (self.path / name).is_file():
                raise OutputError(f"output folder {str(self.path)!r} cannot be written: its {name} is not a file")

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the folder for this run alone while it writes there (an advisory lock on the folder
        itself, so no file is left behind; let go when the run ends, or its process dies): two runs
        started into one ``--out`` at the same moment each passed ``claim`` and mixed their rows."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            yield
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise OutputError(f"output folder {str(self.path)!r} cannot be written: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise OutputError(f"output folder {str(self.path)!r} is being written by another run right now: "
                                  "choose another --out, or wait for that run to end") from None
            yield
        finally:
            os.close(fd)  # the lock goes with it

    @property
    def jsonl(self) -> Path:
        return self.path / RESULTS_JSONL

    def run_files(self) -> list[str]:
        """The files in the folder that say it already holds a run (``RUN_MARKERS``)."""
        return [name for name in RUN_MARKERS if (self.path / name).exists()]

    def claim(self, *, overwrite: bool = False, also: Iterable[str] = ()) -> list[Path]:
        """Make the folder ready for a new run: refuse one that holds a run already (two runs'
        rows would mix in results.jsonl, while the derived files would describe only the last),
        unless ``overwrite``, which removes the old run's files first and returns them.

        Only what a run writes is removed: the store's files, the figures, and ``also`` (glob
        patterns relative to the folder, e.g. the workers' log and the traces); nothing else.
        """
        found = self.run_files()
        if not found:
            return []
        if not overwrite:
            raise OutputError(
                f"output folder {str(self.path)!r} already holds a run ({', '.join(found)}): choose another --out, "
                f"or give --overwrite to replace it, or --resume {str(self.path)!r} to finish it"
            )
        patterns = (RESULTS_JSONL, RESULTS_CSV, REPORT_MD, ENV_JSON, ERRORS_LOG, *FIGURE_FILES.values(), *also)
        removed = sorted({p for pattern in patterns for p in self.path.glob(pattern) if p.is_file()})
        try:
            for path in removed:
                path.unlink()
            for folder in sorted({p.parent for p in removed} - {self.path}, reverse=True):
                if not any(folder.iterdir()):  # a folder the run made (traces/), now empty
                    folder.rmdir()
        except OSError as exc:
            raise OutputError(f"cannot clear the old run in {str(self.path)!r}: {exc.strerror or exc}") from None
        return removed

    def append(self, result: CaseResult | Mapping[str, Any]) -> None:
        """Write one result as a line, flush and fsync: a kill a moment later loses nothing."""
        line = row_line(result.to_row() if isinstance(result, CaseResult) else result)
        try:
            with self.jsonl.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a part of the line may be there: a resume drops it (``repair``)
            raise RowNotWritten(f"cannot write {self.jsonl}: {exc.strerror or exc}") from None

    def append_error(self, label: str, text: str) -> None:
        """A failed case's traceback, under its label, at the end of ``ERRORS_LOG``: the row keeps
        one line (its ``reason``), the variant's author gets where it was raised."""
        try:
            with (self.path / ERRORS_LOG).open("a", encoding="utf-8") as f:
                f.write(f"=== {label}\n{text.rstrip()}\n\n")
        except OSError as exc:  # a side file: its row, written already, says what failed
            warnings.warn(f"{self.path / ERRORS_LOG}: the traceback of {label} was not written: {exc.strerror or exc}",
                          RuntimeWarning, stacklevel=2)

    def rows(self) -> list[dict[str, Any]]:
        """Every whole row, each checked to be one this harness can read (``SchemaError`` if not)."""
        rows = read_jsonl(self.jsonl)
        for row in rows:
            try:
                check_schema(row)
                if any(row.get(c) in (None, "") for c in ("variant", "status")):
                    raise SchemaError(f"a row without a variant or a status: {str(row)[:60]}")
            except SchemaError as exc:
                raise SchemaError(f"{self.jsonl}: {exc}") from None
        return rows

    def repair(self) -> int:
        """Make results.jsonl end with a whole row (after a kill); returns the bytes dropped."""
        return repair_jsonl(self.jsonl)

    def write_env(self, env: Mapping[str, Any]) -> Path:
        """env.json, replaced whole (written beside it, then renamed): a kill mid-write, or a second
        Ctrl-C at the end of a run, must never leave it empty, or the run could not be resumed."""
        path = self.path / ENV_JSON
        write_whole(path, json.dumps(dict(env) | {"schema": SCHEMA_VERSION}, indent=2, default=jsonable) + "\n")
        return path

    def read_env(self) -> dict[str, Any]:
        """env.json, or {} when the run has none; ``OutputError`` when it cannot be read."""
        return read_env(self.path / ENV_JSON)

    def write_csv(self, frame: pd.DataFrame) -> Path:
        path = self.path / RESULTS_CSV
        frame = frame.drop(columns=[c for c in RAW_COLUMNS if c in frame.columns])
        for name in (c for c in CSV_LIST_COLUMNS if c in frame.columns):
            frame[name] = frame[name].map(_json_list)
        write_whole(path, frame.to_csv(index=False))
        return path


def row_line(row: Mapping[str, Any]) -> str:
    """One row as its line of results.jsonl (without the newline)."""
    return json.dumps({k: _clean(v) for k, v in row.items()}, default=jsonable, allow_nan=True)


def _json_list(value: Any) -> Any:
    """A list cell as JSON text (``[1.0, 2.0]``), which ``tables.raw_samples`` reads back; else as it is."""
    return json.dumps([float(v) for v in value]) if isinstance(value, (list, tuple)) else value


def read_jsonl(path: str | Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """All whole rows of a results.jsonl. A line cut off by a kill is skipped with a warning, or
    with a line added to ``notes`` when given."""
    p = Path(path)
    if not p.exists():
        return []
    rows: list[dict[str, Any]] = []
    lines = p.read_bytes().splitlines()  # decoded line by line: a torn last line may end mid-character
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            where = "its last line" if number == len(lines) else f"line {number}"
            message = f"{p}: {where} is not a whole JSON row (cut off?); skipped"
            if notes is None:
                warnings.warn(message, RuntimeWarning, stacklevel=2)
            else:
                notes.append(message)
            continue
        if not isinstance(row, dict):  # whole, yet no row: the file is not what it claims to be
            shown = line.decode("utf-8", "replace")[:40]
            raise SchemaError(f"{p}: line {number} is {shown}, not a results row (a JSON object)")
        rows.append(row)
    return rows


class ResultsError(ValueError):
    """Results that cannot be read; the message is one line fit to show a user."""


@dataclass(frozen=True)
class LoadedResults:
    """The rows of a run folder or results file, its environment, and what was odd about them."""

    source: str
    rows: tuple[dict[str, Any], ...] = field(repr=False)
    env: dict[str, Any] = field(repr=False)
    columns: frozenset[str]
    notes: tuple[str, ...] = ()


def load_results(path: str | Path, required: tuple[str, ...] = ("variant", "status")) -> LoadedResults:
    """A run folder (results.jsonl preferred, else results.csv) or one results file, with the
    env.json beside it. Missing values are None whichever file they came from."""
    p = Path(path)
    if not p.exists():
        raise ResultsError(f"{p}: no such file or folder")
    if p.is_dir():
        found = next((c for c in (p / RESULTS_JSONL, p / RESULTS_CSV) if c.is_file()), None)
        if found is None:
            raise ResultsError(f"{p}: no {RESULTS_JSONL} or {RESULTS_CSV} in this folder")
        file = found
    else:
        file = p
    notes: list[str] = []
    try:
        if file.suffix == ".jsonl":
            frame = pd.DataFrame.from_records(read_jsonl(file, notes))
            for row in frame.to_dict("records"):
                check_schema(row)
        elif file.suffix == ".csv":
            frame = pd.read_csv(file)
        else:
            raise ResultsError(f"{file}: expected a run folder, a .jsonl or a .csv results file")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, SchemaError) as exc:
        raise ResultsError(f"{file}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    if frame.empty:
        raise ResultsError(f"{file}: holds no results")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ResultsError(f"{file}: not a results file (no column {', '.join(missing)})")
    env_path = file.parent / ENV_JSON
    env: dict[str, Any] = {}
    if env_path.is_file():
        try:
            env = read_env(env_path)
        except OutputError as exc:
            notes.append(f"{exc}; environment not checked")
    else:
        notes.append(f"{file}: no {ENV_JSON} beside it; its environment cannot be checked")
    rows = tuple(frame.astype(object).where(frame.notna(), None).to_dict("records"))
    return LoadedResults(str(p), rows, env, frozenset(frame.columns), tuple(notes))


def key_value(value: Any) -> Any:
    """One spelling per key value: 8 == 8.0 == "8" from CSV, NaN == None, "True" == True."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
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


def read_env(path: str | Path) -> dict[str, Any]:
    """A run's env.json, or {} when there is none; ``OutputError`` when it is unreadable or not an object."""
    p = Path(path)
    if not p.exists():
        return {}
    try:
        env = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OutputError(f"{p}: cannot be read: {exc}") from None
    if not isinstance(env, dict):
        raise OutputError(f"{p}: not a JSON object")
    return env


def repair_jsonl(path: str | Path) -> int:
    """Make the file end with a whole row; returns the number of bytes dropped.

    A tail that is whole JSON but lacks its newline keeps its row and gets the newline.
    """
    p = Path(path)
    if not p.exists():
        return 0
    data = p.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    cut = data.rfind(b"\n") + 1  # 0 when the only line is cut off
    tail = data[cut:]
    try:
        json.loads(tail)
    except ValueError:
        pass
    else:
        with p.open("ab") as f:
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
        return 0
    with p.open("r+b") as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    warnings.warn(f"{p}: its last line was cut off mid-row ({len(tail)} bytes); dropped it and truncated the file "
                  "to its last whole row", RuntimeWarning, stacklevel=2)  # fmt: skip
    return len(tail)


def row_key(row: Mapping[str, Any]) -> tuple[object, ...]:
    """The values of a row's key columns, one spelling each: what identifies its case."""
    return tuple(key_value(row.get(c)) for c in KEY_COLUMNS)


def to_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows to a DataFrame with the standard columns first (missing ones present and empty)."""
    frame = pd.DataFrame(list(rows))
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame["context"] = frame["context"].fillna("")  # rows from before contexts, and CSV's empty cells: a block
    for column in NUMERIC_COLUMNS:  # a number written as text (check_schema lets only those through)
        if column in frame.columns and frame[column].map(lambda v: isinstance(v, str)).any():
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[list(COLUMNS) + extra]
