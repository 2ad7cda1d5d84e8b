"""GPU telemetry for a timed loop, read from NVML without touching the loop.

``begin()`` runs before the timed loop and ``end(calls)`` after it; nothing runs in between (no
polling thread, no NVML call), so the telemetry cannot disturb the timing. ``end`` reads the
driver's own sample buffers (``nvmlDeviceGetSamples`` with the start timestamp), which the driver
fills whether or not anyone asks, plus the energy counter's difference and a few instantaneous
readings. Without nvidia-ml-py, without a GPU, or on any NVML error, every column is present and
empty: telemetry never fails a case.
"""
from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

NVML_UTILIZATION_MD = """
### What the GPU telemetry columns mean

Telemetry comes from NVML (`nvidia-ml-py`, imported as `pynvml`). Nothing is called inside the
timed loop: before it the harness notes the time and the energy counter, after it reads the
samples the driver recorded in between (`nvmlDeviceGetSamples`) and the energy used since.
The GPU is found by its UUID, so the row reads the GPU that ran the case whatever the numbering
(CUDA counts the fastest GPU first unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`, NVML in bus order); a
MIG instance by its own UUID, for which NVML gives no utilization, so those cells stay empty.

- `gpu_util_mean`, `gpu_util_max` (%): NVML's *GPU utilization* is the share of each sample period
  (1/6 s to 1 s, depending on the GPU) during which **at least one kernel was running**. It is
  not how busy the GPU was: a single tiny kernel on one SM, back to back, reads 100% while almost
  every SM sits idle. Use it to spot gaps (launch overhead, synchronisation, host work: low
  utilization), never as SM occupancy or as a share of peak FLOP/s or bandwidth; for those, see
  `pct_of_peak_bw` or Nsight Compute (or Hopper's GPM metrics, `NVML_GPM_METRIC_SM_UTIL`).
  `mem_util_mean` is the same kind of share for the memory controller (time it was reading or
  writing), not bandwidth used. `gpu_util_samples` says how many samples the means rest on; a
  case shorter than one sample period has none, and the utilization cells stay empty.
- `sm_clock_min_mhz`, `sm_clock_mean_mhz`, `mem_clock_min_mhz`, `mem_clock_mean_mhz`: clock
  samples in the same window. A minimum well below the mean says the clocks dropped during the case.
- `power_mean_w`: mean of the power samples; without samples, the energy used divided by the
  window's length. `energy_per_call_j`: the energy counter's difference over the window divided
  by the calls made in it (warm-up calls and, in `cold` cache mode, the L2 flushes between calls
  included, so compare it between variants of one run, not as the kernel's own energy).
- `temperature_c`: the GPU's temperature right after the loop.
- `throttled`, `throttle_reasons`: the clock-event reasons NVML reported right before and right
  after the loop (`nvmlDeviceGetCurrentClocksEventReasons`), other than "GPU idle", e.g.
  `sw_power_cap`, `hw_slowdown`, `sw_thermal_slowdown`, `hw_thermal_slowdown`; plus
  `power_violation` / `thermal_violation` when the driver's violation timers advanced during the
  loop. Timings from a throttled case are slower than the GPU can run.

Without a GPU, without `nvidia-ml-py`, or when NVML fails, these columns are empty.
"""

#: Columns :meth:`TelemetryStats.as_row` fills.
TELEMETRY_COLUMNS: tuple[str, ...] = (
    "gpu_util_mean", "gpu_util_max", "gpu_util_samples", "mem_util_mean",
    "sm_clock_min_mhz", "sm_clock_mean_mhz", "mem_clock_min_mhz", "mem_clock_mean_mhz",
    "power_mean_w", "energy_per_call_j", "temperature_c", "throttled", "throttle_reasons",
)

#: nvmlClocksEventReason* bits (nvml.h). Bit 0x1 (GPU idle) is not a throttle and is ignored.
IDLE_BIT = 0x1
REASON_BITS: dict[int, str] = {
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}

# NVML enums, in case a (fake or old) module lacks the names.
_SAMPLES = {"power": 0, "gpu_util": 1, "mem_util": 2, "sm_clock": 5, "mem_clock": 6}
_VALUE_FIELDS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
_PERF_POLICY = {"power_violation": 0, "thermal_violation": 1}
_NVML_ERROR_NOT_FOUND = 6
_TEMPERATURE_GPU = 0


@dataclass(frozen=True)
class TelemetryStats:
    """GPU telemetry over one timed loop; None (or "") where it could not be read."""

    gpu_util_mean: float | None = None
    gpu_util_max: float | None = None
    gpu_util_samples: int | None = None
    mem_util_mean: float | None = None
    sm_clock_min_mhz: float | None = None
    sm_clock_mean_mhz: float | None = None
    mem_clock_min_mhz: float | None = None
    mem_clock_mean_mhz: float | None = None
    power_mean_w: float | None = None
    energy_per_call_j: float | None = None
    temperature_c: float | None = None
    #: True when a reason other than idle was seen, False when none was, None when unknown.
    throttled: bool | None = None
    throttle_reasons: str = ""
    #: Why the columns are empty (no NVML, no GPU, an NVML error), else None. Not a row column.
    error: str | None = None

    def as_row(self) -> dict[str, object]:
        """The row's telemetry columns."""
        d = asdict(self)
        return {c: d[c] for c in TELEMETRY_COLUMNS}


def reason_names(mask: int) -> list[str]:
    """Names of the clock-event reasons in ``mask``, GPU idle left out, unknown bits in hex."""
    names = [name for bit, name in REASON_BITS.items() if mask & bit]
    unknown = mask & ~IDLE_BIT & ~sum(REASON_BITS)
    if unknown:
        names.append(f"unknown_0x{unknown:x}")
    return names


def _now_us() -> int:
    """Wall-clock microseconds: the time base of NVML's sample timestamps."""
    return time.time_ns() // 1000


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


class Telemetry:
    """One NVML session for a run: ``begin(device)`` before each timed loop, ``end(calls)`` after.

    ``nvml`` stands in for the ``pynvml`` module (tests pass a fake); by default ``pynvml`` is
    imported on the first ``begin``. NVML is initialised once and shut down by :meth:`close`.
    """

    def __init__(self, nvml: ModuleType | Any = None, now_us: Callable[[], int] = _now_us) -> None:
        self._nvml = nvml
        self._now_us = now_us
        self._initialised = False
        self._error: str | None = None
        self._handle: Any = None
        self._since_us: int | None = None
        self._energy_mj: int | None = None
        self._violations: dict[str, int] = {}
        self._reasons_before: int | None = None
        self._begin_error: str | None = None

    # -- session ------------------------------------------------------------------------------

    def _init(self) -> bool:
        if self._initialised:
            return True
        if self._error is not None:
            return False
        try:
            if self._nvml is None:
                import pynvml  # nvidia-ml-py

                self._nvml = pynvml
            self._nvml.nvmlInit()
        except ImportError:
            self._error = "nvidia-ml-py (pynvml) is not installed"
            return False
        except Exception as exc:  # noqa: BLE001 - no driver, no GPU, any NVML error
            self._error = f"NVML init failed: {exc}"
            return False
        self._initialised = True
        return True

    def close(self) -> None:
        """Shut NVML down (once, if it was initialised)."""
        if self._initialised:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
            self._initialised = False

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one timed loop -----------------------------------------------------------------------

    def begin(self, device: int | str = 0) -> None:
        """Before the timed loop: pick the GPU (NVML index or ``GPU-``/``MIG-`` UUID), note the time
        and the energy counter. Never raises."""
        self._handle, self._since_us, self._energy_mj = None, None, None
        self._violations, self._reasons_before = {}, None
        if not self._init():
            return
        nv = self._nvml
        try:
            if isinstance(device, str) and device.startswith(("GPU-", "MIG-")):
                self._handle = nv.nvmlDeviceGetHandleByUUID(device)
            else:
                self._handle = nv.nvmlDeviceGetHandleByIndex(int(device))
        except Exception as exc:  # noqa: BLE001
            self._handle = None
            self._begin_error = f"no NVML device {device!r}: {exc}"
            return
        self._begin_error = None
        self._energy_mj = self._try(lambda: int(nv.nvmlDeviceGetTotalEnergyConsumption(self._handle)))
        self._reasons_before = self._reasons_mask()
        for name, policy in _PERF_POLICY.items():
            viol = self._try(lambda p=policy: nv.nvmlDeviceGetViolationStatus(self._handle, p))
            if viol is not None:
                self._violations[name] = int(viol.violationTime)
        # Last, so that nothing done in begin() falls inside the window.
        self._since_us = self._now_us()

    def end(self, calls: int) -> TelemetryStats:
        """After the timed loop of ``calls`` calls: read what the driver recorded since ``begin``."""
        if not self._initialised:
            return TelemetryStats(error=self._error or "begin() was not called")
        if self._handle is None or self._since_us is None:
            return TelemetryStats(error=self._begin_error or "begin() was not called")
        nv, h, since = self._nvml, self._handle, self._since_us
        end_us = self._now_us()
        window_s = max(end_us - since, 0) / 1e6

        util = self._samples("gpu_util")
        mem_util = self._samples("mem_util")
        sm_clock = self._samples("sm_clock")
        mem_clock = self._samples("mem_clock")
        power_w = [v / 1000.0 for v in self._samples("power")]  # samples are in mW

        energy_j: float | None = None
        if self._energy_mj is not None:
            now_mj = self._try(lambda: int(nv.nvmlDeviceGetTotalEnergyConsumption(h)))
            if now_mj is not None and now_mj >= self._energy_mj:
                energy_j = (now_mj - self._energy_mj) / 1000.0
        power_mean = _mean(power_w)
        if power_mean is None and energy_j is not None and window_s > 0:
            power_mean = energy_j / window_s

        temperature = self._try(lambda: float(nv.nvmlDeviceGetTemperature(h, getattr(
            nv, "NVML_TEMPERATURE_GPU", _TEMPERATURE_GPU))))

        reasons_after = self._reasons_mask()
        masks = [m for m in (self._reasons_before, reasons_after) if m is not None]
        names = reason_names(_or(masks)) if masks else []
        for name, before in self._violations.items():
            viol = self._try(lambda p=_PERF_POLICY[name]: nv.nvmlDeviceGetViolationStatus(h, p))
            if viol is not None and int(viol.violationTime) > before:
                names.append(name)
        known = bool(masks) or bool(self._violations)

        self._handle, self._since_us = None, None
        return TelemetryStats(
            gpu_util_mean=_mean(util),
            gpu_util_max=max(util) if util else None,
            gpu_util_samples=len(util),
            mem_util_mean=_mean(mem_util),
            sm_clock_min_mhz=min(sm_clock) if sm_clock else None,
            sm_clock_mean_mhz=_mean(sm_clock),
            mem_clock_min_mhz=min(mem_clock) if mem_clock else None,
            mem_clock_mean_mhz=_mean(mem_clock),
            power_mean_w=power_mean,
            energy_per_call_j=energy_j / calls if energy_j is not None and calls > 0 else None,
            temperature_c=temperature,
            throttled=bool(names) if known else None,
            throttle_reasons=", ".join(names),
        )

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _try(read: Callable[[], Any]) -> Any:
        """One NVML reading, or None when the GPU or driver does not support it."""
        try:
            return read()
        except Exception:  # noqa: BLE001 - NVMLError_NotSupported and friends
            return None

    def _reasons_mask(self) -> int | None:
        nv, h = self._nvml, self._handle
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            fn = getattr(nv, name, None)
            if fn is None:
                continue
            mask = self._try(lambda f=fn: int(f(h)))
            if mask is not None:
                return mask
        return None

    def _samples(self, kind: str) -> list[float]:
        """Values of one sample buffer recorded after ``begin``; [] when there are none or no support."""
        nv = self._nvml
        sample_type = getattr(nv, f"NVML_{_SAMPLE_NAMES[kind]}", _SAMPLES[kind])
        try:
            value_type, samples = nv.nvmlDeviceGetSamples(self._handle, sample_type, self._since_us)
        except Exception:  # noqa: BLE001 - NVML_ERROR_NOT_FOUND when no sample fell in the window
            return []
        field = _VALUE_FIELDS.get(int(value_type), "dVal")
        values = []
        for s in samples:
            if int(s.timeStamp) <= self._since_us:  # type: ignore[operator]
                continue
            values.append(float(getattr(s.sampleValue, field)))
        return values


_SAMPLE_NAMES = {
    "power": "TOTAL_POWER_SAMPLES",
    "gpu_util": "GPU_UTILIZATION_SAMPLES",
    "mem_util": "MEMORY_UTILIZATION_SAMPLES",
    "sm_clock": "PROCESSOR_CLK_SAMPLES",
    "mem_clock": "MEMORY_CLK_SAMPLES",
}


def _or(masks: Sequence[int]) -> int:
    out = 0
    for m in masks:
        out |= m
    return out


#: How CUDA prints a device's UUID (``cudaDeviceProp.uuid``); NVML names the same GPU ``GPU-`` + it.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def nvml_device_id(device: Any) -> int | str:
    """The NVML id of a torch CUDA device: a MIG instance's own UUID (NVML gives it no utilization,
    so its columns stay empty rather than read the whole GPU, or another one); else the GPU's UUID
    as CUDA reports it, which names the same GPU whatever the numbering (CUDA counts the fastest GPU
    first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, NVML in bus order, and torch's index helper
    follows neither); else its index as NVML numbers it, falling back to the CUDA index."""
    import torch

    device = torch.device(device)
    index = device.index if device.index is not None else 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if index < len(visible) and visible[index].startswith("MIG-"):  # torch's helper maps these to GPU 0
        return visible[index]
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid).lower()
    except Exception:  # noqa: BLE001 - no such device, or a build without the property
        uuid = ""
    if _UUID.fullmatch(uuid):
        return f"GPU-{uuid}"
    try:
        return int(torch.cuda._get_nvml_device_index(index))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - private helper; absent or failing on some builds
        return index


def empty(reason: str | None = None) -> TelemetryStats:
    """The telemetry columns of a row without telemetry (CPU run, skipped case)."""
    return TelemetryStats(error=reason)
