"""Launching jitted Triton kernels without ``JITFunction.run``'s per-call binding.

Why: ``kernel[grid](*args)`` binds and specializes every argument, builds a cache key from the
result and looks the compiled kernel up again on every call. Measured on the 2-core VM (Triton 3.9,
triton_fused's kernels, the driver's launch stubbed out; ``tests/benchmarks/test_bench_host.py``):
about 7.6 µs a launch through ``JITFunction.run`` against 3.6 µs here, and a forward makes three
launches, a backward four.

``DirectKernel`` keeps the compiled kernel that Triton's own first launch returned, under a key that
is a superset of what Triton specializes a kernel on: each tensor's dtype and 16-byte alignment,
each int's value, every other argument's type and value, the constexprs and launch options, the
knobs ``JITFunction.run`` adds to the options (debug, instrumentation) and the current device. A
later launch with the same key calls that kernel's launcher with the arguments Triton would pass
(``CompiledKernel.run``: grid, stream, function, packed metadata, no launch metadata or hooks, then
every argument in signature order, the launcher ignoring the constexprs), as ``JITFunction.run``
does after its lookup in the Triton versions this was read against (3.6 and 3.9, identical there;
``tests/test_triton_launch.py`` runs the installed Triton's launch path beside it).

It falls back to ``kernel[grid](...)`` whenever it cannot be sure: in the interpreter (there is no
compiled kernel), for a Triton not in ``TESTED_TRITON``, while a launch, pre-run or stages-inspection
hook is installed (profilers such as proton rely on them), for a grid that is not a tuple, for an argument it cannot
key by value (only tensors and ``PLAIN`` values are kept), past ``MAX_KEPT`` kept kernels, and for
the first launch of every key (which also compiles). Like Triton's own lookup, it does not look
at knobs read only when compiling (``TRITON_OVERRIDE_ARCH``, FP fusion); unlike it, it does not
re-check that the globals a kernel read are unchanged (they are constants here).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import Tensor

#: Triton versions (major, minor) whose ``JITFunction.run`` was read and ends in the launch this
#: module repeats; any other version launches through ``JITFunction.run``.
TESTED_TRITON: tuple[tuple[int, int], ...] = ((3, 6), (3, 9))


def triton_version(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as ``3.6.0`` or ``3.9.0+git1234``."""
    major, minor, *_ = version.split(".")
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def direct_launch_problem(version: str, interpreted: bool) -> str | None:
    """Why launches must go through ``JITFunction.run`` with Triton ``version``, or None."""
    if interpreted:
        return "the interpreter has no compiled kernels"
    if triton_version(version) not in TESTED_TRITON:
        read = ", ".join(".".join(map(str, v)) for v in TESTED_TRITON)
        return f"triton {version} is not a version whose launch was read ({read})"
    return None


#: Stands for a parameter the call left to its default (then the launch is never kept).
_DEFAULTED = object()


def _unhooked(hook: Any) -> bool:
    """No launch hook installed: None, or an empty ``HookChain`` (Triton 3.6+)."""
    return hook is None or not getattr(hook, "calls", True)


#: Values kept in a key by value: anything else (a tensor passed by keyword, a wrapper that hashes
#: by identity) would make a new key on every call and keep its object alive, so it is never kept.
PLAIN: tuple[type, ...] = (int, float, bool, type(None), str)
#: Kept kernels per DirectKernel at most: arguments whose value changes every call (a seed, a step)
#: would otherwise grow the cache without end; past this, such launches go through Triton.
MAX_KEPT = 1024


class DirectKernel:
    """A jitted kernel whose ``kernel[grid](*args, **kwargs)`` skips ``JITFunction.run`` once compiled.

    ``triton`` is the module whose driver, knobs and launch hooks are read, or None to launch
    every time through ``JITFunction.run`` (the interpreter, or an untested Triton). ``kwargs`` are
    the kernel's constexprs by name and launch options such as ``num_warps``.
    """

    def __init__(self, jitted: Any, triton: Any | None) -> None:
        self.jitted = jitted
        self.triton = triton
        self.names: tuple[str, ...] = tuple(jitted.arg_names)
        self.compiled: dict[Any, Any] = {}

    def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., None]:
        return functools.partial(self.launch, grid)

    def launch(self, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
        triton = self.triton
        runtime = triton.knobs.runtime if triton is not None else None
        if runtime is None or type(grid) is not tuple or self.jitted.pre_run_hooks or not (
                _unhooked(runtime.launch_enter_hook) and _unhooked(runtime.launch_exit_hook)
                and getattr(runtime, "add_stages_inspection_hook", None) is None):
            self.jitted[grid](*args, **kwargs)
            return
        # the current device's current stream, as JITFunction.run reads them (while a CUDA graph is
        # captured, the capture stream): read per launch, never kept
        active = triton.runtime.driver.active
        device = active.get_current_device()
        compilation = triton.knobs.compilation
        try:  # kwargs, in the call's order, hold the constexprs and options such as num_warps
            # what Triton may specialize an argument on, or more: a tensor's dtype and 16-byte
            # alignment; an int's value; anything else's type and value, since 1, 1.0 and True are
            # equal keys but Triton types them i32, fp32 and u1 (inline: a function call per
            # argument costs a µs a launch); and the knobs JITFunction.run adds to the options
            key = (device, tuple([(a.dtype, a.data_ptr() % 16 == 0) if isinstance(a, Tensor)
                                  else a if type(a) is int else (type(a), a) for a in args]),
                   tuple([item if type(item[1]) is int else (item[0], type(item[1]), item[1])
                          for item in kwargs.items()]),
                   runtime.debug, compilation.instrumentation_mode,
                   getattr(compilation, "fpsan_homomorphic_casts", None))
            kept = self.compiled.get(key)
        except TypeError:  # an argument that cannot be hashed
            self.jitted[grid](*args, **kwargs)
            return
        if kept is None:  # Triton binds, compiles if it must, launches, and returns the compiled kernel
            kernel = self.jitted[grid](*args, **kwargs)
            tail = [kwargs.get(name, _DEFAULTED) for name in self.names[len(args):]]
            if (kernel is not None and hasattr(kernel, "packed_metadata") and len(self.compiled) < MAX_KEPT
                    and _DEFAULTED not in tail and all(type(v) in PLAIN for v in kwargs.values())
                    and all(isinstance(a, Tensor) or type(a) in PLAIN for a in args)):
                self.compiled[key] = kernel, tuple(tail)  # the constexprs in signature order, fixed by the key
            return
        kernel, tail = kept
        g0, g1, g2 = (*grid, 1, 1)[:3]
        kernel.run(g0, g1, g2, active.get_current_stream(device), kernel.function, kernel.packed_metadata,
                   None, None, None, *args, *tail)
