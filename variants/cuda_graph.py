"""The eager reference captured once in a ``torch.cuda.CUDAGraph`` and replayed: CUDA only.

A replay launches every kernel of the block with one call, so what remains is the kernels' own time.
The graph reads from a static input buffer and writes to a static output buffer: each call copies
the input in (that copy is part of the cost of using a graph, and is timed) and returns the static
output, which the next call overwrites (clone it to keep it). Forward only: capturing backward needs
the whole training step in the graph, which is not what this variant measures.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from variants.reference import ScSE
from variants.registry import register
from variants.weights import rebuild


def cuda_available() -> str | None:
    """Why CUDA graphs can't run here, or None."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    return None


class CudaGraphScSE(nn.Module):
    """Replays a CUDA graph of ``module``; captures again when the input's layout changes."""

    #: Iterations run on a side stream before capture, so lazy init (cuDNN plans, allocator) is done.
    WARMUP_ITERS = 3

    def __init__(self, module: nn.Module) -> None:  # a block, or a whole network (variants.swap)
        super().__init__()
        self.module = module
        self.reference_names = {f"module.{n}": n for n, _ in module.named_parameters()}
        self._key: tuple[object, ...] | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_in: torch.Tensor | None = None
        self._static_out: torch.Tensor | None = None
        self.captures = 0

    @torch.no_grad()
    def _capture(self, x: torch.Tensor) -> None:
        self._static_in = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
        self._static_in.copy_(x)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_ITERS):
                self.module(self._static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_out = self.module(self._static_in)
        self._graph = graph
        self.captures += 1

    @property
    def compiled_graphs(self) -> int:
        """Captures so far: one per input layout, read like a compiled variant's graph count."""
        return self.captures

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.stride(), x.dtype, x.device)
        if key != self._key:
            self._capture(x)
            self._key = key
        assert self._graph is not None and self._static_in is not None and self._static_out is not None
        self._static_in.copy_(x)
        self._graph.replay()
        return self._static_out


@register("cuda_graph", "the eager module captured once in a torch.cuda.CUDAGraph (static input buffer), replayed",
          devices=("cuda",), modes=("forward",), available=cuda_available,
          tags={"output_reused": True, "compiles": True})
def build_cuda_graph(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    return CudaGraphScSE(rebuild(ScSE, reference, device, dtype))
