"""The variant zoo's specific promises, and proof that the conformance suite catches wrong variants."""
from __future__ import annotations

import copy
import io
import json
import time

import pytest
import torch
import torch.nn as nn
from optional import why_unavailable

from harness.measure.timing import TimingPolicy
from harness.sweep.cases import Case
from harness.sweep.runner import clock_for, compiled_graphs, run_case
from harness.testing import (
    INPUTS,
    OVERFLOW_INPUT,
    ConformanceError,
    case_tolerance,
    check_variant,
    parameter_names,
    tie_free_cotangent,
)
from variants.amp import AutocastFp16ScSE
from variants.eager_forms import FACTORED_FUSIONS, FactoredScSE
from variants.reference import FUSIONS, ScSE
from variants.registry import get_variant, list_variants
from variants.smp import SMP_TO_REFERENCE, SmpSCSE, to_reference_state_dict
from variants.tags import tags_of
from variants.weights import copy_weights

CPU = torch.device("cpu")
ZOO = (
    "eager", "eager_factored", "mean_squeeze", "linear_excite", "channels_last", "amp_fp16", "amp_bf16",
    "compile", "compile_max_autotune", "compile_reduce_overhead", "cuda_graph", "smp",
)  # fmt: skip
#: Only the main input, one dtype: enough to show a broken variant fails, and fast.
QUICK = {"dtypes": "float32", "reductions": 2, "biases": False, "inputs": ["main"]}


def test_every_zoo_variant_is_registered_with_what_it_supports() -> None:
    names = set(list_variants())
    assert set(ZOO) <= names, f"missing: {sorted(set(ZOO) - names)}"
    assert get_variant("cuda_graph").devices == {"cuda"}
    assert get_variant("cuda_graph").modes == {"forward", "train"}  # in train, forward and backward graphed
    assert get_variant("smp").fusions == {"add"}
    assert tags_of(get_variant("smp")).biases == (True,)
    assert tags_of(get_variant("amp_fp16")).compute_dtype == "float16"
    assert get_variant("amp_bf16").dtypes == {"float32", "bfloat16"}
    for name in ("compile", "compile_max_autotune", "compile_reduce_overhead"):
        assert tags_of(get_variant(name)).compiles is True


# --- smp -------------------------------------------------------------------------------------------


class SmpOriginalSCSE(nn.Module):
    """segmentation_models_pytorch.base.modules.SCSEModule as smp writes it (smp isn't installed
    here); its checkpoints are what the smp variant must load."""

    def __init__(self, in_channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.cSE = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, in_channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels // reduction, in_channels, 1),
            nn.Sigmoid(),
        )
        self.sSE = nn.Sequential(nn.Conv2d(in_channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.cSE(x) + x * self.sSE(x)


def _checkpoint(module: nn.Module) -> dict[str, torch.Tensor]:
    """A state_dict through torch.save/torch.load, as a checkpoint file would give it."""
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _smp_modules() -> list:
    """The copy of smp's SCSEModule, and smp's own when it imports (else a skip that says why)."""
    why = why_unavailable("segmentation_models_pytorch")
    if why is not None:
        missing = pytest.param(None, marks=pytest.mark.skip(reason=why), id="segmentation_models_pytorch")
        return [SmpOriginalSCSE, missing]
    from segmentation_models_pytorch.base.modules import SCSEModule  # the real one

    return [SmpOriginalSCSE, SCSEModule]


@pytest.mark.parametrize("smp_class", _smp_modules(), ids=lambda c: c.__module__)
def test_smp_checkpoint_loads_strictly_and_matches_the_reference(smp_class: type[nn.Module]) -> None:
    torch.manual_seed(0)
    original = smp_class(64).double()  # reduction 16 by default, bias on every conv
    checkpoint = _checkpoint(original)
    assert set(checkpoint) == set(SMP_TO_REFERENCE)

    variant_module = SmpSCSE(64).double()
    variant_module.load_state_dict(checkpoint, strict=True)
    reference = ScSE(64, reduction=16, fusion="add", bias=True).double()
    reference.load_state_dict(to_reference_state_dict(checkpoint), strict=True)

    x = torch.randn(2, 64, 9, 7, dtype=torch.float64)
    expected = original(x)
    torch.testing.assert_close(variant_module(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(reference(x), expected, rtol=1e-12, atol=1e-12)
    # and the registered variant, built from that reference, is the same function again
    built = get_variant("smp").build(reference.float(), CPU, torch.float64)
    torch.testing.assert_close(built(x), expected, rtol=1e-12, atol=1e-12)
    assert set(built.state_dict()) == set(checkpoint)


def test_smp_names_map_onto_every_reference_parameter() -> None:
    reference = ScSE(32, reduction=16, bias=True)
    assert set(SMP_TO_REFERENCE.values()) == {n for n, _ in reference.named_parameters()}
    built = get_variant("smp").build(reference, CPU, torch.float32)
    assert set(parameter_names(built).values()) == set(SMP_TO_REFERENCE.values())
    with pytest.raises(KeyError, match="cse.fc.0.weight"):
        to_reference_state_dict({"cse.fc.0.weight": torch.zeros(1)})  # a seed checkpoint isn't smp's


# --- eager_factored --------------------------------------------------------------------------------


def test_eager_factored_is_offered_only_for_exact_fusions() -> None:
    variant = get_variant("eager_factored")
    assert set(variant.fusions) == set(FACTORED_FUSIONS) == {"add", "mul", "gate"}
    for fusion in set(FUSIONS) - set(FACTORED_FUSIONS):
        assert f"not {fusion}" in (variant.unsupported("cpu", "float32", "forward", fusion) or "")
        with pytest.raises(ValueError, match="does not factor exactly"):
            FactoredScSE(8, fusion=fusion)


def test_factoring_max_would_be_wrong_where_x_is_negative() -> None:
    """Why max is excluded: x·max(c, s) equals max(x·c, x·s) only where x ≥ 0."""
    torch.manual_seed(1)
    ref = ScSE(8, 2, "max").double()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        c = ref.cse.fc(ref.cse.avg_pool(x))
        s = torch.sigmoid(ref.sse.Conv1x1(x))
        naive, right = x * torch.maximum(c, s), ref(x)
    nonneg = x >= 0
    torch.testing.assert_close(naive[nonneg], right[nonneg])
    assert (naive[~nonneg] - right[~nonneg]).abs().max() > 1e-3


def test_eager_factored_writes_a_fresh_buffer_not_the_input() -> None:
    torch.manual_seed(2)
    ref = ScSE(8, 2, "add")
    fn = get_variant("eager_factored").build(ref, CPU, torch.float32)
    x = torch.randn(2, 8, 5, 5)
    before = x.clone()
    with torch.no_grad():
        y = fn(x)
    assert y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    assert torch.equal(x, before)
    torch.testing.assert_close(y, ref(x), rtol=1e-5, atol=1e-6)


# --- AMP and pytorch/pytorch#43992 ------------------------------------------------------------------

LARGE_CHANNELS_LAST = OVERFLOW_INPUT  # what a plugin author is given for it (harness.testing)


def test_the_large_input_overflows_a_half_precision_sum() -> None:
    x = LARGE_CHANNELS_LAST.make(0, CPU, torch.float16)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(x).all()
    assert torch.isinf(x.sum((2, 3))).all()


@pytest.mark.parametrize(("name", "dtype"), [
    ("amp_fp16", "float16"), ("amp_fp16", "float32"), ("amp_bf16", "bfloat16"), ("amp_bf16", "float32"),
])  # fmt: skip
def test_amp_gives_no_nan_on_large_channels_last_input(name: str, dtype: str) -> None:
    """pytorch#43992: AdaptiveAvgPool2d on channels_last under AMP gave NaN in SE blocks. The AMP
    variants squeeze with a float32-accumulated mean, so every fusion stays finite and accurate."""
    report = check_variant(name, dtypes=dtype, modes="forward", biases=False, reductions=2,
                           inputs=[LARGE_CHANNELS_LAST])
    assert len(report.checked) == len(FUSIONS)


class HalfSumSqueeze(AutocastFp16ScSE):
    """An AMP scSE that squeezes by summing in the activations' dtype: what #43992's kernels did."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=torch.float16):
            pooled = x.sum((2, 3), keepdim=True) / (x.shape[2] * x.shape[3])
            out = self.combine(x * self.cse.fc(pooled), self.sse(x))
        return out.to(x.dtype)


def test_a_half_precision_squeeze_fails_on_that_input(temp_variant) -> None:
    """The test above can fail: the same check catches a squeeze that overflows."""

    def build(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
        module = HalfSumSqueeze(reference.channels, reference.reduction, reference.fusion, reference.bias)
        module.load_state_dict(reference.state_dict())
        return module.to(device)

    name = temp_variant("test_half_sum_squeeze", build, dtypes=("float16",), tags={"compute_dtype": "float16"})
    with pytest.raises(ConformanceError, match="NaN or Inf"):
        check_variant(name, dtypes="float16", modes="forward", fusions="add", biases=False, reductions=2,
                      inputs=[LARGE_CHANNELS_LAST])
    check_variant(name, **{**QUICK, "dtypes": "float16"})  # ordinary inputs pass: only the overflow shows it


def test_amp_is_held_to_its_compute_dtype_and_returns_the_input_dtype() -> None:
    amp = get_variant("amp_fp16")
    assert case_tolerance(amp, "float32", "cpu") == case_tolerance(get_variant("eager"), "float16", "cpu")
    ref = ScSE(8, 2, "concat")  # autocast alone would hand back the projection's float16
    y = amp.build(ref, CPU, torch.float32)(torch.randn(1, 8, 4, 4))
    assert y.dtype == torch.float32


# --- compiled variants -----------------------------------------------------------------------------


def test_each_compiled_build_counts_its_own_graphs_and_recompiles_per_shape() -> None:
    variant = get_variant("compile")
    if variant.unavailable("cpu"):
        pytest.skip(variant.unavailable("cpu"))
    ref = ScSE(4, 2)
    first = variant.build(ref, CPU, torch.float32)
    assert compiled_graphs(first) == 0
    with torch.no_grad():
        first(torch.randn(1, 4, 3, 3))
        assert compiled_graphs(first) == 1
        first(torch.randn(1, 4, 3, 3))
        assert compiled_graphs(first) == 1  # same shape: no recompile
        first(torch.randn(1, 4, 5, 3))
        assert compiled_graphs(first) == 2  # a new shape is one recompile (dynamic=False)
        second = variant.build(ref, CPU, torch.float32)
        second(torch.randn(1, 4, 3, 3))
    assert compiled_graphs(second) == 1  # its own cache: first's graph was not reused
    assert compiled_graphs(first) == 2


def test_a_compiled_wrappers_prefix_is_dropped_from_parameter_names() -> None:
    wrapped = torch.compile(ScSE(4, 2))  # lazy: nothing compiles until called
    names = parameter_names(wrapped)
    assert all(k.startswith("_orig_mod.") for k in names)
    assert set(names.values()) == {n for n, _ in ScSE(4, 2).named_parameters()}


# --- CUDA graphs -----------------------------------------------------------------------------------


def test_cuda_graph_says_why_it_cannot_run_here() -> None:
    variant = get_variant("cuda_graph")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert "CUDA" in (variant.unavailable("cpu") or "")
    with pytest.raises(ConformanceError, match="nothing was checked: needs CUDA"):
        check_variant("cuda_graph")


@pytest.mark.cuda
def test_cuda_graph_replays_and_recaptures_on_a_new_shape() -> None:
    dev = torch.device("cuda")
    ref = ScSE(16, 2)
    fn = get_variant("cuda_graph").build(ref, dev, torch.float32)
    eager = ScSE(16, 2).to(dev)
    eager.load_state_dict(ref.state_dict())
    for shape in [(2, 16, 8, 8), (2, 16, 8, 8), (1, 16, 5, 7)]:
        x = torch.randn(shape, device=dev)
        with torch.no_grad():
            torch.testing.assert_close(fn(x).clone(), eager(x), rtol=1e-4, atol=1e-5)
    assert compiled_graphs(fn) == 2


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda_graph", "graphed_eager_factored", "graphed_triton_fused",
                                  "graphed_triton_fused_l2", "graphed_cuda_fused"])
def test_a_graphed_call_given_its_own_buffer_copies_nothing(name: str) -> None:
    variant = get_variant(name)
    if variant.unavailable("cuda"):
        pytest.skip(variant.unavailable("cuda"))
    dev = torch.device("cuda")
    ref = ScSE(32, 2)
    fn = variant.build(ref, dev, torch.float16)
    eager = ScSE(32, 2).to(dev, torch.float16)
    eager.load_state_dict(ref.state_dict())
    x = torch.randn(4, 32, 16, 16, device=dev, dtype=torch.float16)
    with torch.no_grad():
        torch.testing.assert_close(fn(x).clone(), eager(x), rtol=2e-2, atol=2e-3)
        buffer = fn.static_input
        buffer.copy_(torch.randn_like(x))  # the previous layer writes the buffer; the graph reads it
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            y = fn(buffer)
        torch.testing.assert_close(y.clone(), eager(buffer), rtol=2e-2, atol=2e-3)
        copies = [e.name for e in prof.events() if e.name in ("aten::copy_", "aten::_to_copy")]
        assert copies == []
        other = torch.randn_like(x)  # any other tensor is copied in
        torch.testing.assert_close(fn(other).clone(), eager(other), rtol=2e-2, atol=2e-3)
    assert compiled_graphs(fn) == 1


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["cuda_graph", "graphed_eager_factored", "graphed_triton_fused"])
def test_a_graphed_train_step_conforms_and_replays_two_graphs(name: str) -> None:
    """The graphed forms' train mode: gradients against the float64 reference on every input of the
    suite; then a step launches the forward and the backward graph and runs none of the block's operators."""
    variant = get_variant(name)
    if variant.unavailable("cuda"):
        pytest.skip(variant.unavailable("cuda"))
    check_variant(name, device="cuda", dtypes="float32", modes="train", fusions="add", biases=False, reductions=2)
    dev = torch.device("cuda")
    ref = ScSE(32, 2)
    fn = variant.build(ref, dev, torch.float32)
    eager = ScSE(32, 2).to(dev)
    eager.load_state_dict(ref.state_dict())
    x = torch.randn(4, 32, 16, 16, device=dev, requires_grad=True)
    cotangent, params = torch.randn_like(x), list(fn.parameters())
    torch.autograd.grad(fn(x), [x, *params], cotangent)  # captures
    for _ in range(2):  # replays, on new values copied into the graph's buffers: the input's gradient as eager's
        fresh = torch.randn_like(x).requires_grad_(True)
        grad_out = torch.randn_like(x)
        (got,) = torch.autograd.grad(fn(fresh), [fresh], grad_out)
        (want,) = torch.autograd.grad(eager(fresh), [fresh], grad_out)
        torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-3)  # TF32 convolutions in eager
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        torch.autograd.grad(fn(x), [x, *params], cotangent)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    assert sum("cudaGraphLaunch" in n for n in names) == 2, sorted(set(names))
    assert not {"aten::sigmoid", "aten::mul", "aten::convolution", "aten::mean"} & set(names), sorted(set(names))
    buffer = fn.static_input  # the step's own input buffer: given it, only the cotangent is copied in
    assert buffer.requires_grad and buffer.shape == x.shape
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.autograd.grad(fn(buffer), [buffer, *params], cotangent)
    assert [e.name for e in prof.events()].count("aten::copy_") == 1
    assert fn.compiled_graphs == 1


def test_any_cuda_variant_has_a_graphed_form_asked_for_by_name(tmp_path) -> None:  # noqa: ANN001
    """Graphs for any variant, as the built-in graphed forms: ``graphed_<name>`` is made when asked for
    (by run, by a worker, by get_variant), with what it wraps declares, and refused in one line where
    there is nothing to graph."""
    from harness import run
    from harness.sweep.config import ConfigError
    from variants.registry import find_variant, variant_source

    assert "graphed_channels_last" not in list_variants()  # not listed: asked for
    form = get_variant("graphed_channels_last")
    inner = get_variant("channels_last")
    assert form.name == "graphed_channels_last" and form.description.startswith("channels_last, captured in CUDA")
    assert (form.devices, form.modes, form.dtypes) == ({"cuda"}, inner.modes, inner.dtypes)
    assert tags_of(form).output_reused and tags_of(form).memory_format == tags_of(inner).memory_format
    assert find_variant("graphed_channels_last") is form  # made once, as a worker finds it
    assert find_variant("graphed_nosuch") is None
    # asked for once, it is still no registered variant: globs, list and test parametrisation do not
    # depend on what a process asked for before; its code is channels_last's, and so is its source
    assert "graphed_channels_last" not in list_variants("graphed_*")
    assert variant_source("graphed_channels_last") == variant_source("channels_last") == "built-in"
    for name, why in [("graphed_cuda_graph", "cuda_graph replays CUDA graphs of its own"),
                      ("graphed_compile_reduce_overhead", "compile_reduce_overhead replays CUDA graphs of its own")]:
        with pytest.raises(KeyError, match=why):
            get_variant(name)
        with pytest.raises(ConfigError, match=f"^variants: {why}, so it has no graphed form"):  # as spelt in Python
            run(device="cpu", variants=name, shapes="8x8x8", write=False)
    frame = run(device="cpu", variants="graphed_mean_squeeze,eager", shapes="8x8x8", modes="forward",
                max_time_s=0.05, min_samples=3, out=str(tmp_path / "run"))
    rows = frame.set_index("variant")
    assert rows.loc["eager", "status"] == "ok"
    assert rows.loc["graphed_mean_squeeze", "status"] == "skipped"
    assert "CUDA" in rows.loc["graphed_mean_squeeze", "reason"]
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["variant_descriptions"]["graphed_mean_squeeze"].startswith("mean_squeeze, captured in CUDA graphs")
    (tmp_path / "run" / "results.jsonl").write_text("")  # as if killed before any row
    resumed = run(resume=str(tmp_path / "run"))  # its stored sweep names the form: made again, not "gone"
    assert set(resumed["variant"]) == {"eager", "graphed_mean_squeeze"}


class FakeGraphedCallables:
    """``torch.cuda.make_graphed_callables`` on the CPU: records each capture and returns the function
    itself, so a step runs (and differentiates) eagerly; ``fail`` makes the next capture raise."""

    def __init__(self) -> None:
        self.captures: list[tuple[object, tuple[torch.Tensor, ...]]] = []
        self.fail = False

    def __call__(self, fn, sample_args, num_warmup_iters: int = 3, allow_unused_input: bool = False):  # noqa: ANN001, ANN204
        if self.fail:
            raise RuntimeError("CUDA out of memory (a stand-in)")
        self.captures.append((fn, tuple(sample_args)))
        return fn


def test_a_graphed_train_step_captures_forward_and_backward_once_per_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a training step the graphed form hands the block to make_graphed_callables with the module's
    own parameters as inputs, so their gradients come out of the backward graph; it captures again
    only for another layout or replaced parameters, and a failed capture keeps the graph it had."""
    from variants.cuda_graph import CudaGraphScSE

    fake = FakeGraphedCallables()
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", fake)
    replays: list[torch.Tensor] = []
    monkeypatch.setattr(CudaGraphScSE, "_replay", lambda self, x, params: replays.append(x) or x)
    block = ScSE(8, 2)
    graphed = CudaGraphScSE(copy.deepcopy(block))
    params = list(graphed.parameters())
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    cotangent = torch.randn_like(x)
    got = torch.autograd.grad(graphed(x), [x, *params], cotangent)
    want = torch.autograd.grad(block(x), [x, *block.parameters()], cotangent)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    (fn, sample), = fake.captures
    assert sample[0] is not x and torch.equal(sample[0], x) and sample[0].requires_grad  # its own buffer
    assert graphed.static_input is sample[0]  # offered to the caller: given it, the node copies nothing in
    assert all(a is b for a, b in zip(sample[1:], params, strict=True))  # the parameters themselves
    graphed(torch.randn(2, 8, 5, 5, requires_grad=True))  # the same layout: replayed
    assert len(fake.captures) == 1 and graphed.compiled_graphs == 1
    graphed(torch.randn(3, 8, 5, 5, requires_grad=True))  # another: captured again
    assert len(fake.captures) == 2
    graphed.module.sse.Conv1x1.weight = nn.Parameter(graphed.module.sse.Conv1x1.weight.detach().clone())
    graphed(torch.randn(3, 8, 5, 5, requires_grad=True))  # a replaced parameter: captured again
    assert len(fake.captures) == 3
    kept = graphed._step
    fake.fail = True
    with pytest.raises(RuntimeError, match="out of memory"):
        graphed(torch.randn(4, 8, 5, 5, requires_grad=True))
    assert graphed._step is kept and graphed.captures == 3
    with torch.no_grad():  # inference: the forward graph alone
        graphed(x)
    for p in graphed.parameters():
        p.requires_grad_(False)
    graphed(x.detach())  # grad enabled, yet nothing requires it: inference too
    assert len(replays) == 2


# --- the suite catches wrong variants -----------------------------------------------------------


class WrongSign(ScSE):
    """x·cSE − x·sSE: one sign wrong."""

    def combine(self, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return c - s


class WritesIntoInput(ScSE):
    """Saves a buffer by scaling its input in place: right values, clobbered input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cse.fc(self.cse.avg_pool(x))
        s = torch.sigmoid(self.sse.Conv1x1(x))
        return x.mul_(c + s)


class _NegateGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return -grad


class WrongBackward(ScSE):
    """Right forward, gradient of the wrong sign: only train mode can tell."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NegateGrad.apply(super().forward(x))


class SwappedGate(ScSE):
    """σ(α)·sSE + (1−σ(α))·cSE: the branches swapped, invisible while α = 0."""

    def combine(self, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate)
        return g * s + (1 - g) * c


class UpcastsOutput(ScSE):
    """Computes in float32 and forgets to cast back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ScSE.forward(self.float(), x.float())


class NeedsContiguous(ScSE):
    """Pools with ``.view``, which fails on a non-contiguous input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.view(x.shape[0], x.shape[1], -1).mean(-1)[:, :, None, None]
        return self.combine(x * self.cse.fc(pooled), self.sse(x))


class Stale(ScSE):
    """Caches its first output and returns it forever."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "_cached"):
            self._cached = super().forward(x)
        return self._cached


class RenamedWithoutMap(ScSE):
    """Adds a parameter the reference doesn't have, and says nothing about it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.extra = nn.Parameter(torch.zeros(1))


def _builder(cls: type[ScSE], dtype_of_module: torch.dtype | None = None):
    def build(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
        module = cls(reference.channels, reference.reduction, reference.fusion, reference.bias)
        module.load_state_dict(reference.state_dict(), strict=False)
        return module.to(device=device, dtype=dtype_of_module or dtype)

    return build


@pytest.mark.parametrize(("cls", "options", "expected"), [
    (WrongSign, {}, r"\[float32-forward-add-bias0-r2, input main\]: output: error .* > tolerance"),
    (WrongSign, {"modes": "train"}, r"input gradient error .* > tolerance"),
    (WritesIntoInput, {"modes": "forward"}, r"the input was modified"),
    (WritesIntoInput, {"modes": "train"}, r"raised RuntimeError"),  # in place on a leaf that needs grad
    (WrongBackward, {"modes": "train"}, r"gradient of 'cse.fc.0.weight' error .* > tolerance"),
    (SwappedGate, {"fusions": "gate"}, r"output: error"),
    (UpcastsOutput, {"dtypes": "float16", "modes": "forward"}, r"dtype torch.float32 differs from the input's"),
    (NeedsContiguous, {"inputs": None, "modes": "forward"}, r"input non_contiguous\]: raised RuntimeError"),
    (Stale, {"modes": "forward"}, r"second call: error"),
    (RenamedWithoutMap, {"modes": "train"}, r"parameter 'extra' .* has no counterpart in the reference"),
])  # fmt: skip
def test_a_broken_variant_fails_conformance(temp_variant, cls: type[ScSE], options: dict, expected: str) -> None:
    name = temp_variant(f"test_broken_{cls.__name__}", _builder(cls), dtypes=("float32", "float16"))
    kwargs = {**QUICK, "fusions": "add", **options}
    if kwargs["inputs"] is None:
        kwargs.pop("inputs")
    with pytest.raises(ConformanceError, match=expected) as info:
        check_variant(name, **kwargs)
    assert isinstance(info.value, AssertionError)
    assert f"variant {name!r} failed" in str(info.value)


def test_the_broken_variants_are_gone_afterwards() -> None:
    assert not [n for n in list_variants() if n.startswith("test_")]


def test_every_failure_is_listed_not_just_the_first(temp_variant) -> None:
    name = temp_variant("test_broken_all", _builder(WrongSign), dtypes=("float32",))
    report = check_variant(name, dtypes="float32", modes="forward", fusions="add", biases=False, reductions=2,
                           raise_on_failure=False)
    assert not report.passed
    assert {f.input for f in report.failures} == {"main", "batch1", "odd", "non_contiguous", "channels_last"}
    with pytest.raises(ConformanceError) as info:
        report.raise_for_failures()
    assert str(info.value).count("\n  - ") == len(report.failures)


def _zeroes_gradient_of(parameter: str):
    """A builder of the reference whose ``parameter`` gets a gradient of zeros: right forward, and a
    train step that would never update that weight."""

    def build(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
        module = _builder(ScSE)(reference, device, dtype)
        module.get_parameter(parameter).register_hook(torch.zeros_like)
        return module

    return build


@pytest.mark.parametrize(("dtype", "fusion", "bias", "reduction", "parameter", "hidden_on"), [
    ("bfloat16", "max", False, 16, "cse.fc.0.weight", {"batch1", "odd"}),
    ("bfloat16", "add", True, 2, "sse.Conv1x1.bias", {"non_contiguous"}),
])  # fmt: skip
def test_a_zero_gradient_that_rounding_hides_on_one_input_is_caught_on_the_others(
    temp_variant, dtype: str, fusion: str, bias: bool, reduction: int, parameter: str, hidden_on: set[str],
) -> None:
    """On these inputs the float64 gradient is no larger than the noise a correct bfloat16 step adds: a
    scalar (the sSE bias; with one hidden unit, cse.fc.0.weight is one cancelling sum times the pooled
    vector). Of 48 held-out random roundings of PyTorch's module on batch1, one read 1.02 from float64,
    where zeros read 1.0, so no judge of the distance from float64 can fail zeros there and pass every
    correct rounding; PyTorch's run and 16 draws allow 1.85 (17.7 on odd, 1.14 for the bias on
    non_contiguous). A configuration is judged on five inputs, and on the others the same zeros fail."""
    name = temp_variant(f"test_zero_grad_{parameter}", _zeroes_gradient_of(parameter), dtypes=(dtype,))
    report = check_variant(name, dtypes=dtype, modes="train", fusions=fusion, biases=bias, reductions=reduction,
                           raise_on_failure=False)
    caught = {f.input for f in report.failures}
    assert all(f"gradient of {parameter!r} error" in f.problem for f in report.failures), report.failures
    assert caught >= {spec.name for spec in INPUTS} - hidden_on, report.failures


def test_a_correct_variant_passes_with_a_report_of_what_ran(temp_variant) -> None:
    name = temp_variant("test_correct", _builder(ScSE), dtypes=("float32",), fusions=("add", "gate"))
    report = check_variant(name, dtypes="float32", biases=False, reductions=2)
    assert report.passed
    assert len(report.checked) == 2 * 2 * 5  # fusions × modes × inputs
    assert {c.fusion for c, _ in report.skipped} == {"max", "mul", "concat"}  # each with its reason
    assert all("supports fusion add, gate" in reason for _, reason in report.skipped)


def test_near_ties_of_max_are_taken_out_of_the_cotangent_and_nothing_else() -> None:
    """max's gradient jumps where x·c = x·s; the suite zeroes the cotangent only within the margin."""
    torch.manual_seed(3)
    ref = ScSE(8, 2, "max").double()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    g = torch.ones_like(x)
    masked = tie_free_cotangent(ref, x, g, margin=0.05)
    with torch.no_grad():
        gap = (ref.cse.fc(ref.cse.avg_pool(x)) - torch.sigmoid(ref.sse.Conv1x1(x))).abs().expand_as(x)
    assert torch.equal(masked == 0, gap < 0.05)
    assert 0 < int((masked == 0).sum()) < x.numel()


# --- what the runner does for the zoo ----------------------------------------------------------------

RUN_FAST = TimingPolicy(warmup_s=0.0, min_samples=3, max_samples=10, rel_ci=0.05, max_time_s=0.05)


def _row(variant: str, mode: str = "forward", bias: bool = False, reduction: int = 2, channels: int = 16) -> dict:
    case = Case(variant, "cpu", "float32", mode, 2, channels, 8, 8, reduction, "add", bias)
    return run_case(case, get_variant(variant), clock_for("cpu", "cold"), RUN_FAST, seed=0, explicit=True).to_row()


def test_runner_skips_smp_without_bias_and_checks_its_renamed_gradients_with_bias() -> None:
    skipped = _row("smp", bias=False)
    assert skipped["status"] == "skipped" and "bias=True only" in skipped["reason"]
    row = _row("smp", mode="train", bias=True, reduction=16, channels=32)
    assert row["status"] == "ok", row["reason"]
    assert row["grad_rel_err"] < row["grad_tolerance"]


class SmpWithoutMap(SmpSCSE):
    """smp's names without the map that says which is which."""

    reference_names: dict[str, str] = {}


def test_runner_flags_a_parameter_it_cannot_match(temp_variant) -> None:
    def build(reference: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
        module = SmpWithoutMap(reference.channels, reference.reduction)
        return copy_weights(module, reference, SMP_TO_REFERENCE, zero_missing=True).to(device, dtype)

    name = temp_variant("test_unmatched", build, dtypes=("float32",), fusions=("add",))
    row = _row(name, mode="train")
    assert row["status"] == "mismatch"
    assert "cSE.1.bias has no counterpart" in row["reason"]
    with pytest.raises(ConformanceError, match="'cSE.1.weight' .* has no counterpart"):
        check_variant(name, **{**QUICK, "modes": "train"})


def test_runner_gives_channels_last_variants_nhwc_input(temp_variant) -> None:
    seen: list[bool] = []

    def build(reference: nn.Module, device: torch.device, dtype: torch.dtype):
        module = copy.deepcopy(reference).to(device=device, dtype=dtype)

        def fn(x: torch.Tensor) -> torch.Tensor:
            seen.append(x.is_contiguous(memory_format=torch.channels_last))
            return module(x)

        return fn

    name = temp_variant("test_nhwc", build, dtypes=("float32",), modes=("forward",),
                        tags={"input_memory_format": "channels_last"})
    assert _row(name)["status"] == "ok"
    assert seen and all(seen)


def test_runner_records_compile_s_apart_from_latency_and_counts_recompiles() -> None:
    if get_variant("compile").unavailable("cpu"):
        pytest.skip(get_variant("compile").unavailable("cpu"))
    row = _row("compile", channels=4)
    assert row["status"] == "ok", row["reason"]
    assert row["compile_s"] == row["first_call_s"] > 0
    assert row["recompiles"] == 0
    eager = _row("eager", channels=4)
    assert eager["compile_s"] is None and eager["recompiles"] is None


def test_a_first_call_that_compiles_is_no_latency_sample(temp_variant) -> None:
    """A stand-in for a compile whose cost is known (a first call that sleeps 0.3 s), so that no
    load on the machine can make the check pass or fail: compile_s holds it, no sample does."""
    calls = []

    def build(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype):
        model = copy.deepcopy(reference).to(device, dtype)

        def call(x: torch.Tensor) -> torch.Tensor:
            if not calls:
                time.sleep(0.3)
            calls.append(1)
            return model(x)
        return call

    name = temp_variant("test_compiles_once", build, dtypes=("float32",), modes=("forward",),
                        tags={"compiles": True})  # fmt: skip
    row = _row(name, channels=4)
    assert row["status"] == "ok", row["reason"]
    assert row["compile_s"] == row["first_call_s"] >= 0.3
    assert row["max_ms"] < 300 and len(calls) > row["n_samples"]


def test_runner_compares_a_linear_weights_gradient_with_the_convs() -> None:
    row = _row("linear_excite", mode="train")
    assert row["status"] == "ok", row["reason"]
    assert row["grad_rel_err"] < row["grad_tolerance"]


def test_parameters_for_nothing_are_an_error_not_an_empty_green_run() -> None:
    """pytest took an empty list as one skipped test, exit 0: a plugin that failed to import, or a
    misspelt pattern, passed CI with nothing checked."""
    from harness.testing import pytest_params

    with pytest.raises(ValueError, match=r"no registered variant matches 'my_varient\*': nothing to check"):
        pytest_params("my_varient*")
    # a CUDA-only variant asked for on the default device: the message names the device to ask for
    with pytest.raises(ValueError, match=r"cuda_fused run\(s\) on cuda only, not cpu: ask "
                                         r"pytest_params\(\.\.\., device='cuda'\)"):
        pytest_params("cuda_fused")
    with pytest.raises(ValueError, match=r"smp declare\(s\) no configuration among those asked for on cpu"):
        pytest_params("smp", "cpu", fusions="max")  # smp declares fusion add only


def test_on_a_machine_without_a_gpu_cuda_cases_skip_with_the_reason_and_nothing_passes() -> None:
    """Asked for "cuda" here, eager's cases were collected and failed with "Torch not compiled with
    CUDA enabled" instead of skipping; and a report of nothing checked read ``passed``."""
    from harness.testing import pytest_params

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    params = pytest_params("eager", "cuda", dtypes="float32", modes="forward", fusions="add", biases=False,
                           reductions=2)  # fmt: skip
    assert params and all([m.kwargs["reason"] for m in p.marks if m.name == "skip"] == ["no CUDA GPU here"]
                          for p in params)  # fmt: skip
    report = check_variant("eager", device="cuda", dtypes="float32", modes="forward", fusions="add",
                           biases=False, reductions=2, raise_on_failure=False)  # fmt: skip
    assert not report.checked and not report.passed
    assert {reason for _, reason in report.skipped} == {"no CUDA GPU here"}
