"""A variant's change to process-wide settings is set back after its case and said in its row."""
from __future__ import annotations

import copy
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import FAST_RUN

import harness
from harness.results.store import read_jsonl
from harness.sweep.process_state import ProcessState


def test_every_setting_a_variant_changes_is_named_and_set_back(tmp_path: Path) -> None:
    before = ProcessState.capture()
    try:
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.float64)
        torch.set_num_threads(1 if before.threads != 1 else 2)
        torch.use_deterministic_algorithms(before.deterministic[0], warn_only=not before.deterministic[1])  # only warns
        torch.set_float32_matmul_precision("medium" if before.float32_matmul_precision != "medium" else "high")
        torch.backends.cudnn.benchmark = not before.cudnn_benchmark
        os.chdir(tmp_path)
        signal.signal(signal.SIGTERM, signal.SIG_IGN if before.signal_handlers[1] is not signal.SIG_IGN
                      else signal.SIG_DFL)  # fmt: skip
        changes = before.changes(ProcessState.capture())
    finally:
        before.restore()
    names = [c.split(" ")[0] for c in changes]
    assert names == ["grad_enabled", "default_dtype", "threads", "deterministic", "float32_matmul_precision",
                     "cudnn_benchmark", "cuda_matmul_allow_tf32", "matmul_fp32_precision", "cwd",
                     "signal_handlers"]  # fmt: skip
    assert "grad_enabled True → False" in changes and "default_dtype float32 → float64" in changes
    assert ProcessState.capture() == before and not before.changes(ProcessState.capture())


def test_a_variant_that_changes_settings_spoils_no_other_row(tmp_path: Path, temp_variant) -> None:
    """Grad mode turned off in one forward build made every later train case fail, eager's too; float64
    made the next, correct variant a mismatch; one thread timed later variants beside eager's two."""

    def build(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        module = copy.deepcopy(reference).to(device, dtype)
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.float64)
        torch.set_num_threads(1)
        return module

    temp_variant("zz_settings", build, devices=("cpu",), dtypes=("float32",))
    options = FAST_RUN | {"device": "cpu", "shapes": "4x4x4", "batch_sizes": [1], "threads": 2}
    with pytest.warns(RuntimeWarning, match="zz_settings changed the process's settings"):
        harness.run(**options, variants="zz_settings,eager,eager_factored", modes="forward,train", out=str(tmp_path))
    rows = read_jsonl(tmp_path / "results.jsonl")
    others = [r for r in rows if r["variant"] != "zz_settings"]
    assert len(others) == 4 and all(r["status"] == "ok" for r in others), [r["reason"] for r in others]
    assert all(r["threads"] == 2 and "settings_changed" not in r for r in others)
    mine = [r for r in rows if r["variant"] == "zz_settings"]
    assert all(r["settings_changed"].startswith("grad_enabled True → False; default_dtype float32 → float64; "
                                                "threads 2 → 1") for r in mine)  # fmt: skip
    assert [r["threads"] for r in mine] == [1, 1]  # what its timing ran on
    report = (tmp_path / "report.md").read_text()
    assert "## Variants that change process-wide settings" in report and "- `zz_settings` (2 case(s)): " in report
    assert "zz_settings not ranked: timed on 1 thread, the others on 2" in report  # its time is not eager's kind


def test_a_variant_using_torchs_newer_tf32_api_is_set_back_not_the_end_of_the_sweep(tmp_path: Path,
                                                                                   temp_variant) -> None:
    """Once ``fp32_precision`` is set, torch refuses to read the legacy flags (a RuntimeError): read
    after the case, outside its try, it ended the sweep with no row for that variant or any after."""

    def build(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        return copy.deepcopy(reference).to(device, dtype)

    temp_variant("zz_tf32", build, devices=("cpu",), dtypes=("float32",))
    before = torch.get_float32_matmul_precision()
    options = FAST_RUN | {"device": "cpu", "shapes": "4x4x4", "batch_sizes": [1], "modes": "forward"}
    with pytest.warns(RuntimeWarning, match="zz_tf32 changed the process's settings"):
        harness.run(**options, variants="zz_tf32,eager", out=str(tmp_path))
    rows = read_jsonl(tmp_path / "results.jsonl")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert "matmul_fp32_precision none → tf32" in rows[0]["settings_changed"]
    assert torch.get_float32_matmul_precision() == before  # readable again, as it was


def test_a_ctrl_c_past_a_handler_the_variant_installed_still_stops_the_sweep(tmp_path: Path, temp_variant) -> None:
    """A variant that put Python's own SIGINT handler back made the user's Ctrl-C read as the variant's
    own KeyboardInterrupt: an error row, and the sweep went on."""

    def build(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, now Python's KeyboardInterrupt
        return copy.deepcopy(reference).to(device, dtype)

    temp_variant("zz_handler", build, devices=("cpu",), dtypes=("float32",))
    options = FAST_RUN | {"device": "cpu", "shapes": "4x4x4", "batch_sizes": [1], "modes": "forward"}
    with pytest.raises(KeyboardInterrupt):
        harness.run(**options, variants="eager,zz_handler,eager_factored", out=str(tmp_path))
    assert [r["variant"] for r in read_jsonl(tmp_path / "results.jsonl")] == ["eager"]  # stopped there
    assert "Unfinished run: 2 case(s) did not run" in (tmp_path / "report.md").read_text()
