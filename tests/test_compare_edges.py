"""compare at its edges: what a lost env.json leaves to check, per device type, and what its warnings say
when settings differ."""
from __future__ import annotations

from pathlib import Path

import pytest
from compare_helpers import CPU_ENV, case, noise, row, write_run

from harness.results import compare as cmp
from harness.results.compare_stats import Verdict

CUDA_ENV = CPU_ENV | {"device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3", "cpu_model": None, "threads": 1}


@pytest.mark.parametrize("lost", ["both", "current"])
def test_torch_threads_from_the_rows_do_not_block_a_cuda_verdict(tmp_path: Path, lost: str) -> None:
    """Torch threads only matter on the CPU: two CUDA runs at 1 and 2 threads are judged when env.json says
    so, and a lost env.json (the rows' threads stand in) must not turn a 50% GPU slowdown into "not judged"."""
    base = write_run(tmp_path / "base", [row(case(device="cuda"), noise(1.0, seed=1)) | {"threads": 1}],
                     env=CUDA_ENV)  # fmt: skip
    cur = write_run(tmp_path / "cur", [row(case(device="cuda"), noise(1.5, seed=2)) | {"threads": 2}],
                    env=CUDA_ENV | {"threads": 2})  # fmt: skip
    with_env = cmp.compare(base, cur)
    assert with_env.env_differences == () and with_env.failed  # the reference: threads are no CUDA fact
    (cur / "env.json").unlink()
    if lost == "both":
        (base / "env.json").unlink()
    result = cmp.compare(base, cur)
    assert result.device == "cuda"
    assert result.env_differences == () and result.unlike_settings == ()
    (c,) = result.cases
    assert c.verdict is Verdict.SLOWER and result.failed
    assert result.nothing_judged is None


def test_torch_threads_from_the_rows_still_block_a_cpu_verdict(tmp_path: Path) -> None:
    """The CPU counterpart: there the rows' threads, 1 against 2, are a setting that differs, so a slowdown
    is not judged (a regression of +86% on unchanged code otherwise)."""
    base = write_run(tmp_path / "base", [row(case(), noise(1.0, seed=1)) | {"threads": 1}])
    cur = write_run(tmp_path / "cur", [row(case(), noise(1.5, seed=2)) | {"threads": 2}])
    for run in (base, cur):
        (run / "env.json").unlink()
    result = cmp.compare(base, cur)
    assert result.unlike_settings == ("torch threads differ: baseline 1, this run 2; rerun with --threads 1",)
    assert not result.failed and result.nothing_judged is not None


def test_no_threshold_hint_where_unlike_settings_keep_regressions_unjudged(tmp_path: Path) -> None:
    """A broken case failed the comparison beside a slowdown that 1 thread against 2 kept from being
    judged; the CPU hint then said how many of "these regressions" would still fail at the CI
    threshold, when under unlike settings they fail at none."""
    base = write_run(tmp_path / "base", [row(case("eager"), noise(1.0, seed=1)),
                                         row(case("other"), noise(1.0, seed=3))],
                     env=CPU_ENV | {"threads": 1})  # fmt: skip
    cur = write_run(tmp_path / "cur", [row(case("eager"), noise(1.5, seed=2)),
                                       row(case("other"), status="error") | {"reason": "wrong"}],
                    env=CPU_ENV | {"threads": 2})  # fmt: skip
    result = cmp.compare(base, cur)
    assert result.failed and result.unlike_settings  # failed by the broken case alone
    assert not [w for w in result.warnings if "the CI job" in w], result.warnings
