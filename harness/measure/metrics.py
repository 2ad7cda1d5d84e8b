"""The profiling metrics of a row (issue 5), in the shape the runner needs them.

* :func:`config_columns` -- FLOPs three ways and arithmetic intensity: they depend only on the
  configuration, so every row gets them, skipped and failed ones too (cached per configuration).
* :func:`begin_telemetry` before the timed loop and :func:`after_timing` after it: GPU
  telemetry over the loop, then the peak memory of one more call and, with ``--profile``, a
  profiler trace. Nothing here runs inside the timed loop.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from harness.measure.bandwidth import bytes_min
from harness.measure.flops import FLOP_COLUMNS, arithmetic_intensity, flop_columns
from harness.measure.memory import MEMORY_COLUMNS, measure_memory
from harness.measure.memory import unavailable as no_memory
from harness.measure.profiling import trace_name, write_step_trace
from harness.measure.telemetry import TELEMETRY_COLUMNS, Telemetry, nvml_device_id
from harness.measure.telemetry import empty as no_telemetry
from harness.sweep.cases import Case

#: Every column this module adds, in report order.
METRIC_COLUMNS: tuple[str, ...] = (
    FLOP_COLUMNS + ("arithmetic_intensity",) + MEMORY_COLUMNS + TELEMETRY_COLUMNS + ("trace_file",)
)
TRACES_DIR = "traces"


def config_columns(case: Case) -> dict[str, Any]:
    """FLOP columns and ``arithmetic_intensity`` (analytic_flops / bytes_min, flop per byte)."""
    shape = (case.batch, case.channels, case.height, case.width)
    try:
        cols = dict(flop_columns(shape, case.reduction, case.fusion, case.bias, case.mode))
        moved = bytes_min(case.batch, case.channels, case.height, case.width, case.dtype,
                          case.reduction, case.fusion, case.bias, case.mode)
        cols["arithmetic_intensity"] = arithmetic_intensity(cols["analytic_flops"], moved)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - a metric never fails a case
        cols = dict.fromkeys(FLOP_COLUMNS) | {"arithmetic_intensity": None}
        cols["fvcore_uncounted"] = cols["torch_uncounted"] = f"error: {type(exc).__name__}: {exc}"
    return cols


def begin_telemetry(device: torch.device) -> Telemetry | None:
    """An NVML session started on ``device`` (CUDA only), to be ended by :func:`after_timing`."""
    if device.type != "cuda":
        return None
    telemetry = Telemetry()
    telemetry.begin(nvml_device_id(device))
    return telemetry


def trace_path(trace_dir: Path, case: Case) -> Path:
    """Where ``--profile`` writes the case's Chrome trace."""
    label = case.label + (" bias" if case.bias else "")
    return Path(trace_dir) / trace_name(label)


def after_timing(
    step: Callable[[], object],
    device: torch.device,
    telemetry: Telemetry | None,
    calls: int,
    trace: Path | None = None,
) -> dict[str, Any]:
    """Telemetry over the loop just timed (``calls`` calls), then peak memory of one more call,
    then the profiler trace if asked. Call it in the same grad mode as the timed loop."""
    cols: dict[str, Any] = {}
    if telemetry is not None:
        try:
            cols |= telemetry.end(calls).as_row()
        finally:
            telemetry.close()
    else:
        cols |= no_telemetry().as_row()
    try:
        cols |= measure_memory(step, device, warmup=0).as_row()
    except torch.OutOfMemoryError:
        raise
    except Exception:  # noqa: BLE001 - a metric never fails a case
        cols |= no_memory().as_row()
    cols["trace_file"] = None
    if trace is not None:
        try:
            cols["trace_file"] = str(Path(TRACES_DIR) / write_step_trace(step, trace, device, warmup=0).name)
        except Exception as exc:  # noqa: BLE001
            cols["trace_file"] = f"error: {type(exc).__name__}: {exc}"
    return cols
