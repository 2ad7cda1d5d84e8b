"""``.ci/tune_fused.py``, the block-size tuning script for a GPU session, runs here in the interpreter.

Its times mean nothing on a CPU; what is checked is that it still runs against the variant's and the
harness's current code (a GPU session has minutes, not time to fix a script), checks each tile's
output against float64, and refuses bad input in one line.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from optional import require

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "tune_fused.py"


def tune(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_it_tabulates_every_cap_with_its_tile() -> None:
    require("triton")
    out = tune("--shapes", "8x4x4", "--batch", "2", "--caps", "2,8,16", "--dtypes", "float32",
               "--layouts", "nchw,channels_last", "--max-time", "0.02")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 2x8x4x4")]
    assert [r.split(" | ")[2:5] for r in rows] == [["nchw", "2", "[2, 16]"], ["nchw", "8", "[8, 16]"],
                                                   ["channels_last", "2", "[2, 16]"],
                                                   ["channels_last", "8", "[8, 16]"]]
    assert "| 8 | [8, 16]" in out.stdout and "| 16 | " not in out.stdout  # cap 16 gives C = 8 cap 8's tile
    fastest = [line for line in out.stdout.splitlines() if line.startswith("fastest: 2x8x4x4 float32 ")]
    assert len(fastest) == 2 and {f.split()[3] for f in fastest} == {"nchw:", "channels_last:"}


def test_bad_input_is_one_line_and_exit_2() -> None:
    require("triton")
    out = tune("--caps", "two")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and out.stderr.startswith("error: --shapes or --caps")
    out = tune("--layouts", "nhwc")
    assert out.returncode == 2 and out.stderr == "error: --layouts: nhwc (nchw, channels_last)\n"
