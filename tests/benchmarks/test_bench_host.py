"""The fused Triton variant's own Python per call, with its kernel launches stubbed out.

A fused kernel that is fast on the GPU but slow to launch is slow for the user, and most of a
launch-bound call's host time is Python that runs before any kernel: argument checks, the launch
plan, allocation, autograd. With each launch replaced by a no-op (the interpreter's ``run``),
what pytest-benchmark times is that Python alone, on any machine: at best 11 µs per inference call
and 104 µs per train step on the 2-core VM (``variants/KERNEL_NOTES.md``). Triton's own launch
cost is not included. Runs where Triton's interpreter is on (``TRITON_INTERPRET=1``, as in
``tox -e bench``); skipped elsewhere.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from variants.reference import ScSE

#: Calls before timing: pytest-benchmark sizes its rounds from the first ones, which are slow.
WARMUP = 100


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    import variants.triton_fused as tf

    reason = tf.triton_unavailable("cpu")  # on the CPU it needs the interpreter: TRITON_INTERPRET=1
    if reason:
        pytest.skip(reason)
    import triton.runtime.interpreter as interpreter

    monkeypatch.setattr(interpreter.InterpretedFunction, "run", lambda self, *args, **kwargs: None)
    return tf.build_triton_fused(ScSE(64, 16, "add", True), torch.device("cpu"), torch.float32)


def test_triton_fused_python_per_inference_call(benchmark, stubbed) -> None:  # noqa: ANN001
    x = torch.randn(32, 64, 16, 16)
    with torch.no_grad():
        for _ in range(WARMUP):
            stubbed(x)
        out = benchmark(stubbed, x)
    assert out.shape == x.shape


def test_triton_fused_python_per_train_step(benchmark, stubbed) -> None:  # noqa: ANN001
    x = torch.randn(32, 64, 16, 16, requires_grad=True)
    grad_out = torch.ones_like(x)
    inputs = [x, *stubbed.parameters()]
    def step() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(stubbed(x), inputs, grad_out)

    for _ in range(WARMUP):
        step()
    grads = benchmark(step)
    assert len(grads) == len(inputs)


@pytest.fixture(params=["triton_run", "direct"])
def launched(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """The module with Triton's real launch path (compiled-kernel mode, a stand-in driver, launchers
    that do nothing): its kernels launched through ``JITFunction.run`` every time, or directly once
    kept (``variants/triton_launch.py``). The difference is the Python a GPU launch path saves."""
    from triton_stand_ins import real_jit, stand_in_driver

    import variants.triton_fused as tf
    from variants.triton_launch import DirectKernel

    triton = stand_in_driver(monkeypatch)
    tf._import_triton()
    direct = triton if request.param == "direct" else None
    kernels = {name: DirectKernel(real_jit(fn, [], record=False), direct) for name, fn in tf._KERNEL_FUNCTIONS.items()}
    monkeypatch.setattr(tf, "_JITTED", SimpleNamespace(**kernels))
    return tf.TritonScSE(ScSE(64, 16, "add", True))


def test_triton_fused_launch_path_per_inference_call(benchmark, launched) -> None:  # noqa: ANN001
    x = torch.randn(32, 64, 16, 16)
    with torch.no_grad():
        for _ in range(WARMUP):
            launched(x)
        out = benchmark(launched, x)
    assert out.shape == x.shape


def test_triton_fused_launch_path_per_train_step(benchmark, launched) -> None:  # noqa: ANN001
    x = torch.randn(32, 64, 16, 16, requires_grad=True)
    grad_out = torch.ones_like(x)
    inputs = [x, *launched.parameters()]

    def step() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(launched(x), inputs, grad_out)

    for _ in range(WARMUP):
        step()
    grads = benchmark(step)
    assert len(grads) == len(inputs)
