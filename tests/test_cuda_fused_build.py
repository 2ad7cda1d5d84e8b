"""``cuda_fused``: the CUDA sources compile without a GPU; on a GPU the forward matches float64.

CI has nvcc but a CPU-only torch, so the extension cannot be built there. The kernels (.cu) need
CUDA headers only and are compiled to an object with nvcc, with the flags torch's extension
builder adds; the binding (.cpp) includes no CUDA header and is syntax-checked against torch's
headers with the host compiler. Together they catch syntax and type errors before a GPU sees them.
"""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch

import variants.cuda_fused as cf
from harness.measure.correctness import normwise_error, tolerance
from variants.reference import ScSE
from variants.registry import get_variant

#: What torch.utils.cpp_extension passes to nvcc besides the include paths (torch 2.x).
TORCH_NVCC_FLAGS = [
    "-std=c++20",
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
]
#: A100 and H100, the cards the targets speak of.
ARCHS = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]


def nvcc_or_skip() -> str:
    nvcc = cf.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    return nvcc


def test_kernels_compile_to_an_object_with_nvcc(tmp_path: Path) -> None:
    nvcc = nvcc_or_skip()
    obj = tmp_path / "scse_fused.o"
    cmd = [nvcc, "-c", "-O3", *TORCH_NVCC_FLAGS, *ARCHS, "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra",
           "-Xptxas", "-v", f"-I{cf.CSRC}", str(cf.CSRC / "scse_fused.cu"), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"nvcc failed:\n{proc.stdout}\n{proc.stderr}"
    assert obj.stat().st_size > 0
    # ptxas -v: every kernel of every arch and dtype was compiled, and none spills registers
    entries = re.findall(r"Compiling entry function '(\w+)' for '(sm_\d+)'", proc.stderr)
    kernels = {"pool_pixels_fast", "pool_pixels_vec", "pool_channels_fast", "apply_pixels_fast", "apply_pixels_vec",
               "apply_channels_fast"}
    for arch in ("sm_80", "sm_90"):
        names = [name for name, a in entries if a == arch]
        for kernel in kernels:
            assert sum(kernel in name for name in names) == 3, f"{kernel} not built for 3 dtypes on {arch}"
        assert sum("excite_kernel" in name for name in names) == 1, f"excite_kernel not built on {arch}"
    spills = [int(b) for b in re.findall(r"(\d+) bytes spill stores", proc.stderr)]
    assert spills and not any(spills), "a kernel spills registers"
    if shutil.which("nm"):
        symbols = subprocess.run(["nm", "-C", str(obj)], capture_output=True, text=True, check=True).stdout
        for entry in ("scse::pool_partials(", "scse::excite(", "scse::apply(", "scse::error_string("):
            assert entry in symbols, f"{entry} missing from the object"


def test_the_nchw_vector_kernels_move_16_bytes_an_access(tmp_path: Path) -> None:
    """The *_vec kernels exist to load and store 128 bits a lane: nvcc split a struct store of 16
    bytes into scalar stores until it went through one uint4, so the PTX is checked, not assumed."""
    nvcc = nvcc_or_skip()
    ptx = tmp_path / "scse_fused.ptx"
    cmd = [nvcc, "-ptx", "-O3", *TORCH_NVCC_FLAGS, "-arch=sm_90", f"-I{cf.CSRC}", str(cf.CSRC / "scse_fused.cu"),
           "-o", str(ptx)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"nvcc failed:\n{proc.stderr}"
    text = ptx.read_text()
    bodies = {m.group(1): text[m.end():] for m in re.finditer(r"\.entry (\w+)\(", text)}
    bodies = {name: body[:body.find(".entry")] if ".entry" in body else body for name, body in bodies.items()}
    for kernel, wants_store in (("pool_pixels_vec", False), ("apply_pixels_vec", True)):
        built = {name: body for name, body in bodies.items() if kernel in name}
        assert len(built) == 3, f"{kernel} not built for 3 dtypes"
        for name, body in built.items():
            loads = re.findall(r"ld\.global\.\S+", body)
            wide = [op for op in loads if ".v4." in op]
            assert wide, f"{name}: no 128-bit load"
            narrow = [op for op in loads if op.endswith((".u16", ".b16", ".s16"))]
            assert not narrow, f"{name}: a 16-bit element of x loaded alone: {narrow}"
            stores = re.findall(r"st\.global\.\S+", body)
            if wants_store:
                assert stores and all(".v4." in op for op in stores), f"{name}: out stored in pieces: {stores}"


def test_binding_compiles_against_torch_headers() -> None:
    """The binding against this torch's headers (a CPU build is enough: it includes no CUDA header)."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    from torch.utils.cpp_extension import include_paths

    includes = [arg for path in [*include_paths(), sysconfig.get_paths()["include"]] for arg in ("-isystem", path)]
    cmd = [cxx, "-fsyntax-only", "-std=c++20", "-Wall", "-Wextra", "-Werror",
           f"-DTORCH_EXTENSION_NAME={cf.EXTENSION_NAME}", "-DTORCH_API_INCLUDE_EXTENSION_H", *includes, f"-I{cf.CSRC}",
           str(cf.CSRC / "scse_fused.cpp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"the binding does not compile:\n{proc.stderr[-5000:]}"


def test_host_and_device_agree_on_codes() -> None:
    """The Python fusion codes are the header's enum values, and match the Triton variant's."""
    header = (cf.CSRC / "scse_fused.h").read_text()
    enum = dict(re.findall(r"k(Add|Max|Mul|Gate) = (\d+)", header))
    assert {k.lower(): int(v) for k, v in enum.items()} == cf.FUSION_CODES
    from variants.triton_fused import FUSION_CODES

    assert FUSION_CODES == cf.FUSION_CODES


def test_host_and_device_agree_on_the_excitations_limit() -> None:
    header = (cf.CSRC / "scse_fused.h").read_text()
    factors = re.search(r"kExciteSharedFloats = (\d+) \* (\d+) / (\d+);", header)
    assert factors is not None
    a, b, c = map(int, factors.groups())
    assert a * b // c == cf.MAX_EXCITE_FLOATS


def test_a_block_too_wide_for_the_excitation_is_refused_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cf, "MAX_EXCITE_FLOATS", 20)
    with pytest.raises(ValueError, match=r"C \+ C/r <= 20 values, not 16 \+ 8"):
        cf.build_cuda_fused(ScSE(16, 2), torch.device("cuda"), torch.float32)


def test_the_weights_are_gathered_once_and_follow_the_parameters() -> None:
    module = cf.CudaScSE(ScSE(8, 2, "gate", True))
    assert module.weights.w1 is module.cse.fc[0].weight and module.weights.alpha is module.gate
    module.double()  # .to() and friends replace the parameters: the weights are gathered again
    assert module.weights.w2 is module.cse.fc[2].weight and module.weights.w2.dtype == torch.float64
    assert module.weights.bs is module.sse.Conv1x1.bias and module.weights.fusion == "gate"


def test_registration() -> None:
    v = get_variant("cuda_fused")
    assert v.devices == frozenset({"cuda"})
    assert v.modes == frozenset({"forward"})
    assert v.fusions == frozenset({"add", "max", "mul", "gate"})
    assert "train" in (v.unsupported("cuda", "float16", "train", "add") or "")
    assert v.unavailable("cpu") is not None


def test_reasons_when_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "needs a CUDA build of torch" in cf.unavailable_reason()
    assert "needs a CUDA build of torch" in get_variant("cuda_fused").unavailable("cuda")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    assert "nvcc not found" in cf.unavailable_reason()
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/nvcc")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "GPU" in cf.unavailable_reason()
    with pytest.raises(RuntimeError, match="GPU"):
        cf.build_cuda_fused(ScSE(4), torch.device("cuda"), torch.float32)


def test_a_call_that_autograd_records_refuses_its_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Used in a network that trains, the extension's output had no grad_fn: the blocks' weights got
    no gradient, and neither did anything before them, with no word said."""
    calls: list[torch.Tensor] = []
    monkeypatch.setattr(cf, "_launch", lambda x, w: calls.append(x) or x * 2)  # the kernels' stand-in
    module = cf.CudaScSE(ScSE(8, 2))
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    with torch.no_grad():  # inference: the extension directly, nothing recorded
        assert module(x).grad_fn is None
    y = module(x.detach())  # the weights need gradients: recorded
    assert y.grad_fn is not None and len(calls) == 2
    with pytest.raises(RuntimeError, match="cuda_fused is forward only: it has no backward"):
        y.sum().backward()


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_a_batch_beyond_one_launch_is_launched_in_slices(monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """The batch is a grid dimension, capped at 65535 by CUDA: a larger one failed "invalid argument"."""
    monkeypatch.setattr(cf, "MAX_LAUNCH_BATCH", 3)
    x = torch.randn(8, 4, 3, 5)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    seen: list[tuple[int, bool]] = []

    def launch(part: torch.Tensor) -> torch.Tensor:
        seen.append((part.shape[0], part.is_contiguous() or part.is_contiguous(memory_format=torch.channels_last)))
        return part * 2

    y = cf.in_batches(x, launch)
    assert seen == [(3, True), (3, True), (2, True)]  # every slice dense, as the kernels need
    assert torch.equal(y, x * 2) and y.stride() == x.stride()
    assert cf.in_batches(x[:3], launch) is not None and seen[-1] == (3, True)  # one launch when it fits


# ---- on a GPU ---------------------------------------------------------------------------------

GPU_CASES = [
    # (N, C, H, W, fusion, bias, dtype, layout)
    (2, 3, 7, 5, "add", False, "float32", "nchw"),
    (1, 16, 9, 11, "max", True, "float32", "nchw"),
    (2, 200, 13, 3, "mul", True, "float32", "nchw"),
    (2, 1024, 5, 6, "gate", True, "float32", "nchw"),
    (2, 24, 5, 7, "add", True, "float32", "channels_last"),
    (2, 1024, 5, 6, "max", False, "float16", "channels_last"),
    (2, 12, 6, 5, "gate", False, "float16", "strided"),
    (4, 64, 64, 64, "add", False, "float16", "nchw"),
    (4, 64, 64, 64, "max", True, "float16", "channels_last"),
    (2, 24, 5, 7, "add", True, "bfloat16", "nchw"),
    (1, 1, 3, 3, "add", True, "float32", "nchw"),
    # NCHW rows of whole 16-byte vectors take the *_vec kernels: a last tile with idle lanes, a pool
    # split whose length is rounded up to whole vectors (1048 pixels in 5 splits), C = 1 and C = 3
    (2, 5, 24, 24, "gate", True, "float32", "nchw"),
    (1, 8, 8, 131, "max", True, "float16", "nchw"),
    (3, 3, 16, 16, "mul", False, "bfloat16", "nchw"),
    (2, 1, 8, 16, "add", True, "float16", "nchw"),
    (2, 256, 16, 16, "gate", False, "bfloat16", "nchw"),
    # the same rows one element off a 16-byte boundary: the scalar kernels
    (2, 16, 16, 16, "add", True, "float16", "offset"),
    (2, 16, 16, 16, "max", False, "float32", "offset"),
]


def _gpu_input(case: tuple) -> tuple[ScSE, torch.Tensor]:
    n, c, h, w, fusion, bias, dtype, layout = case
    torch.manual_seed(c * 1000 + h)
    ref = ScSE(c, 2 if c > 1 else 1, fusion, bias)
    if fusion == "gate":
        torch.nn.init.normal_(ref.gate)
    x = torch.randn(n, c, h, w, device="cuda").to(getattr(torch, dtype))
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(n, c, h, 2 * w, device="cuda").to(x.dtype)[..., ::2]
    elif layout == "offset":  # contiguous, but starting one element past an allocation's aligned start
        x = torch.randn(n * c * h * w + 1, device="cuda").to(x.dtype)[1:].view(n, c, h, w)
    return ref, x


@pytest.mark.cuda
@pytest.mark.parametrize("case", GPU_CASES, ids=[f"{c[1]}x{c[2]}x{c[3]}-{c[4]}-{c[6]}-{c[7]}" for c in GPU_CASES])
def test_cuda_forward_matches_float64(case: tuple) -> None:
    if cf.unavailable_reason():
        pytest.skip(cf.unavailable_reason())
    ref, x = _gpu_input(case)
    before = x.clone()
    with torch.no_grad():  # as the harness calls it; where autograd records, the same kernels through an operator
        y = cf.build_cuda_fused(ref, torch.device("cuda"), x.dtype)(x)
    torch.cuda.synchronize()
    assert torch.equal(x, before), "the variant modified its input"
    assert y.dtype == x.dtype and y.shape == x.shape and y.is_cuda
    if case[7] == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    want = copy.deepcopy(ref).double().cuda()(x.double())
    err = normwise_error(y, want)
    assert err <= tolerance(case[6], "cuda"), f"error {err:.3g}"


@pytest.mark.cuda
@pytest.mark.parametrize("n", [0, 65536 + 3])
def test_cuda_fused_takes_an_empty_batch_and_one_beyond_a_launch(n: int) -> None:
    """N = 0 raised "pool failed: invalid argument" (an empty grid); N > 65535 the same (the grid's
    batch dimension): now an empty answer, and launches of 65535 samples at most."""
    if cf.unavailable_reason():
        pytest.skip(cf.unavailable_reason())
    ref = ScSE(4, 2, "max", True)
    x = torch.randn(n, 4, 2, 3, device="cuda")
    module = cf.build_cuda_fused(ref, torch.device("cuda"), x.dtype)
    y = module(x)  # with grad enabled: through the operator, as a network in eval mode calls it
    assert y.shape == x.shape and (n == 0 or y.grad_fn is not None)
    want = copy.deepcopy(ref).double().cuda()(x.double())
    assert n == 0 or normwise_error(y, want) <= tolerance("float32", "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("fusion", ["add", "max"])
def test_cuda_fused_spreads_a_nan_as_eager_does(fusion: str) -> None:
    """fmaxf drops a NaN operand: relu(NaN) read 0 and hid a NaN pixel from the rest of its sample."""
    if cf.unavailable_reason():
        pytest.skip(cf.unavailable_reason())
    torch.manual_seed(0)
    ref = ScSE(16, 2, fusion, True)
    x = torch.randn(2, 16, 8, 8, device="cuda")
    x[0, 3, 2, 5] = float("nan")
    with torch.no_grad():
        got = cf.build_cuda_fused(ref, torch.device("cuda"), x.dtype)(x)
        want = copy.deepcopy(ref).cuda()(x)
    assert torch.equal(got.isnan(), want.isnan()) and bool(want[0].isnan().all())


@pytest.mark.cuda
def test_cuda_fused_agrees_with_triton_fused() -> None:
    if cf.unavailable_reason():
        pytest.skip(cf.unavailable_reason())
    import variants.triton_fused as tf

    if tf.triton_unavailable("cuda"):
        pytest.skip(tf.triton_unavailable("cuda"))
    ref, x = _gpu_input((8, 64, 32, 32, "max", True, "float32", "nchw"))
    a = cf.build_cuda_fused(ref, torch.device("cuda"), x.dtype)(x)
    b = tf.build_triton_fused(ref, torch.device("cuda"), x.dtype)(x)
    assert normwise_error(a, b) <= 1e-5


@pytest.mark.cuda
@pytest.mark.parametrize(("layout", "kind"), [("nchw", "pixels_vec"), ("offset", "pixels_fast"),
                                              ("channels_last", "channels_fast")])
def test_a_cuda_fused_call_is_three_kernels_and_no_torch_compute(layout: str, kind: str) -> None:
    """pool, excitation, apply: one call into the extension, no torch op but allocations; the
    16-byte kernels for aligned NCHW rows, the scalar ones else."""
    if cf.unavailable_reason():
        pytest.skip(cf.unavailable_reason())
    from torch.profiler import ProfilerActivity, profile

    ref, x = _gpu_input((4, 64, 32, 32, "gate", True, "float16", layout))
    module = cf.build_cuda_fused(ref, torch.device("cuda"), x.dtype)
    with torch.no_grad():
        module(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            module(x)
            torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(kernels) == 3 and "excite_kernel" in kernels[1], kernels
    assert f"pool_{kind}" in kernels[0] and f"apply_{kind}" in kernels[2], kernels
    ops = {e.name for e in prof.events() if e.name.startswith("aten::")}
    assert ops <= {"aten::empty", "aten::empty_like", "aten::empty_strided"}, ops


@pytest.mark.cuda
def test_cuda_fused_compiles_as_one_operator() -> None:
    """Inside a compiled network the extension call is an opaque operator: traced, its stream
    argument broke Dynamo on an H200 ('torch.Stream' object has no attribute 'cuda_stream')."""
    if cf.unavailable_reason():
        pytest.skip(cf.unavailable_reason())
    ref, x = _gpu_input((4, 32, 16, 16, "add", True, "float16", "channels_last"))
    module = cf.build_cuda_fused(ref, torch.device("cuda"), x.dtype)
    with torch.no_grad():
        whole = torch.compile(module, fullgraph=True)(x)
    assert torch.equal(whole, module(x))
    assert whole.is_contiguous(memory_format=torch.channels_last)
