"""Variants captured in CUDA graphs and replayed (forward; in train, forward and backward): CUDA only.

A replay launches every kernel of the block with one call, so what remains is the kernels' own
time. The graph reads a static input buffer and writes a static output buffer, which the next call
overwrites (clone it to keep it). A call given that very buffer (``static_input``, as the previous
layer of a graphed network would have written it) copies nothing; any other input is copied in,
and that copy is part of the call's cost.

In a training step (grad enabled, and the input or a parameter requiring grad) the forward and the
backward are captured as two graphs by ``torch.cuda.make_graphed_callables`` and replayed through
one autograd node: a step then runs none of the block's Python and launches two replays, where an
eager or a Triton step launches each kernel of both passes (the H200's triton_fused step took
0.59–0.94 ms of host time for 0.25–0.44 ms of GPU time). The step reads its own input buffer
too (``static_input``, requiring grad as the captured input did): given it, the step copies
nothing in; the cotangent is copied into the backward graph's buffer (torch's node does that, one
output-sized copy a step). The gradients it returns are that graph's buffers, overwritten by the
next step (a parameter's ``.grad`` then holds the buffer itself, which the next step overwrites
before adding to it: gradients accumulated over steps come out wrong, so clear them with
``set_to_none=True``).

``cuda_graph`` is the seed's module graphed; ``graphed(variant)`` makes the graphed form of any
variant, in the modes it supports, and ``graphed_<name>`` are registered for the fast built-in ones.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from variants.reference import ScSE
from variants.registry import Variant, add_form, add_variant, register
from variants.tags import tags_of
from variants.weights import parameter_names, rebuild

#: The built-in variants that also get a graphed form (``graphed_<name>``); cuda_graph is eager's.
GRAPHED: tuple[str, ...] = ("eager_factored", "triton_fused", "triton_fused_l2", "cuda_fused")


def cuda_available() -> str | None:
    """Why CUDA graphs can't run here, or None."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    return None


class CudaGraphScSE(nn.Module):
    """Replays a CUDA graph of ``module``'s forward, or, in a training step, its forward and backward;
    captures again when the input's layout changes."""

    #: Iterations run on a side stream before capture, so lazy init (cuDNN plans, allocator,
    #: Triton's JIT) is done outside the graph.
    WARMUP_ITERS = 3

    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor]) -> None:  # a block, or a network
        super().__init__()
        self.module = module
        self.reference_names = {f"module.{own}": ref for own, ref in parameter_names(module).items()}
        self._key: tuple[object, ...] | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_in: torch.Tensor | None = None
        self._static_out: torch.Tensor | None = None
        self._step_key: tuple[object, ...] | None = None
        self._slots = [(owner, name) for owner in module.modules() for name, p in owner._parameters.items()
                       if p is not None] if isinstance(module, nn.Module) else []  # fmt: skip
        self._held: tuple[torch.Tensor, ...] = ()  # the parameters the inference graph reads, kept alive
        self._step: Callable[..., torch.Tensor] | None = None
        self._step_in: torch.Tensor | None = None
        self._latest: torch.Tensor | None = None  # the input buffer of the latest capture, either kind
        self.captures = 0

    @property
    def static_input(self) -> torch.Tensor | None:
        """The buffer the latest capture reads (None before the first call), the forward graph's or
        a training step's: write the next input here and pass it, and the call copies nothing."""
        return self._latest

    @torch.no_grad()
    def _capture(self, x: torch.Tensor) -> None:
        """Capture for ``x``'s layout. The new buffers and graph replace the old ones only once the
        capture has succeeded: one that fails (out of memory at a larger batch) must leave the previous
        graph whole, never pointing at a buffer freed under it."""
        static_in = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
        static_in.copy_(x)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_ITERS):
                self.module(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.module(static_in)
        self._graph, self._static_in, self._static_out = graph, static_in, static_out
        self._latest = static_in
        self.captures += 1

    @property
    def compiled_graphs(self) -> int:
        """Captures so far: one per input layout, read like a compiled variant's graph count."""
        return self.captures

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self._parameters_now()
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
            return self._train_step(x, params)
        return self._replay(x, params)

    def _parameters_now(self) -> tuple[torch.Tensor, ...]:
        """The wrapped module's parameters as they are now, read from the slots found at construction
        (cheaper per call than ``parameters()``): a graph reads its parameters at the addresses they had
        when it was captured, so one replaced since (``functional_call``, ``load_state_dict(assign=True)``)
        must be captured again, never read freed memory."""
        return tuple(owner._parameters[name] for owner, name in self._slots)  # type: ignore[misc]

    def _train_step(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The forward graph's replay, as an autograd node whose backward replays the backward graph;
        captured for ``x``'s layout and these parameters (a replaced parameter is a new capture)."""
        key = (tuple(x.shape), x.stride(), x.dtype, x.device, x.requires_grad,
               tuple((id(p), p.requires_grad) for p in params))  # fmt: skip
        if key != self._step_key:
            static_x = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
            static_x.copy_(x.detach()).requires_grad_(x.requires_grad)
            module = self.module

            def step(inp: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:  # the weights are module's own
                return module(inp)

            # a plain function given the parameters as inputs: given the module itself, torch would
            # replace its forward, which the inference graph calls too
            graphed = torch.cuda.make_graphed_callables(step, (static_x, *params), num_warmup_iters=self.WARMUP_ITERS,
                                                        allow_unused_input=True)  # a parameter a fusion leaves out
            self._step, self._step_key = graphed, key  # only once captured: a failed capture keeps the old
            self._step_in = self._latest = static_x  # read by the node unless it is given this very tensor
            self.captures += 1
        assert self._step is not None
        return self._step(x, *params)

    @torch.no_grad()
    def _replay(self, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        key = (tuple(x.shape), x.stride(), x.dtype, x.device, tuple(map(id, params)))  # ids: ``_held`` keeps them
        if key != self._key:
            self._capture(x)
            self._key, self._held = key, params
        assert self._graph is not None and self._static_in is not None and self._static_out is not None
        if x.data_ptr() != self._static_in.data_ptr():  # same layout, so the same pointer is the buffer
            self._static_in.copy_(x)
        self._graph.replay()
        return self._static_out


@register("cuda_graph", "the eager module captured in CUDA graphs (static input buffer; in train, forward and "
          "backward), replayed",
          devices=("cuda",), available=cuda_available,
          tags={"output_reused": True, "compiles": True})
def build_cuda_graph(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    return CudaGraphScSE(rebuild(ScSE, reference, device, dtype))


def graphed(inner: Variant) -> Variant:
    """``inner`` captured in CUDA graphs: ``graphed_<name>``, with inner's dtypes, modes, fusions and
    tags (its first call captures, and its output is reused). A ValueError where inner does not run
    on CUDA or replays graphs of its own (a graph cannot capture a graph's replay on every CUDA version)."""
    if "cuda" not in inner.devices:
        raise ValueError(f"{inner.name} does not run on CUDA, so it has no graphed form")
    if tags_of(inner).replays_graphs("cuda"):
        raise ValueError(f"{inner.name} replays CUDA graphs of its own, so it has no graphed form")

    def build(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
        return CudaGraphScSE(inner.build(reference, device, dtype))

    # the module a worker process imports to find a variant: for a form, the one that registers inner
    build.__module__ = getattr(inner.build, "__module__", None) or __name__

    def available() -> str | None:
        return cuda_available() or inner.unavailable("cuda")

    tags = dict(inner.tags) | {"output_reused": True, "compiles": True}
    what = "captured in CUDA graphs (in train, forward and backward)" if "train" in inner.modes else (
        "its forward captured in one CUDA graph")
    return Variant(f"graphed_{inner.name}", f"{inner.name}, {what} and replayed", build, devices=frozenset({"cuda"}),
                   dtypes=inner.dtypes, modes=inner.modes, fusions=inner.fusions, available=available,
                   tags=tuple(sorted(tags.items())))


def register_graphed(inner: Variant) -> Variant:
    """Register ``graphed(inner)``: how a plugin adds the graphed form of its own variant."""
    return add_variant(graphed(inner))


add_form("graphed_", graphed)  # graphed_<name> for any variant, asked for by name
