"""``python -m harness merge``: run folders joined into one; duplicate or conflicting cases,
and runs of different settings, refused with one line and exit 2."""
from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_RUN

import harness
from harness.cli import main
from harness.results.environment import env_differences
from harness.results.merge import MergeError, merge
from harness.results.store import read_jsonl
from harness.sweep.cases import KEY_COLUMNS


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run of four cases, to be cut into pieces."""
    out = tmp_path_factory.mktemp("source")
    harness.run(device="cpu", variants="eager,mean_squeeze", shapes="4x4x4", batch_sizes=[1, 2], modes="forward",
                out=str(out), **FAST_RUN)  # fmt: skip
    return out


@pytest.fixture
def piece(real_run: Path, tmp_path: Path) -> Callable[..., Path]:
    """``piece(name, rows, **env_changes)``: a run folder holding some of the real run's rows."""
    rows = read_jsonl(real_run / "results.jsonl")
    env = json.loads((real_run / "env.json").read_text())

    def make(name: str, which: list[int], config: dict[str, Any] | None = None, **changes: Any) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        planned = {"cases_planned": len(which) + changes.get("cases_left", 0)}  # as a run of these rows plans
        header = env | planned | changes | {"config": env["config"] | (config or {})}
        (folder / "env.json").write_text(json.dumps(header))
        (folder / "results.jsonl").write_text("".join(json.dumps(rows[i]) + "\n" for i in which))
        return folder

    return make


def refused(args: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_merge_joins_runs_and_writes_every_output(piece, real_run: Path, tmp_path: Path, capsys) -> None:
    a, b = piece("a", [0, 1]), piece("b", [2, 3])
    before = (a / "results.jsonl").read_bytes()
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 0
    assert "merged 4 rows from 2 run(s)" in capsys.readouterr().out
    merged = read_jsonl(tmp_path / "m" / "results.jsonl")
    assert merged == read_jsonl(real_run / "results.jsonl")
    env = json.loads((tmp_path / "m" / "env.json").read_text())
    assert env["merged_from"] == [str(a), str(b)]
    assert env["config"]["shard"] is None
    assert (tmp_path / "m" / "report.md").read_text().count("mean_squeeze") >= 1
    assert len((tmp_path / "m" / "results.csv").read_text().splitlines()) == 5
    assert (a / "results.jsonl").read_bytes() == before  # inputs are only read


def test_a_case_in_two_runs_is_a_duplicate(piece, tmp_path: Path, capsys) -> None:
    a, b = piece("a", [0, 1]), piece("b", [1, 2])
    err = refused(["merge", str(a), str(b), "--out", str(tmp_path / "m")], capsys)
    assert "duplicate case mean_squeeze 4x4x4 b1" in err and str(a) in err and str(b) in err
    assert not (tmp_path / "m" / "results.jsonl").exists()


def test_a_duplicate_inside_a_network_names_the_network() -> None:
    from harness.results.merge import _label

    row = {"variant": "eager", "channels": 3, "height": 64, "width": 64, "batch": 1, "dtype": "float32",
           "mode": "forward", "reduction": 16, "fusion": "add", "bias": True, "device": "cpu"}  # fmt: skip
    assert _label(row | {"context": "unet_compiled"}).startswith("unet_compiled/eager 3x64x64 b1 ")
    assert _label(row | {"context": ""}).startswith("eager 3x64x64 b1 ")


def test_two_results_for_one_case_are_a_conflict(piece, tmp_path: Path, capsys) -> None:
    a, b = piece("a", [0]), piece("b", [1])
    rows = read_jsonl(a / "results.jsonl")
    changed = rows[0] | {"median_ms": rows[0]["median_ms"] * 2}
    (b / "results.jsonl").write_text(json.dumps(changed) + "\n")
    err = refused(["merge", str(a), str(b), "--out", str(tmp_path / "m")], capsys)
    assert err.startswith("error: conflicting results for case eager 4x4x4 b1")


def test_a_case_twice_in_one_run_is_refused(piece, tmp_path: Path) -> None:
    a = piece("a", [0, 0])
    with pytest.raises(MergeError, match=f"twice in {a}"):
        merge([a], tmp_path / "m")


@pytest.mark.parametrize(("config", "env", "message"), [
    ({"seed": 1}, {}, "conflicting setting seed: 0 in"),
    ({"timing": {"warmup_s": 1.0}}, {}, "conflicting setting timing.warmup_s: "),  # the one that differs
    ({"threads": 1}, {}, "conflicting setting threads: torch's default in"),  # None is no number
    ({}, {"torch": "1.0.0"}, "different environment: torch"),
    ({}, {"cpu_model": "Other CPU"}, "different environment: cpu_model"),
    ({"contexts": ["unet"]}, {}, "timed blocks alone but"),  # no one config holds both: not resumable
])  # fmt: skip
def test_runs_of_different_settings_are_refused(piece, tmp_path: Path, capsys, config, env, message) -> None:
    a, b = piece("a", [0]), piece("b", [1], config, **env)
    assert message in refused(["merge", str(a), str(b), "--out", str(tmp_path / "m")], capsys)


def test_what_must_match_depends_on_the_device() -> None:
    """One table (environment.ENVIRONMENT) for merge, resume and compare: the GPU model matters to GPU
    timings only, the CPU model and threads to CPU timings only, the host to compare only."""
    a = {"gpu_name": "NVIDIA H100", "cpu_model": "EPYC", "torch": "2.13", "hostname": "a", "threads": 2}
    b = {"gpu_name": "NVIDIA H200", "cpu_model": "Xeon", "torch": "2.13", "hostname": "b", "threads": 1}
    keys = lambda device, purpose: [f.key for f, _, _ in env_differences(a, b, device, purpose)]  # noqa: E731
    assert keys("cuda", "merge") == ["gpu_name"]
    assert keys("cpu", "merge") == ["cpu_model"]
    assert keys("cuda", "compare") == ["gpu_name", "hostname"]
    assert keys("cpu", "compare") == ["cpu_model", "hostname", "threads"]


def test_allow_mixed_env_warns_instead(piece, tmp_path: Path) -> None:
    a, b = piece("a", [0]), piece("b", [1], torch="1.0.0")
    with pytest.warns(RuntimeWarning, match="torch"):
        assert merge([a, b], tmp_path / "m", allow_mixed_env=True).rows == 2
    with pytest.raises(MergeError, match="seed"):  # settings of the sweep are never waved through
        merge([a, piece("c", [2], {"seed": 5})], tmp_path / "m2", allow_mixed_env=True)


def test_bad_folders_are_refused(piece, tmp_path: Path, capsys) -> None:
    a, b = piece("a", [0]), piece("b", [1])
    (tmp_path / "empty").mkdir()
    assert "not a run folder" in refused(["merge", str(tmp_path / "empty"), "--out", str(tmp_path / "m")], capsys)
    assert f"{tmp_path / 'gone'}: no such run folder" in refused(["merge", str(a), str(tmp_path / "gone"), "--out",
                                                                  str(tmp_path / "m")], capsys)  # fmt: skip
    assert "given twice" in refused(["merge", str(a), str(a) + "/", "--out", str(tmp_path / "m")], capsys)
    assert "is one of the runs" in refused(["merge", str(a), str(b), "--out", str(a)], capsys)
    shutil.copytree(b, tmp_path / "taken")
    assert "already holds a run" in refused(["merge", str(a), "--out", str(tmp_path / "taken")], capsys)
    # a run with no row yet (interrupted before its first, or an empty shard): its env.json was overwritten
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "env.json").write_text("{}")
    assert "already holds a run" in refused(["merge", str(a), "--out", str(tmp_path / "started")], capsys)
    assert (tmp_path / "started" / "env.json").read_text() == "{}"
    # "" was the current directory: the merged run's four files landed there
    assert "--out is empty" in refused(["merge", str(a), "--out", ""], capsys)
    assert "the following arguments are required: --out" in refused(["merge", str(a)], capsys)


def test_a_cut_off_line_in_an_input_is_skipped_with_a_warning(piece, tmp_path: Path) -> None:
    a = piece("a", [0, 1])
    with (a / "results.jsonl").open("a") as f:
        f.write('{"variant": "eager", "dev')
    before = (a / "results.jsonl").read_bytes()
    with pytest.warns(RuntimeWarning, match="cut off"):
        assert merge([a], tmp_path / "m").rows == 2
    assert (a / "results.jsonl").read_bytes() == before


def test_a_last_line_torn_mid_character_is_skipped_too(piece, tmp_path: Path) -> None:
    """A kill between the bytes of one UTF-8 character: the line is cut off, not the whole file unreadable."""
    a = piece("a", [0, 1])
    with (a / "results.jsonl").open("ab") as f:
        f.write('{"variant": "eager", "reason": "µ'.encode()[:-1])
    with pytest.warns(RuntimeWarning, match="its last line is not a whole JSON row"):
        assert merge([a], tmp_path / "m").rows == 2


def test_missing_shards_are_a_warning(piece, tmp_path: Path) -> None:
    a = piece("a", [0], {"shard": {"index": 1, "count": 3}})
    b = piece("b", [1], {"shard": {"index": 3, "count": 3}})
    with pytest.warns(RuntimeWarning, match=r"shard\(s\) 2/3 are not among"):
        merge([a, b], tmp_path / "m")
    keys = [tuple(r[c] for c in KEY_COLUMNS) for r in read_jsonl(tmp_path / "m" / "results.jsonl")]
    assert len(keys) == 2
    # in the merged report too: said on stderr alone, a partial merge read as the whole sweep
    [note] = [n for n in json.loads((tmp_path / "m" / "env.json").read_text())["merge_warnings"] if "shard" in n]
    assert note.startswith("shard(s) 2/3 are not among the runs merged")
    assert note in (tmp_path / "m" / "report.md").read_text()
    # merged again with the shard it lacked: whole, and neither the old warning nor a new one is said
    c = piece("c", [2], {"shard": {"index": 2, "count": 3}})
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        merge([tmp_path / "m", c], tmp_path / "whole")
    assert not [w for w in said if "shard(s)" in str(w.message)]
    env = json.loads((tmp_path / "whole" / "env.json").read_text())
    assert env["merged_shards"] == ["1/3", "2/3", "3/3"]
    assert not [n for n in env.get("merge_warnings", []) if "shard(s)" in n]
    assert "not among the runs merged" not in (tmp_path / "whole" / "report.md").read_text()


def test_runs_inside_several_networks_merge_into_a_config_of_all_of_them(piece, tmp_path: Path) -> None:
    """Networks' runs may be merged like any others: env.json's config names every context, so that
    ``--resume`` of the merged folder knows the whole sweep."""
    a, b = piece("a", [0], {"contexts": ["unet"]}), piece("b", [1], {"contexts": ["unet_compiled"]})
    merge([a, b], tmp_path / "m")
    assert json.loads((tmp_path / "m" / "env.json").read_text())["config"]["contexts"] == ["unet", "unet_compiled"]


@pytest.mark.parametrize("order", ["done first", "unfinished first"])
def test_a_merge_of_an_unfinished_run_says_so_whatever_the_order(piece, tmp_path: Path, order: str) -> None:
    """Only the first run's env.json was kept, so an interrupted run given second went unmentioned."""
    done, left = piece("done", [0, 1]), piece("left", [2], cases_left=5)
    runs = [done, left] if order == "done first" else [left, done]
    merge(runs + [piece("more", [3], cases_left=2)], tmp_path / "m")
    assert json.loads((tmp_path / "m" / "env.json").read_text())["cases_left"] == 7
    assert "Unfinished run: 7 case(s) did not run" in (tmp_path / "m" / "report.md").read_text()
    merge([done], tmp_path / "whole")
    assert "cases_left" not in json.loads((tmp_path / "whole" / "env.json").read_text())


@pytest.mark.parametrize(("damage", "message"), [
    (lambda row: row | {"median_ms": "fast"}, "median_ms = 'fast', not a number"),
    (lambda row: 42, "line 1 is 42, not a results row"),
    (lambda row: {"variant": "eager"}, "without a variant or a status"),
    # each of these ended report and merge deep in pandas (a TypeError, an AttributeError) or was
    # reported as measured
    (lambda row: row | {"median_ms": None}, "holds median_ms = None: an ok row's latency must be a finite number"),
    (lambda row: row | {"median_ms": -1.0}, "holds median_ms = -1.0: an ok row's latency"),
    (lambda row: row | {"batch": None}, "holds batch = None: not a whole number of at least 1"),
    (lambda row: row | {"batch": 1.5}, "holds batch = 1.5: not a whole number of at least 1"),
    (lambda row: row | {"samples_ms": ["a", "b"]}, "holds samples_ms = ['a', 'b']: not a list of numbers"),
    (lambda row: row | {"samples_ms": "abc"}, "holds samples_ms = 'abc': not a list of numbers"),
    (lambda row: row | {"status": 1}, "holds status = 1: not one of ok, "),
    (lambda row: row | {"status": "weird"}, "holds status = 'weird': not one of ok, "),
    (lambda row: row | {"variant": ["eager"]}, "holds variant = ['eager']: not text"),
    (lambda row: row | {"dtype": "float99"}, "holds dtype = 'float99': not one of float32, "),
    (lambda row: row | {"mode": "sideways"}, "holds mode = 'sideways': not one of forward, train"),
    (lambda row: row | {"schema": 2.7}, "a row whose schema is 2.7, not a version number"),
    (lambda row: row | {"host_ms": "quick"}, "host_ms = 'quick', not a number"),
    (lambda row: row | {"threads": "two"}, "threads = 'two', not a number"),
    (lambda row: row | {"context": 5}, "holds context = 5: not text"),
])  # fmt: skip
def test_a_damaged_row_is_one_line_and_merge_writes_nothing(piece, tmp_path: Path, capsys, damage,
                                                             message: str) -> None:
    """A median of "fast" ended report, resume and merge in a pandas TypeError, after merge had
    written three of its four files (and then refused that --out on a retry)."""
    good = piece("good", [0])
    bad = piece("bad", [1])
    row = json.loads((bad / "results.jsonl").read_text())
    (bad / "results.jsonl").write_text(json.dumps(damage(row)) + "\n")
    assert message in refused(["merge", str(good), str(bad), "--out", str(tmp_path / "m")], capsys)
    assert not (tmp_path / "m").exists()
    assert message in refused(["report", str(bad)], capsys)


def test_a_number_written_as_text_reads_as_the_number(piece, capsys) -> None:
    run = piece("text", [0, 1])
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    rows[0]["median_ms"] = str(rows[0]["median_ms"])
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(run)]) == 0


def test_a_damaged_config_in_env_json_is_one_line(piece, tmp_path: Path, capsys) -> None:
    a, b = piece("a", [0]), piece("b", [1])
    (b / "env.json").write_text(json.dumps({"config": 5}))
    assert "not the sweep's settings" in refused(["merge", str(a), str(b), "--out", str(tmp_path / "m")], capsys)


def test_a_configuration_split_between_runs_is_a_warning(piece, tmp_path: Path) -> None:
    """eager from one run, mean_squeeze from a later one, at the same shape and batch: merged without
    a word, the report gave a speedup of one over the other as if measured side by side."""
    a, b = piece("a", [0, 2]), piece("b", [1, 3])  # eager in a, mean_squeeze in b, at both batches
    with pytest.warns(RuntimeWarning, match=r"2 configuration\(s\) hold variants measured in different runs, "
                                            r"e\.g\. 4x4x4 b1 .*\(eager from a, mean_squeeze from b\)"):
        merge([a, b], tmp_path / "m")
    whole_a, whole_b = piece("c", [0, 1]), piece("d", [2, 3])  # each configuration whole in one run
    import warnings as w

    with w.catch_warnings():
        w.simplefilter("error")
        merge([whole_a, whole_b], tmp_path / "n")


def test_each_runs_tracebacks_follow_it_into_the_merged_folder(piece, tmp_path: Path) -> None:
    a, b, c = piece("a", [0]), piece("b", [1]), piece("c", [2])
    (a / "errors.log").write_text("=== eager 4x4x4 b1\nTraceback: boom in a\n\n")
    (c / "errors.log").write_text("=== eager 4x4x4 b2\nTraceback: boom in c\n\n")
    merge([a, b, c], tmp_path / "m")
    text = (tmp_path / "m" / "errors.log").read_text()
    assert text.index(f"from {a}") < text.index("boom in a") < text.index(f"from {c}") < text.index("boom in c")
    assert f"from {b}" not in text  # a run without failures adds nothing


def test_runs_without_tracebacks_merge_into_a_folder_without_errors_log(piece, tmp_path: Path) -> None:
    merge([piece("a", [0]), piece("b", [1])], tmp_path / "m")
    assert not (tmp_path / "m" / "errors.log").exists()


def test_the_merged_run_describes_every_runs_variants(piece, real_run: Path, tmp_path: Path) -> None:
    """Shards of other variants: the merged env.json and report.md name what each of them is."""
    assert json.loads((real_run / "env.json").read_text())["variant_descriptions"]["mean_squeeze"].startswith(
        "squeeze as x.mean")
    a = piece("a", [0, 2], variant_descriptions={"eager": "the seed"}, variant_sources={"eager": "built-in"})
    b = piece("b", [1, 3], variant_descriptions={"mean_squeeze": "a mean"}, variant_sources={"mean_squeeze": "x"})
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 0
    env = json.loads((tmp_path / "m" / "env.json").read_text())
    assert env["variant_descriptions"] == {"eager": "the seed", "mean_squeeze": "a mean"}
    assert env["variant_sources"] == {"eager": "built-in", "mean_squeeze": "x"}
    report = (tmp_path / "m" / "report.md").read_text()
    assert "| mean_squeeze | a mean" in report and "| eager        | the seed" in report


def _foreign_rows(folder: Path) -> None:
    (folder / "results.jsonl").write_text('{"name": "latency", "value": 1.5}\n{"name": "memory", "value": 3}\n')


@pytest.mark.parametrize(("make", "message"), [
    (lambda run, x: _foreign_rows(x), "no env.json: not a run folder made by `harness run`"),
    (lambda run, x: (x / "results.jsonl").write_text(""), "no env.json: not a run folder made by `harness run`"),
    (lambda run, x: shutil.copy(run / "results.jsonl", x), "no env.json: not a run folder made by `harness run`"),
    (lambda run, x: (_foreign_rows(x), (x / "env.json").write_text('{"tool": "other", "seed": 7}')),
     "env.json: no sweep settings in it (no config): not a run folder made by `harness run`"),
    # rows read before settings compared: another seed was named, not the rows no run of ours writes
    (lambda run, x: (_foreign_rows(x), (x / "env.json").write_text(json.dumps(
        json.loads((run / "env.json").read_text()) | {"config": {"seed": 3}}))),
     "results.jsonl: a row without a variant or a status"),
], ids=["other-tools-rows", "empty-results", "run-without-env", "other-tools-env", "rows-before-settings"])  # fmt: skip
def test_a_folder_not_made_by_harness_run_is_named_as_such(piece, tmp_path: Path, capsys, make,
                                                           message: str) -> None:
    """Another tool's folder, an empty results.jsonl, a run whose env.json is gone: each was refused
    as ``conflicting setting seed: 0 in RUN but None in X``, a setting nobody gave."""
    run, other = piece("run", [0]), tmp_path / "other"
    other.mkdir()
    make(run, other)
    err = refused(["merge", str(run), str(other), "--out", str(tmp_path / "m")], capsys)
    assert message in err and str(other) in err and "conflicting setting" not in err, err
    assert not (tmp_path / "m").exists()


def test_an_empty_results_file_merges_only_beside_a_runs_env_json(piece, tmp_path: Path, capsys) -> None:
    """An empty shard (its env.json, no row) is a run; an empty results.jsonl alone is not."""
    run, empty = piece("run", [0]), piece("empty", [])
    assert main(["merge", str(run), str(empty), "--out", str(tmp_path / "m")]) == 0
    (empty / "env.json").unlink()
    assert "empty: no env.json" in refused(["merge", str(run), str(empty), "--out", str(tmp_path / "n")], capsys)
    # every run empty: "merged 0 rows" made a folder that report then called an unfinished run
    other = piece("other", [])
    message = refused(["merge", str(other), "--out", str(tmp_path / "o")], capsys)
    assert message == f"error: nothing to merge: no results in {other / 'results.jsonl'}"
    assert not (tmp_path / "o").exists()


def test_a_split_configuration_is_said_in_the_merged_report_too(piece, tmp_path: Path, capsys) -> None:
    """The warning went to stderr only: report.md gave its ties and speedups of eager (one run) over
    mean_squeeze (another) as if measured side by side, and ``report`` rebuilding it could not know."""
    a, b = piece("a", [0, 2]), piece("b", [1, 3])
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 0
    warning = capsys.readouterr().err.split("warning: ", 1)[1].strip()
    assert "measured in different runs" in warning
    assert json.loads((tmp_path / "m" / "env.json").read_text())["merge_warnings"] == [warning]
    report = tmp_path / "m" / "report.md"
    quoted = f"> **Merged runs:** {warning}"
    assert report.read_text().index(quoted) < report.read_text().index("## Which variant to run")
    report.unlink()
    assert main(["report", str(tmp_path / "m")]) == 0
    assert quoted in report.read_text()
    merge([tmp_path / "m"], tmp_path / "again")  # merged again: its rows are still split
    assert quoted in (tmp_path / "again" / "report.md").read_text()
    merge([piece("c", [0, 1]), piece("d", [2, 3])], tmp_path / "whole")  # each configuration whole in one run
    assert "merge_warnings" not in json.loads((tmp_path / "whole" / "env.json").read_text())
    assert "Merged runs" not in (tmp_path / "whole" / "report.md").read_text()


def test_environments_waved_through_are_said_in_the_merged_report(piece, tmp_path: Path) -> None:
    """``--allow-mixed-env``: the report's header names the first run's torch alone."""
    a, b = piece("a", [0]), piece("b", [2], torch="1.0.0")
    with pytest.warns(RuntimeWarning, match="torch"):
        merge([a, b], tmp_path / "m", allow_mixed_env=True)
    [note] = json.loads((tmp_path / "m" / "env.json").read_text())["merge_warnings"]
    assert note.startswith("different environment: torch is ") and "'1.0.0'" in note
    assert f"> **Merged runs:** {note}" in (tmp_path / "m" / "report.md").read_text()


def test_an_out_folder_in_a_symlink_loop_is_one_line(piece, tmp_path: Path, capsys) -> None:
    """Path.resolve raises RuntimeError, not OSError, on a loop (Python < 3.13): a traceback, exit 1."""
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    message = refused(["merge", str(piece("run", [0])), "--out", str(tmp_path / "loop1")], capsys)
    assert str(tmp_path / "loop1") in message and ("Symlink loop" in message or "Too many levels" in message)
