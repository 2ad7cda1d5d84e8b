"""The README tells the truth: every column a run writes, every flag, the metric notes, the test command."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import harness
from harness.measure.flop_formula import ANALYTIC_FORMULA_MD
from harness.measure.flops import FLOP_COLUMNS
from harness.measure.telemetry import NVML_UTILIZATION_MD, TELEMETRY_COLUMNS
from harness.sweep.options import OPTIONS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def documented_names() -> set[str]:
    """Every name the README sets in code: `a`, and each of `a, b, c`."""
    names: set[str] = set()
    for span in re.findall(r"`([^`\n]+)`", README):
        names.update(part.strip() for part in span.split(","))
    return names


@pytest.fixture(scope="module")
def written_columns(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The columns of a real run's results.jsonl and results.csv (one ok case, one skipped)."""
    out = tmp_path_factory.mktemp("readme") / "run"
    harness.run(device="cpu", variants="eager,triton_fused", shapes="8x4x4", batch_sizes=1, modes="forward",
                out=out, warmup_s=0, min_samples=3, max_time_s=0.05)  # fmt: skip
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    return {key for row in rows for key in row} | set(header)


def test_every_column_a_run_writes_is_documented(written_columns: set[str]) -> None:
    assert "median_ms" in written_columns and "fvcore_flops" in written_columns
    missing = sorted(written_columns - documented_names())
    assert not missing, f"columns a run writes that README.md never names: {missing}"


def test_every_flag_is_documented() -> None:
    missing = [o.flag for o in OPTIONS if o.flag not in README]
    assert not missing, f"flags README.md never names: {missing}"


@pytest.mark.parametrize(("snippet", "columns"), [(NVML_UTILIZATION_MD, TELEMETRY_COLUMNS),
                                                   (ANALYTIC_FORMULA_MD, FLOP_COLUMNS)])  # fmt: skip
def test_the_metric_notes_are_in_the_readme_and_name_their_columns(snippet: str, columns: tuple[str, ...]) -> None:
    assert snippet.strip() in README, "README.md's copy of the note differs from the source's"
    named = [c for c in columns if f"`{c}`" in snippet]
    # the FLOP note names the counters' columns; the scope column is explained next to the table
    assert len(named) >= len(columns) - 1, sorted(set(columns) - set(named))


def test_the_readme_test_command_is_what_ci_runs() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    test_command = next(b for b in blocks if "tox" in b).strip()
    assert test_command == "pip install tox && tox -e py311"
    assert "tox -e py311" in (ROOT / ".ci" / "run").read_text()


def test_the_mutation_script_count_matches() -> None:
    tries = sum(line.startswith("try ") for line in (ROOT / "tests" / "judge_mutations.sh").read_text().splitlines())
    words = {8: "eight", 9: "nine", 10: "ten", 11: "eleven", 12: "twelve"}
    assert f"makes {words[tries]} plausible mistakes" in README
