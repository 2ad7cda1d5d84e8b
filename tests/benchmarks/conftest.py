"""The pytest-benchmark suite runs only when asked for, so the plain ``pytest`` run stays fast.

Asked for means any of: a path on the command line inside this folder (``pytest tests/benchmarks``),
``--benchmark-only``, or ``HARNESS_BENCH=1`` in the environment. Otherwise every test here is
collected and skipped with a reason that says how to run it, so nobody wonders where they went.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

HERE = Path(__file__).resolve().parent


def _inside(arg: str, root: Path) -> bool:
    path = Path(arg.split("::", 1)[0])
    try:
        return path.resolve().is_relative_to(root)
    except OSError:
        return False


def benchmarks_requested(config: pytest.Config) -> bool:
    """Whether this session was asked to run the benchmarks (see the module docstring)."""
    if os.environ.get("HARNESS_BENCH", "").lower() in ("1", "true", "yes"):
        return True
    if config.getoption("benchmark_only", default=False):
        return True
    invoked = config.invocation_params.dir
    return any(_inside(str(invoked / arg), HERE) for arg in config.invocation_params.args if not arg.startswith("-"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if benchmarks_requested(config):
        return
    skip = pytest.mark.skip(reason="benchmarks run only when asked: pytest tests/benchmarks (or HARNESS_BENCH=1)")
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """pytest-benchmark records the CPU but not the GPU; a saved result must say which GPU it ran on."""
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        machine_info["gpu"] = torch.cuda.get_device_name()
        machine_info["cuda"] = torch.version.cuda
