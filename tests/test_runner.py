"""The runner: correctness gates timing, and one bad case never ends the sweep."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Iterator

import pytest
import torch
from conftest import FAST

from harness.measure.timing import CpuClock
from harness.sweep.cases import Case
from harness.sweep.runner import run_case
from harness.sweep.subject import make_reference
from variants.registry import get_variant

CLOCK = CpuClock()


def case(variant: str, mode: str = "forward", dtype: str = "float32", fusion: str = "add", **kw) -> Case:
    base = dict(batch=2, channels=8, height=5, width=7, reduction=2, bias=False)
    return Case(variant, "cpu", dtype, mode, fusion=fusion, **{**base, **kw})


def run(c: Case) -> dict:
    return run_case(c, get_variant(c.variant), CLOCK, FAST, seed=0).to_row()


@pytest.mark.parametrize("mode", ["forward", "train"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_eager_passes_and_is_timed(mode: str, dtype: str) -> None:
    row = run(case("eager", mode, dtype))
    assert row["status"] == "ok", row["reason"]
    assert row["max_rel_err"] <= row["tolerance"]
    assert (row["grad_rel_err"] is not None) == (mode == "train")
    assert row["n_samples"] == len(row["samples_ms"]) >= 3
    assert row["ci_low_ms"] <= row["median_ms"] <= row["ci_high_ms"] or math.isnan(row["ci_low_ms"])
    assert row["throughput_img_s"] == pytest.approx(2 / (row["median_ms"] * 1e-3))


@pytest.mark.parametrize("fusion", ["add", "max", "mul", "gate", "concat"])
def test_every_fusion_of_the_reference_passes_train(fusion: str) -> None:
    row = run(case("eager", "train", fusion=fusion))
    assert row["status"] == "ok", row["reason"]


def wrong_sign(ref, device, dtype):
    m = copy.deepcopy(ref).to(device, dtype)
    return lambda x: -m(x)


def writes_input(ref, device, dtype):
    m = copy.deepcopy(ref).to(device, dtype)

    def fn(x):
        y = m(x)
        with torch.no_grad():
            x.mul_(1.0001)
        return y

    return fn


def nan_out(ref, device, dtype):
    m = copy.deepcopy(ref).to(device, dtype)
    return lambda x: m(x) * float("nan")


def bad_grad(ref, device, dtype):
    """Right forward, wrong backward: the spatial branch's gradient is dropped."""
    m = copy.deepcopy(ref).to(device, dtype)

    def fn(x):
        return m.cse(x) + m.sse(x.detach())  # forward unchanged, gradient through sSE lost

    m.forward = fn
    return m


def detached_weight(ref, device, dtype):
    """Right forward, but the spatial conv's weight used detached: it gets no gradient, and a train
    step that skips a weight's gradient looks cheaper than the real one."""
    m = copy.deepcopy(ref).to(device, dtype)
    conv = m.sse.Conv1x1

    def fn(x):
        return m.combine(m.cse(x), x * torch.sigmoid(torch.nn.functional.conv2d(x, conv.weight.detach(), conv.bias)))

    m.forward = fn
    return m


def frozen_weight(ref, device, dtype):
    """The spatial conv's weight frozen: no gradient is even asked for it."""
    m = copy.deepcopy(ref).to(device, dtype)
    m.sse.Conv1x1.weight.requires_grad_(False)
    return m


def upcast(ref, device, dtype):
    """Computes and returns float32 whatever the input's dtype: a float32 result is no bfloat16 one."""
    m = copy.deepcopy(ref).to(device, torch.float32)
    return lambda x: m(x.float())


@pytest.mark.parametrize(
    ("build", "mode", "reason"),
    [
        (wrong_sign, "forward", "output error"),
        (writes_input, "forward", "modified its input"),
        (nan_out, "forward", "NaN or Inf"),
        (bad_grad, "train", "gradient of input"),
        (detached_weight, "train", "no gradient reached parameter sse.Conv1x1.weight"),
        (frozen_weight, "train", "no gradient reached parameter sse.Conv1x1.weight"),
    ],
)
def test_wrong_variants_are_mismatches_and_not_timed(temp_variant, build, mode: str, reason: str) -> None:
    name = temp_variant(f"zz_{build.__name__}", build, dtypes=("float32",))
    row = run(case(name, mode))
    assert row["status"] == "mismatch"
    assert reason in row["reason"]
    assert row.get("median_ms") is None and "samples_ms" not in row


def cropped(ref, device, dtype):
    """One column short: a wrong shape, which train mode met first inside autograd."""
    m = copy.deepcopy(ref).to(device, dtype)
    m.forward = lambda x: m.combine(m.cse(x), m.sse(x))[..., :-1]
    return m


def builds_nothing(ref, device, dtype):
    return None


def returns_a_tuple(ref, device, dtype):
    m = copy.deepcopy(ref).to(device, dtype)
    m.forward = lambda x: (m.combine(m.cse(x), m.sse(x)),)
    return m


@pytest.mark.parametrize("mode", ["forward", "train"])
@pytest.mark.parametrize(
    ("build", "status", "reason"),
    [
        (cropped, "mismatch", "output shape (2, 8, 5, 6) differs from the input's (2, 8, 5, 7)"),
        (builds_nothing, "error", "TypeError: zz_builds_nothing's build returned NoneType, not a module or a function"),
        (returns_a_tuple, "error", "TypeError: the variant returned tuple, not a tensor"),
    ],
)
def test_a_variant_of_the_wrong_kind_says_what_it_handed_back(temp_variant, build, status: str, reason: str,
                                                              mode: str) -> None:  # fmt: skip
    """Train mode read these as torch's own errors ("Mismatch in shape: grad_output[0] ...", "'tuple'
    object has no attribute 'detach'"), or a None build as a plain function to skip."""
    row = run(case(temp_variant(f"zz_{build.__name__}", build, dtypes=("float32",)), mode))
    assert (row["status"], row["reason"]) == (status, reason)


def test_a_variant_calling_sys_exit_is_an_error_row(temp_variant) -> None:
    """A variant that raised SystemExit ended the whole sweep quietly, with exit 0."""
    def build(ref, device, dtype):  # noqa: ANN001, ANN202
        def call(x):  # noqa: ANN001, ANN202
            raise SystemExit(0)
        return call

    row = run(case(temp_variant("zz_exits", build, dtypes=("float32",))))
    assert row["status"] == "error" and row["reason"] == "SystemExit: 0", row["reason"]


@pytest.mark.parametrize("mode", ["forward", "train"])
def test_a_variant_that_hands_back_its_first_answer_is_a_mismatch(temp_variant, mode: str) -> None:
    """It computed once and returned that tensor ever after: right on the first call, which was all
    the check looked at, so it was timed at a microsecond and won "51x, clear"."""
    def build(ref, device, dtype):  # noqa: ANN001, ANN202
        module = copy.deepcopy(ref).to(device, dtype)
        kept: list[torch.Tensor] = []

        def call(x):  # noqa: ANN001, ANN202
            if not kept:
                kept.append(module(x))
            return kept[0]
        return call

    row = run(case(temp_variant("zz_memo", build, dtypes=("float32",), modes=("forward",)), "forward"))
    assert row["status"] == "mismatch" and "second call, on the input mirrored" in row["reason"], row["reason"]
    assert row.get("median_ms") is None
    assert run(case("eager", mode))["status"] == "ok"  # a correct variant mirrors exactly as it should


@pytest.mark.parametrize("key", ["identity", "address"])
def test_a_variant_that_keeps_answers_by_its_input_is_a_mismatch(temp_variant, key: str) -> None:
    """It cached each answer under its input tensor (or its data pointer, as a layout cache might):
    a new tensor, such as a mirrored copy, missed the cache and was right; the timed calls, given
    the first call's tensor again, were answered from the cache and timed at nothing."""
    def build(ref, device, dtype):  # noqa: ANN001, ANN202
        module = copy.deepcopy(ref).to(device, dtype)
        kept: dict[int, torch.Tensor] = {}

        def call(x):  # noqa: ANN001, ANN202
            k = id(x) if key == "identity" else x.data_ptr()
            if k not in kept:
                kept[k] = module(x)
            return kept[k]
        return call

    row = run(case(temp_variant("zz_cache", build, dtypes=("float32",), modes=("forward",)), "forward"))
    assert row["status"] == "mismatch" and "second call, on the input mirrored" in row["reason"], row["reason"]
    assert row.get("median_ms") is None


def test_the_mirrored_call_leaves_the_input_as_it_was() -> None:
    from harness.measure.correctness import Check
    from harness.sweep.runner import mirrored_check

    x = torch.randn(2, 4, 3, 5, requires_grad=True)
    before = x.detach().clone()
    seen: list[torch.Tensor] = []
    check = Check(max_rel_err=0.0, grad_rel_err=None, tolerance=1e-6, grad_tolerance=None, problem=None)
    got = mirrored_check(lambda t: seen.append(t.detach().clone()) or t * 2, x, x.detach() * 2, check)
    assert got is check and torch.equal(seen[0], before.flip(-1))  # the call saw the mirror, in x itself
    assert torch.equal(x.detach(), before) and x.requires_grad  # and x is back


def test_a_plain_function_is_skipped_in_train_mode_with_the_reason(temp_variant) -> None:
    """Its weights are closed over, so autograd cannot reach them: not a wrong variant, an unsupported
    mode, and said so rather than "no gradient reached parameter ..."."""
    def build(ref, device, dtype):  # noqa: ANN001, ANN202
        m = copy.deepcopy(ref).to(device, dtype)
        return lambda x: m(x)

    name = temp_variant("zz_plain", build, dtypes=("float32",))
    row = run(case(name, "train"))
    assert row["status"] == "skipped"
    assert row["reason"].startswith("train mode needs a variant that builds an nn.Module")
    assert run(case(name, "forward"))["status"] == "ok"


def test_an_output_in_another_dtype_is_a_mismatch(temp_variant) -> None:
    name = temp_variant("zz_upcast", upcast, dtypes=("bfloat16",))
    row = run(case(name, "forward", dtype="bfloat16"))
    assert row["status"] == "mismatch"
    assert row["reason"] == "output dtype torch.float32 differs from the input's torch.bfloat16"


def test_an_exception_is_an_error_row(temp_variant) -> None:
    def explode(ref, device, dtype):
        raise RuntimeError("kernel launch failed\nsecond line")

    name = temp_variant("zz_explode", explode)
    row = run(case(name))
    assert row["status"] == "error"
    assert row["reason"] == "RuntimeError: kernel launch failed"


def test_oom_is_its_own_status(temp_variant) -> None:
    def oom(ref, device, dtype):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")

    row = run(case(temp_variant("zz_oom", oom)))
    assert row["status"] == "oom"
    assert "out of memory" in row["reason"]


def test_unsupported_and_unavailable_are_skipped_with_reasons(temp_variant) -> None:
    name = temp_variant("zz_fp32", lambda r, d, t: r, dtypes=("float32",))
    assert "not float16" in run(case(name, dtype="float16"))["reason"]
    gone = temp_variant("zz_gone", lambda r, d, t: r, available=lambda: "triton is not installed")
    row = run(case(gone))
    assert (row["status"], row["reason"]) == ("skipped", "triton is not installed")


def test_interpreted_variants_are_timed_on_cpu_only_when_named(temp_variant) -> None:
    name = temp_variant("zz_interp", lambda r, d, t: copy.deepcopy(r).to(d, t), tags={"interpreted_on_cpu": True})
    c = case(name)
    assert run_case(c, get_variant(name), CLOCK, FAST, seed=0).to_row()["status"] == "skipped"
    assert run_case(c, get_variant(name), CLOCK, FAST, seed=0, explicit=True).to_row()["status"] == "ok"


def test_gate_reference_is_not_at_its_symmetric_start() -> None:
    ref = make_reference(case("eager", fusion="gate"), seed=0)
    assert ref.gate.abs().max() > 0.1


class DoubleGrad(torch.autograd.Function):
    """Identity forward, doubled gradient: a backward bug the output cannot show."""

    @staticmethod
    def forward(ctx, w):
        return w.view_as(w)

    @staticmethod
    def backward(ctx, g):
        return 2 * g


def test_parameter_gradients_are_checked_by_name(temp_variant) -> None:
    def wrong_weight_grad(ref, device, dtype):
        m = copy.deepcopy(ref).to(device, dtype)
        conv = m.sse.Conv1x1
        m.sse.forward = lambda x: x * torch.sigmoid(torch.nn.functional.conv2d(x, DoubleGrad.apply(conv.weight)))
        return m

    name = temp_variant("zz_paramgrad", wrong_weight_grad, dtypes=("float32",))
    assert run(case(name, "forward"))["status"] == "ok"
    row = run(case(name, "train"))
    assert row["status"] == "mismatch"
    assert "gradient of sse.Conv1x1.weight" in row["reason"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_max_fusion_train_passes_for_the_seed_module(dtype: str) -> None:
    """max's gradient jumps at ties; the seed module in low precision must not be called wrong for it."""
    row = run(case("eager", "train", dtype, fusion="max", batch=8, channels=32, height=32, width=32))
    assert row["status"] == "ok", row["reason"]
    assert row["eager_rel_err"] > 0


def test_low_precision_allowance_does_not_hide_a_wrong_variant(temp_variant) -> None:
    """A bfloat16 variant 5% off is far worse than bfloat16 itself: still a mismatch."""

    def off_by_5_percent(ref, device, dtype):
        m = copy.deepcopy(ref).to(device, dtype)
        return lambda x: m(x) * 1.05

    name = temp_variant("zz_off5", off_by_5_percent, dtypes=("bfloat16",))
    row = run(case(name, "forward", "bfloat16", batch=4, channels=32, height=16, width=16))
    assert row["status"] == "mismatch"
    assert "output error" in row["reason"]
    assert row["tolerance"] < 0.05


# ------------------------------------------------------------------------------------ where the time goes


def phases_of(row: dict) -> dict[str, float | None]:
    from harness.results.record import PHASE_COLUMNS

    return {c: row[c] for c in PHASE_COLUMNS}


def test_every_row_says_where_its_time_went(temp_variant) -> None:
    import time

    t0 = time.perf_counter()
    ok = run(case("eager", "train"))
    wall = time.perf_counter() - t0
    wrong = run(case(temp_variant("zz_wrong_sign", wrong_sign, dtypes=("float32",))))
    skipped = run(case(temp_variant("zz_nowhere", lambda r, d, t: r, available=lambda: "not here")))
    for row in (ok, wrong, skipped):
        phases = phases_of(row)
        parts = {c: s for c, s in phases.items() if c != "phase_total_s" and s is not None}
        assert all(s >= 0 for s in parts.values()), phases
        assert sum(parts.values()) <= phases["phase_total_s"], phases
    assert phases_of(ok)["phase_total_s"] <= wall
    assert all(s is not None for s in phases_of(ok).values())
    sampled_s = sum(ok["samples_ms"]) * ok["calls_per_sample"] / 1e3
    assert phases_of(ok)["phase_timing_s"] >= sampled_s  # every timed call happened inside the timing phase
    assert phases_of(wrong)["phase_check_s"] > 0 and phases_of(wrong)["phase_timing_s"] is None
    assert phases_of(wrong)["phase_memory_s"] is None
    assert {c for c, s in phases_of(skipped).items() if s is not None} == {"phase_flops_s", "phase_total_s"}


def test_phase_timer_adds_up_on_a_fake_clock() -> None:
    from harness.sweep.runner import PhaseTimer

    ticks = iter([0.0, 1.0, 3.0, 3.5, 4.0, 10.0])
    timer = PhaseTimer(now=lambda: next(ticks))  # start at 0
    with timer.phase("setup"):  # 1 → 3
        pass
    with timer.phase("setup"):  # 3.5 → 4: phases add up
        pass
    timer.add("a_plugins_own_phase", 0.25)  # no column of its own: counted with the other metrics
    phases = timer.phases()  # total at 10
    assert (phases.phase_setup_s, phases.phase_metrics_s, phases.phase_total_s) == (2.5, 0.25, 10.0)
    assert phases.phase_check_s is None and phases.phase_timing_s is None


def test_a_configurations_variants_share_one_draw(monkeypatch, temp_variant) -> None:
    """The input and cotangent are drawn once per configuration, again when it changes, and a
    variant that writes into its input spoils nothing for the next."""
    from harness.sweep import subject as runner
    from harness.sweep.subject import SharedInputs

    draws: list[str] = []
    for name in ("draw_input", "draw_cotangent"):
        real = getattr(runner, name)
        monkeypatch.setattr(runner, name, lambda c, s, *x, real=real, name=name: draws.append(name) or real(c, s, *x))
    vandal = temp_variant("zz_vandal", writes_input, dtypes=("float32",))
    inputs = SharedInputs()

    def shared(c: Case) -> dict:
        return run_case(c, get_variant(c.variant), CLOCK, FAST, seed=0, inputs=inputs).to_row()

    rows = [shared(case(v, "train")) for v in ("eager", "eager_factored", "channels_last")]
    assert draws == ["draw_input", "draw_cotangent"]  # once for the three variants
    assert [r["status"] for r in rows] == ["ok"] * 3
    fresh = run(case("eager", "train"))  # drawn for itself (counted too): the same numbers
    assert (rows[0]["max_rel_err"], rows[0]["grad_rel_err"]) == (fresh["max_rel_err"], fresh["grad_rel_err"])
    first = shared(case("eager"))  # forward: a new configuration, its input drawn once more
    assert shared(case(vandal))["status"] == "mismatch"
    after = shared(case("eager"))
    assert first["status"] == after["status"] == "ok" and first["max_rel_err"] == after["max_rel_err"]
    assert draws == ["draw_input", "draw_cotangent"] * 2 + ["draw_input"]  # shared, fresh, forward
    shared(case("eager", "train", batch=3))  # a new configuration: drawn again
    assert draws[5:] == ["draw_input", "draw_cotangent"]


def test_shared_inputs_keep_a_bounded_number_of_draws() -> None:
    from harness.sweep.subject import SharedInputs

    inputs = SharedInputs(size=1)
    a = inputs.get(case("eager"), 0)[0]
    assert inputs.get(case("eager_factored"), 0)[0] is a  # the variant is not part of the key
    inputs.get(case("eager", batch=3), 0)
    assert inputs.get(case("eager"), 0)[0] is not a  # evicted, drawn again
    assert torch.equal(inputs.get(case("eager"), 0)[0], a)
    assert inputs.get(case("eager", "train"), 0)[1] is not None and inputs.get(case("eager"), 0)[1] is None


def test_the_executor_freezes_start_up_objects_only_while_it_runs() -> None:
    import gc

    from harness.sweep.config import SweepConfig
    from harness.sweep.isolation import CaseExecutor
    from variants.registry import all_variants

    before = gc.get_freeze_count()
    cfg = SweepConfig.build(device="cpu", variants="eager", shapes="8x5x7", batch_sizes="2", modes="forward",
                            warmup_s=0, min_samples=3, max_time_s=0.05)  # fmt: skip
    with CaseExecutor(cfg, all_variants(), CLOCK, "hot") as executor:
        assert gc.get_freeze_count() > before
        row = executor.run(case("eager")).to_row()
    # Nothing the sweep froze stays frozen. Python 3.12 starts with a few hundred objects frozen
    # (375 on 3.12.1; 0 on 3.11 and 3.13), and gc.unfreeze has no way to spare them: it thaws them too,
    # which costs them a collector's walk and nothing else.
    assert gc.get_freeze_count() <= before
    assert row["status"] == "ok" and row["phase_total_s"] > 0


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_a_configurations_variants_share_one_float64_reference(monkeypatch, dtype: str) -> None:
    """The float64 reference (and the seed's own error) is computed for a configuration's first
    variant and reused by the rest, with the same checks as when each computes its own."""
    from harness.sweep import runner
    from harness.sweep.subject import SharedInputs

    made: list[tuple[str, ...]] = []
    real = runner.expected_of

    def counting(trial, names, compute, policy=None):
        made.append(tuple(names))
        return real(trial, names, compute)

    monkeypatch.setattr(runner, "expected_of", counting)
    inputs = SharedInputs()
    names = ("eager", "eager_factored", "mean_squeeze", "linear_excite")
    shared = [run_case(case(v, "train", dtype), get_variant(v), CLOCK, FAST, seed=0, inputs=inputs) for v in names]
    assert len(made) == 1  # one reference for the four of them (every one has all three weights' gradients)
    alone = [run_case(case(v, "train", dtype), get_variant(v), CLOCK, FAST, seed=0) for v in names]
    for s, a in zip(shared, alone, strict=True):
        assert s.status.value == a.status.value == "ok"
        assert s.check == a.check  # the same errors and limits, to the last bit
    run_case(case("eager", "train", dtype, batch=3), get_variant("eager"), CLOCK, FAST, seed=0, inputs=inputs)
    assert len(made) == 2  # a new configuration: its own reference


class OwnsItsInput(torch.nn.Module):
    """A CUDA graph's contract on the CPU: it reads a static input buffer, and copies into it only
    what isn't that buffer already. In a training step the buffer requires grad, as the input it was
    made from did, and a copied-in input's gradient flows back to it (as torch's graphed node's does)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.reference_names = {f"module.{name}": name for name, _ in module.named_parameters()}
        self.static_input: torch.Tensor | None = None
        self.copies = 0
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if x is self.static_input:
            return self.module(x)
        if self.static_input is None:  # the capture
            self.static_input = x.detach().clone().requires_grad_(x.requires_grad)
        else:
            self.copies += 1
        return self.module(x)  # copied in: the same values, and the gradient reaches x


@pytest.mark.parametrize("mode", ["forward", "train"])
def test_the_timed_calls_of_a_variant_that_owns_its_input_copy_nothing(temp_variant, mode: str) -> None:
    built: list[OwnsItsInput] = []

    def build(ref, device, dtype):
        built.append(OwnsItsInput(copy.deepcopy(ref).to(device, dtype)))
        return built[-1]

    row = run(case(temp_variant("zz_static", build), mode))
    assert row["status"] == "ok", row["reason"]
    fn = built[-1]
    # the first call's input became the buffer; the check's mirrored call copied once; no timed call
    # copied (in train mode too: the buffer requires grad, as the case's input does)
    assert fn.calls > 10 and fn.copies == 1


class FakeCapture:
    """torch.cuda's graph API on a CPU: streams that do nothing, a capture that runs its body once
    (or fails, as one out of memory does), a replay that does nothing."""

    fail = False

    class Stream:
        def __init__(self, device: object = None) -> None: ...

        def wait_stream(self, other: object) -> None: ...

    class CUDAGraph:
        def replay(self) -> None: ...

    @staticmethod
    @contextlib.contextmanager
    def graph(graph: object) -> Iterator[None]:
        if FakeCapture.fail:
            raise RuntimeError("CUDA out of memory (a stand-in)")
        yield


def test_a_failed_capture_leaves_the_previous_graph_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The new input buffer replaced the old before the capture, which then failed: the old graph,
    still used for the old layout, read a buffer freed under it."""
    from variants.cuda_graph import CudaGraphScSE

    for name in ("Stream", "CUDAGraph", "graph"):
        monkeypatch.setattr(torch.cuda, name, getattr(FakeCapture, name))
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeCapture.Stream())
    module = CudaGraphScSE(torch.nn.Identity())
    x = torch.randn(2, 3, 4, 4)
    module(x)
    before = (module._graph, module._static_in, module._static_out)
    monkeypatch.setattr(FakeCapture, "fail", True)
    with pytest.raises(RuntimeError, match="out of memory"):
        module(torch.randn(4, 3, 4, 4))  # another layout: captures again, and fails
    assert (module._graph, module._static_in, module._static_out) == before  # identities: nothing half-replaced
    assert module.captures == 1 and torch.equal(module(x), x)


def test_a_replaced_parameter_is_captured_again_never_read_where_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inference graph's key was the input's layout alone: a parameter replaced since the capture
    (functional_call, load_state_dict(assign=True)) was read at its old address, freed memory once the
    last reference to it went."""
    from variants.cuda_graph import CudaGraphScSE

    for name in ("Stream", "CUDAGraph", "graph"):
        monkeypatch.setattr(torch.cuda, name, getattr(FakeCapture, name))
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeCapture.Stream())
    conv = torch.nn.Conv2d(3, 3, 1)
    module = CudaGraphScSE(torch.nn.Sequential(conv))
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        module(x)
        module(x)
        assert module.captures == 1
        old = conv.weight
        conv.weight = torch.nn.Parameter(old.detach().clone())
        module(x)
    assert module.captures == 2 and module._held[0] is conv.weight  # the graph's parameters, kept alive


def test_a_graphed_form_keeps_what_it_wraps_declares() -> None:
    from variants.cuda_graph import GRAPHED, graphed

    for name in GRAPHED:
        inner, form = get_variant(name), get_variant(f"graphed_{name}")
        assert form.description.startswith(name)
        assert (form.devices, form.modes) == ({"cuda"}, inner.modes)  # in train, forward and backward graphed
        assert (form.dtypes, form.fusions) == (inner.dtypes, inner.fusions)
        tags = dict(form.tags)
        assert tags["output_reused"] and tags["compiles"]
        assert all(tags[k] == v for k, v in inner.tags if k not in ("output_reused", "compiles"))
        if not torch.cuda.is_available():
            assert "CUDA" in (form.unavailable("cuda") or "")
    if torch.cuda.is_available():  # what it wraps can be missing where CUDA is not
        gone = graphed(dataclasses.replace(get_variant("eager"), available=lambda: "needs a library"))
        assert gone.unavailable("cuda") == "needs a library"


def test_a_case_too_large_for_the_hosts_memory_is_an_oom_row_before_anything_is_allocated(monkeypatch) -> None:
    """Linux overcommits: ``--shapes 100000x100000x100000`` allocated, touched the memory and had the
    kernel kill the sweep (no row, no report). Its size is refused against MemAvailable first, and the
    FLOP count, which traces the reference for real, is refused the same way."""
    import harness.measure.flops as flops
    import harness.sweep.oom as oom

    huge = case("eager", channels=100_000, height=100_000, width=100_000, batch=1)
    needed = oom.host_bytes_needed(huge)
    assert needed >= 10**15 * (4 + 2 * 4 + 8) + 4 * 2 * 100_000 * 50_000  # draw, x and its copy, float64 input
    row = run(huge)
    assert row["status"] == "oom" and "GiB of host memory" in row["reason"], row["reason"]
    assert row["fvcore_uncounted"].startswith("fvcore not run: its trace needs "), row["fvcore_uncounted"]
    assert row["analytic_flops"] > 0 and row["torch_flops"] > 0  # the formula and the meta device need no memory
    small = case("eager")
    monkeypatch.setattr(oom, "available_host_bytes", lambda: oom.host_bytes_needed(small) - 1)
    monkeypatch.setattr(flops, "available_host_bytes", lambda: 10**12)
    assert run(small)["status"] == "oom"  # a bound one byte over what is free refuses it
    monkeypatch.setattr(oom, "available_host_bytes", lambda: None)  # unknown (no /proc/meminfo): no refusal
    assert run(small)["status"] == "ok"


def test_a_sticky_cuda_error_raised_when_memory_is_released_is_a_row_not_the_end_of_the_sweep(monkeypatch) -> None:
    """After an illegal address every CUDA call fails, empty_cache too: raised from the runner's
    clean-up it left the executor and ended an in-process sweep before isolation could take over."""
    import harness.sweep.runner as runner

    def poisoned(device: str) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(runner, "release_memory", poisoned)
    row = run(case("eager"))
    assert row["status"] == "error" and "illegal memory access" in row["reason"], row


def test_a_clock_for_a_numbered_gpu_makes_it_the_current_device(monkeypatch) -> None:
    """torch.cuda._sleep (the clock's hold) and Triton launch on the current device: on cuda:1 the
    hold ran on GPU 0 while the events timed GPU 1."""
    import harness.measure.torch_stream as torch_stream
    import harness.sweep.runner as runner

    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(torch.device(d)))
    monkeypatch.setattr(torch_stream, "make_cuda_clock", lambda dev, cache: ("clock", dev, cache))
    assert runner.clock_for("cuda:1", "cold") == ("clock", torch.device("cuda:1"), "cold")
    assert chosen == [torch.device("cuda:1")]


def wants_channels_last(ref: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The reference, refusing any input that is not channels_last, as a layout-specific kernel might."""
    module = copy.deepcopy(ref).to(device, dtype)
    plain = module.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not x.is_contiguous(memory_format=torch.channels_last):
            raise ValueError("NCHW input reached the kernel")
        return plain(x)

    module.forward = forward
    return module


@pytest.mark.parametrize("mode", ["forward", "train"])
def test_a_variant_timed_in_its_own_layout_is_also_timed_from_nchw_input(temp_variant, mode: str) -> None:
    """channels_last won 8×64×32×32 forward at 0.26 ms against eager's 0.35 on the 2-core VM, but
    converting NCHW input alone takes 0.45 ms there: the row says what a NCHW network would pay."""
    name = temp_variant("zz_nhwc", wants_channels_last, tags={"input_memory_format": "channels_last"})
    row = run(case(name, mode))
    assert row["status"] == "ok", row["reason"]  # the conversion happens before the variant's call
    assert row["nchw_input_ms"] > 0
    assert "nchw_input_ms" not in run(case("eager", mode))  # only variants given their own layout


def test_channels_last_rows_carry_their_time_from_nchw_input() -> None:
    row = run(case("channels_last", "train"))
    assert row["status"] == "ok", row["reason"]
    assert math.isfinite(row["nchw_input_ms"]) and row["nchw_input_ms"] > 0
