"""``cuda_fused``: the two-pass fused scSE forward in CUDA C++ (``csrc/scse_fused.cu``).

Pass 1 pools x per (n, c) in pixel splits; the partial sums are added and the excitation MLP runs
on the (N, C) vector in torch ops; pass 2 reads each pixel tile once, computes the spatial logit
and writes ``combine(x·c, x·σ(s))``. Forward only: ``train`` mode is declared unsupported.

The extension is built with ``torch.utils.cpp_extension.load`` on first use and cached (in
torch's extension directory, so later processes load the built library without compiling).
The kernels (.cu) use only CUDA headers and the binding (.cpp) no CUDA header, so CI machines
with nvcc but without a CUDA build of torch can still compile both (``tests/test_cuda_fused_build.py``).
"""
from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F

from variants.registry import register
from variants.weights import ReferenceWeights

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES: tuple[Path, ...] = (CSRC / "scse_fused.cpp", CSRC / "scse_fused.cu")
EXTENSION_NAME = "scse_fused_ext"
#: Fusion codes shared with scse_fused.h; concat (a 2C→C matmul per pixel) is not a fused epilogue.
FUSION_CODES: dict[str, int] = {"add": 0, "max": 1, "mul": 2, "gate": 3}
#: Extra nvcc flags for the build. No fast-math: the float64 check must hold on sigmoid's tails.
NVCC_FLAGS: tuple[str, ...] = ("-O3", "-lineinfo")


def find_nvcc() -> str | None:
    """The nvcc that torch.utils.cpp_extension would use: $CUDA_HOME/bin/nvcc, else the one on PATH."""
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if root and (Path(root) / "bin" / "nvcc").exists():
            return str(Path(root) / "bin" / "nvcc")
    return shutil.which("nvcc")


def unavailable_reason() -> str | None:
    """Why cuda_fused cannot run here, or None: a CUDA build of torch, nvcc and a GPU are needed."""
    if torch.version.cuda is None:
        return "needs a CUDA build of torch (this torch is CPU-only)"
    if find_nvcc() is None:
        return "nvcc not found (set CUDA_HOME or put nvcc on PATH) to build the CUDA extension"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (none found)"
    return None


@functools.cache
def load_extension(verbose: bool = False) -> ModuleType:
    """Build (first use) or load (cached) the extension. Raises with the compiler's output on failure."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    from torch.utils.cpp_extension import load

    return load(
        name=EXTENSION_NAME,
        sources=[str(s) for s in SOURCES],
        extra_include_paths=[str(CSRC)],
        extra_cflags=["-O3"],
        extra_cuda_cflags=list(NVCC_FLAGS),
        verbose=verbose,
    )


def pixel_flat(t: torch.Tensor) -> torch.Tensor:
    """``t`` when its (h, w) collapse to one pixel index (NCHW or channels_last dense), else a copy."""
    dense = t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)
    return t if dense else t.contiguous()


def _splits(x: torch.Tensor) -> int:
    """Pixel splits for the pool pass, so that its grid covers the GPU about four times over."""
    n, c, h, w = x.shape
    hw = h * w
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    rows = -(-c // 8)  # blocks along channels in the NCHW kernel (channels_last uses fewer)
    want = max(1, -(-4 * sms // max(1, n * rows)))
    return int(max(1, min(want, -(-hw // 256))))  # at least 256 pixels per split


def scse_cuda(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The fused forward of ``module`` (an ``ScSE``, or anything with its parameter names)."""
    ext = load_extension()
    fusion = module.fusion
    if fusion not in FUSION_CODES:
        raise ValueError(f"cuda_fused supports fusion {', '.join(FUSION_CODES)}, not {fusion!r}")
    if x.dim() != 4 or not x.is_cuda:
        raise ValueError("cuda_fused needs a 4-D CUDA tensor")
    xk = pixel_flat(x)
    fc1, fc2, conv = module.cse.fc[0], module.cse.fc[2], module.sse.Conv1x1

    def f32(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().to(torch.float32).contiguous()

    with torch.no_grad(), torch.cuda.device(x.device):
        stream = torch.cuda.current_stream(x.device).cuda_stream
        hw = xk.shape[2] * xk.shape[3]
        mean = ext.pool_partials(xk, _splits(xk), stream).sum(dim=1) / hw
        w1, w2 = f32(fc1.weight), f32(fc2.weight)
        hidden = F.relu(F.linear(mean, w1.reshape(w1.shape[0], -1), f32(fc1.bias)))
        cg = torch.sigmoid(F.linear(hidden, w2.reshape(w2.shape[0], -1), f32(fc2.bias))).contiguous()
        gate = torch.sigmoid(f32(module.gate).reshape(-1)).contiguous() if fusion == "gate" else None
        bs = f32(conv.bias)
        return ext.apply(xk, cg, f32(conv.weight).reshape(-1), None if bs is None else bs.reshape(1), gate,
                         FUSION_CODES[fusion], stream)


class CudaScSE(ReferenceWeights):
    """Holds a float32 copy of the reference's parameters under the same names; forward is fused."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scse_cuda(self, x)


@register(
    "cuda_fused",
    "two-pass fused CUDA C++ kernels (pool; logit+combine), forward only; x read twice, out written once",
    devices=("cuda",),
    dtypes=("float32", "float16", "bfloat16"),
    modes=("forward",),
    fusions=tuple(FUSION_CODES),
    available=unavailable_reason,
)
def build_cuda_fused(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Parameters stay float32 (read once per call into the kernels), as in ``triton_fused``."""
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"cuda_fused computes float32, float16 or bfloat16 inputs, not {dtype}")
    load_extension()  # build now, so the compile is not part of the first timed call
    return CudaScSE(reference).to(device=device, dtype=torch.float32)
