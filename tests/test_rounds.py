"""A configuration's variants measured round by round across ``--processes`` workers, so that drift
over seconds touches them alike (``CaseExecutor.rounds``)."""
from __future__ import annotations

from dataclasses import replace

import pytest

import harness
from harness.measure.figures import Figures
from harness.measure.timing import CpuClock, Timing, TimingPolicy
from harness.results.record import CaseResult, Status
from harness.sweep.cases import Case, expand
from harness.sweep.config import SweepConfig
from harness.sweep.isolation import CaseExecutor, configurations
from variants.registry import with_forms

VARIANTS = "eager,mean_squeeze,linear_excite"


class Recorded(CaseExecutor):
    """An executor whose workers are stand-ins: each call is recorded, and its samples say which
    round ran it (slot r gives samples of r + 1 ms), unless ``outcome`` says otherwise."""

    def __init__(self, cfg: SweepConfig, outcome=None) -> None:
        super().__init__(cfg, with_forms(cfg.variants), CpuClock(), "hot")
        self.calls: list[tuple[str, int, int, float]] = []
        self.outcome = outcome or (lambda case, slot: Status.OK)

    def _in_worker(self, case: Case, variant, explicit: bool, slot: int = 0,
                   policy: TimingPolicy | None = None) -> CaseResult:
        assert policy is not None
        self.calls.append((case.variant, case.batch, slot, policy.max_time_s))
        status = self.outcome(case, slot)
        if status is not Status.OK:
            return CaseResult(case, status, f"{status.value} in process {slot + 1}")
        samples = tuple(float(slot + 1) for _ in range(5))
        timing = Timing(samples, 1, 1, "converged", samples, (0.0,) * 5)
        return CaseResult(case, Status.OK, figures=Figures.of(timing, None, False, case.batch))


def config(**kw) -> SweepConfig:
    options = dict(device="cpu", variants=VARIANTS, shapes="8x4x4", batch_sizes="2,4", modes="forward",
                   processes=3, max_time_s=0.9, threads=1)  # fmt: skip
    return SweepConfig.build(**(options | kw))


def finished(executor: CaseExecutor, cases: list[Case], stop=lambda: False) -> list[CaseResult]:
    return list(executor.run_all(cases, stop))


def test_each_round_runs_every_variant_in_its_own_worker_starting_one_later() -> None:
    cfg = config()
    executor = Recorded(cfg)
    cases = expand(cfg)
    told: list[str] = []
    results = list(executor.run_all(cases, starting=told.append))
    assert told[:4] == [f"{c.label} · process 1/3" for c in cases[:3]] + [f"{cases[1].label} · process 2/3"]
    e, m, lin = VARIANTS.split(",")
    per_configuration = [(e, 0), (m, 0), (lin, 0), (m, 1), (lin, 1), (e, 1), (lin, 2), (e, 2), (m, 2)]
    assert [(v, slot) for v, _, slot, _ in executor.calls] == per_configuration * 2
    # the first configuration's rounds all end before the second's begin
    assert [b for _, b, _, _ in executor.calls] == [2] * 9 + [4] * 9
    assert [t for *_, t in executor.calls] == pytest.approx([0.3] * 18)  # a third of the budget each
    assert [r.case for r in results] == cases
    for result in results:
        row = result.to_row()
        assert row["status"] == "ok" and row["processes"] == 3
        assert row["process_medians_ms"] == [1.0, 2.0, 3.0]  # pooled in round order
        assert row["n_samples"] == 15


def test_a_case_failing_in_a_later_round_is_finished_at_once_and_run_no_more() -> None:
    fails = lambda case, slot: Status.MISMATCH if (case.variant, slot) == ("mean_squeeze", 1) else Status.OK  # noqa: E731
    cfg = config(batch_sizes="2")
    executor = Recorded(cfg, fails)
    results = finished(executor, expand(cfg))
    assert ("mean_squeeze", 2) not in [(v, s) for v, _, s, _ in executor.calls]
    assert [r.case.variant for r in results] == ["mean_squeeze", "eager", "linear_excite"]
    first = results[0].to_row()
    assert first["status"] == "mismatch" and first["processes"] == 2 and "process 2" in first["reason"]
    assert all(r.status is Status.OK and r.to_row()["processes"] == 3 for r in results[1:])


def test_a_case_failing_in_the_first_round_is_not_run_again() -> None:
    fails = lambda case, slot: Status.ERROR if case.variant == "eager" else Status.OK  # noqa: E731
    cfg = config(batch_sizes="2")
    executor = Recorded(cfg, fails)
    results = finished(executor, expand(cfg))
    assert [(v, s) for v, _, s, _ in executor.calls if v == "eager"] == [("eager", 0)]
    assert results[0].status is Status.ERROR and results[0].to_row()["processes"] == 1
    # two left: their rounds alternate which of them goes first
    assert [(v, s) for v, _, s, _ in executor.calls[3:]] == [("linear_excite", 1), ("mean_squeeze", 1),
                                                             ("mean_squeeze", 2), ("linear_excite", 2)]


def test_out_of_memory_halves_the_batch_in_the_first_round_and_the_later_rounds_run_at_what_fitted() -> None:
    oom = lambda case, slot: Status.OOM if case.variant == "mean_squeeze" and case.batch > 2 else Status.OK  # noqa: E731
    cfg = config(batch_sizes="8", oom_retry=True)
    executor = Recorded(cfg, oom)
    results = finished(executor, expand(cfg))
    squeezed = [(b, s) for v, b, s, _ in executor.calls if v == "mean_squeeze"]
    assert squeezed == [(8, 0), (4, 0), (2, 0), (2, 1), (2, 2)]
    row = next(r for r in results if r.case.variant == "mean_squeeze").to_row()
    assert row["status"] == "ok" and row["batch"] == 8 and row["batch_run"] == 2 and row["processes"] == 3
    assert row["reason"] == "out of memory at batch 8, 4; ran at batch 2"
    assert row["process_medians_ms"] == [1.0, 2.0, 3.0]


def test_a_later_round_failing_after_the_batch_was_halved_says_so() -> None:
    def outcome(case: Case, slot: int) -> Status:
        if case.variant == "mean_squeeze":
            return Status.OOM if case.batch > 2 else (Status.ERROR if slot == 1 else Status.OK)
        return Status.OK

    cfg = config(batch_sizes="8", oom_retry=True)
    results = finished(Recorded(cfg, outcome), expand(cfg))
    row = next(r for r in results if r.case.variant == "mean_squeeze").to_row()
    assert row["status"] == "error" and row["batch"] == 8 and row["batch_run"] == 2
    assert row["reason"] == "out of memory at batch 8, 4; ran at batch 2: error in process 2"


def test_stopping_mid_configuration_yields_only_finished_cases() -> None:
    """A case with some rounds measured is not finished: its partial samples are no row, and
    ``--resume`` measures it again. A failed case is finished, and kept."""
    fails = lambda case, slot: Status.ERROR if case.variant == "eager" else Status.OK  # noqa: E731
    cfg = config(batch_sizes="2")
    executor = Recorded(cfg, fails)
    results = finished(executor, expand(cfg), stop=lambda: len(executor.calls) >= 4)
    assert [(r.case.variant, r.status) for r in results] == [("eager", Status.ERROR)]
    assert len(executor.calls) == 4


def test_a_skipped_case_gets_its_row_without_a_worker() -> None:
    cfg = config(variants="eager,cuda_fused", batch_sizes="2")
    executor = Recorded(cfg)
    results = finished(executor, expand(cfg))
    assert [(r.case.variant, r.status) for r in results] == [("cuda_fused", Status.SKIPPED), ("eager", Status.OK)]
    assert {v for v, *_ in executor.calls} == {"eager"}


def test_one_process_runs_case_after_case_and_stops_between_them() -> None:
    cfg = config(processes=1)
    seen: list[str] = []

    class InProcess(Recorded):
        def run_once(self, case: Case) -> CaseResult:
            seen.append(case.label)
            return CaseResult(case, Status.SKIPPED, "not measured here")

    executor = InProcess(cfg)
    cases = expand(cfg)
    told: list[str] = []
    results = list(executor.run_all(cases, lambda: len(seen) >= 4, told.append))
    assert [r.case for r in results] == cases[:4] and told == seen == [c.label for c in cases[:4]]


def test_configurations_split_where_anything_but_the_variant_changes() -> None:
    cfg = config(batch_sizes="2,4", dtypes="float32,bfloat16")
    cases = expand(cfg)
    groups = list(configurations(cases))
    assert [len(g) for g in groups] == [3] * 4 and sum(groups, []) == cases
    assert all(len({replace(c, variant="") for c in g}) == 1 for g in groups)
    # a configuration split by resume (its done cases dropped) is still one group
    assert [len(g) for g in configurations([cases[0], cases[2], cases[3]])] == [2, 1]


def test_a_sweep_in_two_processes_pools_every_variant(tmp_path) -> None:
    frame = harness.run(device="cpu", variants="eager,mean_squeeze", shapes="16x16x16", batch_sizes=2,
                        modes="forward", threads=1, processes=2, warmup_s=0.01, min_samples=5, max_time_s=0.1,
                        out=tmp_path / "run")  # fmt: skip
    assert list(frame["variant"]) == ["eager", "mean_squeeze"]
    for _, row in frame.iterrows():
        assert row["status"] == "ok", row["reason"]
        assert row["processes"] == 2 and len(row["process_medians_ms"]) == 2
