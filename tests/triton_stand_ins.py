"""Stand-ins that let the installed Triton's real launch path run without a GPU.

A ``JITFunction`` binds, specializes and looks up its compiled kernel in Python before the driver
launches anything. With the driver replaced by ``stand_in_driver`` (an sm_90 target, device 0,
stream 1000) and compiling replaced by a ``Compiled`` recorder (``real_jit``), that Python runs
exactly as on a GPU: what ``DirectKernel`` passes can be compared with what Triton passes, and the
host time of both paths measured (``tests/benchmarks/test_bench_host.py``).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from optional import require

from variants.triton_launch import direct_launch_problem


class Compiled:
    """Stands for Triton's ``CompiledKernel``: records the launcher's calls."""

    def __init__(self, spec: Any = None, record: bool = True) -> None:
        self.spec, self.function, self.packed_metadata, self.calls = spec, f"function{id(self)}", ("meta",), []
        self.record = record

    def launch_metadata(self, *args: Any) -> None:
        return None

    def run(self, *args: Any) -> None:
        if self.record:
            self.calls.append(args)


def real_jit(fn: Any, compiled: list[Compiled], record: bool = True) -> Any:
    """A real ``JITFunction`` of ``fn`` whose compile returns a recorder tagged with Triton's specialization."""
    from triton.runtime.jit import JITFunction

    jitted = JITFunction(fn)

    def do_compile(key: Any, signature: Any, device: Any, constexprs: Any, options: Any, attrs: Any,
                   warmup: Any) -> Compiled:
        spec = (repr(sorted(signature.items())), repr(sorted(constexprs.items())), repr(sorted(attrs.items())),
                repr(sorted(vars(options).items())))
        kernel = Compiled(spec, record)
        jitted.device_caches[device][0][key] = kernel  # what the real compile does with its result
        compiled.append(kernel)
        return kernel

    jitted._do_compile = do_compile
    return jitted


def stand_in_driver(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The installed Triton with a stand-in CUDA driver (an sm_90 target, device 0, stream 1000)."""
    require("triton")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    if "nvidia" not in triton.backends.backends:
        pytest.skip(f"triton {triton.__version__} has no nvidia backend")
    if direct_launch_problem(triton.__version__, False):
        pytest.skip(direct_launch_problem(triton.__version__, False))
    active = SimpleNamespace(get_current_target=lambda: GPUTarget("cuda", 90, 32), get_current_device=lambda: 0,
                             get_current_stream=lambda device: 1000 + device)
    monkeypatch.setattr(driver, "_active", active)
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when the default is left unset
    return triton
