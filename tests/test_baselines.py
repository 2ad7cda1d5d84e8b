"""Baselines: named after the device model, found again for a run on the same model, never for another."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from compare_helpers import CPU_ENV, case, noise, row, write_run

from harness.results import baselines
from harness.results.baselines import BaselineError


@pytest.mark.parametrize(
    ("env", "slug"),
    [
        ({"device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3"}, "cuda-nvidia-h100-80gb-hbm3"),
        ({"device": "cuda:1", "gpu_name": "NVIDIA H200", "cpu_model": "x"}, "cuda-nvidia-h200"),
        (
            {"device": "cpu", "cpu_model": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"},
            "cpu-intel-xeon-platinum-8375c",
        ),
        (
            {"device": "cpu", "cpu_model": "AMD EPYC 7B13 64-Core Processor", "gpu_name": None},
            "cpu-amd-epyc-7b13-64-core",
        ),
        ({"device": "cpu", "cpu_model": "AMD EPYC"}, "cpu-amd-epyc"),
    ],
)
def test_slug_names_the_device_model(env: dict[str, str], slug: str) -> None:
    assert baselines.device_slug(env) == slug


def test_slug_ignores_clock_speed_and_trademarks() -> None:
    a = {"device": "cpu", "cpu_model": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"}
    b = {"device": "cpu", "cpu_model": "Intel Xeon Gold 6338 CPU @ 2.60GHz"}
    assert baselines.device_slug(a) == baselines.device_slug(b)


def test_slug_needs_a_model() -> None:
    with pytest.raises(BaselineError, match="names no GPU model"):
        baselines.device_slug({"device": "cuda", "gpu_name": None})


def test_save_then_find_round_trip(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [row(case(), noise(1.0))])
    (run / "report.md").write_text("# report\n")
    root = tmp_path / "baselines"
    saved = baselines.save_baseline(run, root)
    assert saved == root / "cpu-test"
    assert sorted(p.name for p in saved.iterdir()) == ["env.json", "report.md", "results.csv", "results.jsonl"]
    assert (saved / "results.jsonl").read_bytes() == (run / "results.jsonl").read_bytes()
    assert baselines.find_baseline_for(run, root) == saved
    assert baselines.find_baseline_for(run / "results.jsonl", root) == saved
    assert baselines.list_baselines(root) == ["cpu-test"]


def test_saving_again_replaces_the_old_baseline(tmp_path: Path) -> None:
    root = tmp_path / "baselines"
    first = write_run(tmp_path / "a", [row(case(), noise(1.0))])
    (first / "report.md").write_text("old")
    baselines.save_baseline(first, root)
    second = write_run(tmp_path / "b", [row(case(), noise(2.0))], csv=False)
    saved = baselines.save_baseline(second, root)
    assert not (saved / "report.md").exists() and not (saved / "results.csv").exists()
    assert (saved / "results.jsonl").read_bytes() == (second / "results.jsonl").read_bytes()
    assert [p.name for p in root.iterdir()] == ["cpu-test"]  # no staging or .old folder left behind


def test_find_for_another_device_names_the_ones_that_exist(tmp_path: Path) -> None:
    root = tmp_path / "baselines"
    baselines.save_baseline(write_run(tmp_path / "a", [row(case(), noise(1.0))]), root)
    other = write_run(tmp_path / "b", [row(case(), noise(1.0))], env=CPU_ENV | {"cpu_model": "Other Chip"})
    with pytest.raises(BaselineError, match=r"no baseline for 'Other Chip' \(cpu-other-chip\); baselines exist "
                                            r"for: cpu-test\. Save one with"):  # fmt: skip
        baselines.find_baseline_for(other, root)


def test_find_with_no_baselines_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = write_run(tmp_path / "a", [row(case(), noise(1.0))])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaselineError, match="holds none"):
        baselines.find_baseline_for(run, tmp_path / "empty")
    # run outside the repository, the relative default names no folder: say so, not "save one"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BaselineError, match=r"there is no results/baselines folder in .*: run from the "
                                            r"repository's root, or give --baselines-dir"):  # fmt: skip
        baselines.find_baseline_for(run)
    # a folder named in full that is not there is just missing: where the command runs is no matter
    with pytest.raises(BaselineError, match=f"; there is no folder {tmp_path / 'gone'}. Save one with"):
        baselines.find_baseline_for(run, tmp_path / "gone")


@pytest.mark.parametrize("missing", ["nope", "nowhere/results.jsonl"])
def test_a_mistyped_run_is_named_as_missing(tmp_path: Path, missing: str) -> None:
    """Not "./: no env.json": the path the user typed, and that it does not exist."""
    with pytest.raises(BaselineError, match=f"^{tmp_path / missing}: no such file or folder$"):
        baselines.find_baseline_for(tmp_path / missing, tmp_path)


def test_save_needs_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match="not a run folder"):
        baselines.save_baseline(tmp_path, tmp_path / "baselines")
    (tmp_path / "results.jsonl").write_text("{}\n")
    (tmp_path / "env.json").write_text(json.dumps(["not", "an", "object"]))
    with pytest.raises(BaselineError, match="not a JSON object"):
        baselines.save_baseline(tmp_path, tmp_path / "baselines")
