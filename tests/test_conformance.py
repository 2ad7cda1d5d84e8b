"""Every registered variant × configuration, through ``harness.testing`` (the suite plugin authors use).

A new variant is tested here without editing this file. A configuration a variant doesn't support
and a variant unavailable here (CUDA-only ones on this CPU machine) are skipped with the reason.
torch.compile takes seconds per shape on a CPU, so the compiled variants run a few configurations
by default and the rest under ``-m slow`` (or ``SCSE_SLOW=1``).
"""
from __future__ import annotations

import os

import pytest
import torch

from harness.testing import INPUTS, Config, check_config, pytest_params, tag, torch_threads
from variants.registry import Variant, get_variant

ALL_INPUTS = tuple(spec.name for spec in INPUTS)
#: The compiled variants' share of the default run: (variant, config label) → inputs checked.
FAST_COMPILED: dict[tuple[str, str], tuple[str, ...]] = {
    ("compile", "float32-forward-add-bias0-r2"): ALL_INPUTS,
    ("compile", "float32-train-add-bias0-r2"): ("main",),
    ("compile_max_autotune", "float32-forward-add-bias0-r2"): ("main",),
    ("compile_reduce_overhead", "float32-forward-add-bias0-r2"): ("main",),
}


def _slow(variant: Variant, config: Config) -> bool:
    return bool(tag(variant, "compiles")) and (variant.name, config.label) not in FAST_COMPILED


def _marks(variant: Variant, config: Config) -> list[pytest.MarkDecorator]:
    return [pytest.mark.slow] if _slow(variant, config) else []


def _run_slow(config: pytest.Config) -> bool:
    return "slow" in (config.getoption("markexpr") or "") or os.environ.get("SCSE_SLOW") == "1"


def _check(request: pytest.FixtureRequest, name: str, config: Config, device: str) -> None:
    variant = get_variant(name)
    if _slow(variant, config) and not _run_slow(request.config):
        pytest.skip("slow: torch.compile needs seconds per shape on CPU; run with -m slow or SCSE_SLOW=1")
    inputs = FAST_COMPILED.get((name, config.label), ALL_INPUTS)
    with torch_threads(1):  # tiny tensors: threads only add contention on a loaded machine
        failures = check_config(variant, config, device, inputs=inputs)
    assert not failures, "\n".join(str(f) for f in failures)


@pytest.mark.parametrize(("name", "config"), pytest_params("*", "cpu", marks=_marks))
def test_conforms_on_cpu(request: pytest.FixtureRequest, name: str, config: Config) -> None:
    _check(request, name, config, "cpu")


CUDA_PARAMS = pytest_params("*", "cuda", marks=_marks) if torch.cuda.is_available() else []


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("name", "config"), CUDA_PARAMS or [pytest.param("eager", None, id="no-gpu")])
def test_conforms_on_cuda(request: pytest.FixtureRequest, name: str, config: Config) -> None:
    _check(request, name, config, "cuda")


def test_a_printed_report_is_a_summary_not_every_run() -> None:
    """print(check_variant(...)) dumped tens of KB: every configuration and input of the dataclass."""
    from harness.conformance import Config, ConformanceReport, Failure

    config = Config("float32", "forward", "add", False, 2)
    failure = Failure("mine", config, "odd", "output error 0.1 > tolerance 1e-05")
    report = ConformanceReport("mine", checked=[(config, "main")] * 40,
                               skipped=[(config, "needs CUDA")] * 3 + [(config, "no train mode")], failures=[failure])
    assert str(report).splitlines() == [
        "mine: FAILED: 40 run(s) checked, 1 failure(s), 4 configuration(s) skipped",
        "  - mine [float32-forward-add-bias0-r2, input odd]: output error 0.1 > tolerance 1e-05",
        "  skipped 3: needs CUDA",
        "  skipped 1: no train mode",
    ]
    assert str(ConformanceReport("mine", checked=[(config, "main")])).startswith("mine: passed: 1 run(s)")
    assert str(ConformanceReport("mine")).startswith("mine: nothing checked: 0 run(s)")
