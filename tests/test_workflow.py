"""The CI recipe: bench.yml is valid, has the GPU and CPU jobs, runs commands the CLI accepts, and its
compare script turns compare's exit codes into a job summary and a failing step."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from compare_helpers import case, noise, row, write_run

from harness.cli import build_parser
from harness.results import baselines
from harness.sweep.config import OPTION_NAMES, read_toml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "bench.yml"
SCRIPT = ROOT / ".github" / "scripts" / "bench-compare.sh"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    # YAML 1.1 reads the bare key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps_running(job: dict[str, Any], needle: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if needle in s.get("run", "")]


def test_triggers_and_jobs(workflow: dict[str, Any]) -> None:
    assert set(workflow["on"]) == {"pull_request", "push", "workflow_dispatch"}
    assert set(workflow["jobs"]) == {"gpu", "cpu"}
    gpu, cpu = workflow["jobs"]["gpu"], workflow["jobs"]["cpu"]
    assert gpu["runs-on"] == ["self-hosted", "linux", "gpu"]
    assert cpu["runs-on"] == "ubuntu-latest"
    # Exactly one of the two runs: the GPU job when a GPU runner is declared, the CPU job otherwise.
    assert gpu["if"] == "vars.BENCH_GPU_RUNNER == 'true'"
    assert cpu["if"] == "vars.BENCH_GPU_RUNNER != 'true'"
    for job in (gpu, cpu):
        assert 0 < job["timeout-minutes"] <= 60


@pytest.mark.parametrize(("job", "device"), [("gpu", "cuda"), ("cpu", "cpu")])
def test_each_job_sweeps_reports_compares_and_uploads(workflow: dict[str, Any], job: str, device: str) -> None:
    steps = workflow["jobs"][job]["steps"]
    runs = [s.get("run", "") for s in steps]
    sweep = next(i for i, r in enumerate(runs) if "python -m harness run" in r)
    compare = next(i for i, r in enumerate(runs) if "bench-compare.sh" in r)
    assert sweep < compare
    assert f"results/baselines/sweep-{device}.toml" in runs[sweep]
    assert "if" not in steps[compare]  # a failed sweep must not be compared; a regression fails the job
    report = steps_running(workflow["jobs"][job], "python -m harness report")
    assert report and report[0]["if"] == "always()" and "--plots" in report[0]["run"]
    upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert len(upload) == 1 and upload[0]["if"] == "always()"


def harness_commands(workflow: dict[str, Any]) -> list[list[str]]:
    commands = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            for line in step.get("run", "").splitlines():
                if "python -m harness" in line:
                    words = shlex.split(line.replace('"$RUN_DIR"', "bench-run"))
                    commands.append(words[words.index("harness") + 1:])
    return commands


def test_every_harness_command_in_the_workflow_parses(workflow: dict[str, Any]) -> None:
    commands = harness_commands(workflow)
    assert {c[0] for c in commands} == {"env", "run", "report"}
    parser = build_parser()
    for command in commands:
        parser.parse_args(command)  # raises UsageError on a flag the CLI does not have


@pytest.mark.parametrize("device", ["cpu", "cuda"], ids=["cpu-sweep", "gpu-sweep"])  # "cuda" in an id means skip
def test_sweep_configs_use_known_options(device: str) -> None:
    options = read_toml(ROOT / "results" / "baselines" / f"sweep-{device}.toml")
    assert options["device"] == device
    assert set(options) <= set(OPTION_NAMES)


def test_the_cpu_sweep_config_builds() -> None:
    from harness.sweep.config import SweepConfig

    config = SweepConfig.build(ROOT / "results" / "baselines" / "sweep-cpu.toml")
    assert config.threads == 1 and "eager" in config.variants


def test_actionlint_if_installed() -> None:
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (its PyPI wrapper downloads the binary at build time)")
    out = subprocess.run([actionlint, str(WORKFLOW)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# --- the compare script, run as the workflow runs it --------------------------------------------


def run_script(cwd: Path, run_dir: Path, summary: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GITHUB_STEP_SUMMARY": str(summary), "COLUMNS": "160",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    return subprocess.run(["bash", str(SCRIPT), str(run_dir)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_script_without_a_baseline_passes_with_a_notice(tmp_path: Path) -> None:
    current = write_run(tmp_path / "bench-run", [row(case(), noise(1.0))])
    summary = tmp_path / "summary.md"
    out = run_script(tmp_path, current, summary)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "::notice title=No benchmark baseline::no baseline for " in out.stdout  # naming the folder looked for
    assert summary.read_text().startswith("## Benchmark comparison skipped")
    assert "(cpu-test)" in summary.read_text()


@pytest.mark.parametrize(("slowdown", "code", "icon"), [(1.0, 0, "✅"), (1.3, 1, "❌")])
def test_script_compares_with_the_baseline_and_fails_on_a_regression(tmp_path: Path, slowdown: float, code: int,
                                                                     icon: str) -> None:  # fmt: skip
    baselines.save_baseline(write_run(tmp_path / "old", [row(case(), noise(1.0, seed=1))]),
                            tmp_path / "results" / "baselines")  # fmt: skip
    current = write_run(tmp_path / "bench-run", [row(case(), noise(slowdown, seed=2))])
    summary = tmp_path / "summary.md"
    out = run_script(tmp_path, current, summary)
    assert out.returncode == code, out.stdout + out.stderr
    assert summary.read_text().startswith(f"## {icon} Benchmark comparison")
    assert ("::error title=Benchmark regression::" in out.stdout) is (code == 1)
    assert re.search(r"results/baselines/cpu-test →\s+\S*bench-run", out.stdout), out.stdout


@pytest.mark.parametrize("broken", ["missing", "no env.json", "unreadable env.json"])
def test_script_refuses_a_missing_or_broken_run_folder_with_exit_2(tmp_path: Path, broken: str) -> None:
    """All three read as "no baseline for this device" and passed, exit 0."""
    run_dir = tmp_path / "bench-run"
    if broken != "missing":
        run_dir.mkdir()
    if broken == "unreadable env.json":
        (run_dir / "env.json").write_text("{")
    summary = tmp_path / "summary.md"
    out = run_script(tmp_path, run_dir, summary)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: ") and "::notice" not in out.stdout and not summary.exists()
    bare = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "usage: bench-compare.sh RUN_DIR" in bare.stderr  # 1 means a regression


def test_script_passes_bad_input_through_as_exit_2(tmp_path: Path) -> None:
    cuda_env = {"device": "cuda", "gpu_name": "NVIDIA H100", "torch": "2.13.0", "hostname": "h"}
    baselines.save_baseline(write_run(tmp_path / "old", [row(case(device="cuda"), noise(1.0))], env=cuda_env),
                            tmp_path / "results" / "baselines")  # fmt: skip
    current = write_run(tmp_path / "bench-run", [row(case(device="cuda", batch=99), noise(1.0))], env=cuda_env)
    out = run_script(tmp_path, current, tmp_path / "summary.md")
    assert out.returncode == 2
    assert "no case in common" in out.stderr


@pytest.mark.parametrize(("fail_on_missing", "code"), [("", 0), ("true", 1)])
def test_script_fails_a_run_that_lost_a_baseline_case_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 fail_on_missing: str, code: int) -> None:  # fmt: skip
    """The workflow sets BENCH_FAIL_ON_MISSING: it sweeps the baseline's own config, so a case it lacks is lost."""
    baselines.save_baseline(write_run(tmp_path / "old", [row(case(), noise(1.0, seed=1)),
                                                         row(case(variant="lost"), noise(1.0, seed=3))]),
                            tmp_path / "results" / "baselines")  # fmt: skip
    current = write_run(tmp_path / "bench-run", [row(case(), noise(1.0, seed=2))])
    monkeypatch.setenv("BENCH_FAIL_ON_MISSING", fail_on_missing)
    out = run_script(tmp_path, current, tmp_path / "summary.md")
    assert out.returncode == code, out.stdout + out.stderr
    assert ("1 baseline case(s) not timed now" in out.stdout) is (code == 1)


def test_both_jobs_fail_on_a_lost_case(workflow: dict[str, Any]) -> None:
    for job in ("gpu", "cpu"):
        step = next(s for s in workflow["jobs"][job]["steps"] if "bench-compare.sh" in s.get("run", ""))
        assert step["env"]["BENCH_FAIL_ON_MISSING"] == "true"


@pytest.mark.parametrize(("relative_to", "code"), [("", 1), ("eager", 0)])
def test_script_judges_over_a_reference_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   relative_to: str, code: int) -> None:  # fmt: skip
    """A runner 3× slower than the baseline's machine, code unchanged: every case SLOWER in ms, none over eager."""
    def run(folder: str, scale: float, seed: int) -> Path:
        return write_run(tmp_path / folder, [row(case(v), noise(m * scale, seed=seed + i))
                                             for i, (v, m) in enumerate((("eager", 1.0), ("fused", 0.5)))])
    baselines.save_baseline(run("old", 1.0, 1), tmp_path / "results" / "baselines")
    current = run("bench-run", 3.0, 7)
    monkeypatch.setenv("BENCH_RELATIVE_TO", relative_to)
    monkeypatch.setenv("BENCH_THRESHOLD", "0.25")
    out = run_script(tmp_path, current, tmp_path / "summary.md")
    assert out.returncode == code, out.stdout + out.stderr
    assert ("eager, the reference, is not judged" in out.stdout) is bool(relative_to)


def test_the_cpu_job_judges_over_eager(workflow: dict[str, Any]) -> None:
    """The hosted runner is not the baseline's machine, and the 2-core VM moved 2.1–4.9× between days."""
    step = next(s for s in workflow["jobs"]["cpu"]["steps"] if "bench-compare.sh" in s.get("run", ""))
    assert step["env"]["BENCH_RELATIVE_TO"] == "eager" and float(step["env"]["BENCH_THRESHOLD"]) == 0.25
    gpu = next(s for s in workflow["jobs"]["gpu"]["steps"] if "bench-compare.sh" in s.get("run", ""))
    assert "BENCH_RELATIVE_TO" not in gpu["env"]  # one machine model, its drift not yet measured
