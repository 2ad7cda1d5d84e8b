"""Shared fixtures: fast timing policies and temporary variants that are always unregistered."""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from harness.measure.timing import TimingPolicy
from variants.registry import register, unregister

sys.path.insert(0, str(Path(__file__).parent))
import torchvision_shim  # noqa: E402 - before anything imports torchvision (tests/torchvision_shim.py says why)

torchvision_shim.install()
# `harness list` keeps its answer in a cache (harness/list_cache.py): the tests' own, never the user's,
# made by the process that starts the run (xdist workers and the harness's children inherit it) and
# removed when that process ends: not by a forked child (mutmut's), whose exit runs the same handler.
if "HARNESS_CACHE_DIR" not in os.environ:
    os.environ["HARNESS_CACHE_DIR"] = _CACHE_DIR = tempfile.mkdtemp(prefix="harness-test-cache-")
    _CACHE_OWNER = os.getpid()

    @atexit.register
    def _remove_cache_dir() -> None:
        if os.getpid() == _CACHE_OWNER:
            shutil.rmtree(_CACHE_DIR, ignore_errors=True)
# A test run leaves the checkout as it found it: no bytecode from this process or its children.
sys.dont_write_bytecode = True
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
ROOT = Path(__file__).resolve().parents[1]

FAST = TimingPolicy(warmup_s=0.0, min_samples=3, max_samples=20, rel_ci=0.05, max_time_s=0.05)
#: Options for harness.run that keep a CPU sweep to a second or two.
FAST_RUN = {"warmup_s": 0, "min_samples": 3, "max_samples": 20, "max_time_s": 0.05, "rel_ci": 0.05}


def checkout_state() -> str | None:
    """``git status --porcelain --ignored`` of the source tree; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def asked_outputs(config: pytest.Config) -> tuple[str, ...]:
    """Folders in the checkout that pytest itself writes when run so: its cache (a plain ``pytest``
    keeps one in ``.pytest_cache``) and pytest-benchmark's storage (``.benchmarks`` unless
    ``--benchmark-storage`` says otherwise; ``--benchmark-autosave`` saves there). They are the
    user's choice, not a test's stray file; the storage folder is exempt whether or not this run saves."""
    folders = []
    cache = getattr(config, "cache", None)
    if cache is not None:
        folders.append(Path(cache._cachedir))
    storage = config.getoption("benchmark_storage", None)
    if isinstance(storage, str) and (storage.startswith("file://") or "://" not in storage):  # a bare path, as tox's
        folders.append(Path(config.invocation_params.dir, storage.removeprefix("file://")))
    inside = []
    for folder in folders:
        try:
            inside.append(folder.resolve().relative_to(ROOT).as_posix().rstrip("/") + "/")
        except ValueError:  # outside the checkout
            continue
    return tuple(inside)


def without(state: str, folders: tuple[str, ...]) -> str:
    """``git status --porcelain`` lines (``XY path``) that are not in one of ``folders``."""
    return "\n".join(line for line in state.splitlines() if not line[3:].startswith(folders))


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the xdist controller, or a plain run
        session.config.stash[CHECKOUT] = checkout_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when it left files in the source tree (a test must write under tmp_path)."""
    before = session.config.stash.get(CHECKOUT, None)
    if before is None or os.environ.get("HARNESS_ALLOW_DIRTY_CHECKOUT") == "1":
        return
    after = checkout_state()
    if after is not None:
        ignored = asked_outputs(session.config)
        before, after = without(before, ignored), without(after, ignored)
    if after is not None and after != before:
        new = sorted(set(after.splitlines()) - set(before.splitlines()))
        gone = sorted(set(before.splitlines()) - set(after.splitlines()))
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"ERROR: the test run changed the checkout: new {new}, gone {gone}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


CHECKOUT = pytest.StashKey[str | None]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip CUDA tests without a GPU, and ``slow`` ones unless asked for (``-m slow`` or SCSE_SLOW=1)."""
    run_slow = "slow" in (config.getoption("markexpr") or "") or os.environ.get("SCSE_SLOW") == "1"
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    not_asked = pytest.mark.skip(reason="slow: run with -m slow (tox -e slow) or SCSE_SLOW=1")
    for item in items:
        # the marker, not the keyword: a parametrisation id "cuda" is a keyword too
        if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if item.get_closest_marker("slow") is not None and not run_slow:  # a folder named "slow" is a keyword
            item.add_marker(not_asked)


@pytest.fixture
def temp_variant() -> Iterator:
    """Register variants for one test: ``temp_variant(name, build, **register_kwargs)``."""
    names: list[str] = []

    def add(name: str, build, **kwargs):
        kwargs.setdefault("description", f"test variant {name}")
        register(name, kwargs.pop("description"), replace=True, **kwargs)(build)
        names.append(name)
        return name

    yield add
    for name in names:
        unregister(name)
