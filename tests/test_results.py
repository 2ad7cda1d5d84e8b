"""The results store keeps every finished row, even across a kill mid-write."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from harness.results.store import COLUMNS, OutputError, RunFolder, read_jsonl, to_frame


def test_rows_are_durable_as_soon_as_appended(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.append({"variant": "eager", "median_ms": 1.5, "ci_low_ms": math.nan, "samples_ms": [1.4, 1.5, 1.6]})
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])  # strict JSON: NaN stored as null
    assert row["ci_low_ms"] is None and row["samples_ms"] == [1.4, 1.5, 1.6]


def test_a_cut_off_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"variant": "a"}\n{"variant": "b"}\n{"variant": "c", "med')
    with pytest.warns(RuntimeWarning, match="last line"):
        rows = read_jsonl(path)
    assert [r["variant"] for r in rows] == ["a", "b"]


def test_frame_has_every_standard_column_and_csv_drops_raw_samples(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    frame = to_frame([{"variant": "eager", "status": "ok", "samples_ms": [1.0], "extra_metric": 3}])
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert "extra_metric" in frame.columns
    header = folder.write_csv(frame).read_text().splitlines()[0].split(",")
    assert "samples_ms" not in header and "median_ms" in header


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder_is_refused_as_non_root(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="cannot be written"):
        RunFolder(locked / "run")


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="cannot be written"):
        RunFolder(blocker / "run")


def test_stored_flags_read_the_same_from_json_numpy_and_csv() -> None:
    import numpy as np

    from harness.results.record import truthy

    assert all(truthy(v) for v in (True, np.bool_(True), "True"))
    assert not any(truthy(v) for v in (False, np.bool_(False), "False", None, float("nan"), "", 1))


def test_rows_of_an_older_schema_are_read_and_of_a_newer_one_refused(tmp_path) -> None:
    import json

    from harness.cli import main
    from harness.results.record import SCHEMA_VERSION, CaseResult, SchemaError

    old = {"variant": "eager", "device": "cpu", "dtype": "float32", "mode": "forward", "batch": 8, "channels": 4,
           "height": 4, "width": 4, "reduction": 2, "fusion": "add", "bias": False, "status": "skipped",
           "reason": "not here", "a_column_from_a_plugin": 7}
    result = CaseResult.from_row(old)  # schema 1: no schema column
    assert result.reason == "not here" and result.extra == {"a_column_from_a_plugin": 7}
    assert result.to_row()["schema"] == SCHEMA_VERSION and result.to_row()["a_column_from_a_plugin"] == 7
    newer = old | {"schema": SCHEMA_VERSION + 1}
    with pytest.raises(SchemaError, match="newer than this harness"):
        CaseResult.from_row(newer)
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(json.dumps(newer) + "\n")
    assert main(["report", str(run)]) == 2  # one line, no traceback
    garbled = old | {"schema": "two"}
    with pytest.raises(SchemaError, match="a row whose schema is 'two', not a version number"):
        CaseResult.from_row(garbled)
    (run / "results.jsonl").write_text(json.dumps(garbled) + "\n")
    assert main(["report", str(run)]) == 2


def test_phases_round_trip_and_rows_without_them_still_load() -> None:
    from harness.results.record import PHASE_COLUMNS, CaseResult, Phases, Status
    from harness.sweep.cases import Case

    c = Case("eager", "cpu", "float32", "forward", 2, 8, 5, 7, 2, "add")
    phases = Phases(phase_setup_s=0.5, phase_check_s=0.25, phase_flops_s=0.0, phase_total_s=1.0)
    row = CaseResult(c, Status.MISMATCH, "output error", phases=phases).to_row()
    assert [k for k in row if k.startswith("phase_")] == list(PHASE_COLUMNS)
    back = CaseResult.from_row(row)
    assert back.phases == phases and not any(k.startswith("phase_") for k in back.extra)
    from_csv = CaseResult.from_row(row | {"phase_timing_s": math.nan, "phase_total_s": "1.0"})  # as pandas reads it
    assert from_csv.phases == phases
    old = {k: v for k, v in row.items() if not k.startswith("phase_")} | {"schema": 2}
    assert CaseResult.from_row(old).phases is None
    assert not any(k.startswith("phase_") for k in CaseResult.from_row(old).to_row())


def test_env_json_is_replaced_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written in place, a kill (or a second Ctrl-C) between truncating and writing left it empty,
    and the run could no longer be resumed."""
    folder = RunFolder(tmp_path)
    folder.write_env({"config": {"seed": 0}})
    before = (tmp_path / "env.json").read_text()

    def killed(fd: int) -> None:
        raise KeyboardInterrupt  # as a second Ctrl-C mid-write

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        folder.write_env({"config": {"seed": 1}})
    assert (tmp_path / "env.json").read_text() == before and json.loads(before)["config"]["seed"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env.json"]  # no staging file left
