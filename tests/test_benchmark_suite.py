"""The pytest-benchmark suite: skipped unless asked for, and save / compare / fail work as its users expect."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from benchmarks.conftest import benchmarks_requested

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--benchmark-max-time=0.02", "--benchmark-min-rounds=3", "-p", "no:cacheprovider", "-q"]


def fake_config(args: list[str], only: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        invocation_params=SimpleNamespace(dir=ROOT, args=tuple(args)),
        getoption=lambda name, default=None: only if name == "benchmark_only" else default,
    )


@pytest.mark.parametrize(
    ("args", "only", "env", "requested"),
    [
        ([], False, "", False),  # plain `pytest`: testpaths, skipped
        (["tests"], False, "", False),
        (["-q", "tests/test_compare.py"], False, "", False),
        (["tests/benchmarks"], False, "", True),
        (["tests/benchmarks/test_bench_variants.py::test_forward"], False, "", True),
        ([str(ROOT / "tests" / "benchmarks")], False, "", True),
        ([], True, "", True),  # --benchmark-only
        ([], False, "1", True),  # HARNESS_BENCH=1
    ],
)
def test_benchmarks_run_only_when_asked(monkeypatch: pytest.MonkeyPatch, args: list[str], only: bool, env: str,
                                        requested: bool) -> None:  # fmt: skip
    monkeypatch.setenv("HARNESS_BENCH", env)
    assert benchmarks_requested(fake_config(args, only)) is requested  # type: ignore[arg-type]


def pytest_bench(*args: str, storage: Path) -> subprocess.CompletedProcess:
    # not a worker's PYTEST_XDIST_* (under pytest -n): pytest-benchmark would then save nothing
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env |= {"PYTHONPATH": str(ROOT), "HARNESS_BENCH_VARIANTS": "eager", "HARNESS_BENCH_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "tests/benchmarks", "-k", "2x32x32x32",
               f"--benchmark-storage={storage}", *QUICK, *args]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_autosave_then_compare_and_fail_on_a_regression(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    saved = pytest_bench("--benchmark-autosave", storage=storage)
    assert saved.returncode == 0, saved.stdout + saved.stderr
    files = list(storage.glob("*/0001_*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    [bench] = data["benchmarks"]
    assert bench["name"] == "test_forward[eager-2x32x32x32]"
    assert bench["group"] == "cpu float32 forward 2x32x32x32"
    assert bench["options"]["timer"] == "synchronized_perf_counter"
    assert data["machine_info"]["torch"] and "torch_threads" in data["machine_info"]

    # A baseline of one nanosecond a call, faster than anything this machine can do: the gate must fail.
    for key in ("min", "max", "mean", "median", "q1", "q3"):
        bench["stats"][key] = 1e-9
    files[0].write_text(json.dumps(data))
    failed = pytest_bench("--benchmark-compare", "--benchmark-compare-fail=min:15%", storage=storage)
    assert failed.returncode != 0, failed.stdout + failed.stderr
    assert "Performance has regressed" in failed.stdout + failed.stderr
    assert "test_forward[eager-2x32x32x32]" in failed.stdout + failed.stderr
