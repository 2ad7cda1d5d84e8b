"""Fault injection: a variant that raises, aborts, segfaults, hangs or runs out of memory,
and a runner interrupted with SIGINT or killed with SIGKILL and resumed. After each, every finished
row is kept and the case set is complete and free of duplicates."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from conftest import FAST_RUN

import harness
from harness.results.record import CaseResult, Status
from harness.results.store import read_jsonl, repair_jsonl
from harness.sweep import isolation, oom
from harness.sweep.cases import KEY_COLUMNS, Case, expand
from harness.sweep.config import SweepConfig
from variants.registry import all_variants

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
TINY: dict[str, Any] = {"device": "cpu", "shapes": "4x4x4", "batch_sizes": [1], "modes": "forward", **FAST_RUN}
FAST_FLAGS = ["--warmup", "0", "--min-samples", "3", "--max-samples", "20", "--max-time", "0.05", "--rel-ci", "0.05"]


@pytest.fixture
def faults() -> Iterator[ModuleType]:
    """The fault variants, registered for one test (imported here, never at collection)."""
    import fault_variants

    fault_variants.register_all()
    yield fault_variants
    fault_variants.unregister_all()


def keys(rows: list[dict[str, Any]]) -> list[tuple[object, ...]]:
    return [tuple(r[c] for c in KEY_COLUMNS) for r in rows]


def assert_complete(run_dir: str | Path, **options: Any) -> list[dict[str, Any]]:
    """results.jsonl holds every case of the sweep exactly once, each line a whole row."""
    path = Path(run_dir) / "results.jsonl"
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text.splitlines()]
    got = keys(rows)
    assert len(got) == len(set(got)), "a case is in the results twice"
    expected = {c.key for c in expand(SweepConfig.build(**options))}
    assert set(got) == expected
    return rows


def by_variant(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["variant"]: r for r in rows}


# --- in-process faults ----------------------------------------------------------------------------


def test_run_exits_1_when_a_case_failed_and_says_so_even_quiet(tmp_path: Path, faults: ModuleType,
                                                               capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """A wrong variant and a raising one: every row written, exit 1, and one line naming them, with
    --quiet too (a CI job must not pass a wrong variant in silence). Out of memory at a size is the
    device's limit, said in its row: it alone fails nothing."""
    from harness.cli import main
    from variants.registry import register, unregister

    @register("fault_wrong", "1% off", devices=("cpu",), dtypes=("float32",), replace=True)
    def build_wrong(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        model = faults._copy(reference, device, dtype)
        return lambda x: model(x) * 1.01

    common = ["--shapes", "4x4x4", "--modes", "forward", "--quiet", *FAST_FLAGS]
    try:
        code = main(["run", "--variants", "eager,fault_wrong,fault_raise", "--batch-sizes", "1,2", *common,
                     "--out", str(tmp_path / "bad")])  # fmt: skip
        out = capsys.readouterr().out
        assert code == 1
        assert "4 of 6 case(s) failed (fault_raise 2× error, fault_wrong 2× mismatch)" in " ".join(out.split())
        errors = tmp_path / "bad" / "errors.log"
        assert f"tracebacks in {errors}" in "".join(out.split("\n"))
        log = errors.read_text()  # where the variant raised, for its author; the rows keep one line
        assert log.count("=== fault_raise ") == 2 and 'raise RuntimeError("injected fault' in log
        assert "fault_wrong" not in log  # a mismatch raised nothing
        rows = [json.loads(line) for line in (tmp_path / "bad" / "results.jsonl").read_text().splitlines()]
        assert sorted(r["status"] for r in rows) == ["error", "error", "mismatch", "mismatch", "ok", "ok"]
        assert not any("traceback" in r for r in rows)
        assert (tmp_path / "bad" / "report.md").is_file()
        code = main(["run", "--variants", "eager,fault_oom", "--batch-sizes", "1,4", *common,
                     "--out", str(tmp_path / "oom")])  # fmt: skip
        assert "oom" in {json.loads(line)["status"] for line in (tmp_path / "oom" / "results.jsonl").open()}
        assert code == 0 and "failed" not in capsys.readouterr().out
    finally:
        unregister("fault_wrong")


def test_a_run_that_timed_nothing_exits_1_and_says_why_even_quiet(tmp_path: Path, temp_variant,
                                                                 capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """Every case skipped (a variant unavailable here) printed only "results: ..." and exited 0."""
    from harness.cli import main

    def build(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        return reference

    name = temp_variant("fault_nowhere", build, dtypes=("float32",), available=lambda: "needs a toaster")
    code = main(["run", "--variants", name, "--shapes", "4x4x4", "--batch-sizes", "1,2", "--modes", "forward",
                 "--quiet", *FAST_FLAGS, "--out", str(tmp_path / "none")])  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())
    assert code == 1 and "no case was timed, of 2 (2× skipped: needs a toaster)" in out
    assert (tmp_path / "none" / "report.md").is_file()


def test_a_raising_variant_is_an_error_row_and_the_sweep_goes_on(tmp_path: Path, faults: ModuleType) -> None:
    options = TINY | {"variants": "fault_raise,eager", "batch_sizes": [1, 2]}
    frame = harness.run(**options, out=str(tmp_path))
    rows = assert_complete(tmp_path, **options)
    assert len(frame) == len(rows) == 4
    for row in rows:
        if row["variant"] == "fault_raise":
            assert (row["status"], row["reason"]) == ("error", "RuntimeError: injected fault")
        else:
            assert row["status"] == "ok" and row["median_ms"] > 0


def test_a_cpu_allocation_failure_is_an_oom_row(tmp_path: Path, faults: ModuleType) -> None:
    options = TINY | {"variants": "fault_oom", "batch_sizes": [1, 8]}
    rows = {r["batch"]: r for r in assert_complete(harness.run(**options, out=str(tmp_path)).attrs["run_dir"],
                                                     **options)}  # fmt: skip
    assert rows[1]["status"] == "ok"
    assert rows[8]["status"] == "oom"
    assert "DefaultCPUAllocator" in rows[8]["reason"]
    assert "batch_run" not in rows[8]  # only --oom-retry records it


def test_oom_retry_halves_the_batch_and_records_the_batch_run(tmp_path: Path, faults: ModuleType) -> None:
    options = TINY | {"variants": "fault_oom", "batch_sizes": [1, 8], "oom_retry": True}
    rows = {r["batch"]: r for r in assert_complete(harness.run(**options, out=str(tmp_path)).attrs["run_dir"],
                                                     **options)}  # fmt: skip
    assert faults.OOM_ABOVE_BATCH == 2
    retried = rows[8]
    assert (retried["status"], retried["batch"], retried["batch_run"]) == ("ok", 8, 2)
    assert retried["reason"] == "out of memory at batch 8, 4; ran at batch 2"
    assert retried["throughput_img_s"] == pytest.approx(2 / (retried["median_ms"] * 1e-3))
    assert (rows[1]["batch_run"], rows[1]["reason"]) == (1, None)


def test_oom_retry_that_never_fits_stays_oom(tmp_path: Path, faults: ModuleType, monkeypatch) -> None:
    monkeypatch.setattr(faults, "OOM_ABOVE_BATCH", 0)
    frame = harness.run(**(TINY | {"variants": "fault_oom", "batch_sizes": [4], "oom_retry": True}), write=False)
    row = frame.iloc[0]
    assert (row["status"], row["batch"], row["batch_run"]) == ("oom", 4, 1)
    assert row["reason"].startswith("out of memory at batch 4, 2, 1: RuntimeError:")


def test_retry_releases_memory_between_attempts(monkeypatch) -> None:
    released: list[str] = []
    monkeypatch.setattr(oom, "release_memory", released.append)
    asked: list[int] = []

    def run_once(case: Case) -> CaseResult:
        asked.append(case.batch)
        return CaseResult(case, Status.OOM if case.batch > 2 else Status.OK)

    result = oom.run_with_retry(run_once, Case("eager", "cpu", "float32", "forward", 16, 4, 4, 4, 2, "add"))
    row = result.to_row()
    assert asked == [16, 8, 4, 2]
    assert released == ["cpu"] * 3
    assert (row["batch"], row["batch_run"], row["status"]) == (16, 2, "ok")


def test_what_counts_as_out_of_memory() -> None:
    assert oom.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert oom.is_out_of_memory(MemoryError())
    try:
        torch.empty(1 << 60, dtype=torch.uint8)
    except RuntimeError as exc:
        assert oom.is_out_of_memory(exc)
    else:
        pytest.fail("a 1 EiB allocation succeeded")
    assert not oom.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not oom.is_out_of_memory(ValueError("can't allocate memory"))


def test_a_sticky_cuda_error_in_process_is_crashed_and_isolates_the_rest(monkeypatch) -> None:
    case = Case("eager", "cuda", "float32", "forward", 1, 4, 4, 4, 2, "add")
    sticky = CaseResult(case, Status.ERROR, "RuntimeError: CUDA error: an illegal memory access")
    monkeypatch.setattr(isolation, "run_case", lambda case, *a: replace(sticky, case=case))
    cfg = SweepConfig.build(device="cpu", variants="eager")
    executor = isolation.CaseExecutor(cfg, all_variants(), None, "hot")
    with executor, pytest.warns(RuntimeWarning, match="sticky CUDA error"):
        row = executor.run(case).to_row()
    assert row["status"] == "crashed"
    assert "illegal memory access" in row["reason"]
    assert executor.isolate_all
    assert not isolation.is_sticky_cuda_error(replace(sticky, case=replace(case, device="cpu")))
    assert not isolation.is_sticky_cuda_error(replace(sticky, reason="RuntimeError: CUDA out of memory"))


# --- faults that need a worker process ------------------------------------------------------------


def test_abort_and_segfault_under_isolate_are_crashed_rows(tmp_path: Path, faults: ModuleType) -> None:
    options = TINY | {"variants": "fault_abort,fault_print,eager,fault_segv", "isolate": True}
    frame = harness.run(**options, out=str(tmp_path))
    rows = by_variant(assert_complete(tmp_path, **options))
    assert len(frame) == 4
    assert rows["fault_abort"]["status"] == "crashed"
    assert "killed by SIGABRT" in rows["fault_abort"]["reason"]
    assert "Fatal Python error: Aborted" in rows["fault_abort"]["reason"]
    assert rows["fault_segv"]["status"] == "crashed"
    assert "killed by SIGSEGV" in rows["fault_segv"]["reason"]
    # The sweep went on in a fresh worker, whose prints did not break the protocol.
    assert rows["fault_print"]["status"] == rows["eager"]["status"] == "ok"
    assert "Fatal Python error" in (tmp_path / isolation.WORKERS_LOG).read_text()


def test_a_variant_may_ask_for_isolation(tmp_path: Path, faults: ModuleType) -> None:
    options = TINY | {"variants": "eager,fault_abort_tagged"}
    rows = by_variant(assert_complete(harness.run(**options, out=str(tmp_path)).attrs["run_dir"], **options))
    assert rows["eager"]["status"] == "ok"
    assert rows["fault_abort_tagged"]["status"] == "crashed"
    assert "SIGABRT" in rows["fault_abort_tagged"]["reason"]


def test_a_hang_is_a_timeout_row_and_the_next_case_runs(tmp_path: Path, faults: ModuleType) -> None:
    # the limit holds for eager too, whose first case in a fresh worker (fvcore's import, the
    # profiler's first run) took over 4 s once on a loaded 2-core VM
    options = TINY | {"variants": "fault_hang,eager", "case_timeout": 10}
    start = time.monotonic()
    frame = harness.run(**options, out=str(tmp_path))
    assert time.monotonic() - start < 90
    rows = by_variant(assert_complete(tmp_path, **options))
    assert len(frame) == 2
    assert rows["fault_hang"]["status"] == "timeout"
    assert rows["fault_hang"]["reason"] == "no result within 10 s; the worker was killed"
    assert rows["eager"]["status"] == "ok"
    assert SweepConfig.build(**options).isolate  # a time limit implies isolation


# --- the runner itself interrupted or killed ------------------------------------------------------


def subprocess_env(tmp_path: Path, faults: ModuleType, **extra: str) -> dict[str, str]:
    """PYTHONPATH with the fault variants installed as a harness.variants plugin."""
    plugin = faults.make_plugin(tmp_path / "plugin")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), str(TESTS), str(ROOT)]), **extra}


def wait_for_rows(path: Path, count: int, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            if path.read_bytes().count(b"\n") >= count:
                return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before {count} rows were written")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no {count} rows within {timeout_s} s")


SWEEP_FLAGS = ["--device", "cpu", "--variants", "fault_gated,eager", "--shapes", "4x4x4,8x4x4", "--batch-sizes",
               "1,2", "--modes", "forward", *FAST_FLAGS, "--quiet"]  # fmt: skip
SWEEP_OPTIONS = {"device": "cpu", "variants": "fault_gated,eager", "shapes": "4x4x4,8x4x4", "batch_sizes": [1, 2],
                 "modes": "forward"}  # fmt: skip
#: The rows a sweep of ``SWEEP_FLAGS`` writes before its gate: both variants at 4x4x4, batches 1 and 2;
#: the fifth case, fault_gated at 8x4x4, waits there until the gate opens.
BEFORE_GATE = 4


def gated_env(tmp_path: Path, faults: ModuleType, **extra: str) -> tuple[dict[str, str], Path]:
    """``subprocess_env`` with fault_gated's gate closed, and the gate: a file, opened by touching it."""
    gate = tmp_path / "gate"
    return subprocess_env(tmp_path, faults, **{faults.GATE_ENV: str(gate)}, **extra), gate


def signalled_at_the_gate(tmp_path: Path, faults: ModuleType, signum: int) -> tuple[subprocess.Popen, Path, Path]:
    """A sweep of 8 cases in its own process, sent ``signum`` once it has written the rows before its
    gate, so it is signalled mid-run however slow this machine is: the process, its run folder and
    the gate, still closed."""
    out = tmp_path / "run"
    env, gate = gated_env(tmp_path, faults)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *SWEEP_FLAGS, "--out", str(out)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_rows(out / "results.jsonl", BEFORE_GATE, proc)
    proc.send_signal(signum)
    return proc, out, gate


def test_first_ctrl_c_stops_after_the_case_writes_the_report_and_exits_130(tmp_path: Path,
                                                                             faults: ModuleType) -> None:
    proc, out, gate = signalled_at_the_gate(tmp_path, faults, signal.SIGINT)
    gate.touch()  # the case in progress may finish now
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    rows = read_jsonl(out / "results.jsonl")
    assert BEFORE_GATE <= len(rows) <= BEFORE_GATE + 1  # the case in progress finished; no later case started
    assert len(set(keys(rows))) == len(rows)
    report = (out / "report.md").read_text()
    assert "eager" in report and "fault_gated" in report
    assert f"Unfinished run: {8 - len(rows)} case(s) did not run" in report  # its answers are partial
    assert len((out / "results.csv").read_text().splitlines()) == len(rows) + 1
    assert "interrupted" in stdout and f"python -m harness run --resume {out}" in " ".join(stdout.split())
    (out / "report.md").unlink()
    from harness.cli import main

    assert main(["report", str(out)]) == 0  # rebuilt later, it still says so
    assert f"Unfinished run: {8 - len(rows)} case(s) did not run" in (out / "report.md").read_text()
    subprocess.run([sys.executable, "-m", "harness", "run", "--resume", str(out), "--quiet"],
                   env=subprocess_env(tmp_path, faults), cwd=ROOT, check=True, capture_output=True, timeout=300)
    assert "Unfinished run" not in (out / "report.md").read_text()  # finished now


def test_ctrl_c_between_rounds_keeps_whole_configurations_for_resume(tmp_path: Path, faults: ModuleType) -> None:
    """With ``--processes 2`` a configuration's variants are measured round by round: a Ctrl-C
    keeps the configurations whose rounds all ended, never a case with one process's samples, and
    ``--resume`` measures the rest in both processes."""
    out = tmp_path / "run"
    env, gate = gated_env(tmp_path, faults)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *SWEEP_FLAGS, "--processes", "2", "--out",
                             str(out)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    wait_for_rows(out / "results.jsonl", BEFORE_GATE, proc, timeout_s=240)
    proc.send_signal(signal.SIGINT)
    gate.touch()
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr
    rows = read_jsonl(out / "results.jsonl")
    # whole configurations of two variants: none of those after the gate, or the one held there
    assert len(rows) in (BEFORE_GATE, BEFORE_GATE + 2), rows
    assert all(r["status"] == "ok" and r["processes"] == 2 for r in rows), [r["reason"] for r in rows]
    assert f"Unfinished run: {8 - len(rows)} case(s) did not run" in (out / "report.md").read_text()
    subprocess.run([sys.executable, "-m", "harness", "run", "--resume", str(out), "--quiet"],
                   env=subprocess_env(tmp_path, faults), cwd=ROOT, check=True, capture_output=True, timeout=600)
    rows = read_jsonl(out / "results.jsonl")
    assert len(rows) == len(set(keys(rows))) == 8
    assert all(r["status"] == "ok" and len(r["process_medians_ms"]) == 2 for r in rows), [r["reason"] for r in rows]


def worker_pids(marker: str) -> list[int]:
    """Worker processes started under this test (their environment carries ``marker``)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            worker = b"harness._worker" in (proc / "cmdline").read_bytes()
            if worker and marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_sigkill_mid_sweep_then_resume_completes_every_case_once(tmp_path: Path, faults: ModuleType) -> None:
    out = tmp_path / "run"
    marker = f"HARNESS_TEST_{uuid.uuid4().hex}"
    env, gate = gated_env(tmp_path, faults, HARNESS_TEST_MARKER=marker)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *SWEEP_FLAGS, "--isolate", "--out", str(out)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for_rows(out / "results.jsonl", BEFORE_GATE, proc)
    assert worker_pids(marker), "the isolated run has no worker"
    proc.kill()  # its worker is held at the gate
    proc.wait()
    results = out / "results.jsonl"
    kept = results.read_bytes()
    assert kept.count(b"\n") == BEFORE_GATE
    with results.open("ab") as f:  # what a kill in the middle of a write leaves
        f.write(b'{"variant": "eager", "device": "cpu", "dtype": "flo')
    deadline = time.monotonic() + 10
    while worker_pids(marker) and time.monotonic() < deadline:  # the orphaned worker notices and exits
        time.sleep(0.1)
    assert not worker_pids(marker)

    gate.touch()
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--resume", str(out), "--quiet"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "cut off" in done.stderr
    assert results.read_bytes().startswith(kept)  # every row finished before the kill is kept as it was
    rows = assert_complete(out, **SWEEP_OPTIONS, **FAST_RUN)
    assert all(r["status"] == "ok" for r in rows)
    assert (out / "report.md").exists()


# --- resume, in-process ---------------------------------------------------------------------------


def test_repair_truncates_a_cut_off_line_and_keeps_a_whole_one(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2')
    with pytest.warns(RuntimeWarning, match="cut off"):
        assert repair_jsonl(path) == len(b'{"a": 2')
    assert path.read_bytes() == b'{"a": 1}\n'
    path.write_bytes(b'{"a": 1}\n{"a": 2}')  # whole, only its newline missing
    assert repair_jsonl(path) == 0
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    path.write_bytes(b'{"a": 1')
    with pytest.warns(RuntimeWarning):
        repair_jsonl(path)
    assert path.read_bytes() == b""
    assert repair_jsonl(tmp_path / "missing.jsonl") == 0


def test_resume_in_process_runs_only_the_missing_cases(tmp_path: Path) -> None:
    options = TINY | {"variants": "eager", "batch_sizes": [1, 2], "shapes": "4x4x4,8x4x4"}
    harness.run(**options, out=str(tmp_path))
    results = tmp_path / "results.jsonl"
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(lines[0] + lines[1][:25])
    with pytest.warns(RuntimeWarning, match="cut off"):
        frame = harness.run(resume=tmp_path)
    rows = assert_complete(tmp_path, **options)
    assert results.read_bytes().startswith(lines[0])
    assert json.loads(lines[0])["finished_at"] == rows[0]["finished_at"]
    assert len(frame) == 4  # the report covers the whole run, the rows kept included


def test_a_resume_that_splits_a_configuration_says_so_in_the_report(tmp_path: Path) -> None:
    """eager timed before the interruption, eager_factored after, in another session: report.md ranked
    them side by side without a word, though merge says as much of runs."""
    options = TINY | {"variants": "eager,eager_factored", "batch_sizes": [1], "shapes": "4x4x4,8x4x4"}
    harness.run(**options, out=str(tmp_path))
    results = tmp_path / "results.jsonl"
    lines = results.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4
    results.write_bytes(b"".join(lines[:3]))  # the second configuration's eager_factored is left to run
    harness.run(resume=tmp_path)
    env = json.loads((tmp_path / "env.json").read_text())
    [note] = env["resume_warnings"]
    assert note.startswith("1 configuration(s) hold variants timed before the run was resumed and after it, e.g. "
                           "8x4x4 b1 float32 forward")
    assert f"> **Resumed run:** {note}" in (tmp_path / "report.md").read_text()
    from harness.sweep.resume import split_sessions

    eager, factored = (json.loads(line) for line in lines[2:4])  # the second configuration's two variants
    assert split_sessions([eager], [factored]) == note
    skipped = factored | {"status": "skipped", "median_ms": None}  # one side not timed: no speedup spans two
    assert split_sessions([eager], [skipped]) is None and split_sessions([skipped], [eager]) is None
    results.write_bytes(b"".join(lines[:2]))  # a whole configuration left: no configuration split
    harness.run(resume=tmp_path)
    assert json.loads((tmp_path / "env.json").read_text())["resume_warnings"] == [note]  # the earlier one holds
    env = json.loads((tmp_path / "env.json").read_text())
    (tmp_path / "env.json").write_text(json.dumps(env | {"resume_warnings": "edited by hand"}))  # one string
    results.write_bytes(b"".join(lines[:2]))
    harness.run(resume=tmp_path)
    assert json.loads((tmp_path / "env.json").read_text())["resume_warnings"] == ["edited by hand"]  # kept, as a list


def test_a_resume_whose_variant_is_gone_says_so_not_that_a_flag_was_wrong(tmp_path: Path, temp_variant,
                                                                           capsys) -> None:  # fmt: skip
    """A plugin uninstalled between the run and its resume read "--variants: unknown variant", a flag
    the user never gave."""
    from harness.cli import main
    from variants.registry import unregister

    temp_variant("zz_plugin", lambda r, d, t: r.to(d, t))
    harness.run(**TINY, variants="zz_plugin,eager", out=str(tmp_path))
    (tmp_path / "results.jsonl").unlink()
    unregister("zz_plugin")
    assert main(["run", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --resume {str(tmp_path)!r}: its sweep names 'zz_plugin', no longer registered here (its "
                   "plugin uninstalled, or failing to import: see `python -m harness list`); install it again, or "
                   "start a new run")


def test_resume_restores_which_variants_were_named(tmp_path: Path, temp_variant) -> None:
    temp_variant("zz_interp", lambda r, d, t: r.to(d, t), tags={"interpreted_on_cpu": True})
    harness.run(**TINY, variants="zz_*,eager", out=str(tmp_path))
    stored = json.loads((tmp_path / "env.json").read_text())["config"]
    assert stored["explicit_variants"] == ["eager"]
    (tmp_path / "results.jsonl").unlink()
    frame = harness.run(resume=tmp_path)
    status = dict(zip(frame["variant"], frame["status"], strict=True))
    assert status == {"zz_interp": "skipped", "eager": "ok"}  # still not timed: it was matched by a glob


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--resume", "/nonexistent/run"], "no such run folder"),
        (["run", "--resume", str(Path(__file__).resolve().parents[1] / "results" / "baselines" / "cpu-amd-epyc"
                                 / "results.csv")],
         "results.csv' is a file; give its run folder: --resume"),
        (["run", "--case-timeout", "0"], "--case-timeout must be"),
        (["run", "--shard", "2"], "malformed shard"),
    ],
)
def test_bad_fault_flags_are_one_line_and_exit_2(args: list[str], message: str, capsys) -> None:
    from harness.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_resume_refuses_another_out(tmp_path: Path, capsys) -> None:
    from harness.cli import main

    (tmp_path / "env.json").write_text("{}")
    assert main(["run", "--resume", str(tmp_path), "--out", str(tmp_path / "elsewhere")]) == 2
    assert "drop --out" in capsys.readouterr().err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    harness.run(**TINY, variants="eager", out=str(out))
    return out


@pytest.mark.parametrize(("args", "flag"), [
    (["--seed", "7"], "--seed 7 differs from its 0"),
    (["--max-time", "5"], "--max-time 5.0 differs from its"),
    (["--dtypes", "float64"], "--dtypes float64 differs from its float32"),
    (["--variants", "eager,mean_squeeze"], "--variants eager,mean_squeeze differs from its eager"),
    (["--processes", "2"], "--processes 2 differs from its 1"),
])  # fmt: skip
def test_a_resume_that_changes_the_sweep_is_refused(finished_run: Path, tmp_path: Path, args: list[str],
                                                     flag: str, capsys) -> None:
    """A resume with --seed 7 rewrote env.json's seed over rows taken with seed 0, and one with
    --dtypes float64 dropped the float32 cases still to run and called the run finished."""
    from harness.cli import main

    env_before = (finished_run / "env.json").read_bytes()
    assert main(["run", "--resume", str(finished_run), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and "start a new run" in err and len(err.splitlines()) == 1, err
    assert (finished_run / "env.json").read_bytes() == env_before


def test_a_resume_may_change_how_a_case_survives_a_fault_and_repeat_the_sweep(finished_run: Path, capsys) -> None:
    from harness.cli import main

    stored = json.loads((finished_run / "env.json").read_text())["config"]
    same = ["--seed", "0", "--variants", "eager", "--modes", ",".join(reversed(stored["modes"]))]
    assert main(["run", "--resume", str(finished_run), "--quiet", "--isolate", "--oom-retry", *same]) == 0
    assert "nothing left to run" in capsys.readouterr().out


@pytest.mark.parametrize("env", [None, {}, {"config": 5}, {"config": {"timing": "max_time_s"}},
                                 {"config": {"variants": ["eager"], "explicit_variants": 5}}])
def test_a_resume_of_a_run_without_a_readable_sweep_is_one_line(finished_run: Path, tmp_path: Path,
                                                                 env: dict | None, capsys) -> None:
    """Without env.json the default sweep ran into the folder; a damaged one ended in a traceback."""
    from harness.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_bytes((finished_run / "results.jsonl").read_bytes())
    if env is not None:
        (run / "env.json").write_text(json.dumps(env))
    before = (run / "results.jsonl").read_bytes()
    assert main(["run", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and str(run) in err, err
    assert (run / "results.jsonl").read_bytes() == before


def test_a_second_ctrl_c_before_any_case_finished_says_how_to_finish_the_run(tmp_path: Path, faults: ModuleType,
                                                                             capsys) -> None:
    """It printed only "interrupted", and ``report`` then called the folder "not a run folder".

    Both Ctrl-Cs land inside the first case, held at fault_gated's gate, which never opens: the first
    once the case waits there, the second once the run has said it stops after the case (two
    signals sent together can reach Python's handler as one)."""
    out = tmp_path / "run"
    env, gate = gated_env(tmp_path, faults)
    flags = ["--device", "cpu", "--variants", "fault_gated", "--shapes", "8x4x4", "--batch-sizes", "1", "--modes",
             "forward", "--dtypes", "float32", *FAST_FLAGS]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *flags, "--out", str(out)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    stdout: list[str] = []
    said = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            stdout.append(line)
            if "Ctrl-C: stopping after the current case" in line:
                said.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reached = Path(str(gate) + faults.REACHED_SUFFIX)
    deadline = time.monotonic() + 120
    try:
        while not reached.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert reached.exists(), "the run never reached the gate"
        proc.send_signal(signal.SIGINT)
        assert said.wait(60), "".join(stdout)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:  # a failed wait leaves no run holding its build at the gate for GATE_LIMIT_S
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    assert proc.returncode == 130, stderr
    assert " ".join(stderr.split()).endswith(f"interrupted; finish the run with: python -m harness run --resume {out}")
    from harness.cli import main

    assert not (out / "results.jsonl").exists()
    capsys.readouterr()
    assert main(["report", str(out)]) == 2  # no row to report, and it says what to do
    assert " ".join(capsys.readouterr().err.split()) == (f"error: {out}: no case of this run has finished yet; "
                                                         f"finish it with: python -m harness run --resume {out}")
    (out / "results.csv").write_text("variant,status\neager,ok\n")  # a finished run's CSV, copied without its jsonl
    assert main(["report", str(out)]) == 2
    assert "holds results.csv but no results.jsonl" in capsys.readouterr().err


def test_sigterm_abandons_the_case_writes_the_report_and_exits_143(tmp_path: Path, faults: ModuleType) -> None:
    """``timeout``, a cancelled CI job and Slurm's time limit send SIGTERM: the run died at once with
    neither report.md nor results.csv, and said nothing of how to finish it."""
    proc, out, _ = signalled_at_the_gate(tmp_path, faults, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    rows = read_jsonl(out / "results.jsonl")
    assert len(rows) == BEFORE_GATE and len(set(keys(rows))) == len(rows)  # the case at the gate was abandoned
    assert f"Unfinished run: {8 - len(rows)} case(s) did not run" in (out / "report.md").read_text()
    assert len((out / "results.csv").read_text().splitlines()) == len(rows) + 1
    assert " ".join(stderr.split()).endswith(f"terminated; finish the run with: python -m harness run --resume {out}")


#: /dev/full, whose every write fails with ENOSPC: a full disk on demand (Linux).
NEEDS_DEV_FULL = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")


@NEEDS_DEV_FULL
def test_a_row_the_disk_refuses_is_kept_in_the_report_and_the_run_stops_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """A full disk at the third row raised a traceback out of the sweep, and the finished case's row
    was in neither results.jsonl nor the report (it was kept only once written)."""
    from harness.cli import main
    from harness.results.store import RunFolder

    real, written = RunFolder.append, []
    out = tmp_path / "run"
    out.mkdir()
    (out / "full").symlink_to("/dev/full")  # every write fails: ENOSPC

    def append(self: RunFolder, row: Any) -> None:
        if len(written) == 2:  # the third row goes to the full disk
            monkeypatch.setattr(RunFolder, "jsonl", property(lambda folder: folder.path / "full"))
        written.append(row)
        real(self, row)

    monkeypatch.setattr(RunFolder, "append", append)
    code = main(["run", "--device", "cpu", "--variants", "eager,eager_factored", "--shapes", "4x4x4", "--batch-sizes",
                 "1,2", "--modes", "forward", "--quiet", *FAST_FLAGS, "--out", str(out)])  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "Traceback" not in err
    assert err == (f"error: cannot write {out / 'full'}: No space left on device; the run stopped after "
                   f"eager 4x4x4 b2 float32 forward r2 add, whose row report.md keeps; once there is room, finish "
                   f"the run with: python -m harness run --resume {out}")
    assert len(read_jsonl(out / "results.jsonl")) == 2
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 3  # the refused row too
    assert "Unfinished run: 1 case(s) did not run" in (out / "report.md").read_text()


@NEEDS_DEV_FULL
def test_a_row_neither_results_jsonl_nor_the_reports_can_hold_is_printed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """A disk still full when the reports are written: the refused row was kept only for them, and
    was lost with them. It is printed on stdout, as its results.jsonl line, after the one error line."""
    import harness.api
    from harness.cli import main
    from harness.results.store import RunFolder

    real, written = RunFolder.append, []
    out = tmp_path / "run"
    out.mkdir()
    (out / "full").symlink_to("/dev/full")

    def append(self: RunFolder, row: Any) -> None:
        if len(written) == 1:  # the second row goes to the full disk
            monkeypatch.setattr(RunFolder, "jsonl", property(lambda folder: folder.path / "full"))
        written.append(row)
        real(self, row)

    def no_room(*args: Any) -> None:
        raise OSError(28, "No space left on device", str(out / "results.csv"))

    monkeypatch.setattr(RunFolder, "append", append)
    monkeypatch.setattr(harness.api, "write_reports", no_room)
    code = main(["run", "--device", "cpu", "--variants", "eager", "--shapes", "4x4x4", "--batch-sizes", "1,2",
                 "--modes", "forward", "--quiet", *FAST_FLAGS, "--out", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert code == 1 and "Traceback" not in err
    assert err == (f"error: the reports in {out} could not be written (No space left on device); every row written "
                   f"is in results.jsonl; the last case's row, refused by results.jsonl too, is on stdout: once there "
                   f"is room, append it to {out / 'results.jsonl'} and rebuild them with: python -m harness report "
                   f"{out}")  # fmt: skip
    (kept,) = read_jsonl(out / "results.jsonl")
    (line,) = captured.out.splitlines()
    (out / "results.jsonl").open("a").write(line + "\n")  # as the message says
    rows = read_jsonl(out / "results.jsonl")
    assert [(r["batch"], r["status"]) for r in rows] == [(1, "ok"), (2, "ok")] and rows[0] == kept
    assert rows[1]["samples_ms"] and json.loads(line)["variant"] == "eager"
    monkeypatch.undo()
    assert main(["report", str(out)]) == 0 and "4x4x4 b2" in (out / "report.md").read_text()


def test_a_csv_the_disk_refuses_still_leaves_the_report_and_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """results.csv was written first: a full disk there left report.md the "Run not finished"
    placeholder, blaming a kill, and ended in a traceback."""
    from harness.cli import main
    from harness.results.store import RunFolder

    def full(self: RunFolder, frame: Any) -> None:
        raise OSError(28, "No space left on device", str(self.path / "results.csv"))

    monkeypatch.setattr(RunFolder, "write_csv", full)
    out = tmp_path / "run"
    code = main(["run", "--device", "cpu", "--variants", "eager", "--shapes", "4x4x4", "--batch-sizes", "1",
                 "--modes", "forward", "--quiet", *FAST_FLAGS, "--out", str(out)])  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and err == (f"error: the reports in {out} could not be written (No space left on device); every "
                                 f"row written is in results.jsonl: once there is room, rebuild them with: "
                                 f"python -m harness report {out}")  # fmt: skip
    report = (out / "report.md").read_text()
    assert report.startswith("# scSE benchmark report") and "eager" in report
    assert not list(out.glob(".*.tmp"))


@NEEDS_DEV_FULL
def test_a_traceback_the_disk_refuses_costs_no_row(tmp_path: Path, faults: ModuleType) -> None:
    """errors.log was written before the row: a failure there lost the error row and ended the sweep."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "errors.log").symlink_to("/dev/full")  # every write fails: ENOSPC
    with pytest.warns(RuntimeWarning, match="the traceback of fault_raise .* was not written: No space left"):
        harness.run(**TINY, variants="eager,fault_raise,eager_factored", out=str(out))
    assert [r["status"] for r in read_jsonl(out / "results.jsonl")] == ["ok", "error", "ok"]


def test_a_variant_that_changes_the_working_directory_sends_no_row_elsewhere(tmp_path: Path, temp_variant,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The run folder was kept relative (the default ``results/runs/...`` is): after a variant's
    ``os.chdir`` every later row and the report went to a folder of that name in its directory."""
    import copy as copying

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def build(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        os.chdir(elsewhere)
        return copying.deepcopy(reference).to(device, dtype)

    temp_variant("zz_chdir", build, devices=("cpu",), dtypes=("float32",))
    monkeypatch.chdir(tmp_path)
    harness.run(**TINY, variants="eager,zz_chdir,eager_factored", out="run")
    assert [r["variant"] for r in read_jsonl(tmp_path / "run" / "results.jsonl")] == ["eager", "zz_chdir",
                                                                                      "eager_factored"]
    assert "Run not finished" not in (tmp_path / "run" / "report.md").read_text()
    assert not any(elsewhere.iterdir())


@pytest.mark.parametrize("isolate", [False, True])
def test_a_variant_raising_keyboardinterrupt_or_a_base_exception_is_its_cases_error(tmp_path: Path, faults: ModuleType,
                                                                                   isolate: bool) -> None:
    """A KeyboardInterrupt raised by a variant (no signal) stopped the sweep as if Ctrl-C had been
    pressed, and pytest.skip's BaseException ended it in a traceback; each resume stopped there again."""
    frame = harness.run(**TINY, variants="eager,fault_interrupt,fault_base_exception,eager_factored",
                        isolate=isolate, out=str(tmp_path))  # fmt: skip
    rows = read_jsonl(tmp_path / "results.jsonl")
    assert [r["status"] for r in rows] == ["ok", "error", "error", "ok"] and not frame.attrs["interrupted"]
    assert rows[1]["reason"] == "KeyboardInterrupt" and rows[2]["reason"] == "Skipped: needs a GPU"


def test_a_worker_that_dies_sending_its_row_is_a_crashed_row_and_the_sweep_goes_on(tmp_path: Path,
                                                                                   faults: ModuleType) -> None:
    """A reply cut off mid-line (a worker killed while writing a row of thousands of samples) ended
    the whole sweep in a JSONDecodeError."""
    harness.run(**TINY, variants="eager,fault_torn_reply,eager_factored", out=str(tmp_path))
    rows = read_jsonl(tmp_path / "results.jsonl")
    assert [r["status"] for r in rows] == ["ok", "crashed", "ok"]
    assert rows[1]["reason"].startswith("worker process sent a reply that is not whole JSON (43 characters) and "
                                        "exited with status 9")


@pytest.mark.parametrize(("left", "stuck"), [
    ("threading.Thread(target=time.sleep, args=(60,), name='variant-pool').start()", True),
    ("threading.Thread(target=time.sleep, args=(0.2,), name='variant-pool').start()", False),
    # torch.compile's idle ThreadPoolExecutor workers end in Python's own shutdown, after atexit:
    # joined before it, they stalled every compiling run 10 s and skipped the atexit handlers
    ("concurrent.futures.ThreadPoolExecutor(2).submit(time.sleep, 0.01).result()", False),
])  # fmt: skip
def test_a_thread_left_running_does_not_keep_the_command_alive(left: str, stuck: bool) -> None:
    """A variant's non-daemon thread that never ends kept ``run`` alive after its report until a CI
    time limit killed it, its exit status lost; one that ends soon is waited for, and atexit runs."""
    script = ("import atexit, concurrent.futures, threading, time\n"
              "atexit.register(lambda: print('atexit ran'))\n"
              f"{left}\n"
              "from harness.__main__ import exit_without_stuck_threads\n"
              "exit_without_stuck_threads(3, grace_s=2.0)\n")  # fmt: skip
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    assert done.returncode == 3 and took < 30
    said = "warning: 1 thread(s) still running 2 s after the command ended (variant-pool), started by a variant"
    assert (said in done.stderr) is stuck, done.stderr
    assert ("atexit ran" in done.stdout) is not stuck  # only a stuck thread's exit skips it


def test_a_dead_workers_reason_quotes_the_cause_not_the_exit_noise() -> None:
    """A worker that died by an exception quoted nanobind's leak report, its log's last line."""
    from harness.sweep.isolation import log_hint

    leaks = "nanobind: leaked 2 instances!\n - leaked instance 0x1 of type 'triton.X'\n" \
            "nanobind: this is likely caused by a reference counting issue\nSee https://nanobind.readthedocs.io/x\n"
    traceback = 'Traceback (most recent call last):\n  File "w.py", line 3, in main\n    f()\nMemoryError: big\n'
    assert log_hint("warming up\n" + traceback + leaks) == "MemoryError: big"
    assert log_hint("Fatal Python error: Segmentation fault\n\nCurrent thread:\n" + leaks).startswith("Fatal")
    assert log_hint("starting\nout of file handles\n" + leaks) == "out of file handles"
    assert log_hint(leaks) == ""


def test_sigkill_leaves_a_report_saying_the_run_was_cut_short_and_how_to_rebuild_it(tmp_path: Path,
                                                                                     faults: ModuleType) -> None:
    """SIGKILL (an OOM killer, a node's hard limit) or a variant's ``os._exit`` without ``--isolate``
    runs no ``finally``: the folder held rows and no report.md, with nothing saying the run was cut
    short. The report written at the start says so and how to rebuild it until the real one replaces it."""
    proc, out, _ = signalled_at_the_gate(tmp_path, faults, signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    report = " ".join((out / "report.md").read_text().split())
    assert report.startswith("# Run not finished This run of 8 case(s), started ")
    assert f"python -m harness report {out} " in report and report.endswith(f"python -m harness run --resume {out}")
    from harness.cli import main

    assert main(["report", str(out)]) == 0  # the command it gives rebuilds the report from the rows
    rows = read_jsonl(out / "results.jsonl")
    rebuilt = (out / "report.md").read_text()
    assert len(rows) == BEFORE_GATE and "Run not finished" not in rebuilt and "eager" in rebuilt
    from harness.results.report import cases_left

    assert cases_left({"cases_left": "many", "cases_planned": 8}, 5) == 3  # hand-edited: the rows' count stands
    # the run never said what it left, but its rows fall short of the cases it planned
    assert f"Unfinished run: {8 - len(rows)} case(s) did not run" in rebuilt
    from harness.results.merge import merge

    merge([out], tmp_path / "merged")  # a killed shard leaves its merge unfinished too
    assert f"Unfinished run: {8 - len(rows)} case(s) did not run" in (tmp_path / "merged" / "report.md").read_text()
    subprocess.run([sys.executable, "-m", "harness", "run", "--resume", str(out), "--quiet"],
                   env=subprocess_env(tmp_path, faults), cwd=ROOT, check=True, capture_output=True)  # fmt: skip
    assert len(read_jsonl(out / "results.jsonl")) == 8 and "Unfinished" not in (out / "report.md").read_text()


def test_an_interrupt_while_a_row_is_recorded_waits_until_it_is_kept_twice() -> None:
    """SIGTERM between writing a row to results.jsonl and keeping it for the report made the report
    count one unfinished case more than the file said (seen under load)."""
    from harness import interrupts
    from harness.api import StopFlag, Terminated

    flag, kept = StopFlag(), []
    with flag.installed(None):
        with pytest.raises(Terminated):
            with interrupts.held():  # as the sweep holds a row's two writes
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler has run by now: it must not have raised here
                kept.append("jsonl")
                kept.append("report")
        assert kept == ["jsonl", "report"]
        with pytest.raises(Terminated):  # outside a held section, at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
