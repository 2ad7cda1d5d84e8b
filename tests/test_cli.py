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
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err


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
