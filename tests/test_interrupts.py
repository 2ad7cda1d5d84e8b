"""An interrupt waits for the sections it must not cut in two, and is raised when they end."""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from harness import interrupts
from harness.api import StopFlag, Terminated
from harness.measure import memory


def test_an_interrupt_inside_held_sections_is_raised_when_the_outermost_ends() -> None:
    done = []
    with pytest.raises(Terminated):
        with interrupts.held():
            with interrupts.held():
                interrupts.interrupt(Terminated)
                done.append("inner")
            done.append("outer")  # the inner section's end raised nothing: the outer still holds
    assert done == ["inner", "outer"]
    with pytest.raises(KeyboardInterrupt):  # outside any section: at once
        interrupts.interrupt(KeyboardInterrupt)
    with interrupts.held():  # nothing pending is left over from before
        pass


def test_a_signalled_interrupt_is_told_from_a_variants_own_and_not_kept_alive() -> None:
    """The last signalled interrupt was kept in a module global, and with it its traceback's frames
    and every tensor they held, for the life of the process."""
    import gc
    import weakref

    def case() -> None:
        held_tensor = torch.ones(4)
        kept.append(weakref.ref(held_tensor))
        interrupts.interrupt(KeyboardInterrupt)

    kept: list[weakref.ref] = []
    with interrupts.handled():
        with pytest.raises(KeyboardInterrupt) as caught:
            case()
        assert not interrupts.raised_by_code(caught.value)  # the run's handler raised it
        assert interrupts.raised_by_code(KeyboardInterrupt())  # a variant's own raise
    assert not interrupts.raised_by_code(KeyboardInterrupt())  # without the run's handlers: never swallowed
    del caught
    gc.collect()
    assert kept[0]() is None  # the frame's tensor is gone with the exception


def test_sigterm_during_the_cpu_memory_pass_waits_for_its_profiler_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM raised inside the profiler region that measures a CPU case's peak memory killed the
    run with SIGSEGV under load ("Requested callback is not found"), before any report was written."""
    ended = []
    real = torch.profiler.profile.__exit__

    def exiting(self, *exc):  # the profiler's teardown ran whole, with no exception in flight
        ended.append(exc[0])
        return real(self, *exc)

    monkeypatch.setattr(torch.profiler.profile, "__exit__", exiting)
    model = torch.nn.Conv2d(4, 4, 1)
    x = torch.randn(2, 4, 8, 8)

    def step() -> torch.Tensor:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler has run by now
        return model(x)

    with StopFlag().installed(None), pytest.raises(Terminated):
        memory._cpu_peak(step, memory.PROC_SELF)
    assert ended == [None]


def test_ctrl_c_twice_while_the_reports_are_written_waits_for_them(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path) -> None:  # fmt: skip
    """A new user pressed Ctrl-C twice, as its prompt invites: the second landed while the reports were
    written, and the run ended "interrupted", with no report.md and no --resume command."""
    from conftest import FAST_RUN

    from harness import api
    from harness.results import report

    real = report.write_reports

    def pressed_twice(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler has run by now
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "write_reports", pressed_twice)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt) as raised:
        api.run(variants="eager", shapes="8x8x8", batch_sizes="1", dtypes="float32", modes="forward",
                out=str(out), **FAST_RUN)  # fmt: skip
    assert raised.value.args == (str(out),)  # the CLI names the --resume command from it
    assert (out / "report.md").is_file() and (out / "results.csv").is_file()
