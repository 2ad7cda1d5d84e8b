"""``triton_fused`` (and ``triton_fused_l2``) at the edges of how a user calls a module: another
channel count, an empty batch, parameters replaced rather than updated, a second derivative, and
``torch.compile`` with its default dynamic shapes. Each ran wrong or crashed without a word:
another channel count returned a tensor and, in train mode, corrupted the heap.

The checks run in one interpreter child process (``TRITON_INTERPRET=1``), as in ``test_triton_fused.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from optional import require

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, torch
from variants.reference import ScSE
import variants.triton_fused as tf
import variants.triton_fused_l2 as tl

cpu = torch.device("cpu")
out = {}

def error_of(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None

def reference_of(m, channels=6):
    e = ScSE(channels, 2, m.fusion, True)
    e.load_state_dict({k: v.detach() for k, v in m.state_dict().items()})
    return e

torch.manual_seed(0)
m = tf.build_triton_fused(ScSE(6, 2, "add"), cpu, torch.float32)
l2 = tl.TritonL2ScSE(ScSE(6, 2, "add"), 1 << 20)

def no_grad(f, x):
    with torch.no_grad():
        return f(x)

out["fewer_channels"] = error_of(lambda: no_grad(m, torch.randn(2, 4, 5, 5)))
out["more_channels_train"] = error_of(lambda: m(torch.randn(2, 8, 5, 5, requires_grad=True)).sum().backward())
out["fewer_channels_empty"] = error_of(lambda: no_grad(m, torch.randn(0, 4, 5, 5)))
out["l2_fewer_channels"] = error_of(lambda: no_grad(l2, torch.randn(2, 4, 5, 5)))

x = torch.randn(0, 6, 5, 5, requires_grad=True)
y = m(x)
y.sum().backward()
out["empty_train"] = [list(y.shape), list(x.grad.shape)]
out["empty_inference"] = list(no_grad(m, torch.randn(0, 6, 5, 5)).shape)
out["l2_empty"] = list(no_grad(l2, torch.randn(0, 6, 5, 5)).shape)

x = torch.randn(2, 6, 5, 5, requires_grad=True)
out["double_backward"] = error_of(lambda: torch.autograd.grad(m(x).sum(), x, create_graph=True))

# parameters replaced, not updated in place: each call must read the module's parameters of now
ref, new = ScSE(6, 2, "gate", True), ScSE(6, 2, "gate", True)
torch.nn.init.normal_(new.gate)
g = tf.build_triton_fused(ref, cpu, torch.float32)
x = torch.randn(2, 6, 5, 5)
params = {k: v.detach().clone().requires_grad_(True) for k, v in new.named_parameters()}
y = torch.func.functional_call(g, params, (x,))
y.square().sum().backward()
replaced = {"functional_call": (y - new(x)).abs().max().item(),
            "functional_call_grads": all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values()),
            "after_functional_call": (g(x) - ref(x)).abs().max().item()}
g.load_state_dict(new.state_dict(), assign=True)
replaced["load_state_dict_assign"] = (g(x) - new(x)).abs().max().item()
g.cse.fc[0].weight = torch.nn.Parameter(torch.randn_like(g.cse.fc[0].weight))
replaced["new_parameter"] = (g(x) - reference_of(g)(x)).abs().max().item()
torch.nn.utils.parametrizations.weight_norm(g.sse.Conv1x1)
want = ScSE(6, 2, "gate", True)
with torch.no_grad():
    for (name, p) in want.named_parameters():
        p.copy_(g.get_parameter(name) if "Conv1x1" not in name else getattr(g.sse.Conv1x1, name.rsplit(".", 1)[1]))
replaced["weight_norm"] = (g(x) - want(x)).abs().max().item()
out["replaced"] = replaced

# torch.compile's default: a second batch size recompiles with symbolic shapes
c = torch.compile(tf.build_triton_fused(ScSE(6, 2, "max", True), cpu, torch.float32), backend="aot_eager")
eager = tf.build_triton_fused(ScSE(6, 2, "max", True), cpu, torch.float32)
eager.load_state_dict(c.state_dict() if not hasattr(c, "_orig_mod") else c._orig_mod.state_dict())
dynamic = []
for n in (2, 3, 4):
    xc = torch.randn(n, 6, 5, 7, requires_grad=True)
    xe = xc.detach().clone().requires_grad_(True)
    c(xc).square().sum().backward()
    eager(xe).square().sum().backward()
    dynamic.append((xc.grad - xe.grad).abs().max().item())
out["dynamic"] = dynamic
print("@@EDGES@@" + json.dumps(out))
"""


@lru_cache(maxsize=1)
def edges() -> dict[str, Any]:
    require("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("@@EDGES@@")), None)
    assert proc.returncode == 0 and line is not None, f"rc={proc.returncode}\n{proc.stderr[-3000:]}"
    return json.loads(line.removeprefix("@@EDGES@@"))


@pytest.mark.parametrize("key", ["fewer_channels", "more_channels_train", "fewer_channels_empty", "l2_fewer_channels"])
def test_another_channel_count_is_refused(key: str) -> None:
    """The kernels indexed the weights by the input's channels: wrong output, and past the buffers."""
    error = edges()[key]
    assert error is not None and error.startswith("ValueError: the block takes NCHW input with 6 channels"), error


def test_an_empty_batch_is_an_empty_answer() -> None:
    """It raised ZeroDivisionError (triton_fused) and IndexError (triton_fused_l2); eager returns it."""
    got = edges()
    assert got["empty_train"] == [[0, 6, 5, 5], [0, 6, 5, 5]]  # and its backward runs
    assert got["empty_inference"] == got["l2_empty"] == [0, 6, 5, 5]


def test_a_second_derivative_is_refused_in_one_line() -> None:
    """With create_graph=True the gradient came back without a graph: a gradient penalty added
    nothing to the loss, silently."""
    assert edges()["double_backward"] == ("RuntimeError: triton_fused has no double backward (create_graph=True); "
                                          "use eager for it")  # fmt: skip


@pytest.mark.parametrize("how", ["functional_call", "after_functional_call", "load_state_dict_assign",
                                 "new_parameter", "weight_norm"])
def test_replaced_parameters_are_read(how: str) -> None:
    """The weights were gathered once: parameters replaced (not updated in place) were never read,
    e.g. functional_call's missed by 1.53."""
    assert edges()["replaced"][how] <= 1e-5, edges()["replaced"]


def test_functional_call_parameters_get_their_gradients() -> None:
    assert edges()["replaced"]["functional_call_grads"]


def test_compile_with_dynamic_shapes_trains_on_a_second_batch_size() -> None:
    """The second batch size crashed: the fake kernel's launch plan hashed symbolic sizes."""
    dynamic = edges()["dynamic"]
    assert len(dynamic) == 3 and max(dynamic) <= 1e-5, dynamic
