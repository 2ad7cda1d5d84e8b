"""The runner: for each case, build the variant, check it against float64, then time it.

A case never ends the sweep. Whatever goes wrong becomes the row's ``status`` and ``reason``:
``skipped`` (unsupported or unavailable here), ``mismatch`` (wrong numbers: not timed),
``oom``, or ``error`` (any other exception).

Every row the runner makes says where the case's time went (``record.Phases``: setup, first call,
check, timing, memory, other metrics, FLOPs, total). Work that every variant of a configuration
repeats is done once: the input and cotangent are drawn once (``SharedInputs``) and FLOPs counted
once (``metrics.Flops``), by objects the run owns.
"""
from __future__ import annotations

import contextlib
import statistics
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch

from harness import interrupts
from harness.measure import correctness
from harness.measure.correctness import Check, Expected, Outcome, Trial, expected_of
from harness.measure.figures import Figures
from harness.measure.memory import graph_pool_bytes
from harness.measure.metrics import MetricSet, Timed, metric_set
from harness.measure.timing import Clock, CpuClock, Timing, TimingPolicy, measure
from harness.results.record import PHASE_COLUMNS, CaseResult, FirstCall, Phases, Status
from harness.sweep.cases import Case
from harness.sweep.network import network_subject
from harness.sweep.oom import check_host_memory, is_out_of_memory, release_memory
from harness.sweep.process_state import ProcessState
from harness.sweep.subject import Fn, SharedInputs, Subject, block_subject
from variants.registry import Variant
from variants.tags import bias_unsupported, tags_of

#: The key under which a failed case's result carries its traceback, from the runner to the run
#: folder's errors.log (never into a row).
TRACEBACK = "traceback"


class PhaseTimer:
    """Seconds spent in each phase of one case (``record.Phases``), from its start."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self.now = now
        self.start = now()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = self.now()
        try:
            yield
        finally:
            self.add(name, self.now() - t0)

    def add(self, name: str, seconds: float) -> None:
        """``seconds`` more for ``name`` (``setup``, ``check``, …); a name without a column counts as ``metrics``."""
        column = f"phase_{name}_s" if f"phase_{name}_s" in PHASE_COLUMNS else "phase_metrics_s"
        self.seconds[column] = self.seconds.get(column, 0.0) + seconds

    def phases(self) -> Phases:
        """The phases so far, and the total from the start until now."""
        return Phases(**(self.seconds | {"phase_total_s": self.now() - self.start}))  # type: ignore[arg-type]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def skip_reason(case: Case, variant: Variant, explicit: bool) -> str | None:
    """Why the case is not run at all, or None."""
    if case.context:
        from variants.contexts import get_context

        context = get_context(case.context)
        reason = context.unsupported(case.device, case.mode) or context.unavailable()
        if reason:
            return reason
        if tags_of(variant).replays_graphs(case.device) and context.form != "eager":  # a graph of its own
            return (f"replays a CUDA graph of its own, which torch.compile cannot trace into {context.name}"
                    if context.form == "compile" else f"replays a CUDA graph of its own inside {context.name}'s "
                    "capture: the network's graph holds the block's kernels already, and not every CUDA "
                    "version captures a graph's launch")  # fmt: skip
    reason = variant.unavailable(case.device)
    if reason:
        return reason
    reason = variant.unsupported(case.device, case.dtype, case.mode, case.fusion)
    if reason:
        return reason
    reason = bias_unsupported(variant, case.bias)  # smp's convs always have a bias
    if reason:
        return reason
    if tags_of(variant).interpreted_on_cpu and case.device == "cpu" and not explicit:
        return "runs in the Triton interpreter on CPU (correctness only, not timed); name it explicitly to time it"
    return None


def first_call(fn: Fn, x: torch.Tensor, params: dict[str, torch.Tensor], grad_out: torch.Tensor | None) -> Outcome:
    """Run the variant once, as the timed loop will, and time it (compilation happens here)."""
    t0 = time.perf_counter()
    grads: dict[str, torch.Tensor] = {}
    with torch.no_grad() if grad_out is None else contextlib.nullcontext():
        y = returned_tensor(fn(x))
    # a wrong shape is left to the check, which names it; autograd would only say it cannot go on
    if grad_out is not None and y.shape == grad_out.shape:
        names = ["input", *params]
        values = torch.autograd.grad(y, [x, *params.values()], grad_out, allow_unused=True)
        grads = {n: g for n, g in zip(names, values, strict=True) if g is not None}
    sync(x.device)
    return Outcome(y.detach(), grads, time.perf_counter() - t0)


def returned_tensor(y: object) -> torch.Tensor:
    """What a variant's call returned, which must be a tensor (a tuple read as "'tuple' object has no
    attribute 'detach'")."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"the variant returned {type(y).__name__}, not a tensor")
    return y


def verify(case: Case, variant: Variant, subject: Subject, got: Outcome, seed: int = 0,
           inputs: SharedInputs | None = None) -> Check:
    """The engine's check (``correctness.verify``, sweep policy) of the variant's first call on this
    case; with ``inputs``, against the reference its configuration's first variant computed."""
    trial = Trial(subject.reference, subject.x, subject.x_before, subject.grad_out, subject.output_shape,
                  subject.seed_form, subject.judged, subject.judged_where_they_sit)
    compute = tags_of(variant).dtype_for(case.dtype)
    if inputs is None:
        check = correctness.verify(trial, got, compute)
    else:
        layout = subject.x.is_contiguous()  # a channels_last input rounds the low-precision seed differently

        def expected(names: list[str]) -> Expected:
            make = lambda: expected_of(trial, names, compute)  # noqa: E731
            return inputs.expected(case, seed, (tuple(names), compute, layout), make)

        check = correctness.verify(trial, got, compute, expected=expected)
    if check.passed and subject.parts_check is not None:
        return subject.parts_check(compute) or check
    return check


def mirrored_check(fn: Fn, x: torch.Tensor, first: torch.Tensor, check: Check) -> Check:
    """A second call, on the input mirrored left to right, against the first call's output mirrored
    (scSE pools over the whole image and acts per pixel, so mirroring commutes with it). The first
    call alone let a variant that computes once and hands back that answer be timed, and win. The
    mirrored values are written into ``x`` itself (restored after), as the timed calls reuse it and as
    a training loop's allocator reuses a buffer: an answer kept by the input's identity or address
    fails here too. Both outputs are within the check's limit of float64, so they may differ by twice it."""
    plain = x.detach()  # the same storage: the write is seen through x
    kept = plain.clone()
    try:
        with torch.no_grad():
            plain.copy_(kept.flip(-1))
        # in train mode as the timed calls run it, so that the call checked is the one timed (a graphed
        # form's train graph, a compiled train graph), not an inference form made for the check alone
        with torch.enable_grad() if x.requires_grad else torch.no_grad():
            second = fn(x).detach().flip(-1)
    finally:
        with torch.no_grad():
            plain.copy_(kept)
    err = correctness.normwise_error(second, first)
    limit = 2 * check.tolerance
    if err <= limit:
        return check
    return replace(check, problem=f"a second call, on the input mirrored, differs from the first call mirrored: "
                                  f"error {err:.3g} > {limit:.3g} (an answer kept from an earlier call?)")


def make_step(
    fn: Fn, x: torch.Tensor, params: dict[str, torch.Tensor], grad_out: torch.Tensor | None
) -> Callable[[], object]:
    """The timed call. Train mode differentiates ``(y * grad_out).sum()`` with ``autograd.grad``,
    so no ``.grad`` accumulates between calls and nothing needs clearing inside the timed region."""
    if grad_out is None:
        return lambda: fn(x)
    inputs = [x, *params.values()]
    return lambda: torch.autograd.grad(fn(x), inputs, grad_out, allow_unused=True)


def timed_input(fn: Fn, x: torch.Tensor) -> torch.Tensor:
    """What the timed calls are given: ``x``, or, for a variant that owns its input buffer (a CUDA
    graph's ``static_input``, in train mode a graphed step's, requiring grad as ``x`` does), that
    buffer holding ``x``'s values, as the previous layer of a graphed network would have written it,
    so no copy into it is timed."""
    buffer = getattr(fn, "static_input", None)
    if not isinstance(buffer, torch.Tensor):
        return x
    seen = (buffer.shape, buffer.stride(), buffer.dtype, buffer.device, buffer.requires_grad)
    if seen != (x.shape, x.stride(), x.dtype, x.device, x.requires_grad):
        return x
    with torch.no_grad():  # a buffer requiring grad is a leaf: written outside autograd
        buffer.copy_(x)
    return buffer


def one_line(exc: BaseException) -> str:
    """An exception as one line for a row's ``reason``: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def measure_case(case: Case, variant: Variant, clock: Clock, policy: TimingPolicy, seed: int,
                 measures: MetricSet, inputs: SharedInputs | None = None,
                 timer: PhaseTimer | None = None) -> CaseResult:
    """Check, then time, one case that is known to be runnable; then the metrics that are measured
    after the timed loop (``measures``; none of it inside the loop). ``inputs``: the run's draws,
    shared by a configuration's variants; ``timer`` gets each phase's time."""
    timer = timer or PhaseTimer()
    device = torch.device(case.device)
    train = case.mode == "train"
    with timer.phase("setup"):
        pool_base = graph_pool_bytes(device) if device.type == "cuda" else None  # what the graphs it makes hold
        if case.context:
            subject = network_subject(case, variant, seed, inputs)
        else:
            subject = block_subject(case, variant, seed, inputs)
        fn, x, params, grad_out = subject.fn, subject.x, subject.params, subject.grad_out
        swapped = {"blocks": len(subject.blocks)} if case.context else {}
    if subject.untrainable:
        return CaseResult(case, Status.SKIPPED, subject.untrainable, metrics=swapped)
    with timer.phase("first_call"):
        got = first_call(fn, x, params, grad_out)
        got = Outcome(got.output, subject.checked(got.grads), got.seconds)
    with timer.phase("check"):
        check = verify(case, variant, subject, got, seed, inputs)
        if check.passed and not case.context:  # a network is not mirror-symmetric; its blocks are judged apart
            check = mirrored_check(fn, x, got.output.clone(), check)
    # counted after the check, which may compile too (the unmodified network, for a compiled form)
    graphs_after_first = compiled_graphs(fn) if subject.compiles else None
    # a compiling variant's first call is its compile time, never a latency sample
    first = FirstCall(got.seconds, got.seconds if graphs_after_first is not None else None)
    del got
    if not check.passed:
        return CaseResult(case, Status.MISMATCH, check.problem, check=check, first_call=first, metrics=swapped)
    step = make_step(fn, timed_input(fn, x), params, grad_out)
    with timer.phase("metrics"):
        measures.begin(device)
    spent: dict[str, float] = {}
    try:
        with torch.no_grad() if not train else contextlib.nullcontext():
            with timer.phase("timing"):
                timing, wall, remeasured = time_step(step, clock, policy)
                if graphs_after_first is not None:  # graphs compiled by warm-up and timed calls
                    first = replace(first, recompiles=compiled_graphs(fn) - graphs_after_first)
                calls = sum(t.warmup_calls + len(t.samples_ms) * t.calls_per_sample for t in (timing, wall) if t)
                figures = Figures.of(timing, wall, device.type == "cuda", case.batch, remeasured)
            timed = Timed(case, step, device, calls, figures.stats.median_ms, subject.blocks, pool_base)
            measured = swapped | measures.measured(timed, spent)
    finally:
        measures.close()
        for name, seconds in spent.items():
            timer.add(name, seconds)
    layout = tags_of(variant).memory_format
    if layout != torch.contiguous_format and not case.context:  # after the metrics, so that none of them sees it
        with torch.no_grad() if not train else contextlib.nullcontext(), timer.phase("timing"):
            measured["nchw_input_ms"] = converted_input_ms(fn, x, params, grad_out, layout, clock, policy)
    return CaseResult(case, Status.OK, check=check, first_call=first, figures=figures, metrics=measured)


def converted_input_ms(fn: Fn, x: torch.Tensor, params: dict[str, torch.Tensor], grad_out: torch.Tensor | None,
                       layout: torch.memory_format, clock: Clock, policy: TimingPolicy) -> float:
    """The median time per call of a variant that is timed on input in its own ``layout`` (tag
    ``input_memory_format``), given NCHW input instead, its conversion (and, in train mode, the
    gradient's conversion back) counted: what a network whose tensors are NCHW pays. A short loop
    under the wall-time policy, after the timed one: the answer table reads it to a few percent."""
    nchw = x.detach().contiguous().requires_grad_(x.requires_grad)
    step = make_step(lambda t: fn(t.contiguous(memory_format=layout)), nchw, params, grad_out)
    return statistics.median(measure(step, clock, policy.for_wall()).samples_ms)


def time_step(step: Callable[[], object], clock: Clock, policy: TimingPolicy) -> tuple[Timing, Timing | None, bool]:
    """The primary timing (measured again once if the CPU was starved), then, on CUDA, wall time.

    Wall samples are synchronous calls on an already warm step, under ``TimingPolicy.for_wall``.
    """
    timing = measure(step, clock, policy)
    remeasured = timing.disturbed
    if remeasured:
        timing = measure(step, clock, policy)
    wall = None
    if clock.wall is not None:
        wall = measure(step, clock.wall, policy.for_wall())
    return timing, wall, remeasured


def run_case(case: Case, variant: Variant, clock: Clock | None, policy: TimingPolicy, seed: int,
             explicit: bool = False, cache: str = "cold", measures: MetricSet | None = None,
             inputs: SharedInputs | None = None) -> CaseResult:
    """The finished result of ``case``, whatever happens, with its phases. ``measures``: the run's
    metrics (default: ``metrics.metric_set()``, without a copy bandwidth or profiler traces);
    ``inputs``: the run's draws (default: drawn for this case alone)."""
    timer = PhaseTimer()
    measures = measures or metric_set()
    state = ProcessState.capture()  # what a variant may change for every case after it: set back below
    threads = state.threads
    reason = skip_reason(case, variant, explicit)
    if reason is not None or clock is None:
        result = failed(case, Status.SKIPPED, reason or "no clock for this device", measures, threads, cache, timer)
        return replace(result, phases=timer.phases())
    try:
        check_host_memory(case)  # before anything is allocated: overcommitted memory kills, never raises
        result = measure_case(case, variant, clock, policy, seed, measures, inputs, timer)
        with timer.phase("flops"):
            configured = measures.configured(case)  # FLOPs depend on the configuration only: every row has them
        result = replace(result, threads=threads, cache=cache, metrics=configured | dict(result.metrics))
    except BaseException as exc:  # noqa: BLE001 - one failing case (sys.exit, a raised KeyboardInterrupt, pytest.skip in a variant too) must never end the sweep
        if isinstance(exc, KeyboardInterrupt) and (not interrupts.raised_by_code(exc) or state.handlers_replaced()):
            # Ctrl-C or SIGTERM through the run's handlers (or none installed), or past a handler the
            # variant put in their place: the sweep's to handle
            raise
        status = Status.OOM if is_out_of_memory(exc) else Status.ERROR
        result = failed(case, status, one_line(exc), measures, threads, cache, timer)
        # the whole story for the variant's author, kept out of the row (``store.RunFolder.append_error``)
        result = replace(result, extra=dict(result.extra) | {TRACEBACK: traceback.format_exc()})
    try:
        release_memory(case.device)
    except Exception as exc:  # noqa: BLE001 - after a sticky CUDA error empty_cache raises it too: a row, not the end
        if result.status is Status.OK:
            result = failed(case, Status.ERROR, one_line(exc), measures, threads, cache, timer)
    return replace(kept_settings(result, state), phases=timer.phases()).finished()


def kept_settings(result: CaseResult, state: ProcessState) -> CaseResult:
    """``result`` with what its variant changed of the process's settings (``state``, from before the
    case), which are set back for the next case. The threads column gives the count after the case:
    a count set in the build is what the timing ran on."""
    try:
        after = ProcessState.capture()
        changes = state.changes(after)
        if changes:
            state.restore()
    except Exception as exc:  # noqa: BLE001 - never the end of the sweep, nor the loss of this row
        warnings.warn(f"the process's settings after {result.case.variant} could not be read or set back: "
                      f"{one_line(exc)}", RuntimeWarning, stacklevel=2)  # fmt: skip
        return result
    if not changes:
        return result
    said = "; ".join(changes)
    warnings.warn(f"{result.case.variant} changed the process's settings ({said}); they are set back for the next "
                  "case", RuntimeWarning, stacklevel=2)  # fmt: skip
    threads = after.threads if result.threads is not None else None
    return replace(result, settings_changed=said, threads=threads)


def failed(case: Case, status: Status, reason: str | None, measures: MetricSet, threads: int | None,
           cache: str | None, timer: PhaseTimer | None = None) -> CaseResult:
    """A case that ended without a measurement, with the columns every row has (FLOPs and such);
    ``timer`` gets the time they took."""
    with timer.phase("flops") if timer is not None else contextlib.nullcontext():
        metrics = measures.configured(case)
    return CaseResult.failure(case, status, reason, threads=threads, cache=cache, metrics=metrics)


def compiled_graphs(fn: object) -> int:
    """Graphs compiled so far: for this build when it counts its own, else in the whole process."""
    own = getattr(fn, "compiled_graphs", None)
    if isinstance(own, int):
        return own
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def clock_for(device: str, cache: str) -> Clock:
    """The clock for the run's device, made once per run (the L2 flush buffer is allocated once)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        from harness.measure.torch_stream import make_cuda_clock

        if dev.index is not None:  # the clock's hold and Triton launch on the current device
            torch.cuda.set_device(dev)
        return make_cuda_clock(dev, cache)
    return CpuClock(pool_threads=torch.get_num_threads)
