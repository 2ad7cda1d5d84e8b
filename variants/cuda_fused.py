"""``cuda_fused``: the fused scSE forward in CUDA C++ (``csrc/scse_fused.cu``), three launches in one call.

Pass 1 pools x per (n, c) in pixel splits; the excitation kernel adds the partial sums and runs the
MLP, one block per sample; pass 2 reads each pixel tile once, computes the spatial logit and writes
``combine(x·c, x·σ(s))``. The binding's ``forward`` makes all three launches, so a call costs one
Python→C++ crossing; the weights it reads are the module's float32 parameters, gathered once
(``ReferenceWeights.weights``). Forward only: ``train`` mode is declared unsupported.

The extension is built with ``torch.utils.cpp_extension.load`` on first use and cached (in
torch's extension directory, so later processes load the built library without compiling).
The kernels (.cu) use only CUDA headers and the binding (.cpp) no CUDA header, so CI machines
with nvcc but without a CUDA build of torch can still compile both (``tests/test_cuda_fused_build.py``).
"""
from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from variants.registry import register
from variants.weights import FUSION_CODES, KernelWeights, ReferenceWeights, check_channels, kernel_weights

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES: tuple[Path, ...] = (CSRC / "scse_fused.cpp", CSRC / "scse_fused.cu")
EXTENSION_NAME = "scse_fused_ext"
#: The largest C + C/reduction the excitation kernel holds in shared memory (kExciteSharedFloats).
MAX_EXCITE_FLOATS = 48 * 1024 // 4
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


#: The most samples one launch takes: the batch is a grid dimension (y or z), which CUDA caps at 65535.
MAX_LAUNCH_BATCH = 65535


@functools.lru_cache(maxsize=256)
def pool_splits(device_index: int, n: int, c: int, hw: int, channels_last: bool = False) -> int:
    """Pixel splits for the pool pass, so that its grid covers the GPU about four times over (cached per shape)."""
    sms = torch.cuda.get_device_properties(device_index).multi_processor_count
    rows = -(-c // (32 if channels_last else 8))  # blocks along channels: a warp of channels, or 8 rows
    want = max(1, -(-4 * sms // max(1, n * rows)))
    return int(max(1, min(want, -(-hw // 256))))  # at least 256 pixels per split


def fused_cuda(x: torch.Tensor, w: KernelWeights) -> torch.Tensor:
    """The fused forward of x with the kernels' weights ``w``: one call into the extension; under
    ``torch.compile``, one opaque operator (traced, the extension call broke Dynamo on an H200).
    Where autograd records (grad enabled, and x or a weight needs a gradient) the operator too,
    whose backward refuses in one line: a network trained through it would else get no gradients."""
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and (x.requires_grad or w.w1.requires_grad)):
        return _forward_op(x, *w)
    return _launch(x, w)


def _launch(x: torch.Tensor, w: KernelWeights) -> torch.Tensor:
    if x.dim() != 4 or not x.is_cuda:
        raise ValueError("cuda_fused needs a 4-D CUDA tensor")
    xk = pixel_flat(x)
    check_channels(xk, w)
    if xk.numel() == 0:  # an empty batch (or image) is an empty answer; the kernels' grids cannot be empty
        return torch.empty_like(xk)
    ext = load_extension()
    n, c, h, width = xk.shape
    device = xk.device.index if xk.device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(xk.device).cuda_stream
    channels_last = not xk.is_contiguous()

    def launch(part: torch.Tensor) -> torch.Tensor:
        splits = pool_splits(device, part.shape[0], c, h * width, channels_last)
        return ext.forward(part, w.w1, w.b1, w.w2, w.b2, w.ws, w.bs, w.alpha, FUSION_CODES[w.fusion], splits, stream)

    return in_batches(xk, launch)


def in_batches(x: torch.Tensor, launch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``launch(x)``, or, for a batch larger than one launch takes, ``launch`` of each slice of
    ``MAX_LAUNCH_BATCH`` samples joined in ``x``'s layout (a slice along N of an NCHW or
    channels_last dense tensor is dense in the same layout)."""
    if x.shape[0] <= MAX_LAUNCH_BATCH:
        return launch(x)
    layout = torch.contiguous_format if x.is_contiguous() else torch.channels_last
    return torch.cat([launch(part) for part in x.split(MAX_LAUNCH_BATCH)]).contiguous(memory_format=layout)


@torch.library.custom_op("scse::cuda_fused_forward", mutates_args=())
def _forward_op(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor,
                b2: torch.Tensor | None, ws: torch.Tensor, bs: torch.Tensor | None, alpha: torch.Tensor | None,
                fusion: str) -> torch.Tensor:
    return _launch(x, KernelWeights(w1, b1, w2, b2, ws, bs, alpha, fusion))


@_forward_op.register_fake
def _(x: torch.Tensor, *args: object) -> torch.Tensor:
    return torch.empty_like(pixel_flat(x))


def _no_backward(ctx: object, grad: torch.Tensor) -> None:
    raise RuntimeError("cuda_fused is forward only: it has no backward, so nothing before it or in it would get "
                       "a gradient; train with triton_fused or eager, or call it under torch.no_grad()")


_forward_op.register_autograd(_no_backward)


def scse_cuda(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The fused forward of ``module`` (an ``ScSE``, or anything with its parameter names, float32)."""
    weights = module.weights if isinstance(module, CudaScSE) else kernel_weights(module)
    return fused_cuda(x, weights)


class CudaScSE(ReferenceWeights):
    """Holds a float32 copy of the reference's parameters under the same names; forward is fused."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_cuda(x, self.weights)


@register(
    "cuda_fused",
    "two-pass fused CUDA C++ kernels (pool; MLP; logit+combine) in one call, forward only; x read twice, "
    "out written once",
    devices=("cuda",),
    dtypes=("float32", "float16", "bfloat16"),
    modes=("forward",),
    fusions=tuple(FUSION_CODES),
    available=unavailable_reason,
)
def build_cuda_fused(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Parameters stay float32, read by the kernels where they live, as in ``triton_fused``."""
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"cuda_fused computes float32, float16 or bfloat16 inputs, not {dtype}")
    hidden = reference.cse.fc[0].weight.shape[0]
    if reference.channels + hidden > MAX_EXCITE_FLOATS:
        raise ValueError(f"cuda_fused's excitation holds C + C/r <= {MAX_EXCITE_FLOATS} values, not "
                         f"{reference.channels} + {hidden}")
    load_extension()  # build now, so the compile is not part of the first timed call
    return CudaScSE(reference).to(device=device, dtype=torch.float32)
