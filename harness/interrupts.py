"""Sections of the harness that an interrupt must not cut in two.

The run's signal handlers (``api.StopFlag``) raise ``KeyboardInterrupt`` or ``Terminated`` into
whatever Python code is running. Two kinds of code must finish first: a finished row written to
results.jsonl and kept for the report (an interrupt between the two made the report count one case
fewer than the file held), and a torch.profiler region (SIGTERM raised inside one, as the CPU
memory pass profiles every case, killed the process with SIGSEGV, before any report was written).
Inside ``held`` the interrupt waits, and is raised when the outermost section ends. Main thread
only, as signal handlers are.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

_depth = 0
_pending: type[BaseException] | None = None
#: Whether the run's handlers are installed: then a KeyboardInterrupt without ``SIGNALLED`` set was
#: raised by a variant's own code (``raised_by_code``).
_installed = 0
#: The attribute set on each interrupt the run's handlers raise. A mark on the exception, not a
#: module global holding it: that kept the last one, its traceback and the frames' tensors, for the
#: life of the process.
SIGNALLED = "_harness_signalled"


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Run the block whole: an interrupt that arrives meanwhile is raised at its end."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            pending, _pending = _pending, None
            _raise(pending)


def interrupt(kind: type[BaseException]) -> None:
    """From a signal handler: raise ``kind`` now, or, inside ``held``, when the section ends."""
    global _pending
    if _depth:
        _pending = _pending or kind
        return
    _raise(kind)


def _raise(kind: type[BaseException]) -> None:
    exc = kind()
    setattr(exc, SIGNALLED, True)
    raise exc


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """While the run's handlers are installed: Ctrl-C and SIGTERM reach the code only through them."""
    global _installed
    _installed += 1
    try:
        yield
    finally:
        _installed -= 1


def raised_by_code(exc: BaseException) -> bool:
    """Whether ``exc``, a KeyboardInterrupt, was raised by code (a variant's ``raise``) rather than by a
    signal: with the run's handlers installed, every signalled one is theirs."""
    return _installed > 0 and not getattr(exc, SIGNALLED, False)
