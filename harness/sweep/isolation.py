"""Running cases so that no case can end the sweep: in-process, or in a worker child process.

In-process is the default: it is fast, and the runner already turns exceptions into rows. A case
runs in a worker (``python -m harness._worker``, one JSON row a line over a pipe) when the sweep
asks for it (``--isolate``, ``--case-timeout``), when its variant is tagged ``isolate=True``, or
for the rest of the sweep after an in-process case left a sticky CUDA error (after which this
process's CUDA context is unusable). With ``--processes K``, each case runs in K workers, and a
configuration's variants are measured together, round by round (``CaseExecutor.rounds``). A
worker is reused from case to case and replaced when it:

- dies (a segfault, ``abort()``, a fatal CUDA error): ``status=crashed``, with the signal or exit
  status and the first line of the Python stack that ``faulthandler`` left in ``workers.log``;
- gives no row within the time limit: it is killed, ``status=timeout``;
- reports a sticky CUDA error (an illegal address, a device-side assert): ``status=crashed``.
"""
from __future__ import annotations

import gc
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from harness.measure.metrics import metric_set
from harness.measure.timing import Clock, TimingPolicy
from harness.results.record import CaseResult, Status, pool
from harness.sweep import oom
from harness.sweep.cases import Case
from harness.sweep.config import SweepConfig
from harness.sweep.runner import failed, run_case, skip_reason
from harness.sweep.sharding import group_key
from harness.sweep.subject import SharedInputs
from variants.registry import Variant
from variants.tags import tags_of

WORKERS_LOG = "workers.log"
#: The time limit per case under isolation when ``--case-timeout`` is not given: generous enough
#: for ``torch.compile(mode="max-autotune")`` on a large shape, short of a night lost to a hang.
DEFAULT_CASE_TIMEOUT_S = 600.0
#: How long a fresh worker may take to import torch and the variants before it counts as crashed.
STARTUP_TIMEOUT_S = 300.0
#: Errors after which a CUDA context is unusable: every later kernel in the process fails too.
STICKY_CUDA_MESSAGES: tuple[str, ...] = (
    "illegal memory access", "illegal address", "ILLEGAL_ADDRESS", "device-side assert",
    "misaligned address", "unspecified launch failure", "illegal instruction", "uncorrectable ECC error",
    "CUDA_ERROR_LAUNCH_FAILED", "cudaErrorIllegalAddress", "cudaErrorLaunchFailure",
    "CUBLAS_STATUS_EXECUTION_FAILED", "CUDNN_STATUS_EXECUTION_FAILED", "launch timed out",
)  # fmt: skip


def configurations(cases: list[Case]) -> Iterator[list[Case]]:
    """The sweep's cases in runs of one configuration each (``sharding.group_key``; the context
    too), in sweep order, where its variants are adjacent (``cases.expand``)."""
    group: list[Case] = []
    for case in cases:
        if group and (group_key(case), case.context) != (group_key(group[0]), group[0].context):
            yield group
            group = []
        group.append(case)
    if group:
        yield group


def is_sticky_cuda_error(result: CaseResult) -> bool:
    """An ``error`` on a CUDA device whose reason is one of the errors that poison the context."""
    reason = (result.reason or "").lower()
    return (result.status is Status.ERROR and result.case.device.startswith("cuda")
            and any(m.lower() in reason for m in STICKY_CUDA_MESSAGES))  # fmt: skip


def describe_exit(returncode: int | None) -> str:
    """``killed by SIGABRT`` or ``exited with status 3``: how the worker ended."""
    if returncode is None:
        return "closed its output"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


#: What a worker's log may end with that says nothing of why it died: nanobind's (Triton's bindings)
#: report of objects alive at exit.
EXIT_NOISE: tuple[str, ...] = ("nanobind:", "- leaked", "See https://nanobind")


def log_hint(text: str) -> str:
    """The line of a dead worker's log that best says why: faulthandler's "Fatal Python error", else
    the exception line that ends its last traceback, else its last line that is not exit noise."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    fatal = [ln.strip() for ln in lines if ln.startswith("Fatal Python error")]
    if fatal:
        return fatal[0]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    if starts:  # the first unindented line after the last traceback's frames is its exception
        after = [ln for ln in lines[starts[-1] + 1:] if not ln.startswith((" ", "\t"))]
        if after:
            return after[0].strip()
    plain = [ln.strip() for ln in lines if not ln.strip().startswith(EXIT_NOISE)]
    return plain[-1] if plain else ""


class WorkerFailure(Exception):
    """The worker gave no row: ``status`` is crashed or timeout; the message is the reason."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Worker:
    """One child process that runs cases until it is closed, or crashes or hangs (then it is dead)."""

    def __init__(self, log: Path, startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        self.log = log
        # The child sees the parent's import path (as multiprocessing's spawn does), so variants
        # registered by modules or plugins the parent can import are found there too.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p or os.getcwd() for p in sys.path))
        with log.open("ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "harness._worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=stderr, env=env, text=True, encoding="utf-8", bufsize=1,
            )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name=f"worker-{self.proc.pid}", daemon=True).start()
        ready = self._receive(startup_timeout_s, log_from=0, what="start")
        if "ready" not in ready:
            self.kill()
            raise WorkerFailure(Status.CRASHED, f"worker process said {ready!r} instead of ready")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed here, by its only reader, once the worker has gone
            for line in self.proc.stdout:
                self.lines.put(line)
        self.lines.put(None)

    def _log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def _log_hint(self, start: int) -> str:
        """The line of the worker's log since ``start`` that best says what killed it."""
        try:
            with self.log.open("rb") as f:
                f.seek(start)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return log_hint(text)[:200]

    def _receive(self, timeout_s: float, log_from: int, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.0)) if left > 0 else self.lines.get_nowait()
            except queue.Empty:
                self.kill()
                reason = f"no result within {timeout_s:g} s; the worker was killed"
                raise WorkerFailure(Status.TIMEOUT, reason) from None
            if line is None:
                code = self.proc.wait()
                hint = self._log_hint(log_from)
                prefix = "worker process " if what == "run" else "worker process failed to start: "
                raise WorkerFailure(Status.CRASHED, f"{prefix}{describe_exit(code)}" + (f" ({hint})" if hint else ""))
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError:  # cut off: the worker died writing it (killed, out of memory)
                    try:
                        code: int | None = self.proc.wait(timeout=2.0)  # its end may lag the line's
                    except subprocess.TimeoutExpired:
                        code = None
                    self.kill()
                    how = describe_exit(code) if code is not None else "was killed, still running"
                    hint = self._log_hint(log_from)
                    raise WorkerFailure(Status.CRASHED, f"worker process sent a reply that is not whole JSON "
                                        f"({len(line)} characters) and {how}"
                                        + (f" ({hint})" if hint else "")) from None

    def run(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """The row for ``request``; ``WorkerFailure`` when the worker dies or overruns ``timeout_s``."""
        start = self._log_size()
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died between cases: _receive reports how
        return dict(self._receive(timeout_s, start, "run")["row"])

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass  # a broken pipe to a dead worker

    def close(self, grace_s: float = 10.0) -> None:
        """Ask politely (close stdin), then kill."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=grace_s)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()


class CaseExecutor:
    """Runs each case where it is safe (see the module docstring) and returns its row, always.

    A context manager: leaving it closes the worker, on Ctrl-C too. While it is entered, the objects
    that existed before the sweep (torch, the variants, every imported module: some 250,000) are
    frozen out of the garbage collector's reach (``gc.freeze``): each case collects garbage twice
    (``oom.release_memory``, the memory pass), and walking them cost 0.2 s a collection, 16% of the
    default CPU sweep. What survives a case's last collection (modules it imported, compiled-code
    caches) is long-lived too and is frozen after it. Leaving unfreezes them all.
    """

    def __init__(self, cfg: SweepConfig, registry: dict[str, Variant], clock: Clock | None, cache: str,
                 trace_dir: Path | None = None, log_dir: Path | None = None,
                 peak_bytes_per_s: float | None = None) -> None:
        self.cfg = cfg
        self.registry = registry
        self.clock = clock
        self.cache = cache
        self.trace_dir = trace_dir
        self.peak_bytes_per_s = peak_bytes_per_s
        self.measures = metric_set(peak_bytes_per_s, trace_dir)
        self.inputs = SharedInputs()  # a configuration's variants run in a row: one draw for them all
        self._froze = False
        self.timeout_s = cfg.case_timeout or DEFAULT_CASE_TIMEOUT_S
        self.workers: dict[int, Worker] = {}
        self.isolate_all = cfg.isolate
        self._own_log = log_dir is None
        if log_dir is None:
            fd, name = tempfile.mkstemp(prefix="harness-workers-", suffix=".log")
            os.close(fd)
            self.log = Path(name)
        else:
            self.log = log_dir / WORKERS_LOG

    def __enter__(self) -> CaseExecutor:
        gc.collect()  # what is garbage now is collected, not frozen
        gc.freeze()
        self._froze = True
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close(abort=kind is not None)

    def close(self, abort: bool = False) -> None:
        """Let the workers finish and exit; on ``abort`` (a second Ctrl-C, an error) kill them at once."""
        if self._froze:
            gc.unfreeze()
            self._froze = False
        for worker in self.workers.values():
            if abort:
                worker.kill()
            else:
                worker.close()
        self.workers = {}
        if self._own_log:
            self.log.unlink(missing_ok=True)

    def isolated(self, variant: Variant) -> bool:
        return self.isolate_all or tags_of(variant).isolate

    def run(self, case: Case) -> CaseResult:
        """The case's result; with ``oom_retry``, at smaller batches until it fits."""
        if self.cfg.processes > 1 and self.runnable(case):
            return next(self.rounds([case]))
        return oom.run_with_retry(self.run_once, case) if self.cfg.oom_retry else self.run_once(case)

    def run_all(self, cases: list[Case], stop: Callable[[], bool] = lambda: False,
                starting: Callable[[str], object] = lambda label: None) -> Iterator[CaseResult]:
        """Each case's result as it is finished, until ``stop()`` says the sweep ends; ``starting``
        is told what is measured next. With ``processes`` above 1, each configuration's variants
        are measured together, in rounds (``rounds``)."""
        if self.cfg.processes == 1:
            for case in cases:
                if stop():
                    return
                starting(case.label)
                yield self.run(case)
            return
        for group in configurations(cases):
            yield from self.rounds(group, stop, starting)

    def rounds(self, cases: list[Case], stop: Callable[[], bool] = lambda: False,
               starting: Callable[[str], object] = lambda label: None) -> Iterator[CaseResult]:
        """The cases of one configuration measured in ``processes`` rounds, their samples pooled
        (``record.pool``). Round r runs each case still measured in worker r with a ``processes``-th
        of the time budget, starting one case later than round r-1. Measured one case after the
        other, each variant took all its samples within its own few seconds, and a machine that
        drifted between them (another tenant, a clock stepping down) moved one variant and not the
        next, which no ratio between them cancels (``compare --relative-to``): a CPU sweep of
        unchanged code read one case twice as slow as eager that it had matched the day before.
        Interleaved, drift slower than a round touches every variant alike: between runs of the
        same day a case's ratio to eager moved a median 10% instead of 16-22%
        (``results/baselines/noise-cpu/judge_rounds.py``).

        A case is yielded once its last round is done, or as soon as one fails (one failing process
        is enough to distrust it); ``--oom-retry`` halves the batch in the first round and the
        later ones run at the batch that fitted. The cases not finished when ``stop()`` turns true
        are not yielded: their samples are partial, and ``--resume`` measures them again."""
        k = self.cfg.processes
        policy = replace(self.cfg.timing, max_time_s=self.cfg.timing.max_time_s / k)
        taken: dict[int, list[CaseResult]] = {}  # each measured case's rounds so far, by its place
        in_first = lambda c: self._in_worker(c, *self._variant(c), 0, policy)  # noqa: E731
        for i, case in enumerate(cases):
            if stop():
                return
            if not self.runnable(case):
                starting(case.label)
                yield self.run_once(case)
                continue
            starting(f"{case.label} · process 1/{k}")
            first = oom.run_with_retry(in_first, case) if self.cfg.oom_retry else in_first(case)
            if first.status is not Status.OK:
                yield pool([first])
                continue
            taken[i] = [first]
        for r in range(1, k):
            order = list(taken)
            for i in order[r % len(order):] + order[:r % len(order)] if order else []:
                if stop():
                    return
                starting(f"{cases[i].label} · process {r + 1}/{k}")
                fitted = taken[i][0].batch_run  # the batch the first round ran at, after --oom-retry
                at = replace(cases[i], batch=fitted) if fitted is not None else cases[i]
                result = self._in_worker(at, *self._variant(at), r, policy)
                result = replace(result, case=cases[i], batch_run=fitted)
                if result.status is not Status.OK and fitted is not None and fitted != cases[i].batch:
                    # the row's latency fields are empty, its batch_run is kept: say why it differs
                    note = (taken[i][0].reason or "").split(";")[0]
                    result = replace(result, reason=f"{note}; ran at batch {fitted}: {result.reason}")
                taken[i].append(result)
                if result.status is not Status.OK:
                    yield pool(taken.pop(i))
        for i in sorted(taken):
            yield pool(taken[i])

    def runnable(self, case: Case) -> bool:
        """Whether the case is measured at all here (else ``run_once`` makes its skipped row)."""
        variant, explicit = self._variant(case)
        return skip_reason(case, variant, explicit) is None and self.clock is not None

    def _variant(self, case: Case) -> tuple[Variant, bool]:
        """The case's variant, and whether the sweep named it explicitly."""
        return self.registry[case.variant], case.variant in self.cfg.explicit_variants

    def run_once(self, case: Case) -> CaseResult:
        """The case's result from one process: this one, or a worker when it is isolated."""
        variant, explicit = self._variant(case)
        if self.runnable(case) and self.isolated(variant):
            return self._in_worker(case, variant, explicit)
        result = run_case(case, variant, self.clock, self.cfg.timing, self.cfg.seed, explicit, self.cache,
                          self.measures, self.inputs)  # fmt: skip
        if self._froze:
            gc.freeze()  # run_case ended with a full collection: what is left is alive
        if is_sticky_cuda_error(result):
            self.isolate_all = True
            warnings.warn("a sticky CUDA error ended this process's CUDA context; the rest of the sweep runs "
                          "in worker processes", RuntimeWarning, stacklevel=2)  # fmt: skip
            reason = f"sticky CUDA error (later cases run isolated): {result.reason}"
            result = replace(result, status=Status.CRASHED, reason=reason)
        return result

    def request(self, case: Case, variant: Variant, explicit: bool,
                policy: TimingPolicy | None = None) -> dict[str, Any]:
        """What the worker needs to run ``case`` exactly as ``run_case`` would here."""
        timing = asdict(policy or self.cfg.timing)
        return {
            "case": case.as_dict(), "timing": timing, "seed": self.cfg.seed, "explicit": explicit,
            "cache": self.cache, "clock_cache": self.cfg.cache, "threads": self.cfg.threads,
            "trace_dir": None if self.trace_dir is None else str(self.trace_dir),
            "peak_bytes_per_s": self.peak_bytes_per_s,
            "module": getattr(variant.build, "__module__", None),
        }  # fmt: skip

    def _in_worker(self, case: Case, variant: Variant, explicit: bool, slot: int = 0,
                   policy: TimingPolicy | None = None) -> CaseResult:
        """The case's result from worker ``slot`` (started if it is not running)."""
        worker = self.workers.get(slot)
        try:
            if worker is None or not worker.alive:
                worker = self.workers[slot] = Worker(self.log)
            result = CaseResult.from_row(worker.run(self.request(case, variant, explicit, policy), self.timeout_s))
        except WorkerFailure as failure:
            if worker is not None:
                worker.kill()
            self.workers.pop(slot, None)  # the next case gets a fresh one
            threads = self.cfg.threads or torch.get_num_threads()
            return failed(case, failure.status, str(failure), self.measures, threads, self.cache)
        if is_sticky_cuda_error(result):
            worker.close(grace_s=2.0)
            self.workers.pop(slot, None)
            reason = f"sticky CUDA error (worker replaced): {result.reason}"
            result = replace(result, status=Status.CRASHED, reason=reason)
        return result
