"""The process-wide settings a variant can change for every case after its own, kept around each case.

Cases run one after another in one process (the sweep's, or a reused ``--isolate`` worker), so a
variant that turns off grad mode, sets the default dtype or the thread count, changes directory or
replaces a signal handler in its build or forward changed every later case: other variants' train
rows failed, a correct variant read as a mismatch, later speedups compared 1-thread times with
2-thread ones, and SIGTERM killed the run without its report. ``ProcessState.capture`` before a case
and ``restore`` after it undo that; ``changes`` names what the variant changed, for its row.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

#: The signals whose handlers the sweep owns: Ctrl-C stops after the case, SIGTERM writes the report.
SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


def _read(get: Callable[[], Any]) -> Any:
    """A setting's value, or None where it cannot be read: torch refuses to read its legacy TF32
    flags once a variant has set the new ``fp32_precision`` ones."""
    try:
        return get()
    except (AttributeError, RuntimeError):
        return None


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the directory was removed: nothing to compare or go back to
        return None


def _handlers() -> tuple[Any, ...] | None:
    if threading.current_thread() is not threading.main_thread():
        return None  # handlers are the main thread's to set
    return tuple(signal.getsignal(s) for s in SIGNALS)


@dataclass(frozen=True)
class ProcessState:
    """torch's and the process's settings that outlive a case. Each field is read by ``capture`` and
    set back by ``restore`` (``SETTERS``); None: not readable here, left alone."""

    grad_enabled: bool
    default_dtype: torch.dtype
    threads: int
    #: ``torch.use_deterministic_algorithms``: on, and whether it only warns.
    deterministic: tuple[bool, bool]
    float32_matmul_precision: str | None
    cudnn_benchmark: bool
    cudnn_allow_tf32: bool | None
    cuda_matmul_allow_tf32: bool | None
    #: The newer API of the same TF32 choice (``torch.backends.cuda.matmul.fp32_precision``), set back
    #: after the legacy flags, which reset it.
    matmul_fp32_precision: str | None
    cudnn_conv_fp32_precision: str | None
    cwd: str | None
    signal_handlers: tuple[Any, ...] | None

    @classmethod
    def capture(cls) -> ProcessState:
        return cls(
            grad_enabled=torch.is_grad_enabled(),
            default_dtype=torch.get_default_dtype(),
            threads=torch.get_num_threads(),
            deterministic=(torch.are_deterministic_algorithms_enabled(),
                           torch.is_deterministic_algorithms_warn_only_enabled()),
            float32_matmul_precision=_read(torch.get_float32_matmul_precision),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            cudnn_allow_tf32=_read(lambda: torch.backends.cudnn.allow_tf32),
            cuda_matmul_allow_tf32=_read(lambda: torch.backends.cuda.matmul.allow_tf32),
            matmul_fp32_precision=_read(lambda: torch.backends.cuda.matmul.fp32_precision),
            cudnn_conv_fp32_precision=_read(lambda: torch.backends.cudnn.conv.fp32_precision),
            cwd=_cwd(),
            signal_handlers=_handlers(),
        )

    def changes(self, after: ProcessState) -> list[str]:
        """What differs in ``after``, as ``name before → after`` (handlers by name only)."""
        said = []
        for f in fields(self):
            old, new = getattr(self, f.name), getattr(after, f.name)
            if old is None or new is None or old == new:
                continue
            said.append(f.name if f.name == "signal_handlers" else f"{f.name} {_text(old)} → {_text(new)}")
        return said

    def handlers_replaced(self) -> bool:
        """Whether the SIGINT/SIGTERM handlers differ from this state's: a Ctrl-C then reaches the
        code as Python's own KeyboardInterrupt, which only the run's handlers could have told apart."""
        now = _handlers()
        return self.signal_handlers is not None and now is not None and now != self.signal_handlers

    def restore(self) -> None:
        """Set every setting back to this state's (each that was read)."""
        for name, setter in SETTERS.items():
            value = getattr(self, name)
            if value is None:
                continue
            try:
                setter(value)
            except Exception:  # noqa: BLE001 - e.g. the first directory was removed since: the rest still
                pass


def _text(value: object) -> str:
    return str(value).removeprefix("torch.")


def _flag(owner: Callable[[], object], name: str) -> Callable[[Any], None]:
    """A setter of one of torch's backend flags (looked up when set: a build may lack the object)."""
    return lambda value: setattr(owner(), name, value)


def _set_deterministic(setting: tuple[bool, bool]) -> None:
    on, warn_only = setting
    torch.use_deterministic_algorithms(on, warn_only=warn_only)


def _set_handlers(handlers: tuple[Any, ...]) -> None:
    if threading.current_thread() is threading.main_thread():
        for sig, handler in zip(SIGNALS, handlers, strict=True):
            if handler is not None:  # None: set from outside Python, which signal.signal cannot take back
                signal.signal(sig, handler)


#: How each field of ``ProcessState`` is set back, in this order: the legacy TF32 flags before the
#: ``fp32_precision`` ones, since setting a legacy flag resets the newer setting.
SETTERS: dict[str, Callable[[Any], None]] = {
    "threads": torch.set_num_threads,
    "grad_enabled": torch.set_grad_enabled,
    "default_dtype": torch.set_default_dtype,
    "deterministic": _set_deterministic,
    "float32_matmul_precision": torch.set_float32_matmul_precision,
    "cudnn_benchmark": _flag(lambda: torch.backends.cudnn, "benchmark"),
    "cudnn_allow_tf32": _flag(lambda: torch.backends.cudnn, "allow_tf32"),
    "cuda_matmul_allow_tf32": _flag(lambda: torch.backends.cuda.matmul, "allow_tf32"),
    "matmul_fp32_precision": _flag(lambda: torch.backends.cuda.matmul, "fp32_precision"),
    "cudnn_conv_fp32_precision": _flag(lambda: torch.backends.cudnn.conv, "fp32_precision"),
    "cwd": os.chdir,
    "signal_handlers": _set_handlers,
}
