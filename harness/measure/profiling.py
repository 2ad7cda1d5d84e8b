"""A torch.profiler trace of one case, for people who want to see the kernels (``run --profile``).

The trace is a Chrome trace JSON (open it in Perfetto, https://ui.perfetto.dev, or
chrome://tracing). It is taken in a separate pass after the case was timed, so the profiler's
overhead never touches the timings. Each profiled call is wrapped in a ``call <i>`` range.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from harness import interrupts

MODES: tuple[str, ...] = ("forward", "train")
#: Lines kineto writes to stderr on every profiler start and stop, whatever KINETO_LOG_LEVEL says;
#: and, from a CUDA build of torch on a machine without a usable GPU, its first start's complaint
#: that it found none (a CPU run's profile needs none; a CUDA run there is refused before it).
KINETO_NOISE = re.compile(r"^(USDT|STAGE):\S+ \S+ \d+:\d+ \S+\.cpp:\d+\] "
                          r"|^ERROR:\S+ \S+ \d+:\d+ DeviceProperties\.cpp:\d+\] gpuGetDeviceCount failed")
#: The warning torch 2.11's profiler gives on every start without ``acc_events``, schedule or not:
#: a profile here is one cycle, so there is nothing it could lose.
CYCLE_WARNING = r"Warning: Profiler clears events at the end of each cycle"


@contextlib.contextmanager
def quiet_kineto() -> Iterator[None]:
    """Drop kineto's per-session log lines from stderr (``KINETO_NOISE``) and the profiler's warning
    about cycles (``CYCLE_WARNING``); everything else written there, or warned, is passed on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", CYCLE_WARNING, UserWarning)
        with _kineto_lines_dropped():
            yield


@contextlib.contextmanager
def _kineto_lines_dropped() -> Iterator[None]:
    """kineto's lines come from C++ straight to file descriptor 2, so the descriptor itself is swapped
    for a temporary file for the duration, then the other lines are written back in order."""
    fd = 2  # C++ writes to descriptor 2, whatever Python's sys.stderr is now
    sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not KINETO_NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def activities_for(device: torch.device | str) -> list[ProfilerActivity]:
    """CPU always; CUDA kernels too when the case runs on a GPU this build can profile."""
    acts = [ProfilerActivity.CPU]
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        acts.append(ProfilerActivity.CUDA)
    return acts


def trace_name(label: str) -> str:
    """A file name for a case's trace: the label with anything unsafe replaced, ``.json`` added."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") + ".trace.json"


def write_step_trace(
    step: Callable[[], object],
    path: str | Path,
    device: torch.device | str,
    *,
    warmup: int = 1,
    calls: int = 3,
) -> Path:
    """Profile ``calls`` calls of ``step`` (the runner's timed call) after ``warmup`` calls.

    Returns the path of the Chrome trace written.
    """
    device = torch.device(device)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    with interrupts.held(), quiet_kineto(), profile(activities=activities_for(device), record_shapes=True) as prof:
        for i in range(calls):
            with record_function(f"call {i}"):
                step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    prof.export_chrome_trace(str(path))
    return path


def write_trace(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    mode: str,
    path: str | Path,
    *,
    params: Sequence[torch.Tensor] = (),
    grad_out: torch.Tensor | None = None,
    warmup: int = 1,
    calls: int = 3,
) -> Path:
    """Profile ``fn(x)`` as the runner times it: under ``no_grad`` for forward; for train, the
    forward and the gradients of x and ``params`` (``grad_out`` defaults to ones)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if mode == "forward":

        def step() -> object:
            with torch.no_grad():
                return fn(x)

    else:
        xg = x.detach().requires_grad_(True)
        inputs = [xg, *params]
        if grad_out is None:
            with torch.no_grad():
                grad_out = torch.ones_like(fn(x))
        g = grad_out

        def step() -> object:
            return torch.autograd.grad(fn(xg), inputs, g, allow_unused=True)

    return write_step_trace(step, path, x.device, warmup=warmup, calls=calls)
