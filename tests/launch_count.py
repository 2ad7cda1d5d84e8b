"""Counting the host work of a call: Triton kernel launches and torch operators.

A fused variant promises few launches and no torch compute per call. On a machine without a GPU
that is checked in Triton's interpreter, where wall-clock times mean nothing but the calls are the
same: a launch is a call of a kernel's ``run`` (what ``kernel[grid](...)`` calls), patched on the
class so that every kernel, jitted before or after, is seen; torch operators are seen by a
``TorchDispatchMode``. While a kernel runs, the interpreter itself issues torch operators (copying
arguments to numpy and back); they are not the caller's, so op counting pauses during a launch.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

#: Operators that only allocate (their contents are undefined: nothing is computed).
ALLOCATIONS: frozenset[str] = frozenset({
    "aten.empty.memory_format", "aten.empty_strided.default", "aten.empty_like.default",
    "aten.new_empty.default", "aten.new_empty_strided.default",
})
#: Operators returning views of their input (no data moves); ``func.is_view`` misses list returns.
LIST_VIEWS: frozenset[str] = frozenset({"aten.split.Tensor", "aten.split_with_sizes.default", "aten.unbind.int"})


@dataclass
class HostWork:
    """What one counted region did: kernels launched (by name) and torch operators (by name)."""

    launches: list[str] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    views: set[str] = field(default_factory=set)

    def compute_ops(self) -> list[str]:
        """The operators that are neither allocations nor views: torch doing arithmetic or copies."""
        return [op for op in self.ops if op not in ALLOCATIONS and op not in self.views]

    def as_dict(self) -> dict[str, Any]:
        return {"launches": list(self.launches), "ops": list(self.ops), "compute_ops": self.compute_ops()}


class _OpCounter(TorchDispatchMode):
    def __init__(self, work: HostWork) -> None:
        super().__init__()
        self.work = work
        self.paused = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not self.paused:
            name = str(func)
            self.work.ops.append(name)
            if func.is_view or name in LIST_VIEWS:
                self.work.views.add(name)
        return func(*args, **(kwargs or {}))


def _launch_classes() -> list[type]:
    """The classes whose ``run`` launches a kernel: the interpreter's and the compiler's."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    return [InterpretedFunction, JITFunction]


@contextmanager
def count_host_work() -> Iterator[HostWork]:
    """Count launches and torch operators issued inside the ``with`` block (this thread)."""
    work = HostWork()
    counter = _OpCounter(work)
    originals = {cls: cls.__dict__["run"] for cls in _launch_classes()}

    def patched(original: Any) -> Any:
        def run(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
            if not warmup:
                work.launches.append(getattr(self, "fn", self).__name__)
            counter.paused += 1
            try:
                return original(self, *args, grid=grid, warmup=warmup, **kwargs)
            finally:
                counter.paused -= 1
        return run

    for cls, original in originals.items():
        cls.run = patched(original)
    try:
        with counter:
            yield work
    finally:
        for cls, original in originals.items():
            cls.run = original
