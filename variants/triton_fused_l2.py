"""``triton_fused_l2``: triton_fused's forward in batch chunks small enough that x's second read hits L2.

triton_fused reads x twice (the pool, then the apply) and writes the output once: three passes
over memory, whose bytes at copy bandwidth are its floor. Here the samples are taken a chunk at a
time, each chunk's pool, excitation and apply back to back, with a chunk's input and output together
at most ``L2_SHARE`` of the L2 cache. The apply kernel can then read the chunk's x from L2, and
memory sees two passes instead of three: the cold-cache GPU time can go below the three-pass floor.

The price is three launches per chunk, so the host time grows with the chunks (6 of them, 18
launches, for float16 32×64×128×128 on an H100's 50 MiB): this is meant to run graphed,
``graphed_triton_fused_l2``, where a replay costs one launch. Forward only, like the graphed forms.
Not measured on a GPU yet.
"""
from __future__ import annotations

import torch

from variants.registry import register
from variants.triton_fused import (
    MAX_BLOCK_C,
    TritonScSE,
    _available,
    as_kernel_layout,
    cuda_property,
    fused_forward,
    triton_unavailable,
)
from variants.weights import FUSION_CODES, KernelWeights, check_channels

#: The share of L2 a chunk's input and output may fill together: the rest leaves room for the
#: pool partials, the weights and the lines the hardware keeps for itself.
L2_SHARE = 0.5
#: The L2 that stands in on the CPU, where Triton's interpreter runs the kernels (correctness
#: only): small enough that the tests' inputs are split into several chunks.
INTERPRETER_L2_BYTES = 16 * 1024


def l2_bytes(device: torch.device) -> int:
    """The L2 cache of ``device`` in bytes (``INTERPRETER_L2_BYTES`` on the CPU)."""
    if device.type == "cuda":
        return cuda_property(device, "L2_cache_size")
    return INTERPRETER_L2_BYTES


def chunk_samples(batch: int, sample_bytes: int, cache_bytes: int, share: float = L2_SHARE) -> int:
    """Samples per chunk: as many as keep a chunk's input and output within ``share`` of the cache
    (each sample's x read, then its output written, ``2 · sample_bytes``); at least one."""
    return max(1, min(batch, int(share * cache_bytes) // (2 * sample_bytes)))


def chunked_forward(x: torch.Tensor, w: KernelWeights, cache_bytes: int, max_block_c: int = MAX_BLOCK_C,
                    ) -> torch.Tensor:
    """The fused forward, ``chunk_samples`` samples at a time, written into one output."""
    if x.dim() != 4:
        raise ValueError(f"expected an NCHW tensor, got shape {tuple(x.shape)}")
    xk = as_kernel_layout(x)
    if xk.numel() == 0:  # an empty batch: an empty answer (the kernels' grids can't be empty)
        check_channels(xk, w)
        return torch.empty_like(xk)
    n = xk.shape[0]
    step = chunk_samples(n, xk[0].numel() * xk.element_size(), cache_bytes)
    if step >= n:
        return fused_forward(xk, w, max_block_c)[0]
    out = torch.empty_like(xk)
    for start in range(0, n, step):
        fused_forward(xk[start:start + step], w, max_block_c, out=out[start:start + step])
    return out


class TritonL2ScSE(TritonScSE):
    """triton_fused's module, its forward run in chunks that fit in ``cache_bytes`` of L2."""

    def __init__(self, reference: torch.nn.Module, cache_bytes: int, max_block_c: int = MAX_BLOCK_C) -> None:
        super().__init__(reference, max_block_c)
        self.cache_bytes = cache_bytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            raise RuntimeError("triton_fused_l2 does not run under torch.compile (compile triton_fused instead)")
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            raise RuntimeError("triton_fused_l2 is forward only: run it under torch.no_grad()")
        return chunked_forward(x, self.weights, self.cache_bytes, self.max_block_c)


@register(
    "triton_fused_l2",
    "triton_fused's forward in batch chunks whose x and output fit in half of L2, so the apply pass "
    "reads x from L2: x read from memory once, not twice; 3 launches per chunk (run it graphed)",
    devices=("cuda", "cpu"),
    dtypes=("float32", "float16", "bfloat16"),
    modes=("forward",),
    fusions=tuple(FUSION_CODES),
    available=_available,
    tags={"interpreted_on_cpu": True},
)
def build_triton_fused_l2(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    reason = triton_unavailable(device)
    if reason:
        raise RuntimeError(reason)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"triton_fused_l2 computes float32, float16 or bfloat16 inputs, not {dtype}")
    return TritonL2ScSE(reference, l2_bytes(torch.device(device))).to(device=device, dtype=torch.float32)
