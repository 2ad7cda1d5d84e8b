"""The environment record: what a number needs beside it to be compared with another."""
from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from harness.measure.correctness import tf32_enabled
from harness.measure.telemetry import nvml_device_id

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def harness_version() -> str:
    """The installed distribution's version, else the one in pyproject.toml (a plain checkout)."""
    installed = _version("scse-harness")
    if installed:
        return installed
    try:
        import tomllib

        return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    except (OSError, KeyError, ValueError):
        return "unknown"


def git_state() -> tuple[str | None, bool | None]:
    """The checkout's commit and whether tracked files differ from it; (None, None) outside git."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo where Linux gives it, else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """What the device is: the GPU's name on CUDA (``torch.cuda.get_device_name``), the CPU model on CPU."""
    if device.type == "cuda" and torch.cuda.is_available():
        try:
            return torch.cuda.get_device_name(device)
        except (RuntimeError, AssertionError, ValueError):  # an index past the last GPU
            return str(device)
    if device.type == "cpu":
        return cpu_model()
    return str(device)


def gpu_record(device: torch.device) -> dict[str, Any]:
    """Name, SM count, L2 size, memory and clocks of a CUDA device (empty values without one)."""
    record: dict[str, Any] = dict.fromkeys(
        ("gpu_name", "gpu_driver", "gpu_sm_count", "gpu_l2_bytes", "gpu_memory_bytes", "gpu_capability",
         "gpu_sm_clock_max_mhz", "gpu_mem_clock_max_mhz"),
    )  # fmt: skip
    if device.type != "cuda" or not torch.cuda.is_available():
        return record
    props = torch.cuda.get_device_properties(device)
    record.update(
        gpu_name=props.name,
        gpu_sm_count=props.multi_processor_count,
        gpu_l2_bytes=int(getattr(props, "L2_cache_size", 0)) or None,
        gpu_memory_bytes=props.total_memory,
        gpu_capability=f"{props.major}.{props.minor}",
    )
    try:  # the driver version and clocks come from NVML; without it they stay empty
        import pynvml

        pynvml.nvmlInit()
        try:
            which = nvml_device_id(device if device.index is not None else torch.cuda.current_device())
            by_uuid = isinstance(which, str)  # a UUID: the GPU's, or a MIG instance's
            handle = pynvml.nvmlDeviceGetHandleByUUID(which) if by_uuid else pynvml.nvmlDeviceGetHandleByIndex(which)
            driver = pynvml.nvmlSystemGetDriverVersion()
            record["gpu_driver"] = driver.decode() if isinstance(driver, bytes) else driver
            record["gpu_sm_clock_max_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
            record["gpu_mem_clock_max_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML is optional telemetry, never a reason to fail
        pass
    return record


def package_version(name: str) -> str | None:
    """An installed distribution's version, read from its metadata (nothing imported); None if absent."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect(device: str | torch.device = "cpu") -> dict[str, Any]:
    """The whole environment record, flat, JSON-serialisable."""
    dev = torch.device(device)
    commit, dirty = git_state()
    try:
        import triton

        triton_version: str | None = triton.__version__
    except Exception:  # noqa: BLE001 - triton missing or broken: record its absence
        triton_version = None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "harness_version": harness_version(),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "triton": triton_version,
        # the networks of --context come from these: another release may be another network
        "smp": package_version("segmentation_models_pytorch"),
        "torchvision": package_version("torchvision"),
        "device": dev.type,
        "device_name": device_name(dev),
        **gpu_record(dev),
        "tf32": tf32_enabled(dev),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for a run (None: leave it) and put it back after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
