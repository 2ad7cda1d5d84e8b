"""A test run that leaves files in the checkout fails (tests/conftest.py compares `git status --ignored`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_in_repo(tmp_path: Path, test_body: str, args: tuple[str, ...] = ("-p", "no:cacheprovider"),
                name: str = "repo") -> subprocess.CompletedProcess:
    """pytest, with this suite's conftest, on one test in a fresh git repository (folder ``name``)."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    repo = tmp_path / name
    (repo / "tests").mkdir(parents=True)
    for name in ("conftest.py", "torchvision_shim.py"):  # the conftest and what it imports from tests/
        shutil.copy(ROOT / "tests" / name, repo / "tests" / name)
    (repo / "tests" / "test_one.py").write_text(f"from pathlib import Path\n\n\ndef test_one():\n{test_body}\n")
    (repo / ".gitignore").write_text("*.log\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HARNESS_ALLOW_DIRTY_CHECKOUT", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", *args, "tests"], cwd=repo,
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip


def test_a_run_that_writes_into_the_checkout_fails(tmp_path: Path) -> None:
    out = run_in_repo(tmp_path, "    Path(__file__).parent.parent.joinpath('stray.log').write_text('x')")
    assert out.returncode == 1, out.stdout
    assert "changed the checkout" in out.stdout and "stray.log" in out.stdout


def test_a_run_that_writes_under_tmp_passes(tmp_path: Path) -> None:
    out = run_in_repo(tmp_path, "    pass")
    assert out.returncode == 0, out.stdout + out.stderr
    assert not list((tmp_path / "repo").rglob("__pycache__"))  # no bytecode either


def test_what_pytest_was_asked_to_write_is_no_stray_file(tmp_path: Path) -> None:
    """A plain ``pytest`` keeps its cache in ``.pytest_cache`` and ``--benchmark-autosave`` saves
    under ``.benchmarks``: the README's commands, so not a test's doing. A stray file still fails.

    The test writes into both itself, during the run: pytest's own cache write comes after the
    checkout is compared, so only a write during the run shows the exemption at work. ``--rootdir``
    pins where pytest keeps its cache (the repository), whatever lies above the temporary folder."""
    pytest.importorskip("pytest_benchmark")
    saves = ("    root = Path(__file__).parent.parent\n"
             "    root.joinpath('.benchmarks', 'Linux').mkdir(parents=True)\n"
             "    root.joinpath('.pytest_cache', 'v', 'harness').mkdir(parents=True, exist_ok=True)")
    out = run_in_repo(tmp_path, saves, args=("--rootdir", ".", "--benchmark-autosave"))
    assert out.returncode == 0, out.stdout + out.stderr
    stray = "    Path(__file__).parent.parent.joinpath('stray.log').write_text('x')"
    out = run_in_repo(tmp_path / "again", stray, args=("--rootdir", "."))
    assert out.returncode == 1 and "stray.log" in out.stdout and ".pytest_cache" not in out.stdout, out.stdout


def test_a_benchmark_storage_given_as_a_bare_path_is_no_stray_file(tmp_path: Path) -> None:
    """tox's bench env names its storage ``{toxinidir}/.benchmarks``, a bare path pytest-benchmark
    accepts: the first ``tox -e bench`` on a fresh checkout failed on the folder it was told to fill."""
    pytest.importorskip("pytest_benchmark")
    saves = ("    Path(__file__).parent.parent.joinpath('store', 'Linux').mkdir(parents=True)\n"
             "    Path(__file__).parent.parent.joinpath('store', 'Linux', '0001_run.json').write_text('{}')")
    repo = tmp_path / "repo"
    out = run_in_repo(tmp_path, saves, args=("-p", "no:cacheprovider", f"--benchmark-storage={repo / 'store'}"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_checkout_in_a_folder_named_slow_still_runs_its_tests(tmp_path: Path) -> None:
    """pytest's keywords hold the names of the folders above a test: in a checkout under ``slow/``
    every test read as marked ``slow`` and was skipped, a silent green run."""
    out = run_in_repo(tmp_path, "    assert False, 'ran'", name="slow")
    assert out.returncode == 1 and "ran" in out.stdout, out.stdout
