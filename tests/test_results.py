"""The results store keeps every finished row, even across a kill mid-write."""
from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import pytest

from harness.results.store import COLUMNS, OutputError, RunFolder, default_run_dir, read_jsonl, to_frame


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


@pytest.fixture
def one_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run started within the same second (UTC 2026-11-28 08:11:25)."""
    import datetime as dt
    import types

    import harness.results.store as store

    frozen = dt.datetime(2026, 11, 28, 8, 11, 25, tzinfo=dt.UTC)
    clock = types.SimpleNamespace(now=lambda tz=None: frozen)
    monkeypatch.setattr(store, "_dt", types.SimpleNamespace(UTC=dt.UTC, datetime=clock))


def test_default_run_folders_started_in_one_second_get_their_own_names(tmp_path: Path, one_second: None) -> None:
    """Two default-named runs started in the same second were given one folder, and the second was
    refused ("being written by another run right now: choose another --out") though it named none.
    The name is taken by creating the folder; a taken one gets -2, -3, …"""
    root = tmp_path / "results" / "runs"
    names = [default_run_dir("cuda:0", root) for _ in range(3)]
    assert [p.name for p in names] == ["20261128-081125-cuda0", "20261128-081125-cuda0-2", "20261128-081125-cuda0-3"]
    assert all(p.is_dir() and not any(p.iterdir()) for p in names)  # made, and empty: a run's to claim
    (root / "20261128-081125-cuda0-4").write_text("not a folder")
    assert default_run_dir("cuda:0", root).name == "20261128-081125-cuda0-5"


def test_a_second_default_run_in_the_same_second_holds_and_claims_its_own_folder(tmp_path: Path,
                                                                                 one_second: None) -> None:
    """What ``run`` does with the name (``RunFolder``, ``held``, ``claim``) works on a folder made
    for it, while the first run still holds its own."""
    first = RunFolder(default_run_dir("cpu", tmp_path))
    with first.held():
        first.claim()
        first.write_env({"run": 1})
        second = RunFolder(default_run_dir("cpu", tmp_path))
        with second.held():  # refused before: the same folder, held by the first run
            assert second.claim() == []
            second.write_env({"run": 2})
    assert first.path != second.path
    assert json.loads((first.path / "env.json").read_text())["run"] == 1


def test_runs_choosing_a_default_name_at_once_never_share_one(tmp_path: Path, one_second: None) -> None:
    """Checking for the name and then creating it would let two runs pass the check together: the
    folder is created with a mkdir that fails where it exists, so each gets its own."""
    start, got = threading.Barrier(8), []

    def choose() -> None:
        start.wait()
        got.append(default_run_dir("cpu", tmp_path))

    threads = [threading.Thread(target=choose) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8 and all(p.is_dir() for p in got)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_a_default_run_folder_that_cannot_be_made_is_an_output_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot be written"):
            default_run_dir("cpu", tmp_path / "runs")
    finally:
        tmp_path.chmod(0o700)


def test_a_file_written_whole_is_named_in_its_error_not_its_staging_copy(tmp_path: Path) -> None:
    """report on a run the user may read but not write said '.report.md.4242.tmp: Permission denied'."""
    from harness.results.store import write_whole

    (tmp_path / "run").write_text("a file where a folder belongs")
    target = tmp_path / "run" / "report.md"
    with pytest.raises(OSError) as caught:
        write_whole(target, "text")
    assert caught.value.filename == str(target) and caught.value.strerror == "Not a directory"
    write_whole(tmp_path / "report.md", "whole")
    assert (tmp_path / "report.md").read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "run"]  # no staging copy left
