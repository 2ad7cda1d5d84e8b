"""``triton_fused`` against the float64 reference: forward, the input's and every parameter's gradient.

On CPU the kernels run in Triton's interpreter, which must be switched on (``TRITON_INTERPRET=1``)
before ``triton.language`` is imported, and stays on for the whole process once it is. So that this
file works whatever the pytest process imported before it, and leaks no interpreter mode into other
tests, the interpreted checks run in one child process (this file, run as a script) that computes
every case and reports the errors as JSON; the tests here assert on them. On a CUDA machine the
same cases also run in-process on the GPU, compiled (``-m cuda``).

The child also counts, per forward and per backward, the Triton launches and torch operators the
variant issues (``launch_count.py``): the interpreter runs the same host code a GPU would, so the
counts are the GPU's too, and they are the variant's promise of little host work per call.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import traceback
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the child process runs this file as a script
    sys.path.insert(0, str(ROOT))

from launch_count import count_host_work  # noqa: E402
from optional import require  # noqa: E402

from harness.measure.correctness import normwise_error, tolerance  # noqa: E402
from variants.reference import ScSE  # noqa: E402

#: (id, N, C, H, W, fusion, bias, dtype, layout). Spatial sizes stay tiny where C is large, so the
#: interpreter (one numpy program at a time) keeps the whole file well under two minutes.
CASES: list[tuple[str, int, int, int, int, str, bool, str, str]] = [
    ("odd-add", 2, 3, 7, 5, "add", False, "float32", "nchw"),
    ("odd-max", 2, 3, 7, 5, "max", False, "float32", "nchw"),
    ("odd-mul-bias", 2, 3, 7, 5, "mul", True, "float32", "nchw"),
    ("odd-gate-bias", 2, 3, 7, 5, "gate", True, "float32", "nchw"),
    ("batch1-add", 1, 16, 9, 11, "add", True, "float32", "nchw"),
    ("c1-add", 2, 1, 4, 3, "add", False, "float32", "nchw"),
    ("c200-max-2blocks", 2, 200, 3, 5, "max", True, "float32", "nchw"),
    ("c1024-add", 1, 1024, 2, 3, "add", True, "float32", "nchw"),
    ("c1024-max-cl", 2, 1024, 3, 2, "max", False, "float32", "channels_last"),
    ("cl-add", 2, 24, 5, 7, "add", True, "float32", "channels_last"),
    ("cl-gate", 2, 24, 5, 7, "gate", False, "float32", "channels_last"),
    ("strided-add", 2, 12, 6, 5, "add", True, "float32", "strided"),
    ("strided-max", 2, 12, 6, 5, "max", False, "float32", "strided"),
    ("ties-max", 2, 8, 6, 6, "max", True, "float32", "zeros"),
    ("many-tiles-add", 2, 8, 40, 33, "add", True, "float32", "nchw"),
    ("smallc-bigimage-mul-bias", 1, 4, 96, 96, "mul", True, "float32", "nchw"),
    ("smallc-bigimage-gate", 2, 2, 64, 72, "gate", False, "float16", "channels_last"),
    ("fp16-add", 2, 24, 5, 7, "add", True, "float16", "nchw"),
    ("fp16-max-cl", 2, 24, 5, 7, "max", False, "float16", "channels_last"),
    ("fp16-gate", 2, 24, 5, 7, "gate", True, "float16", "nchw"),
    ("fp16-c1024", 1, 1024, 2, 3, "mul", False, "float16", "nchw"),
    ("bf16-add", 2, 24, 5, 7, "add", False, "bfloat16", "nchw"),
    ("bf16-max", 2, 24, 5, 7, "max", True, "bfloat16", "channels_last"),
    ("bf16-mul", 2, 24, 5, 7, "mul", True, "bfloat16", "nchw"),
]
CASE_IDS = [c[0] for c in CASES]


def make_case(case: tuple, device: str) -> tuple[ScSE, torch.Tensor]:
    """The reference module (float32, CPU, random gate) and the input, laid out as the case says."""
    _, n, c, h, w, fusion, bias, dtype, layout = case
    torch.manual_seed(zlib.crc32(case[0].encode()))
    ref = ScSE(c, 2 if c > 1 else 1, fusion, bias)
    if fusion == "gate":
        torch.nn.init.normal_(ref.gate)  # zeros would make σ(α) = ½ and hide swapped branches
    if bias:
        with torch.no_grad():
            for m in (ref.cse.fc[0], ref.cse.fc[2], ref.sse.Conv1x1):
                m.bias.normal_(0.0, 0.5)
    x = torch.randn(n, c, h, w)
    if layout == "zeros":  # exact zeros make u = v in max: torch splits the gradient between them
        x[:, :, ::2, ::3] = 0.0
    x = x.to(device=device, dtype=getattr(torch, dtype))
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided":  # a view that is neither NCHW- nor channels_last-dense
        wide = torch.randn(n, c, h, 2 * w, device=device).to(x.dtype)
        x = wide[..., ::2]
        assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    return ref, x


def evaluate(case: tuple, device: str) -> dict[str, Any]:
    """Errors of output and gradients against float64, and whether the input survived unchanged."""
    import variants.triton_fused as tf

    ref, x = make_case(case, device)
    dtype = x.dtype
    x = x.requires_grad_(True)
    before = x.detach().clone()
    module = tf.build_triton_fused(ref, torch.device(device), dtype)
    y = module(x)
    gen = torch.Generator().manual_seed(1234)
    dy = torch.randn(tuple(y.shape), generator=gen).to(device=device, dtype=dtype)
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(y, [x, *params.values()], dy)

    ref64 = copy.deepcopy(ref).double().to(device)
    x64 = x.detach().double().requires_grad_(True)
    y64 = ref64(x64)
    ref_params = dict(ref64.named_parameters())
    ref_grads = torch.autograd.grad(y64, [x64, *[ref_params[k] for k in params]], dy.double())

    errors = {"output": normwise_error(y, y64)}
    for name, got, want in zip(["input", *params], grads, ref_grads, strict=True):
        errors[name] = normwise_error(got, want)
    return {
        "errors": errors,
        "param_names": sorted(params),
        "ref_param_names": sorted(ref_params),
        "input_unchanged": bool(torch.equal(x.detach(), before)),
        "out_dtype": str(y.dtype).removeprefix("torch."),
        "out_shape": list(y.shape),
        "out_channels_last": bool(y.is_contiguous(memory_format=torch.channels_last)) and x.shape[1] > 1,
        "dx_dtype": str(grads[0].dtype).removeprefix("torch."),
    }


def runner_rows() -> dict[str, dict[str, Any]]:
    """The harness's own runner on triton_fused (its float64 check and gradient check included)."""
    from harness.measure.timing import CpuClock, TimingPolicy
    from harness.sweep.cases import Case
    from harness.sweep.runner import run_case
    from variants.registry import get_variant

    policy = TimingPolicy(warmup_s=0.0, min_samples=1, max_samples=2, rel_ci=0.5, max_time_s=0.01)
    variant = get_variant("triton_fused")
    rows = {}
    for mode in ("forward", "train"):
        case = Case("triton_fused", "cpu", "float32", mode, 2, 12, 5, 7, 2, "max", True)
        rows[mode] = run_case(case, variant, CpuClock(), policy, seed=0, explicit=True).to_row()
    case = Case("triton_fused", "cpu", "float32", "forward", 2, 12, 5, 7, 2, "add", False)
    rows["implicit"] = run_case(case, variant, CpuClock(), policy, seed=0, explicit=False).to_row()
    case = Case("triton_fused", "cpu", "float32", "forward", 2, 12, 5, 7, 2, "concat", False)
    rows["concat"] = run_case(case, variant, CpuClock(), policy, seed=0, explicit=True).to_row()
    keep = ("status", "reason", "max_rel_err", "grad_rel_err")
    return {k: {f: row.get(f) for f in keep} for k, row in rows.items()}


#: (id, C, fusion, bias, dtype, layout) whose host work per call is counted (N=2, 5x7 pixels).
COUNTED: list[tuple[str, int, str, bool, str, str]] = [
    ("add", 24, "add", False, "float32", "nchw"),
    ("max-bias-cl", 24, "max", True, "float16", "channels_last"),
    ("mul-bias-c200", 200, "mul", True, "bfloat16", "nchw"),
    ("gate-bias", 24, "gate", True, "float32", "nchw"),
    ("gate-strided", 12, "gate", False, "float32", "strided"),
]
COUNTED_IDS = [c[0] for c in COUNTED]
#: What a call may launch: the promise of variants/triton_fused.py, in order.
FORWARD_KERNELS = ["_pool_kernel", "_excite_kernel", "_apply_kernel"]
BACKWARD_KERNELS = ["_bwd_reduce_kernel", "_bwd_excite_kernel", "_bwd_dx_kernel", "_bwd_params_kernel"]


def count_calls(counted: tuple) -> dict[str, Any]:
    """Host work of one inference forward, one forward that records for autograd, and its backward."""
    import variants.triton_fused as tf

    name, c, fusion, bias, dtype, layout = counted
    ref, x = make_case((name, 2, c, 5, 7, fusion, bias, dtype, layout), "cpu")
    module = tf.build_triton_fused(ref, torch.device("cpu"), x.dtype)
    with torch.no_grad():
        module(x)  # the first call jits and fills the plan cache: count a steady-state call
        with count_host_work() as inference:
            module(x)
    x = x.detach().requires_grad_(True)
    with count_host_work() as recording:
        y = module(x)
    dy = torch.randn(tuple(y.shape)).to(y.dtype)
    with count_host_work() as backward:
        torch.autograd.grad(y, [x, *module.parameters()], dy)
    return {"inference": inference.as_dict(), "recording": recording.as_dict(), "backward": backward.as_dict()}


def counter_self_check() -> dict[str, Any]:
    """The counter on work it must see: a torch add, and pool_mean (a launch, then torch sum and div)."""
    import variants.triton_fused as tf

    with count_host_work() as plain:
        torch.ones(3) + 1
    x = torch.randn(2, 3, 4, 5)
    with count_host_work() as pool:
        mean = tf.pool_mean(x)
    return {"plain": plain.as_dict(), "pool": pool.as_dict(),
            "pool_mean_error": float((mean - x.mean(dim=(2, 3))).abs().max())}


def worker() -> None:
    """Child process entry: every case in the interpreter, results as one JSON object on stdout."""
    import variants.triton_fused as tf

    out: dict[str, Any] = {"unavailable": tf.triton_unavailable("cpu"), "cases": {}}
    for case in CASES:
        try:
            out["cases"][case[0]] = evaluate(case, "cpu")
        except Exception:  # noqa: BLE001 - report it to the parent, which fails the case's test
            out["cases"][case[0]] = {"exception": traceback.format_exc()}
    for counted in COUNTED:
        try:
            out.setdefault("counts", {})[counted[0]] = count_calls(counted)
        except Exception:  # noqa: BLE001
            out.setdefault("counts", {})[counted[0]] = {"exception": traceback.format_exc()}
    try:
        out["counter_self_check"] = counter_self_check()
    except Exception:  # noqa: BLE001
        out["counter_self_check"] = {"exception": traceback.format_exc()}
    try:
        out["runner"] = runner_rows()
    except Exception:  # noqa: BLE001
        out["runner"] = {"exception": traceback.format_exc()}
    print("@@RESULT@@" + json.dumps(out))


def child_env(interpret: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return env


@lru_cache(maxsize=1)
def interpreted_results() -> dict[str, Any]:
    """Run the worker once per session (cached) and parse its report."""
    require("triton")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker"],
        env=child_env(True), cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@RESULT@@")]
    if proc.returncode != 0 or not marker:
        raise AssertionError(f"interpreter worker failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return json.loads(marker[-1].removeprefix("@@RESULT@@"))


def assert_case(case: tuple, result: dict[str, Any], device: str) -> None:
    assert "exception" not in result, result.get("exception")
    dtype = case[7]
    assert result["input_unchanged"], "the variant modified its input"
    assert result["out_dtype"] == dtype and result["dx_dtype"] == dtype
    assert result["out_shape"] == list(case[1:5])
    assert result["param_names"] == result["ref_param_names"], "parameters must carry the reference's names"
    if case[8] == "channels_last":
        assert result["out_channels_last"], "a channels_last input should give a channels_last output"
    tol, grad_tol = tolerance(dtype, device), tolerance(dtype, device, grad=True)
    errors = result["errors"]
    assert errors["output"] <= tol, f"output error {errors['output']:.3g} > {tol:.3g}"
    expected = {"output", "input", *result["ref_param_names"]}
    assert set(errors) == expected, f"gradients missing for {expected - set(errors)}"
    bad = {k: v for k, v in errors.items() if k != "output" and not v <= grad_tol}
    assert not bad, f"gradient errors above {grad_tol:.3g}: {bad}"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_interpreted_matches_float64_reference(case: tuple) -> None:
    results = interpreted_results()
    assert results["unavailable"] is None, results["unavailable"]
    assert_case(case, results["cases"][case[0]], "cpu")


def test_runner_checks_and_skips_in_interpreter() -> None:
    """Through the harness runner: checked and timed when named, skipped when not, concat refused."""
    rows = interpreted_results()["runner"]
    assert "exception" not in rows, rows.get("exception")
    for mode in ("forward", "train"):
        assert rows[mode]["status"] == "ok", rows[mode]
    assert rows["train"]["grad_rel_err"] is not None and rows["train"]["grad_rel_err"] <= tolerance("float32", "cpu",
                                                                                                   grad=True)
    assert rows["implicit"]["status"] == "skipped" and "interpreter" in rows["implicit"]["reason"]
    assert rows["concat"]["status"] == "skipped" and "concat" in rows["concat"]["reason"]


def test_counter_sees_launches_and_torch_ops() -> None:
    """The counts below mean something: the counter does see torch arithmetic and kernel launches."""
    found = interpreted_results()["counter_self_check"]
    assert "exception" not in found, found.get("exception")
    assert found["plain"]["launches"] == [] and "aten.add.Tensor" in found["plain"]["compute_ops"]
    assert found["pool"]["launches"] == ["_pool_kernel"]
    assert {"aten.sum.dim_IntList", "aten.div.Tensor"} <= set(found["pool"]["compute_ops"])
    assert found["pool_mean_error"] < 1e-5


@pytest.mark.parametrize("counted", COUNTED, ids=COUNTED_IDS)
def test_forward_is_three_launches_and_no_torch_compute(counted: tuple) -> None:
    """Forward, inference or recording for autograd: the three kernels, and torch only allocates.

    A strided input is the exception the variant states: it is made contiguous first (one copy).
    """
    counts = interpreted_results()["counts"][counted[0]]
    assert "exception" not in counts, counts.get("exception")
    allowed = ["aten.clone.default"] if counted[5] == "strided" else []
    for mode in ("inference", "recording"):
        assert counts[mode]["launches"] == FORWARD_KERNELS, (mode, counts[mode])
        assert counts[mode]["compute_ops"] == allowed, (mode, counts[mode])
        assert len(counts[mode]["ops"]) <= 3 + len(allowed), (mode, counts[mode]["ops"])  # empty, split, empty_like


@pytest.mark.parametrize("counted", COUNTED, ids=COUNTED_IDS)
def test_backward_is_four_launches_and_no_torch_compute(counted: tuple) -> None:
    """Backward: four kernels (the MLP's backward and every parameter's gradient in them), torch only allocates."""
    counts = interpreted_results()["counts"][counted[0]]["backward"]
    assert counts["launches"] == BACKWARD_KERNELS, counts
    assert counts["compute_ops"] == [], counts
    # the workspace, its split, dx, and one gradient per parameter (2 weights + ws, + gate, + 3 biases)
    n_params = 3 + (counted[2] == "gate") + 3 * counted[3]
    assert len(counts["ops"]) == 3 + n_params, counts["ops"]


AVAILABILITY_PROBE = """
import json, os, sys
import variants.triton_fused as tf
from variants.registry import get_variant
v = get_variant("triton_fused")
found = {"plain_cpu": tf.triton_unavailable("cpu"), "plain_registry": v.unavailable("cpu")}
import triton  # now triton.language is set up for compiled kernels, and the variable comes late
os.environ["TRITON_INTERPRET"] = "1"
found["late_env"] = tf.triton_unavailable("cpu")
try:
    tf._kernels()
    found["late_env_kernels"] = None
except RuntimeError as exc:
    found["late_env_kernels"] = str(exc)
print("@@RESULT@@" + json.dumps(found))
"""


def test_availability_reasons_without_interpreter() -> None:
    require("triton")
    if torch.cuda.is_available():
        pytest.skip("with CUDA the variant is available without the interpreter")
    proc = subprocess.run([sys.executable, "-c", AVAILABILITY_PROBE], env=child_env(False), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.split("@@RESULT@@")[-1])
    assert "TRITON_INTERPRET=1" in found["plain_cpu"] and "CUDA" in found["plain_cpu"]
    assert "TRITON_INTERPRET=1" in found["plain_registry"]
    assert "after triton was imported" in found["late_env"]
    assert found["late_env_kernels"] and "after triton was imported" in found["late_env_kernels"]


INTERPRETER_PROBE = """
import json
import variants.triton_fused as tf
import triton.language as tl  # the interpreter wants it among a kernel's globals
from variants.registry import get_variant
found = {"working": [tf.triton_unavailable("cpu"), tf._available()]}

def broken(out_ptr, n):  # fails as triton 3.6's interpreter does beside numpy 2.4, in the loop bound
    for _ in range(0, n):
        raise TypeError("only 0-dimensional arrays can be converted\\n to Python scalars")

def miscounting(out_ptr, n):
    tl.store(out_ptr, n + 1)

for name, probe in (("broken", broken), ("miscounting", miscounting)):
    tf._interpreter_problem.cache_clear()
    tf._loop_probe = probe
    found[name] = [tf.triton_unavailable("cpu"), get_variant("triton_fused").unavailable("cpu"),
                   get_variant("triton_fused_l2").unavailable("cpu")]
print("@@RESULT@@" + json.dumps(found))
"""


def test_an_interpreter_that_cannot_run_the_kernels_is_one_reason_not_an_error_per_case() -> None:
    """Triton 3.6's interpreter beside numpy 2.4 failed every kernel in its first loop: 221 tests
    failed, each with the same TypeError. The variant is unavailable with that reason instead."""
    require("triton")
    proc = subprocess.run([sys.executable, "-c", INTERPRETER_PROBE],
                          env=child_env(True), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.split("@@RESULT@@")[-1])
    assert found["working"] == [None, None]
    broken = found["broken"][0]
    assert broken.startswith("triton ") and "interpreter cannot run a kernel loop beside numpy" in broken, broken
    assert "TypeError: only 0-dimensional arrays can be converted to Python scalars" in broken, broken  # one line
    assert found["broken"] == [broken] * 3  # the registry's reason, for the L2 variant too
    assert found["miscounting"] == [found["miscounting"][0]] * 3
    assert "ran a 3-step loop 4 times" in found["miscounting"][0]


def test_reports_missing_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import variants.triton_fused as tf

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(tf, "triton", None)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "triton" else real_find_spec(name, *a))
    assert tf.triton_unavailable("cpu") == "triton is not installed"
    assert tf._available() == "triton is not installed"
    with pytest.raises(RuntimeError, match="triton is not installed"):
        tf.build_triton_fused(ScSE(4), torch.device("cpu"), torch.float32)


def test_registration() -> None:
    from variants.registry import get_variant

    v = get_variant("triton_fused")
    tags = dict(v.tags)
    assert tags.get("interpreted_on_cpu") is True
    assert v.devices == frozenset({"cpu", "cuda"})
    assert v.fusions == frozenset({"add", "max", "mul", "gate"})
    assert "concat" in (v.unsupported("cpu", "float32", "forward", "concat") or "")
    assert v.unsupported("cpu", "float16", "train", "max") is None
    assert v.unsupported("cpu", "float64", "forward", "add") is not None


def test_block_sizes_cover_large_channel_counts() -> None:
    import variants.triton_fused as tf

    for c in (1, 3, 64, 127, 128, 129, 200, 1024, 2048):
        block_c, block_p, num_cb = tf.block_sizes(c, 7 * 5)
        assert block_c & (block_c - 1) == 0 and block_p & (block_p - 1) == 0
        assert num_cb * block_c >= c > (num_cb - 1) * block_c, (c, block_c, num_cb)
        assert block_c <= tf.MAX_BLOCK_C and block_c * block_p <= max(tf.TILE_ELEMENTS, 16 * block_c)
    assert tf.block_sizes(1024, 64)[2] == 1024 // tf.MAX_BLOCK_C


def test_layout_helpers_never_copy_dense_inputs() -> None:
    import variants.triton_fused as tf

    x = torch.randn(2, 6, 5, 4)
    assert tf.as_kernel_layout(x) is x and tf.pixel_strides(x) == (120, 20, 1)
    cl = x.to(memory_format=torch.channels_last)
    assert tf.as_kernel_layout(cl) is cl and tf.pixel_strides(cl) == (120, 1, 6)
    view = x[..., ::2]
    fixed = tf.as_kernel_layout(view)
    assert fixed is not view and fixed.is_contiguous() and torch.equal(fixed, view)


#: The issue's benchmark shapes (N, C, H, W) and the small-C, large-image ones that filled an H100 badly.
H100_SHAPES = [(8, 64, 128, 128), (32, 64, 128, 128), (8, 256, 64, 64), (32, 256, 64, 64), (8, 32, 256, 256),
               (32, 32, 256, 256), (1, 32, 256, 256), (1, 4, 512, 512), (2, 1024, 16, 16)]


@pytest.mark.parametrize("shape", H100_SHAPES, ids=["x".join(map(str, s)) for s in H100_SHAPES])
def test_streaming_grids_fill_every_sm(shape: tuple[int, int, int, int]) -> None:
    """On 132 SMs the pool and dx grids have 8 to 16 programs per SM wherever there are that many
    tiles, the splits cover every tile exactly once, and no split is empty."""
    import variants.triton_fused as tf

    n, c, h, w = shape
    sms = 132
    plan = tf.launch_plan(n, c, c // 2, h * w, sms)
    programs = plan.splits * plan.num_cb * n
    assert programs >= min(tf.PROGRAMS_PER_SM * sms, n * plan.num_cb * plan.tiles), plan
    assert programs <= 2 * tf.PROGRAMS_PER_SM * sms or plan.splits == 1, plan
    assert (plan.splits - 1) * plan.tiles_per_prog < plan.tiles <= plan.splits * plan.tiles_per_prog, plan
    for block in (plan.block_h, plan.block_k, plan.block_s, plan.block_t, plan.block_r):
        assert block >= 2 and block & (block - 1) == 0, plan
    assert plan.block_h >= plan.hidden and plan.block_h * plan.block_k <= max(tf.TILE_ELEMENTS, 2 * plan.block_h)


def test_weights_gathered_once_and_after_to() -> None:
    """The module hands the kernels its own parameters (no copies), re-gathered when ``.to()`` replaces them."""
    import variants.triton_fused as tf

    module = tf.TritonScSE(ScSE(8, 2, "gate", True))
    assert module.weights.w1 is module.cse.fc[0].weight and module.weights.alpha is module.gate
    module.double()
    assert module.weights.w1 is module.cse.fc[0].weight and module.weights.w1.dtype == torch.float64
    assert module.weights.bs is module.sse.Conv1x1.bias and module.weights.fusion == "gate"
    with pytest.raises(ValueError, match="concat"):
        tf.kernel_weights(ScSE(8, 2, "concat"))


@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cuda_matches_float64_reference(case: tuple) -> None:
    """The same cases compiled for the GPU (run with ``pytest -m cuda`` on a CUDA machine)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import variants.triton_fused as tf

    reason = tf.triton_unavailable("cuda")
    if reason:
        pytest.skip(reason)
    assert_case(case, evaluate(case, "cuda"), "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("fusion", ["add", "max"])
def test_cuda_a_nan_spreads_as_in_eager(fusion: str) -> None:
    """One NaN pixel makes its sample's pooled mean NaN, so eager's whole sample is NaN. A GPU's max
    drops a NaN operand: relu(NaN) read 0 there and hid it from every other pixel (the interpreter's
    numpy max keeps it, so only a GPU shows this)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import variants.triton_fused as tf

    torch.manual_seed(0)
    ref = ScSE(16, 2, fusion, True)
    x = torch.randn(2, 16, 8, 8, device="cuda")
    x[0, 3, 2, 5] = float("nan")
    with torch.no_grad():
        got = tf.build_triton_fused(ref, torch.device("cuda"), x.dtype)(x)
        want = copy.deepcopy(ref).cuda()(x)
    assert torch.equal(got.isnan(), want.isnan()) and bool(want[0].isnan().all())


@pytest.mark.cuda
def test_cuda_large_shape_forward() -> None:
    """A benchmark-sized shape: many pixel tiles and pool splits, float16, both layouts."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import variants.triton_fused as tf

    torch.manual_seed(0)
    ref = ScSE(64, 2, "add")
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(8, 64, 128, 128, device="cuda").to(torch.float16).to(memory_format=memory_format)
        y = tf.build_triton_fused(ref, torch.device("cuda"), torch.float16)(x)
        want = copy.deepcopy(ref).double().cuda()(x.double())
        assert normwise_error(y, want) <= tolerance("float16", "cuda")


@pytest.mark.cuda
def test_cuda_direct_launches_repeat_tritons_own() -> None:
    """After a shape's first call every launch skips ``JITFunction.run`` (``variants/triton_launch.py``),
    and outputs and gradients stay bitwise those of Triton's own launches (the kernels use no
    atomics), for a 16-byte-aligned input and one 2 bytes off, which Triton compiles apart."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import triton.runtime.jit as triton_jit

    import variants.triton_fused as tf

    reason = tf.triton_unavailable("cuda")
    if reason:
        pytest.skip(reason)
    module = tf.build_triton_fused(ScSE(64, 4, "gate", True), torch.device("cuda"), torch.float16)
    if tf._kernels().apply.triton is None:
        pytest.skip("direct launches are off for this Triton")
    for kernel in vars(tf._kernels()).values():  # earlier tests in this process may have kept some
        kernel.compiled.clear()
    storage = torch.randn(4 * 64 * 32 * 32 + 1, device="cuda").to(torch.float16)
    calls = []
    real_run = triton_jit.JITFunction.run

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(self)
        return real_run(self, *args, **kwargs)

    triton_jit.JITFunction.run = counted
    try:
        for x in (storage[:-1].view(4, 64, 32, 32), storage[1:].view(4, 64, 32, 32)):
            results = []
            for _ in range(3):
                calls.clear()
                xg = x.detach().requires_grad_(True)
                y = module(xg)
                grads = torch.autograd.grad(y, [xg, *module.parameters()], torch.ones_like(y))
                results.append((y, *grads, len(calls)))
            through_triton = [r[-1] for r in results]
            assert through_triton[1:] == [0, 0]  # once kept (the first call), no launch goes through Triton
            assert through_triton[0] > 0 and (x.data_ptr() % 16 or through_triton[0] == 7)  # 3 forward + 4 backward
            for later in results[1:]:
                assert all(torch.equal(a, b) for a, b in zip(results[0][:-1], later[:-1], strict=True))
    finally:
        triton_jit.JITFunction.run = real_run
    pool_keys = [key[1][0] for key in tf._kernels().pool.compiled]  # (dtype, aligned) of x
    assert (torch.float16, True) in pool_keys and (torch.float16, False) in pool_keys


if __name__ == "__main__" and "--worker" in sys.argv:
    worker()


SAVES_SCRIPT = """
import torch
from torch.autograd.function import FunctionCtx
from variants.reference import ScSE
from variants.triton_fused import ScSEFunction, TritonScSE

saved, applied = [], []
real = FunctionCtx.save_for_backward
FunctionCtx.save_for_backward = lambda ctx, *t: saved.append(len(t)) or real(ctx, *t)
real_apply = ScSEFunction.apply
ScSEFunction.apply = lambda *a: applied.append(1) or real_apply(*a)
module = TritonScSE(ScSE(8, 2, "add", True))  # parameters that require grad, as the harness builds it
x = torch.randn(2, 8, 4, 4)
with torch.no_grad():
    module(x)
inference = (len(saved), len(applied))
module(x.requires_grad_(True)).sum().backward()
print("@@SAVES@@", *inference, len(saved), len(applied))
"""


def test_an_inference_forward_saves_nothing_and_skips_autograd() -> None:
    """Under no_grad ``needs_input_grad`` is still True for parameters that require grad; the
    forward must not write and keep its saved tensors then (the timed forward loop runs so), nor go
    through ``autograd.Function.apply``, which cost more host time than the rest of the call."""
    require("triton")
    proc = subprocess.run([sys.executable, "-c", SAVES_SCRIPT], env=child_env(True), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("@@SAVES@@")), None)
    assert proc.returncode == 0 and line is not None, proc.stderr[-3000:]
    saved_inference, applied_inference, saved, applied = map(int, line.split()[1:])
    assert (saved_inference, applied_inference) == (0, 0)  # no autograd at all under no_grad
    assert (saved, applied) == (1, 1)  # and once, saving, when a backward can follow


COMPILE_CHILD = """
import json, torch
from variants.reference import ScSE
from variants import triton_fused as tf
torch.manual_seed(0)
ref = ScSE(16, reduction=4, fusion="gate", bias=True)
module = tf.build_triton_fused(ref, torch.device("cpu"), torch.float32)
x = torch.randn(2, 16, 6, 5)
torch._dynamo.utils.counters.clear()
with torch.no_grad():
    eager = module(x)
    whole = torch.compile(module, fullgraph=True)(x)  # fullgraph: any graph break raises
breaks_inference = sum(torch._dynamo.utils.counters["graph_break"].values())
xg, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
module(xg).square().sum().backward()
grads = [p.grad.clone() for p in module.parameters()]
module.zero_grad()
torch._dynamo.utils.counters.clear()
torch.compile(module, fullgraph=True)(xc).square().sum().backward()
print(json.dumps({
    "forward": (whole - eager).abs().max().item(),
    "breaks_inference": breaks_inference,
    "breaks_train": sum(torch._dynamo.utils.counters["graph_break"].values()),
    "dx": (xc.grad - xg.grad).abs().max().item(),
    "dparams": max((p.grad - g).abs().max().item() for p, g in zip(module.parameters(), grads)),
}))
"""


def test_a_compiled_network_keeps_the_fused_forward_and_backward_whole() -> None:
    """Under torch.compile the inference forward, and in training the forward and its backward, are
    opaque operators (no graph break, no traced Triton launch: traced, the launches broke Inductor
    on an H200), with the same outputs and gradients as without compile."""
    require("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", COMPILE_CHILD], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["breaks_inference"] == 0 and got["breaks_train"] == 0
    assert got["forward"] <= 1e-6 and got["dx"] == 0.0 and got["dparams"] == 0.0, got
