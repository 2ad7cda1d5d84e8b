"""The memory-bandwidth floor of scSE, and the copy bandwidth it is judged against.

scSE is memory-bound: its arithmetic is tiny next to the bytes it moves, so the honest yardstick
for a kernel is how close it comes to moving the unavoidable bytes at the device's copy speed.
Two floors are reported per case:

* ``bytes_min``: x read once and the output written once (plus the weights). Only reachable when a
  whole sample fits on chip, so the pooled mean and the output come from a single read.
* ``bytes_fused``: the two-pass floor of a fused kernel: x read twice (pool, then apply), the output
  written once (plus the weights).

``achieved_gbps`` divides ``bytes_min`` by the median time, so variants compare on one byte count;
``pct_of_peak_bw`` puts that against the copy bandwidth measured in the same process.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Protocol

import torch

#: Per mode, how many times the full activation tensor crosses memory at each floor.
#: forward: min = read x + write y; fused = read x twice + write y.
#: train (forward then backward): min adds read x, read dy, write dx; fused adds the two-pass
#: backward (read x and dy for the reductions, read them again and write dx).
_TENSOR_PASSES: dict[str, dict[str, int]] = {
    "forward": {"min": 2, "fused": 3},
    "train": {"min": 5, "fused": 8},
}


def _itemsize(dtype: torch.dtype | str) -> int:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"not a torch dtype: {dtype!r}")
    return torch.empty((), dtype=dtype).element_size()


def weight_count(channels: int, reduction: int = 2, fusion: str = "add", bias: bool = False) -> int:
    """Number of parameters of ``ScSE(channels, reduction, fusion, bias)``, without building it."""
    if channels < 1 or reduction < 1 or channels // reduction < 1:
        raise ValueError(f"invalid channels={channels}, reduction={reduction}")
    hidden = channels // reduction
    n = 2 * hidden * channels + channels  # two excitation 1x1 convs + the spatial 1x1 conv
    if bias:
        n += hidden + channels + 1
    if fusion == "gate":
        n += channels
    elif fusion == "concat":
        n += 2 * channels * channels + (channels if bias else 0)
    return n


class CaseLike(Protocol):
    """What the byte counts read from a case (``harness.sweep.cases.Case`` has all of it)."""

    batch: int
    channels: int
    height: int
    width: int
    dtype: str
    reduction: int
    fusion: str
    bias: bool
    mode: str


def _bytes(passes: str, case: CaseLike) -> int:
    mode, batch, channels, height, width = case.mode, case.batch, case.channels, case.height, case.width
    if mode not in _TENSOR_PASSES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(_TENSOR_PASSES)}")
    if min(batch, height, width) < 1:
        raise ValueError(f"invalid shape {batch}x{channels}x{height}x{width}")
    item = _itemsize(case.dtype)
    tensor = batch * channels * height * width * item
    weights = weight_count(channels, case.reduction, case.fusion, case.bias) * item
    # train reads the weights in forward and backward and writes their gradients once
    weight_passes = 1 if mode == "forward" else 3
    return _TENSOR_PASSES[mode][passes] * tensor + weight_passes * weights


def bytes_min(case: CaseLike) -> int:
    """The fewest bytes any implementation must move: x read once, out written once, the weights."""
    return _bytes("min", case)


def bytes_fused(case: CaseLike) -> int:
    """The two-pass floor: x read twice (pool, then apply), out written once, the weights."""
    return _bytes("fused", case)


def achieved_gbps(nbytes: int, seconds: float) -> float:
    """``nbytes / seconds`` in GB/s (10^9, as memory datasheets count); NaN for a non-positive time."""
    return nbytes / seconds / 1e9 if seconds > 0 else float("nan")


def pct_of_peak_bw(nbytes: int, seconds: float, peak_bytes_per_s: float) -> float:
    """The share of the measured copy bandwidth that moving ``nbytes`` in ``seconds`` reaches, in %."""
    if seconds <= 0 or not peak_bytes_per_s or peak_bytes_per_s <= 0:
        return float("nan")
    return 100.0 * nbytes / seconds / peak_bytes_per_s


#: The columns ``bandwidth_columns`` adds to a row, in report order.
BANDWIDTH_COLUMNS: tuple[str, ...] = ("bytes_min", "bytes_fused", "achieved_gbps", "pct_of_peak_bw")
#: The env.json key for the copy bandwidth measured once per run (bytes/s, read + write counted).
ENV_KEY = "copy_bandwidth_bytes_s"


def bandwidth_columns(case: CaseLike, median_ms: float | None = None,
                      peak_bytes_per_s: float | None = None) -> dict[str, Any]:
    """The row's bandwidth columns; the rates are None until the case has a median time.

    ``achieved_gbps`` divides ``bytes_min`` (not the bytes a variant really moves) by the median,
    so every variant of a configuration is measured against the same work.
    """
    moved = bytes_min(case)
    cols: dict[str, Any] = {"bytes_min": moved, "bytes_fused": bytes_fused(case),
                            "achieved_gbps": None, "pct_of_peak_bw": None}
    if median_ms is not None and median_ms > 0:
        seconds = median_ms * 1e-3
        cols["achieved_gbps"] = achieved_gbps(moved, seconds)
        if peak_bytes_per_s:
            cols["pct_of_peak_bw"] = pct_of_peak_bw(moved, seconds, peak_bytes_per_s)
    return cols


def measure_copy_bandwidth(
    device: torch.device | str,
    nbytes: int | None = None,
    repeats: int = 10,
    warmup: int = 3,
) -> float:
    """The device's copy bandwidth in bytes/s, counting bytes read plus bytes written.

    A large same-device tensor copy is the practical ceiling for a memory-bound kernel (a
    datasheet's peak is never reached). On CUDA the buffers default to 512 MiB each, far beyond L2,
    timed with CUDA events on the current stream; on CPU to 128 MiB, timed with ``perf_counter``.
    Returns the median over ``repeats`` copies.
    """
    dev = torch.device(device)
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    if nbytes is None:
        nbytes = (512 if dev.type == "cuda" else 128) * 2**20
    src = torch.ones(nbytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * src.element_size()  # one read and one write per byte
    rates: list[float] = []
    if dev.type == "cuda":
        stream = torch.cuda.current_stream(dev)
        for _ in range(warmup):
            dst.copy_(src)
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
        for start, end in pairs:
            start.record(stream)
            dst.copy_(src)
            end.record(stream)
        torch.cuda.synchronize(dev)
        rates = [moved / (start.elapsed_time(end) / 1e3) for start, end in pairs]
    else:
        for _ in range(warmup):
            dst.copy_(src)
        for _ in range(repeats):
            t0 = time.perf_counter()
            dst.copy_(src)
            rates.append(moved / (time.perf_counter() - t0))
    if not torch.equal(dst, src):  # a copy that did not happen must not pass as a fast one
        raise RuntimeError("the copy-bandwidth probe's destination does not match its source")
    del src, dst
    if dev.type == "cuda":  # the probe's 1 GiB stays cached otherwise, held from the workers of an isolated run
        torch.cuda.empty_cache()
    return float(statistics.median(rates))
