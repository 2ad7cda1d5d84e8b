"""The profiler trace: a valid Chrome trace JSON with the case's ops in it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.profiling import activities_for, trace_name, write_trace
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
