"""The reference under ``torch.compile``, in each of its modes, and the means to count its compiles.

Timing a compiled variant needs two numbers besides latency (the runner records them):

* ``compile_s``: the wall time of the first call (the first forward, or forward+backward in train
  mode), which traces and compiles. It is never part of the latency samples.
* ``recompiles``: graphs compiled after that first call (``harness.sweep.runner.compiled_graphs`` before and after).
  With one build per case it should be 0; when one build serves several shapes, each new shape
  costs one (``dynamic=False``: every shape gets its own specialised graph, as a benchmark wants).

Each build compiles its own fresh entry function, so dynamo keeps a separate cache per build: one
build's graphs are never reused by another (each ``compile_s`` is honest), and a sweep over many
shapes never exhausts dynamo's per-function ``recompile_limit`` (8). Exhausting it would silently
fall back to eager; ``fullgraph=True`` turns that, and any graph break, into an error instead.
"""
from __future__ import annotations

import itertools
import types
from collections.abc import Callable

import torch
import torch.nn as nn

from variants.reference import ScSE
from variants.registry import register
from variants.weights import rebuild

ALL_DTYPES = ("float32", "float16", "bfloat16", "float64")
_entry_ids = itertools.count()


def compile_available() -> str | None:
    """Why torch.compile can't run here (no C++ compiler for inductor on CPU), or None."""
    try:
        from torch._inductor import cpp_builder

        cpp_builder.get_cpp_compiler()
    except Exception as exc:  # inductor raises various errors when no compiler is found
        return f"torch.compile needs a C++ compiler for inductor: {exc}"
    return None


def _fresh_entry() -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """A function with a code object of its own, so dynamo's cache for it belongs to one build."""

    def entry(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return ScSE.forward(module, x)

    code = entry.__code__.replace(co_name=f"compiled_scse_{next(_entry_ids)}")
    return types.FunctionType(code, entry.__globals__, code.co_name)


class CompiledScSE(ScSE):
    """The reference's forward compiled with ``torch.compile(mode=...)``; parameter names unchanged."""

    def setup_compile(self, mode: str) -> CompiledScSE:
        """Compile lazily (on the first call) in ``mode``: default, max-autotune or reduce-overhead."""
        self.compile_mode = mode
        self._entry = _fresh_entry()
        self._compiled = torch.compile(self._entry, mode=mode, dynamic=False, fullgraph=True)
        return self

    @property
    def compiled_graphs(self) -> int:
        """How many graphs dynamo has compiled for this build so far (one per shape, dtype, grad mode)."""
        from torch._dynamo.eval_frame import _debug_get_cache_entry_list

        return len(_debug_get_cache_entry_list(self._entry.__code__))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compile_mode in ("reduce-overhead", "max-autotune") and x.is_cuda:
            # Both modes replay CUDA graphs there: each call starts a new step, so the previous
            # call's output may be overwritten (clone what you keep), as with ``cuda_graph``.
            torch.compiler.cudagraph_mark_step_begin()
        return self._compiled(self, x)


def _register(name: str, mode: str, description: str) -> None:
    def build(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
        return rebuild(CompiledScSE, reference, device, dtype).setup_compile(mode)

    register(name, description, dtypes=ALL_DTYPES, available=compile_available,
             tags={"compiles": True, "compile_mode": mode})(build)


_register("compile", "default", "torch.compile(mode='default', dynamic=False, fullgraph=True) of the reference")
_register("compile_max_autotune", "max-autotune",
          "torch.compile(mode='max-autotune'): autotuned kernels (and CUDA graphs on CUDA)")
_register("compile_reduce_overhead", "reduce-overhead",
          "torch.compile(mode='reduce-overhead'): CUDA graphs to cut launch overhead (on CPU same as default)")
