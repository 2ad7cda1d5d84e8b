"""The fused Triton variant's host work per call, with its kernel launches stubbed out.

A fused kernel that is fast on the GPU but slow to launch is slow for the user, and most of a
launch-bound call's host time is Python that runs before any kernel: argument checks, the launch
plan, allocation, autograd, and Triton's own launch path. Three ways to launch, each timed by
pytest-benchmark on any machine (``variants/KERNEL_NOTES.md`` has the 2-core VM's figures):

- ``no_op``: the interpreter's ``run`` replaced by a no-op: our Python alone (needs
  ``TRITON_INTERPRET=1``, as ``tox -e bench`` sets);
- ``triton_run``: Triton's real ``JITFunction.run`` in compiled-kernel mode, on a stand-in driver
  whose kernels do nothing (``tests/triton_stand_ins.py``), every launch through it;
- ``direct``: the same, launched as triton_fused launches on a GPU: the kept compiled kernel
  called directly (``variants/triton_launch.py``).

The difference between the last two is the Python the direct path saves per call; the driver's
own launch cost is in neither.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from variants.reference import ScSE

#: Calls before timing: pytest-benchmark sizes its rounds from the first ones, which are slow.
WARMUP = 100


@pytest.fixture(params=["no_op", "triton_run", "direct"])
def launched(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    import variants.triton_fused as tf

    if request.param == "no_op":
        reason = tf.triton_unavailable("cpu")  # on the CPU it needs the interpreter: TRITON_INTERPRET=1
        if reason:
            pytest.skip(reason)
        import triton.runtime.interpreter as interpreter

        monkeypatch.setattr(interpreter.InterpretedFunction, "run", lambda self, *args, **kwargs: None)
        yield tf.build_triton_fused(ScSE(64, 16, "add", True), torch.device("cpu"), torch.float32)
        return
    from triton_stand_ins import real_jit, stand_in_driver

    from variants.triton_launch import DirectKernel

    triton = stand_in_driver(monkeypatch)
    tf._import_triton()
    direct = triton if request.param == "direct" else None
    kernels = {name: DirectKernel(real_jit(fn, [], record=False), direct) for name, fn in tf._KERNEL_FUNCTIONS.items()}
    monkeypatch.setattr(tf, "_JITTED", SimpleNamespace(**kernels))
    yield tf.TritonScSE(ScSE(64, 16, "add", True))  # float32 parameters, as the variant builds it
    kept = [name for name, kernel in kernels.items() if kernel.compiled]
    if request.param == "direct":  # what was timed launched directly, once its kernels were kept
        assert {"pool", "excite", "apply"} <= set(kept), kept  # the forward's three, and the backward's in train
    else:
        assert kept == []


def test_triton_fused_host_per_inference_call(benchmark, launched) -> None:  # noqa: ANN001
    x = torch.randn(32, 64, 16, 16)
    with torch.no_grad():
        for _ in range(WARMUP):
            launched(x)
        out = benchmark(launched, x)
    assert out.shape == x.shape


def test_triton_fused_host_per_train_step(benchmark, launched) -> None:  # noqa: ANN001
    x = torch.randn(32, 64, 16, 16, requires_grad=True)
    grad_out = torch.ones_like(x)
    inputs = [x, *launched.parameters()]

    def step() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(launched(x), inputs, grad_out)

    for _ in range(WARMUP):
        step()
    grads = benchmark(step)
    assert len(grads) == len(inputs)
