"""The metrics beside a case's time: each one object with its columns, what it measures and its empty value.

The runner walks a ``MetricSet`` (one per run): every row gets each metric's ``configured`` values
(what the configuration alone decides, such as FLOPs), ``begin`` runs just before the timed loop
and ``measured`` just after it. Nothing here runs inside the timed loop.

A new metric is a class with ``columns``, ``configured``, ``begin`` and ``measured``, added to the
list in :func:`metric_set`; its columns then appear in every results file and the CSV. Its optional
``phase`` names the row's phase column its ``measured`` time is added to (default ``metrics``).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from harness.measure.bandwidth import BANDWIDTH_COLUMNS, bandwidth_columns, bytes_min
from harness.measure.flops import FLOP_COLUMNS, FlopMemo, arithmetic_intensity
from harness.measure.memory import MEMORY_COLUMNS, measure_memory
from harness.measure.memory import unavailable as no_memory
from harness.measure.profiling import trace_name, write_step_trace
from harness.measure.telemetry import TELEMETRY_COLUMNS, Telemetry, nvml_device_id
from harness.measure.telemetry import empty as no_telemetry
from harness.sweep.cases import Case

TRACES_DIR = "traces"
#: The phase a metric's ``measured`` time counts towards when it names none.
DEFAULT_PHASE = "metrics"


@dataclass(frozen=True)
class Timed:
    """What a metric may look at once the case is timed."""

    case: Case
    #: The timed call (train mode: forward and backward), in the timed loop's grad mode.
    step: Callable[[], object]
    device: torch.device
    #: Calls the timed loop made (warm-up included): the telemetry window's work.
    calls: int
    median_ms: float
    #: The scSE blocks inside a network's step (a context case); empty for a block alone.
    blocks: tuple[torch.nn.Module, ...] = ()
    #: CUDA only: the bytes CUDA graph pools held before the case was set up (``memory.graph_pool_bytes``).
    graph_pool_base: int | None = None


class Metric(Protocol):
    """One metric of a row."""

    #: Every column it fills, in report order.
    columns: tuple[str, ...]

    def configured(self, case: Case) -> dict[str, Any]:
        """What the configuration alone decides: every row gets it, skipped and failed ones too."""
        ...

    def begin(self, device: torch.device) -> None:
        """Just before the timed loop."""
        ...

    def measured(self, timed: Timed) -> dict[str, Any]:
        """After the timed loop; a metric that cannot measure gives its empty values, never raises
        (except for out of memory, which is the case's result)."""
        ...


class Flops:
    """FLOPs counted three ways, and the arithmetic intensity (analytic FLOPs per byte that must move).

    Counted once per configuration and mode (``FlopMemo``), however many variants share it.
    """

    columns = FLOP_COLUMNS + ("arithmetic_intensity",)

    def __init__(self) -> None:
        self.counts = FlopMemo()

    def configured(self, case: Case) -> dict[str, Any]:
        shape = (case.batch, case.channels, case.height, case.width)
        try:
            if case.context:  # a network: counted on the unmodified network, with no analytic count
                return self.counts.network_columns(case.context, shape, case.mode) | {"arithmetic_intensity": None}
            cols = self.counts.columns(shape, case.reduction, case.fusion, case.bias, case.mode)
            moved = bytes_min(case)
            cols["arithmetic_intensity"] = arithmetic_intensity(cols["analytic_flops"], moved)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - a metric never fails a case
            cols = dict.fromkeys(self.columns)
            cols["fvcore_uncounted"] = cols["torch_uncounted"] = f"error: {type(exc).__name__}: {exc}"
        return cols

    def begin(self, device: torch.device) -> None:
        pass

    def measured(self, timed: Timed) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Bandwidth:
    """The bytes a case must move, and the rate its median achieves against the device's copy bandwidth."""

    #: The run's measured copy bandwidth (``bandwidth.measure_copy_bandwidth``), bytes/s.
    peak_bytes_per_s: float | None = None
    columns = BANDWIDTH_COLUMNS

    def configured(self, case: Case) -> dict[str, Any]:
        return bandwidth_columns(case) if not case.context else dict.fromkeys(self.columns)

    def begin(self, device: torch.device) -> None:
        pass

    def measured(self, timed: Timed) -> dict[str, Any]:
        if timed.case.context:  # a network's bytes are not the block's formula: not counted
            return dict.fromkeys(self.columns)
        return bandwidth_columns(timed.case, timed.median_ms, self.peak_bytes_per_s)


class BlockShare:
    """In a network (a context case): the network and its form, how many scSE blocks were swapped
    (set by the runner) and the share of the network's time they take, from the profiler
    (``block_share``). An eager network only: compiled or graphed, the blocks' kernels are fused or
    replayed with the rest."""

    columns = ("network", "form", "blocks", "scse_share")

    def configured(self, case: Case) -> dict[str, Any]:
        if not case.context:
            return {"network": None, "form": None}
        from variants.contexts import get_context

        context = get_context(case.context)
        return {"network": context.network_name, "form": context.form}

    def begin(self, device: torch.device) -> None:
        pass

    def measured(self, timed: Timed) -> dict[str, Any]:
        empty = {"blocks": len(timed.blocks) or None, "scse_share": None}
        if not timed.blocks:
            return empty
        from variants.contexts import get_context

        if get_context(timed.case.context).form != "eager":
            return empty
        try:
            from harness.measure.block_share import block_share

            return empty | {"scse_share": block_share(timed.step, timed.blocks, timed.device)}
        except torch.OutOfMemoryError:
            raise
        except Exception:  # noqa: BLE001 - a metric never fails a case
            return empty


class GpuTelemetry:
    """NVML's view of the GPU over the timed loop: utilisation, clocks, power, throttling (CUDA only)."""

    columns = TELEMETRY_COLUMNS

    def __init__(self) -> None:
        self.session: Telemetry | None = None

    def configured(self, case: Case) -> dict[str, Any]:
        return {}

    def begin(self, device: torch.device) -> None:
        self.close()
        if device.type == "cuda":
            self.session = Telemetry()
            self.session.begin(nvml_device_id(device))

    def measured(self, timed: Timed) -> dict[str, Any]:
        if self.session is None:
            return no_telemetry().as_row()
        try:
            return self.session.end(timed.calls).as_row()
        finally:
            self.close()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


class PeakMemory:
    """The peak memory of one more call after the loop."""

    columns = MEMORY_COLUMNS
    phase = "memory"

    def configured(self, case: Case) -> dict[str, Any]:
        return {}

    def begin(self, device: torch.device) -> None:
        pass

    def measured(self, timed: Timed) -> dict[str, Any]:
        try:
            return measure_memory(timed.step, timed.device, warmup=0, pool_base=timed.graph_pool_base).as_row()
        except Exception as exc:  # noqa: BLE001 - a metric never fails a case, but running out of memory
            from harness.sweep.oom import is_out_of_memory  # does (a CPU one is a RuntimeError): the step

            if is_out_of_memory(exc):  # no longer fits, as it would not have in the timed loop
                raise
            return no_memory().as_row()


@dataclass(frozen=True)
class ProfilerTrace:
    """With ``--profile``: a torch.profiler Chrome trace of a few calls, written to ``folder``."""

    folder: Path | None = None
    columns = ("trace_file",)

    def configured(self, case: Case) -> dict[str, Any]:
        return {}

    def begin(self, device: torch.device) -> None:
        pass

    def measured(self, timed: Timed) -> dict[str, Any]:
        if self.folder is None:
            return {"trace_file": None}
        label = timed.case.label + (" bias" if timed.case.bias else "")
        try:
            written = write_step_trace(timed.step, Path(self.folder) / trace_name(label), timed.device, warmup=0)
        except Exception as exc:  # noqa: BLE001
            return {"trace_file": f"error: {type(exc).__name__}: {exc}"}
        return {"trace_file": str(Path(TRACES_DIR) / written.name)}


@dataclass(frozen=True)
class MetricSet:
    """The metrics of a run, in the order they measure (telemetry ends before memory's extra call)."""

    metrics: tuple[Metric, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for m in self.metrics for c in m.columns)

    def configured(self, case: Case) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for metric in self.metrics:
            out |= metric.configured(case)
        return out

    def begin(self, device: torch.device) -> None:
        for metric in self.metrics:
            metric.begin(device)

    def measured(self, timed: Timed, spent: dict[str, float] | None = None) -> dict[str, Any]:
        """Every metric's columns after the loop; ``spent`` (if given) gets each metric's seconds
        added under its ``phase`` (``memory`` for the extra call, ``metrics`` for the rest)."""
        out: dict[str, Any] = {}
        try:
            for metric in self.metrics:
                t0 = time.perf_counter()
                out |= metric.measured(timed)
                if spent is not None:
                    phase = getattr(metric, "phase", DEFAULT_PHASE)
                    spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - t0
        finally:
            self.close()
        return out

    def close(self) -> None:
        """End whatever a metric began (a failed loop leaves no NVML session open)."""
        for metric in self.metrics:
            close = getattr(metric, "close", None)
            if close is not None:
                close()


def metric_set(peak_bytes_per_s: float | None = None, trace_folder: Path | None = None) -> MetricSet:
    """The metrics every run measures."""
    return MetricSet((Flops(), Bandwidth(peak_bytes_per_s), GpuTelemetry(), PeakMemory(),
                      ProfilerTrace(trace_folder), BlockShare()))  # fmt: skip


#: Every column the metrics add, in report order.
METRIC_COLUMNS: tuple[str, ...] = metric_set().columns
