"""Variants that fail on purpose, for the fault-injection tests.

Importing this module registers them (so a worker process that imports it, or a run that loads it
as a ``harness.variants`` plugin, finds them); ``register_all``/``unregister_all`` let a test
process add and remove them around one test. Never run ``fault_abort``, ``fault_segv`` or
``fault_hang`` in-process: they take the process down or never return.
"""
from __future__ import annotations

import copy
import ctypes
import os
import sys
import textwrap
import time
from pathlib import Path

import torch

from variants.registry import register, unregister

#: A batch above this makes ``fault_oom`` ask the CPU allocator for more memory than exists.
OOM_ABOVE_BATCH = 2
#: The environment variable naming ``fault_gated``'s gate: a file that, until it exists, holds the build
#: of every case with ``GATED_CHANNELS`` channels. A test that signals a run waits for the rows before
#: the gate and signals a run that cannot have finished meanwhile: a fixed delay (a 0.4 s build) let
#: a stalled test process find the run done, send no signal and read exit 0 where 143 was due.
GATE_ENV = "HARNESS_FAULT_GATE"
GATED_CHANNELS = 8
#: How long a closed gate holds a build before it fails the case instead (a test that never opens it).
GATE_LIMIT_S = 300.0
#: What ``fault_gated`` appends to the gate's path for the file it writes once a build waits there: a
#: test that must signal a run inside a case waits for it, not for a fixed delay.
REACHED_SUFFIX = ".reached"


def _copy(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    return copy.deepcopy(reference).to(device=device, dtype=dtype)


def build_raise(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    raise RuntimeError("injected fault\nsecond line")


class Skipped(BaseException):
    """As ``pytest.skip`` raises: a BaseException, not an Exception."""


def build_interrupt(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    raise KeyboardInterrupt  # a variant's own raise, no signal: the case's error, not the sweep's end


def build_base_exception(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    raise Skipped("needs a GPU")


def build_torn_reply(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """In a worker (``python -m harness._worker``): the worker writes the start of a reply on its
    protocol stream and dies, as when it is killed while writing a long row."""
    frame = sys._getframe()
    while frame is not None and not (frame.f_code.co_name == "main" and "proto" in frame.f_locals):
        frame = frame.f_back
    if frame is not None:
        proto = frame.f_locals["proto"]
        proto.write('{"row": {"variant": "fault_torn_reply", "st')  # cut off: no end of line
        proto.flush()
        os._exit(9)
    return _copy(reference, device, dtype)


def build_abort(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    os.abort()


def build_segv(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    ctypes.string_at(0)  # reads address 0: SIGSEGV
    raise AssertionError("unreachable")


def build_hang(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    while True:
        time.sleep(60)


def build_gated(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    gate = os.environ.get(GATE_ENV)
    if gate and reference.channels == GATED_CHANNELS:
        Path(gate + REACHED_SUFFIX).touch()
        deadline = time.monotonic() + GATE_LIMIT_S
        while not Path(gate).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gate {gate} never opened")
            time.sleep(0.01)
    return _copy(reference, device, dtype)


def build_print(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    print("{not a JSON row")  # a worker must keep such output out of its protocol
    os.write(1, b"not JSON either\n")
    return _copy(reference, device, dtype)


class BigBatchOom(torch.nn.Module):
    """The reference, except that a batch above ``OOM_ABOVE_BATCH`` fails in the CPU allocator."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > OOM_ABOVE_BATCH:
            torch.empty(1 << 60, dtype=torch.uint8)  # a real allocation failure, not a fake message
        return self.inner(x)


def build_oom(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    return BigBatchOom(_copy(reference, device, dtype))


FAULTS = {
    "fault_raise": (build_raise, {}),
    "fault_interrupt": (build_interrupt, {}),
    "fault_torn_reply": (build_torn_reply, {"isolate": True}),
    "fault_base_exception": (build_base_exception, {}),
    "fault_abort": (build_abort, {}),
    "fault_abort_tagged": (build_abort, {"isolate": True}),
    "fault_segv": (build_segv, {}),
    "fault_hang": (build_hang, {}),
    "fault_gated": (build_gated, {}),
    "fault_print": (build_print, {}),
    "fault_oom": (build_oom, {}),
}


def register_all() -> list[str]:
    for name, (build, tags) in FAULTS.items():
        register(name, f"fault injection: {name}", devices=("cpu",), dtypes=("float32",), replace=True,
                 tags=tags or None)(build)
    return list(FAULTS)


def unregister_all() -> None:
    for name in FAULTS:
        unregister(name)


def make_plugin(root: Path) -> Path:
    """A dist-info that makes this module a ``harness.variants`` plugin; put ``root`` on PYTHONPATH."""
    info = root / "fault_variants_plugin-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fault-variants-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [harness.variants]
        faults = fault_variants
    """))
    return root


register_all()
