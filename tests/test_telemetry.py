"""GPU telemetry logic against a fake NVML module: what is read, when, and what happens without it."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from harness.measure.telemetry import (
    TELEMETRY_COLUMNS,
    Telemetry,
    TelemetryStats,
    empty,
    reason_names,
)

T0 = 1_700_000_000_000_000  # µs: the fake wall clock at begin()


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def sample(ts: int, value: float, field_name: str = "uiVal") -> SimpleNamespace:
    return SimpleNamespace(timeStamp=ts, sampleValue=SimpleNamespace(**{field_name: value}))


@dataclass
class FakeNVML:
    """The parts of ``pynvml`` the harness uses. Records every call with the fake time it was made."""

    now: list[int]
    samples: dict[int, list[SimpleNamespace]] = field(default_factory=dict)
    energy_mj: list[int] = field(default_factory=lambda: [5_000_000, 5_012_000])
    reasons: list[int] = field(default_factory=lambda: [0x1, 0x1])
    violations: dict[int, list[int]] = field(default_factory=dict)
    temperature: int = 61
    fail: set[str] = field(default_factory=set)
    calls: list[tuple[str, int]] = field(default_factory=list)

    NVMLError = FakeNVMLError
    NVML_TOTAL_POWER_SAMPLES = 0
    NVML_GPU_UTILIZATION_SAMPLES = 1
    NVML_MEMORY_UTILIZATION_SAMPLES = 2
    NVML_PROCESSOR_CLK_SAMPLES = 5
    NVML_MEMORY_CLK_SAMPLES = 6
    NVML_TEMPERATURE_GPU = 0

    def _call(self, name: str) -> None:
        self.calls.append((name, self.now[0]))
        if name in self.fail:
            raise FakeNVMLError(3)

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        self._call("nvmlInit")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self._call("nvmlShutdown")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:  # noqa: N802
        self._call("nvmlDeviceGetHandleByIndex")
        return f"handle{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:  # noqa: N802
        self._call("nvmlDeviceGetHandleByUUID")
        return f"handle-{uuid}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:  # noqa: N802
        self._call("nvmlDeviceGetTotalEnergyConsumption")
        return self.energy_mj.pop(0)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: str) -> int:  # noqa: N802
        self._call("nvmlDeviceGetCurrentClocksEventReasons")
        return self.reasons.pop(0)

    def nvmlDeviceGetViolationStatus(self, handle: str, policy: int) -> SimpleNamespace:  # noqa: N802
        self._call("nvmlDeviceGetViolationStatus")
        if policy not in self.violations:
            raise FakeNVMLError(3)  # NOT_SUPPORTED
        return SimpleNamespace(referenceTime=0, violationTime=self.violations[policy].pop(0))

    def nvmlDeviceGetTemperature(self, handle: str, sensor: int) -> int:  # noqa: N802
        self._call("nvmlDeviceGetTemperature")
        return self.temperature

    def nvmlDeviceGetSamples(self, handle: str, kind: int, since: int) -> tuple[int, list[SimpleNamespace]]:  # noqa: N802
        # Deliberately returns every sample, even older ones: the harness must filter by time itself.
        self._call("nvmlDeviceGetSamples")
        if kind not in self.samples:
            raise FakeNVMLError(6)  # NVML_ERROR_NOT_FOUND: no sample in the window
        values = self.samples[kind]
        value_type = 0 if values and hasattr(values[0].sampleValue, "dVal") else 1
        return value_type, list(values)


def make_fake(**kwargs: Any) -> FakeNVML:
    fake = FakeNVML(now=[T0], **kwargs)
    before, inside = T0 - 500_000, T0 + 100_000
    fake.samples = {
        1: [sample(before, 3), sample(inside, 90), sample(inside + 166_000, 100), sample(inside + 332_000, 80)],
        2: [sample(before, 1), sample(inside, 40), sample(inside + 166_000, 50)],
        5: [sample(before, 345), sample(inside, 1980), sample(inside + 20_000, 1755)],
        6: [sample(before, 1593), sample(inside, 2619), sample(inside + 20_000, 2619)],
        0: [sample(before, 70_000), sample(inside, 650_000), sample(inside + 20_000, 700_000)],
    }
    return fake


def run_loop(fake: FakeNVML, telemetry: Telemetry, calls: int, loop_us: int = 1_000_000) -> TelemetryStats:
    telemetry.begin(0)
    fake.now[0] += loop_us  # the timed loop: no NVML call may happen here
    return telemetry.end(calls)


def test_reads_the_driver_buffers_after_the_loop() -> None:
    fake = make_fake()
    tele = Telemetry(nvml=fake, now_us=lambda: fake.now[0])
    stats = run_loop(fake, tele, calls=400)

    assert stats.error is None
    # Only samples after begin() count: the idle 3% sample from before is left out.
    assert stats.gpu_util_mean == pytest.approx(90.0)
    assert stats.gpu_util_max == 100.0
    assert stats.gpu_util_samples == 3
    assert stats.mem_util_mean == pytest.approx(45.0)
    assert stats.sm_clock_min_mhz == 1755 and stats.sm_clock_mean_mhz == pytest.approx(1867.5)
    assert stats.mem_clock_min_mhz == 2619 and stats.mem_clock_mean_mhz == pytest.approx(2619)
    assert stats.power_mean_w == pytest.approx(675.0)  # mW samples → W
    assert stats.energy_per_call_j == pytest.approx(12.0 / 400)  # 12 000 mJ over 400 calls
    assert stats.temperature_c == 61
    assert stats.throttled is False and stats.throttle_reasons == ""  # the idle bit is not a throttle


def test_no_nvml_call_inside_the_timed_loop() -> None:
    fake = make_fake()
    tele = Telemetry(nvml=fake, now_us=lambda: fake.now[0])
    tele.begin(0)
    calls_after_begin = len(fake.calls)
    for _ in range(5):  # the timed loop: the fake clock moves, time passes
        fake.now[0] += 200_000
        time.sleep(0.01)  # a polling thread, if there were one, would call NVML now
    inside = [name for name, _ in fake.calls[calls_after_begin:]]
    assert inside == [], f"NVML called during the loop: {inside}"
    calls_before_end = len(fake.calls)
    tele.end(10)
    assert len(fake.calls) > calls_before_end
    assert all(t == fake.now[0] for _, t in fake.calls[calls_before_end:])


def test_throttle_reasons_are_named_and_idle_is_ignored() -> None:
    fake = make_fake(reasons=[0x1, 0x1 | 0x4 | 0x40])
    stats = run_loop(fake, Telemetry(nvml=fake, now_us=lambda: fake.now[0]), calls=10)
    assert stats.throttled is True
    assert stats.throttle_reasons == "sw_power_cap, hw_thermal_slowdown"
    assert reason_names(0x1) == []
    assert reason_names(0x8 | 0x20) == ["hw_slowdown", "sw_thermal_slowdown"]
    assert reason_names(0x1000) == ["unknown_0x1000"]


def test_violation_timers_that_advance_mark_the_case_throttled() -> None:
    fake = make_fake(violations={0: [1_000, 1_000], 1: [5_000, 9_000]})
    stats = run_loop(fake, Telemetry(nvml=fake, now_us=lambda: fake.now[0]), calls=10)
    assert stats.throttled is True
    assert stats.throttle_reasons == "thermal_violation"


def test_old_driver_throttle_reason_name() -> None:
    fake = make_fake()
    nvml = SimpleNamespace(**{n: getattr(fake, n) for n in dir(fake) if n.startswith(("nvml", "NVML"))})
    del nvml.nvmlDeviceGetCurrentClocksEventReasons
    nvml.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 0x8
    stats = run_loop(fake, Telemetry(nvml=nvml, now_us=lambda: fake.now[0]), calls=10)
    assert stats.throttle_reasons == "hw_slowdown" and stats.throttled is True


def test_no_samples_in_a_short_window_falls_back_to_energy_for_power() -> None:
    fake = make_fake()
    fake.samples = {}
    stats = run_loop(fake, Telemetry(nvml=fake, now_us=lambda: fake.now[0]), calls=100, loop_us=2_000_000)
    assert stats.gpu_util_mean is None and stats.gpu_util_max is None and stats.gpu_util_samples == 0
    assert stats.sm_clock_min_mhz is None
    assert stats.power_mean_w == pytest.approx(12.0 / 2.0)  # 12 J over 2 s
    assert stats.energy_per_call_j == pytest.approx(0.12)


def test_unsupported_readings_leave_their_own_cells_empty() -> None:
    fake = make_fake()
    fake.fail = {"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetTemperature",
                 "nvmlDeviceGetCurrentClocksEventReasons"}
    stats = run_loop(fake, Telemetry(nvml=fake, now_us=lambda: fake.now[0]), calls=10)
    assert stats.energy_per_call_j is None and stats.temperature_c is None
    assert stats.throttled is None and stats.throttle_reasons == ""
    assert stats.gpu_util_mean == pytest.approx(90.0)  # the rest still read
    assert stats.power_mean_w == pytest.approx(675.0)


def test_double_valued_samples() -> None:
    fake = make_fake()
    fake.samples[1] = [sample(T0 + 10, 42.5, "dVal")]
    stats = run_loop(fake, Telemetry(nvml=fake, now_us=lambda: fake.now[0]), calls=1)
    assert stats.gpu_util_mean == 42.5


def test_uuid_picks_the_device_by_uuid() -> None:
    fake = make_fake()
    tele = Telemetry(nvml=fake, now_us=lambda: fake.now[0])
    tele.begin("GPU-1234")
    tele.end(1)
    assert ("nvmlDeviceGetHandleByUUID", T0) in fake.calls


def test_one_init_per_session_and_shutdown_on_close() -> None:
    fake = make_fake(energy_mj=[1, 2, 3, 4], reasons=[0x1] * 4)
    with Telemetry(nvml=fake, now_us=lambda: fake.now[0]) as tele:
        run_loop(fake, tele, calls=1)
        run_loop(fake, tele, calls=1)
    names = [n for n, _ in fake.calls]
    assert names.count("nvmlInit") == 1 and names.count("nvmlShutdown") == 1


EMPTY = {c: None for c in TELEMETRY_COLUMNS} | {"throttle_reasons": ""}


def test_without_pynvml_the_columns_are_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    tele = Telemetry()
    tele.begin(0)
    stats = tele.end(100)
    assert stats.as_row() == EMPTY
    assert "not installed" in str(stats.error)
    tele.close()


def test_pynvml_from_sys_modules_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    tele = Telemetry(now_us=lambda: fake.now[0])
    stats = run_loop(fake, tele, calls=400)
    assert stats.gpu_util_max == 100.0


@pytest.mark.parametrize("failing", ["nvmlInit", "nvmlDeviceGetHandleByIndex"])
def test_nvml_errors_never_raise(failing: str) -> None:
    fake = make_fake()
    fake.fail = {failing}
    tele = Telemetry(nvml=fake, now_us=lambda: fake.now[0])
    stats = run_loop(fake, tele, calls=10)
    assert stats.as_row() == EMPTY
    assert stats.error


def test_end_without_begin_is_empty() -> None:
    assert Telemetry(nvml=make_fake()).end(5).as_row() == EMPTY


def test_row_columns() -> None:
    assert tuple(empty().as_row()) == TELEMETRY_COLUMNS


def test_a_mig_instance_is_looked_up_by_its_own_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's index helper maps a MIG UUID to NVML GPU 0: another GPU's utilization, power and
    throttling filled the row. NVML gives a MIG instance no utilization, so its columns stay empty."""
    from harness.measure.telemetry import nvml_device_id

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-4f2c1b7e-aaaa-bbbb-cccc-0123456789ab")
    assert nvml_device_id("cuda:0") == "MIG-4f2c1b7e-aaaa-bbbb-cccc-0123456789ab"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234,MIG-abcd")
    assert nvml_device_id("cuda:1") == "MIG-abcd"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # a plain GPU: NVML's index, by torch's helper or as is
    assert not isinstance(nvml_device_id("cuda:0"), str)


def test_a_gpu_is_looked_up_by_its_uuid_whatever_the_numbering(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA numbers GPUs fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML in bus order, and
    torch's index helper follows neither: on a mixed machine CUDA's device 0 can be NVML's 1, and
    the row would read another GPU's telemetry. The UUID names the same GPU in both."""
    import torch

    from harness.measure.telemetry import nvml_device_id

    uuids = {0: "58E4B3A5-1C2D-4E5F-8A9B-0C1D2E3F4A5B", 1: "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"}

    class Uuid:  # torch's _CUuuid prints as the UUID
        def __init__(self, text: str) -> None:
            self.text = text

        def __str__(self) -> str:
            return self.text

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=Uuid(uuids[i])))
    assert nvml_device_id("cuda:0") == "GPU-58e4b3a5-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    assert nvml_device_id(torch.device("cuda", 1)) == "GPU-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-abcd")  # a MIG instance still by its own UUID
    assert nvml_device_id("cuda:0") == "MIG-abcd"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    uuids[0] = "not a uuid"  # a build that prints something else: the index, as before
    assert not isinstance(nvml_device_id("cuda:0"), str)
