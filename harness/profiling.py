"""A torch.profiler trace of one case, for people who want to see the kernels (``run --profile``).

The trace is a Chrome trace JSON (open it in Perfetto, https://ui.perfetto.dev, or
chrome://tracing). It is taken in a separate pass after the case was timed, so the profiler's
overhead never touches the timings. Each profiled call is wrapped in a ``call <i>`` range.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

MODES: tuple[str, ...] = ("forward", "train")


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
    with profile(activities=activities_for(device), record_shapes=True) as prof:
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
