"""The CLI end to end, as a user runs it: bad input is one line and exit 2; a run writes its folder."""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import harness
from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent
FAST_FLAGS = ["--warmup", "0", "--min-samples", "3", "--max-time", "0.05", "--rel-ci", "0.05"]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--variants", "eagr"], "did you mean eager"),
        (["run", "--shapes", "32x64"], "malformed shape"),
        (["run", "--shapes", "8x4x4", "--reductions", "16"], "leaves no hidden channel"),
        (["run", "--shapes", "0x4x4"], "zero or negative"),
        (["run", "--dtypes", "half"], "unknown dtype"),
        (["run", "--modes", "eval"], "unknown mode"),
        (["run", "--config", "/nonexistent/sweep.toml"], "does not exist"),
        (["run", "--bogus-flag"], "unrecognized arguments"),
        # a flag is spelt in full: an abbreviation in a CI script would break when a longer flag came
        (["run", "--max-t", "1"], "unrecognized arguments: --max-t 1"),
        (["compare", "--thresh", "0.1", "a", "b"], "unrecognized arguments: --thresh"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err


#: A path component over the file system's 255 bytes: Path.exists() raises ENAMETOOLONG, as a
#: folder the user may not search raises EACCES, where a missing one answers False.
LONG = "x" * 300


@pytest.mark.parametrize("args", [
    ["run", "--out", "{tmp}/" + LONG],
    ["run", "--resume", "{tmp}/" + LONG],
    ["report", "{tmp}/" + LONG],
    ["compare", "{tmp}/" + LONG, "{tmp}/b"],
    ["merge", "{tmp}/" + LONG, "--out", "{tmp}/m"],
    ["merge", "{tmp}/" + LONG + "-b", "--out", "{tmp}/" + LONG],
])  # fmt: skip
def test_a_path_the_system_refuses_is_one_line_naming_it(args: list[str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """Each of these ended in a 20-line traceback (OSError: File name too long), exit 1."""
    given = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main([*given, *(["--variants", "eager", "--shapes", "4x4x4"] if args[0] == "run" else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert LONG in err and err.endswith("File name too long"), err


#: Every run option given nonsense: each must be one line naming the flag, exit 2, before anything runs.
#: ``{tmp}`` is the test's temporary folder.
BAD_OPTIONS = [
    (["--min-samples", "50", "--max-samples", "5"], "--min-samples 50 exceeds --max-samples 5"),
    (["--min-samples", "0"], "--min-samples"),
    (["--min-samples", "99999999999999999999"], "--min-samples"),
    (["--max-samples", "-3"], "--max-samples"),
    (["--max-samples", "1e3"], "--max-samples"),
    # the first Ctrl-C waits for the case in progress: one of 1e9 samples or seconds ran on past it
    (["--min-samples", "1000000000", "--max-samples", "1000000000"], "--min-samples must be ≤ 10000000"),
    (["--max-time", "1e9"], "--max-time must be ≤ 3600"),
    (["--save-baseline", "--baselines-dir", ""], "--baselines-dir is empty"),  # the baseline landed in the cwd
    (["--save-baseline", "--baselines-dir", "{tmp}/file"], "is a file, not a folder"),  # found after the sweep
    (["--processes", "0"], "--processes"),
    (["--processes", "many"], "--processes"),
    (["--processes", "100000"], "--processes must be ≤ 256"),
    (["--threads", "99999"], "--threads must be ≤ 1024"),  # torch's pool crashed the process there
    (["--threads", "0"], "--threads"),
    (["--threads", ""], "--threads"),
    (["--rel-ci", "2"], "--rel-ci"),
    (["--rel-ci", "0"], "--rel-ci"),
    (["--rel-ci", "nan"], "--rel-ci"),
    (["--warmup", "-1"], "--warmup"),
    (["--warmup", "inf"], "--warmup"),
    (["--warmup", "1e9"], "--warmup must be ≤ 600"),
    (["--max-time", "0"], "--max-time"),
    (["--max-time", "soon"], "--max-time"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "1.5"], "--seed"),
    (["--variants", ""], "--variants"),
    (["--variants", ","], "--variants"),
    (["--shapes", ""], "--shapes"),
    (["--shapes", "1x2x3x4"], "--shapes"),
    (["--batch-sizes", ""], "--batch-sizes"),
    (["--batch-sizes", "0"], "--batch-sizes"),
    (["--batch-sizes", "1,,32"], "--batch-sizes: '1,,32' has an empty item between two commas"),  # a lost 8
    (["--variants", "eager,, eager_factored"], "--variants: 'eager,, eager_factored' has an empty item"),
    (["--dtypes", ""], "--dtypes"),
    (["--modes", "eval"], "--modes"),
    (["--reductions", "-2"], "--reductions"),
    (["--shapes", "8x4x4", "--reductions", "16"], "--reductions"),
    (["--fusions", "xor"], "--fusions"),
    (["--bias", "maybe"], "--bias"),
    (["--steady-malloc", "true,false"], "--steady-malloc"),
    (["--steady-malloc", ""], "--steady-malloc"),
    (["--cache", "lukewarm"], "--cache"),
    (["--shard", "3/2"], "--shard"),
    (["--shard", "0/2"], "--shard"),
    (["--shard", "half"], "--shard"),
    (["--case-timeout", "-1"], "--case-timeout"),
    (["--case-timeout", "inf"], "--case-timeout"),
    (["--case-timeout", "1e10"], "--case-timeout must be ≤"),  # past Python's longest wait: a queue would raise
    (["--case-timeout", "2"], "--case-timeout 2 s would kill every case: each warms up and samples for 2.1 s"),
    (["--case-timeout", "1", "--max-time", "4", "--processes", "2"], "(--warmup 0.1 + --max-time 4 / --processes 2)"),
    (["--out", ""], "--out"),
    (["--out", "{tmp}/two-caches.toml"], "is a file; name a folder"),
    (["--device", "tpu"], "--device"),
    (["--config", ""], "--config"),
    (["--config", "{tmp}"], "--config"),  # a folder
    (["--config", "{tmp}/missing.toml"], "--config"),
    (["--config", "{tmp}/broken.toml"], "--config"),
    (["--config", "{tmp}/binary.toml"], "--config"),
    (["--config", "{tmp}/unknown.toml"], "--config"),
    (["--config", "{tmp}/zero.toml"], "--min-samples"),
    (["--config", "{tmp}/two-caches.toml"], "--cache"),
    (["--resume", "{tmp}/missing"], "--resume"),
    (["--resume", "{tmp}"], "--resume"),  # not a run folder
    (["--overwrite", "--resume", "{tmp}"], "--overwrite"),
    (["--launcher", "local", "--shards", "0"], "--shards"),
    (["--launcher", "local", "--shards", "2", "--overwrite"], "--overwrite"),
    (["--context", ""], "--context: no context named in ''"),  # an unset shell variable: no block-alone sweep
    (["--context", ","], "--context"),
]


@pytest.mark.parametrize(("args", "flag"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_every_bad_run_option_is_one_line_naming_its_flag(args: list[str], flag: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    (tmp_path / "broken.toml").write_text("shapes = [")
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe")
    (tmp_path / "unknown.toml").write_text("colour = 'blue'\n")
    (tmp_path / "zero.toml").write_text("[sweep]\nmin-samples = 0\n")
    (tmp_path / "two-caches.toml").write_text("cache = ['hot', 'cold']\n")
    (tmp_path / "file").write_text("")
    device = [] if "--device" in args else ["--device", "cpu"]
    assert main(["run", *device, *(a.replace("{tmp}", str(tmp_path)) for a in args)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert flag in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("args", "flag"),
    [(["list", "--device", "tpu"], "--device"), (["env", "--device", "tpu"], "--device"),
     # list answered "unavailable" for every variant on devices run refuses
     (["list", "--device", "meta"], "--device: unsupported device 'meta'"),
     (["env", "--device", "meta"], "--device: unsupported device 'meta'")],
)
def test_other_commands_name_a_bad_device(args: list[str], flag: str, capsys: pytest.CaptureFixture) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err, err


def test_list_reads_a_device_as_run_does(capsys: pytest.CaptureFixture) -> None:
    """``run --device CPU`` ran on the CPU, ``list --device CPU`` called it unknown."""
    assert main(["list", "--device", "CPU", "--refresh", "eager"]) == 0
    assert "ready" in capsys.readouterr().out


def test_list_says_how_to_ask_for_a_graphed_form(capsys: pytest.CaptureFixture) -> None:
    """Graphed forms of any variant are made when asked for, so ``list`` cannot show them all: it says
    they exist, and asked for one by name it says how to run it rather than that nothing matches."""
    assert main(["list", "--device", "cpu", "eager"]) == 0
    assert "graphed_NAME for any variant NAME that runs on CUDA" in capsys.readouterr().out
    assert main(["list", "--device", "cpu", "graphed_channels_last"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("channels_last captured in CUDA graphs: run --variants graphed_channels_last"), err
    assert main(["list", "--device", "cpu", "graphed_nosuch"]) == 2
    assert "no variant or context matches 'graphed_nosuch'" in capsys.readouterr().err
    assert main(["list", "--device", "cpu", "graphed_cuda_graph"]) == 2  # what run would refuse is not offered
    refused = capsys.readouterr().err.strip()
    assert refused.endswith("cuda_graph replays CUDA graphs of its own, so it has no graphed form")


TINY_RUN = ["--device", "cpu", "--variants", "eager", "--shapes", "8x4x4", "--batch-sizes", "1", "--modes",
            "forward", "--quiet", *FAST_FLAGS]  # fmt: skip


def test_a_folder_holding_a_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for marker in ("results.jsonl", "env.json"):
        folder = tmp_path / marker
        folder.mkdir()
        (folder / marker).write_text("{}\n")
        assert main(["run", *TINY_RUN, "--out", str(folder)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "already holds a run" in err and "--overwrite" in err and "--resume" in err, err
        assert [p.name for p in folder.iterdir()] == [marker]  # untouched
        assert (folder / marker).read_text() == "{}\n"


def test_overwrite_replaces_the_old_run_and_nothing_else(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    (folder / "traces").mkdir(parents=True)
    old = {"results.jsonl": '{"variant": "old"}\n', "results.csv": "old\n", "report.md": "old\n",
           "env.json": "{}\n", "workers.log": "old\n", "speedup.png": "old", "traces/old.trace.json": "{}"}
    for name, text in old.items():
        (folder / name).write_text(text)
    (folder / "notes.txt").write_text("mine")
    (folder / "sweep.toml").write_text("# mine")
    assert main(["run", *TINY_RUN, "--out", str(folder), "--overwrite"]) == 0
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["eager"]
    assert {p.name for p in folder.iterdir()} == {"results.jsonl", "results.csv", "report.md", "env.json",
                                                  "notes.txt", "sweep.toml"}  # fmt: skip
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "sweep.toml").read_text() == "# mine"
    assert json.loads((folder / "env.json").read_text())["config"]["overwrite"] is True


def test_resume_still_finishes_a_run_in_its_own_folder(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    assert main(["run", *TINY_RUN, "--batch-sizes", "1,2", "--out", str(folder)]) == 0
    results = folder / "results.jsonl"
    results.write_text(results.read_text().splitlines(keepends=True)[0])  # as if killed after one case
    assert main(["run", "--resume", str(folder), "--quiet"]) == 0
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["batch"] for r in rows) == [1, 2]


def test_help_does_not_import_torch() -> None:
    code = (
        "import contextlib, io, sys\n"
        "import harness\n"
        "from harness.cli import main\n"
        "for argv in (['--help'], ['run', '--help'], ['compare', '--help'], ['list', '--help'], ['merge', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "    assert 'usage:' in out.getvalue(), argv\n"
        "print(sorted(m for m in ('torch', 'pandas', 'scipy', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_lazy_package_names_still_resolve() -> None:
    assert harness.run.__module__ == "harness.api" and harness.list_variants("eager") == ["eager"]
    from harness.sweep import config, options

    assert harness.ConfigError is config.ConfigError is options.ConfigError
    with pytest.raises(AttributeError):
        harness.no_such_name  # noqa: B018


def test_device_name_is_the_gpu_or_the_cpu_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.measure import envinfo

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"NVIDIA H100 80GB HBM3 ({device})")
    assert envinfo.device_name(torch.device("cuda:0")) == "NVIDIA H100 80GB HBM3 (cuda:0)"
    monkeypatch.setattr(envinfo, "cpu_model", lambda: "AMD EPYC 7B13")
    assert envinfo.device_name(torch.device("cpu")) == "AMD EPYC 7B13"
    assert envinfo.collect("cpu")["device_name"] == "AMD EPYC 7B13"


def test_cuda_requested_without_cuda_is_exit_2() -> None:
    out = cli("run", "--device", "cuda")
    if "CUDA is not available" not in out.stderr:
        pytest.skip("this machine has CUDA")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_unwritable_output_folder_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    out = cli("run", "--out", str(tmp_path / "file" / "run"), "--shapes", "8x4x4")
    assert out.returncode == 2
    assert "cannot be written" in out.stderr and "Traceback" not in out.stderr


def test_run_writes_the_folder_and_prints_a_summary(tmp_path: Path) -> None:
    run_dir = tmp_path / "mine"
    out = cli("run", "--device", "cpu", "--variants", "eager*", "--shapes", "8x6x6,16x4x4", "--batch-sizes", "1,2",
              "--modes", "forward,train", "--reductions", "2,4", "--fusions", "add,max", "--out", str(run_dir),
              *FAST_FLAGS)
    assert out.returncode == 0, out.stderr
    assert f"results: {run_dir}" in out.stdout
    assert "cpu · float32 · forward" in out.stdout
    assert {p.name for p in run_dir.iterdir()} >= {"results.jsonl", "results.csv", "report.md", "env.json"}
    frame = pd.read_csv(run_dir / "results.csv")
    eager = frame[frame["variant"] == "eager"]
    assert len(eager) == 2 * 2 * 2 * 2 * 2
    assert (eager["status"] == "ok").all()
    required = ("variant, device, dtype, mode, batch, channels, height, width, reduction, fusion, status, reason, "
                "median_ms, iqr_ms, ci_low_ms, ci_high_ms, n_samples, throughput_img_s, max_rel_err").split(", ")
    assert set(required) <= set(frame.columns)
    env = json.loads((run_dir / "env.json").read_text())
    assert env["device"] == "cpu" and env["torch"] and env["cpu_model"]


def test_config_file_with_flag_override(tmp_path: Path) -> None:
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('[sweep]\nvariants = "eager"\nshapes = ["8x4x4"]\nbatch-sizes = [1, 2]\nmodes = ["forward"]\n')
    out = cli("run", "--config", str(cfg), "--device", "cpu", "--batch-sizes", "3", "--out", str(tmp_path / "r"),
              "--quiet", *FAST_FLAGS)
    assert out.returncode == 0, out.stderr
    frame = pd.read_csv(tmp_path / "r" / "results.csv")
    assert frame["batch"].tolist() == [3]


def test_list_says_what_can_run_here() -> None:
    out = cli("list")
    assert out.returncode == 0
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("eager "))
    assert "ready" in line and "seed" in line


def test_env_shows_the_record() -> None:
    out = cli("env", "--device", "cpu")
    assert out.returncode == 0
    cells = {}
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split("│")]
        if len(parts) == 4:  # "│ key │ value │"
            cells[parts[1]] = parts[2]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert cells["torch"] == torch.__version__
    assert cells["python"] == platform.python_version()
    assert cells["device"] == "cpu" and cells["gpu_name"] == ""
    assert cells["cpu_count"] == str(os.cpu_count())
    fresh = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert cells["threads"] == fresh  # torch's own default in a fresh process
    assert cells["hostname"] == socket.gethostname()
    if commit:
        assert cells["git_commit"] == commit


def test_python_api_returns_a_dataframe_and_can_skip_writing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    frame = harness.run(device="cpu", variants="eager", shapes="8x4x4", batch_sizes=1, modes="forward", write=False,
                        warmup_s=0, min_samples=3, max_time_s=0.05)
    assert isinstance(frame, pd.DataFrame) and len(frame) == 1
    assert frame.attrs["run_dir"] is None
    assert not (tmp_path / "results").exists()


def test_threads_are_set_and_recorded(tmp_path: Path) -> None:
    frame = harness.run(device="cpu", variants="eager", shapes="8x4x4", batch_sizes=1, modes="forward", threads=1,
                        out=tmp_path / "t", warmup_s=0, min_samples=3, max_time_s=0.05)
    assert frame["threads"].tolist() == [1]


def test_one_failing_case_does_not_end_the_sweep(tmp_path: Path, temp_variant) -> None:
    def explode(ref, device, dtype):
        raise RuntimeError("boom")

    temp_variant("zz_explode", explode)
    frame = harness.run(device="cpu", variants="zz_explode,eager", shapes="8x4x4", batch_sizes="1,2",
                        modes="forward", out=tmp_path / "r", warmup_s=0, min_samples=3, max_time_s=0.05)
    by = frame.groupby("variant")["status"].agg(set)
    assert by["zz_explode"] == {"error"} and by["eager"] == {"ok"}
    assert len((tmp_path / "r" / "results.jsonl").read_text().splitlines()) == 4


def test_a_folder_another_run_is_writing_into_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two runs started into one --out at the same moment both passed the check and mixed their rows."""
    from harness.results.store import RunFolder

    folder = tmp_path / "run"
    with RunFolder(folder).held():  # as a run that started a moment earlier holds it
        assert main(["run", *TINY_RUN, "--out", str(folder)]) == 2
        err = capsys.readouterr().err.strip()
        assert "is being written by another run right now" in err and len(err.splitlines()) == 1, err
        assert list(folder.iterdir()) == []
    assert main(["run", *TINY_RUN, "--out", str(folder)]) == 0  # let go: the folder is free again
    assert main(["run", "--resume", str(folder), "--quiet"]) == 0  # and the run let go of it too


def test_a_run_file_that_cannot_be_written_is_found_before_the_sweep(tmp_path: Path, capsys) -> None:
    """A folder named report.md in --out ended the run in a traceback after every case had run."""
    (tmp_path / "run" / "report.md").mkdir(parents=True)
    assert main(["run", *TINY_RUN, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "its report.md is not a file" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run" / "results.jsonl").exists()
