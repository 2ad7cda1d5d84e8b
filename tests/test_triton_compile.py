"""``triton_fused``'s kernels compiled ahead of time for real NVIDIA GPUs, on a machine without one.

On CPU the kernels only ever run in Triton's interpreter (``TRITON_INTERPRET=1``), which executes
them as numpy and accepts much that a GPU compile rejects: layouts and shapes the lowering cannot
handle, mismatched dtypes, ranges that must be constant, more registers than a thread has. This file
is the CPU-checkable proxy for a GPU: every kernel goes through Triton's whole compiler, down to a
cubin from ``ptxas``, for sm_90 (H100) and sm_80 (A100). No GPU or driver is needed for that.

What is compiled is what the variant would launch: a child process (without ``TRITON_INTERPRET``,
which the suite sets under tox and which would make ``triton.jit`` give interpreted functions) runs
the variant's own host code, forward and backward, on empty CPU tensors with the SM count of the
target GPU, and swaps the kernels for recorders. Each launch is specialised by Triton's own binder,
as a GPU launch would be (dtypes, 16-divisible pointers and integers, integers equal to 1 made
constant, ``num_warps``), so the constexprs come from ``launch_plan`` and the wrappers, never from a
copy of them here. Each distinct specialisation is compiled once, into a fresh cache in a temporary
directory (nothing is written into the checkout), and ``ptxas``'s log gives registers and spills.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the child process runs this file as a script
    sys.path.insert(0, str(ROOT))

from optional import require  # noqa: E402

#: (name, compute capability, SMs): the targets, with their SM count, which sets the pool split.
TARGETS: list[tuple[str, int, int]] = [("sm_90", 90, 132), ("sm_80", 80, 108)]
#: (id, N, C, H, W, reduction, dtype, layout, fusion, bias, inference). Each case launches a training
#: forward and its backward, and with ``inference`` an inference forward too (no saved tensors). A
#: covering set, not a product, to keep the compiles to about a minute of CPU: every fusion with two
#: dtypes, every dtype with every kernel, both layouts, biases and gate with and without, on the
#: benchmark shapes (one channel block with BLOCK_P of 64 or 128; C = 256: two blocks of 128),
#: C = 200 (two blocks, not a power of two), C = 1024 (eight blocks, a 512-wide hidden vector) and a
#: tiny odd shape (nothing 16-divisible).
CASES: list[tuple[str, int, int, int, int, int, str, str, str, bool, bool]] = [
    ("c64-fp16-add", 32, 64, 128, 128, 2, "float16", "nchw", "add", False, True),
    ("c64-bf16-max-cl-bias", 32, 64, 128, 128, 2, "bfloat16", "channels_last", "max", True, False),
    ("c200-fp32-gate-cl", 32, 200, 32, 32, 2, "float32", "channels_last", "gate", False, True),
    ("c200-fp16-mul-bias", 32, 200, 32, 32, 2, "float16", "nchw", "mul", True, False),
    ("c32-bf16-gate-bias", 32, 32, 256, 256, 2, "bfloat16", "nchw", "gate", True, False),
    ("c1024-fp32-max", 2, 1024, 16, 16, 2, "float32", "nchw", "max", False, False),
    ("odd-fp16-add-cl-bias", 2, 3, 7, 5, 1, "float16", "channels_last", "add", True, False),
    ("c256-r16-bf16-mul", 32, 256, 64, 64, 16, "bfloat16", "nchw", "mul", False, False),
]
#: Spills ptxas is known to make, tolerated up to this many bytes of spill stores and reported as a
#: warning, never silently: (ptxas major version, kernel) -> bytes. ptxas 12 spills 8 to 16 bytes in
#: ``_bwd_excite_kernel`` at 64 to 72 registers (C = 64 and C = 32 here): triton 3.9's ptxas below
#: sm_90 (12.9), and triton 3.6's for every target (12.8; the H200 of 2026-11-27 ran triton 3.6).
#: One program per sample, so it costs nothing measurable. ptxas 13 (triton 3.9 from sm_90): none.
#: Eight warps instead of four spill more under ptxas 12.8 (20 B at 48 registers).
KNOWN_SPILLS: dict[tuple[int, str], int] = {(12, "bwd_excite"): 32}
KERNELS = ["pool", "excite", "apply", "bwd_reduce", "bwd_excite", "bwd_dx", "bwd_params"]
SPILL_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
REGS_RE = re.compile(r"Used (\d+) registers")


def backend_problem(arch: int) -> str | None:
    """Why Triton cannot compile for NVIDIA ``arch`` here (no nvidia backend, no ptxas), or None."""
    import triton.backends

    if "nvidia" not in triton.backends.backends:
        return f"triton {triton.__version__} has no nvidia backend (backends: {sorted(triton.backends.backends)})"
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        ptxas = get_ptxas(arch).path  # triton's own choice: one ptxas below sm_90, a newer one from sm_90
    except Exception as exc:  # noqa: BLE001 - any failure to find the tool means "cannot compile here"
        return f"triton finds no ptxas for sm_{arch}: {type(exc).__name__}: {exc}"
    if not (ptxas and os.access(ptxas, os.X_OK)):
        return f"ptxas at {ptxas!r} is not executable"
    return None


def ptxas_major(arch: int) -> int:
    """The major version of the ptxas triton runs for ``arch`` ("release 12.8" -> 12): spills differ by it."""
    from triton.backends.nvidia.compiler import get_ptxas

    text = subprocess.run([get_ptxas(arch).path, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"release (\d+)\.", text)
    assert found, f"no release in ptxas --version:\n{text}"
    return int(found.group(1))


class Recorder:
    """Stands for one kernel: ``kernel[grid](...)`` specialises the call and records it, launching nothing."""

    def __init__(self, name: str, fn: Any, backend: Any, seen: dict[tuple, dict[str, Any]], case: list[str]) -> None:
        from triton.runtime.jit import create_function_from_signature

        self.name, self.fn, self.backend, self.seen, self.case = name, fn, backend, seen, case
        self.binder = create_function_from_signature(fn.signature, fn.params, backend)

    def __getitem__(self, grid: Any) -> Any:
        return self.launch

    def launch(self, *args: Any, **kwargs: Any) -> None:
        """What ``JITFunction.run`` does before it compiles: bind, specialise, pack (triton's own code)."""
        bound, specialization, options = self.binder(*args, **kwargs)
        options, signature, constexprs, attrs = self.fn._pack_args(self.backend, kwargs, bound, specialization,
                                                                   options)
        key = (self.name, repr(sorted(signature.items())), repr(sorted(constexprs.items())),
               repr(sorted(attrs.items())), repr(sorted(options.__dict__.items())))
        entry = self.seen.setdefault(key, {"kernel": self.name, "signature": signature, "constexprs": constexprs,
                                           "attrs": attrs, "options": options.__dict__, "cases": []})
        if self.case[0] not in entry["cases"]:
            entry["cases"].append(self.case[0])


def record_launches(tf: Any, backend: Any, num_sms: int) -> dict[tuple, dict[str, Any]]:
    """Every distinct launch of the cases: a training forward, its backward and, if asked, an inference forward."""
    import torch

    from variants.reference import ScSE

    jitted = tf._kernels()
    seen: dict[tuple, dict[str, Any]] = {}
    case_id: list[str] = [""]
    tf._JITTED = SimpleNamespace(**{name: Recorder(name, kernel.jitted, backend, seen, case_id)
                                    for name, kernel in vars(jitted).items()})
    tf._num_sms = lambda device: num_sms
    for name, n, c, h, w, reduction, dtype, layout, fusion, bias, inference in CASES:
        case_id[0] = name
        module = tf.TritonScSE(ScSE(c, reduction, fusion, bias))  # float32 parameters, as the variant builds it
        memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        x = torch.empty(n, c, h, w, dtype=getattr(torch, dtype), memory_format=memory_format)
        if inference:  # without parameter gradients: under no_grad alone, ctx.needs_input_grad is still True
            module.requires_grad_(False)
            with torch.no_grad():
                module(x)
            module.requires_grad_(True)
        x.requires_grad_(True)
        y = module(x)
        torch.autograd.grad(y, [x, *module.parameters()], torch.empty_like(y))
    tf._JITTED = jitted
    return seen


def compile_one(entry: dict[str, Any], target: Any) -> dict[str, Any]:
    """Compile one specialisation to a cubin; the outcome, registers and spills from ptxas's log."""
    import triton
    from triton.compiler import ASTSource

    import variants.triton_fused as tf

    fn = getattr(tf._kernels(), entry["kernel"]).jitted
    out: dict[str, Any] = {"kernel": entry["kernel"], "cases": entry["cases"],
                           "num_warps": entry["options"]["num_warps"],
                           "constexprs": {fn.arg_names[k[0]]: v for k, v in entry["constexprs"].items()}}
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):  # TRITON_DUMP_PTXAS_LOG=1 prints ptxas -v's report
            compiled = triton.compile(ASTSource(fn, entry["signature"], entry["constexprs"], entry["attrs"]),
                                      target=target, options=entry["options"])
        out["cubin_bytes"] = len(compiled.asm["cubin"])
        out["error"] = None
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the test with it
        out["error"] = traceback.format_exc()[-4000:]
    out["seconds"] = time.perf_counter() - start
    text = log.getvalue()
    spills, regs = SPILL_RE.search(text), REGS_RE.search(text)
    out["stack"], out["spill_stores"], out["spill_loads"] = map(int, spills.groups()) if spills else (None,) * 3
    out["registers"] = int(regs.group(1)) if regs else None
    if out["error"] is None and (spills is None or regs is None):
        out["log"] = text[-2000:]
    return out


def worker(arch: int, num_sms: int) -> None:
    """Child process entry: record the launches, compile each for ``arch``, print a JSON report."""
    import triton

    import variants.triton_fused as tf

    report: dict[str, Any] = {"unavailable": backend_problem(arch), "triton": triton.__version__}
    if report["unavailable"] is None:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import make_backend

        target = GPUTarget("cuda", arch, 32)
        seen = record_launches(tf, make_backend(target), num_sms)
        report["ptxas"] = ptxas_major(arch)
        report["results"] = [compile_one(entry, target) for entry in seen.values()]
    print("@@RESULT@@" + json.dumps(report, default=repr))


@cache
def compile_report(arch: int, num_sms: int) -> dict[str, Any]:
    """Run the worker for one target (once per process) in a child without the interpreter."""
    require("triton")
    with tempfile.TemporaryDirectory(prefix="triton-compile-") as tmp:
        env = dict(os.environ)
        env.pop("TRITON_INTERPRET", None)
        env.update(TRITON_CACHE_DIR=str(Path(tmp) / "cache"), TRITON_HOME=tmp, TRITON_DUMP_PTXAS_LOG="1",
                   PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(arch), str(num_sms)],
                              env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@RESULT@@")]
    if proc.returncode != 0 or not marker:
        raise AssertionError(f"compile worker failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return json.loads(marker[-1].removeprefix("@@RESULT@@"))


def describe(result: dict[str, Any]) -> str:
    """One line naming a compiled specialisation: kernel, constexprs, warps and the cases that launch it."""
    consts = ", ".join(f"{k}={v}" for k, v in result["constexprs"].items())
    return f"{result['kernel']}({consts}; num_warps={result['num_warps']}) from {', '.join(result['cases'][:3])}"


def spill_line(result: dict[str, Any]) -> str:
    """A specialisation and what ptxas reported of its spills and registers."""
    return (f"{describe(result)}: {result['spill_stores']} B spill stores, {result['spill_loads']} B spill loads, "
            f"{result['stack']} B stack frame, {result['registers']} registers")


@pytest.mark.parametrize(("name", "arch", "num_sms"), TARGETS, ids=[t[0] for t in TARGETS])
def test_every_kernel_compiles_to_cubin_without_spills(name: str, arch: int, num_sms: int) -> None:
    """Every launch the variant makes on the cases compiles for the target, with no register spills."""
    report = compile_report(arch, num_sms)
    if report["unavailable"]:
        pytest.skip(f"cannot compile for NVIDIA here: {report['unavailable']}")
    results = report["results"]
    assert sorted({r["kernel"] for r in results}) == sorted(KERNELS), "a kernel was never launched by the cases"
    failed = [f"{describe(r)}:\n{r['error']}" for r in results if r["error"]]
    assert not failed, f"{len(failed)} of {len(results)} failed to compile for {name}:\n" + "\n\n".join(failed)
    unparsed = [f"{describe(r)}:\n{r['log']}" for r in results if "log" in r]
    assert not unparsed, "no registers or spills found in ptxas's log:\n" + "\n\n".join(unparsed)
    spills = [r for r in results if r["spill_stores"] or r["spill_loads"]]
    known = {kernel: limit for (major, kernel), limit in KNOWN_SPILLS.items() if major == report["ptxas"]}
    unexpected = [spill_line(r) for r in spills if r["spill_stores"] > known.get(r["kernel"], 0)]
    assert not unexpected, f"register spills on {name} (ptxas {report['ptxas']}):\n" + "\n".join(unexpected)
    for r in spills:
        warnings.warn(f"known register spill on {name} (ptxas {report['ptxas']}): {spill_line(r)}", stacklevel=1)


if __name__ == "__main__" and "--worker" in sys.argv:
    worker(int(sys.argv[-2]), int(sys.argv[-1]))
