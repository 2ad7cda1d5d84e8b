"""The profiler trace: a valid Chrome trace JSON with the case's ops in it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.measure.profiling import activities_for, quiet_kineto, trace_name, write_trace
from variants.reference import ScSE


def load_events(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    assert isinstance(events, list)
    return events


def test_forward_trace_is_valid_json_with_the_ops(tmp_path: Path) -> None:
    module, x = ScSE(8, 2, "add"), torch.randn(2, 8, 16, 16)
    path = write_trace(module, x, "forward", tmp_path / "nested" / "case.trace.json", calls=2)
    assert path.exists()
    events = load_events(path)
    names = {e.get("name", "") for e in events}
    assert {"call 0", "call 1"} <= names
    assert "call 2" not in names
    assert any("conv" in n for n in names) and any("sigmoid" in n for n in names)
    # Forward only: no autograd work in the trace.
    assert not any("Backward" in n for n in names)


def test_train_trace_has_the_backward(tmp_path: Path) -> None:
    module, x = ScSE(8, 2, "max", bias=True), torch.randn(2, 8, 8, 8)
    path = write_trace(module, x, "train", tmp_path / "train.json", params=list(module.parameters()), calls=1)
    names = {e.get("name", "") for e in load_events(path)}
    assert "call 0" in names
    assert any("Backward" in n for n in names)


def test_bad_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        write_trace(ScSE(4), torch.randn(1, 4, 2, 2), "backward", tmp_path / "x.json")


def test_names_and_activities() -> None:
    label = "eager 32x64x64 b8 float32 forward r2 add"
    assert trace_name(label) == "eager_32x64x64_b8_float32_forward_r2_add.trace.json"
    assert trace_name("a/b:c") == "a_b_c.trace.json"
    assert len(activities_for("cpu")) == 1


def test_kineto_noise_is_dropped_and_the_rest_kept(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    with quiet_kineto():
        os.write(2, b"USDT:2026-11-25 18:47:15 4493:4493 SyncActivityProfilerHandler.cpp:52] profiler_start\n")
        os.write(2, b"a real warning\n")
        os.write(2, b"STAGE:2026-11-25 18:47:34 4552:4552 SyncActivityProfilerHandler.cpp:51] Completed Stage\n")
        # torch 2.11+cu130 on this CPU VM, at a CPU run's first profile
        os.write(2, b"ERROR:2026-11-29 20:54:46 5950:5950 DeviceProperties.cpp:48] gpuGetDeviceCount failed "
                    b"with code 35\n")
        os.write(2, b"ERROR:2026-11-29 20:54:46 5950:5950 Other.cpp:48] a real kineto error\n")
    _, err = capfd.readouterr()
    assert err == "a real warning\nERROR:2026-11-29 20:54:46 5950:5950 Other.cpp:48] a real kineto error\n"


def test_the_profilers_cycle_warning_is_dropped_and_other_warnings_kept() -> None:
    """torch 2.11 warns on every profiler start that events are cleared "at the end of each cycle":
    a user of a profiled run read it once per case, about cycles a one-shot profile does not have."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_kineto():
            torch_says = ("Warning: Profiler clears events at the end of each cycle.Only events from the current "
                          "cycle will be reported.To keep events across cycles, set acc_events=True.")
            warnings.warn(torch_says, UserWarning, stacklevel=1)
            warnings.warn("a variant's own warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a variant's own warning"]


def test_profiling_a_case_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_trace(ScSE(4), torch.randn(1, 4, 4, 4), "forward", tmp_path / "t.json", calls=1)
    out, err = capfd.readouterr()
    assert "USDT" not in err and "profiler_start" not in err
    assert [str(w.message) for w in caught] == []
