"""``run --launcher slurm|local --shards N`` , driven through submitit's local executor: the
shards run as a job array, then merge into the run folder; a requeued shard resumes."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import FAST_RUN
from optional import require

from harness.cli import main
from harness.results.store import read_jsonl
from harness.sweep.cases import KEY_COLUMNS, expand
from harness.sweep.config import SweepConfig
from harness.sweep.slurm import ShardJob, SlurmOptions, shard_dir

submitit = require("submitit")

SWEEP = {"device": "cpu", "variants": "eager,mean_squeeze", "shapes": "4x4x4,8x4x4", "batch_sizes": [1],
         "modes": "forward", **FAST_RUN}  # fmt: skip
FLAGS = ["--device", "cpu", "--variants", "eager,mean_squeeze", "--shapes", "4x4x4,8x4x4", "--batch-sizes", "1",
         "--modes", "forward", "--warmup", "0", "--min-samples", "3", "--max-samples", "20", "--max-time", "0.05",
         "--rel-ci", "0.05"]  # fmt: skip


def test_local_launcher_runs_the_shards_and_merges_them(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))  # the tasks import harness
    monkeypatch.chdir(tmp_path)  # --save-baseline writes results/baselines/ here
    (tmp_path / "results" / "baselines").mkdir(parents=True)  # as in the repository's root
    out = tmp_path / "run"
    assert main(["run", *FLAGS, "--launcher", "local", "--shards", "2", "--slurm-time", "10", "--out", str(out),
                 "--save-baseline"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "submitted 2 shard(s)" in printed and "merged 4 rows from 2 shard(s)" in printed
    saved = list((tmp_path / "results" / "baselines").iterdir())  # the merged run, as a run without shards saves
    assert len(saved) == 1 and f"baseline: {Path('results/baselines') / saved[0].name}" in printed
    assert (saved[0] / "results.jsonl").read_text() == (out / "results.jsonl").read_text()
    for k in (1, 2):
        env = json.loads((shard_dir(out, k, 2) / "env.json").read_text())
        assert env["config"]["shard"] == {"index": k, "count": 2}
    rows = read_jsonl(out / "results.jsonl")
    got = [tuple(r[c] for c in KEY_COLUMNS) for r in rows]
    assert len(got) == len(set(got)) == 4
    assert set(got) == {c.key for c in expand(SweepConfig.build(**SWEEP))}
    assert all(r["status"] == "ok" for r in rows)
    assert (out / "report.md").exists()


def test_a_sharded_run_with_a_failed_case_exits_1_as_a_run_without_shards(tmp_path: Path, capsys,
                                                                          monkeypatch) -> None:  # fmt: skip
    import fault_variants

    tests = Path(__file__).resolve().parent
    fault_variants.make_plugin(tmp_path / "plugin")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "plugin"), str(tests), str(tests.parent)]))
    flags = [*FLAGS[:3], "eager,fault_raise", *FLAGS[4:]]
    fault_variants.register_all()  # imported before in this process, and unregistered since, maybe
    try:
        code = main(["run", *flags, "--launcher", "local", "--shards", "2", "--slurm-time", "10",
                     "--out", str(tmp_path / "run")])  # fmt: skip
    finally:
        fault_variants.unregister_all()
    printed = capsys.readouterr().out
    assert code == 1 and "2 of 4 case(s) failed (fault_raise 2× error)" in " ".join(printed.split())
    log = tmp_path / "run" / "errors.log"  # both shards' tracebacks, beside the merged rows
    assert f"tracebacks in {log}" in "".join(printed.split("\n"))
    assert log.read_text().count("=== fault_raise ") == 2


def test_a_requeued_shard_resumes_instead_of_starting_over(tmp_path: Path) -> None:
    job = ShardJob(dict(SWEEP), None, str(tmp_path), 2)
    first = Path(job(1))
    assert first == shard_dir(tmp_path, 1, 2)
    rows = read_jsonl(first / "results.jsonl")
    assert len(rows) == 2
    results = first / "results.jsonl"
    results.write_text(results.read_text().splitlines(keepends=True)[0])  # as if killed after one case
    assert Path(job(1)) == first
    again = read_jsonl(results)
    assert again[0] == rows[0] and len(again) == 2  # the row kept, the missing one run, nothing twice
    delayed = job.checkpoint(1)
    assert delayed.function is job and delayed.args == (1,)


@pytest.mark.parametrize(("args", "message"), [
    (["--shards", "2"], "--shards needs --launcher slurm"),
    (["--slurm-partition", "gpu"], "--slurm-partition needs --launcher slurm"),
    (["--launcher", "slurm"], "--launcher needs --shards N"),
    (["--launcher", "slurm", "--shards", "2", "--shard", "1/2"], "cannot be combined with --shard"),
    (["--launcher", "slurm", "--shards", "0"], "--shards must be ≥ 1"),
    (["--launcher", "pbs", "--shards", "2"], "invalid choice"),
    (["--launcher", "local", "--shards", "2", "--shapes", "4x4"], "malformed shape"),
    (["--launcher", "local", "--shards", "3", *FLAGS], "--shards 3 is more than the sweep's 2 configuration(s)"),
    (["--launcher", "local", "--shards", "10" * 10, *FLAGS], "configuration(s)"),  # not 10^19 processes
])  # fmt: skip
def test_bad_launcher_flags_are_one_line_and_exit_2(args: list[str], message: str, capsys) -> None:
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_without_submitit_the_launcher_says_how_to_get_it(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    assert main(["run", *FLAGS, "--launcher", "slurm", "--shards", "2"]) == 2
    assert "pip install 'scse-harness[slurm]'" in capsys.readouterr().err


def test_slurm_options_are_validated() -> None:
    from harness.sweep.config import ConfigError

    with pytest.raises(ConfigError, match="--slurm-time"):
        SlurmOptions(shards=2, time_min=0)
    with pytest.raises(ConfigError, match="--slurm-gpus must be ≥ 0, got -1"):
        SlurmOptions(shards=2, gpus_per_task=-1)
    with pytest.raises(ConfigError, match="--slurm-cpus must be ≥ 1, got 0"):
        SlurmOptions(shards=2, cpus_per_task=0)
    assert SlurmOptions(shards=2, gpus_per_task=0, cpus_per_task=1).gpus_per_task == 0
