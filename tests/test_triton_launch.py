"""``DirectKernel``: a compiled Triton kernel reused only where Triton would reuse it, called as Triton calls it.

Two kinds of test. With stand-ins for Triton (no Triton needed): which launches go through
``JITFunction.run`` and which call the kept kernel, and with what. With the installed Triton's real
``JITFunction`` (no GPU: the driver is a stand-in and compiling returns a recorder): the arguments
the direct call passes are exactly those Triton's own launch passes, and across launches that vary
every argument Triton specializes on, a kept kernel is called only where Triton itself would have
chosen a kernel of the same specialization.
"""
from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from triton_stand_ins import Compiled, real_jit, stand_in_driver

from variants.triton_launch import TESTED_TRITON, DirectKernel, direct_launch_problem, triton_version


class Jitted:
    """Stands for a ``JITFunction``: ``[grid](...)`` records the call and returns a new compiled kernel (or None)."""

    def __init__(self, names: tuple[str, ...], returns: bool = True) -> None:
        self.arg_names, self.returns, self.calls, self.kernels = list(names), returns, [], []
        self.pre_run_hooks: list = []

    def __getitem__(self, grid: tuple[int, ...]) -> Any:
        def launch(*args: Any, **kwargs: Any) -> Compiled | None:
            self.calls.append((grid, args, kwargs))
            self.kernels.append(Compiled())
            return self.kernels[-1] if self.returns else None
        return launch


class Hooks:
    def __init__(self, calls: list) -> None:
        self.calls = calls


def fake_triton(enter: Any = None, exit_hook: Any = None) -> SimpleNamespace:
    state = SimpleNamespace(device=0)
    active = SimpleNamespace(get_current_device=lambda: state.device, get_current_stream=lambda d: 1000 + d)
    knobs = SimpleNamespace(runtime=SimpleNamespace(launch_enter_hook=enter, launch_exit_hook=exit_hook, debug=False),
                            compilation=SimpleNamespace(instrumentation_mode=""))
    return SimpleNamespace(state=state, runtime=SimpleNamespace(driver=SimpleNamespace(active=active)), knobs=knobs)


NAMES = ("x", "out", "n", "BLOCK")


def argument_key(arg: Any) -> Any:
    """What Triton specializes a tensor on (dtype, 16-byte alignment); any other argument, its type and value."""
    return (arg.dtype, arg.data_ptr() % 16 == 0) if isinstance(arg, torch.Tensor) else (type(arg), arg)


def test_the_second_launch_calls_the_kept_kernel_with_every_argument_in_order() -> None:
    jitted, tr = Jitted(NAMES), fake_triton()
    kernel = DirectKernel(jitted, tr)
    x, out = torch.zeros(64), torch.zeros(64)
    kernel[(4, 2)](x, out, 7, BLOCK=64)
    assert len(jitted.calls) == 1 and jitted.calls[0] == ((4, 2), (x, out, 7), {"BLOCK": 64})
    kernel[(4, 2)](x, out, 7, BLOCK=64)
    assert len(jitted.calls) == 1
    kept = jitted.kernels[0]
    assert kept.calls == [(4, 2, 1, 1000, kept.function, ("meta",), None, None, None, x, out, 7, 64)]
    tr.state.device = 1  # another current device: Triton keeps kernels per device, so must this
    kernel[(5,)](x, out, 7, BLOCK=64)
    assert len(jitted.calls) == 2
    kernel[(5,)](x, out, 7, BLOCK=64)
    assert jitted.kernels[1].calls == [(5, 1, 1, 1001, jitted.kernels[1].function, ("meta",), None, None, None,
                                        x, out, 7, 64)]


def test_whatever_triton_specializes_on_makes_a_new_key() -> None:
    """Alignment, dtype, an integer's value, a constexpr, a launch option: each goes through Triton first."""
    jitted = Jitted(NAMES)
    kernel = DirectKernel(jitted, fake_triton())
    base = torch.zeros(64, dtype=torch.float16)
    variants = [((base, base, 7), {"BLOCK": 64}),
                ((base[1:], base, 7), {"BLOCK": 64}),  # 2 bytes off: not 16-aligned
                ((base[4:], base, 7), {"BLOCK": 64}),  # 8 bytes off: not either, and keyed as 2 bytes off
                ((base[8:], base, 7), {"BLOCK": 64}),  # 16 bytes off: aligned again, but a new key is harmless
                ((base.float(), base, 7), {"BLOCK": 64}),
                ((base, base, 16), {"BLOCK": 64}),
                ((base, base, 7.0), {"BLOCK": 64}),  # equal to 7, but Triton types it fp32
                ((base, base, True), {"BLOCK": 64}),
                ((base, base, 1), {"BLOCK": 64}),  # equal to True, but Triton makes it a constant 1
                ((base, base, 7), {"BLOCK": 128}),
                ((base, base, 7), {"BLOCK": 64, "num_warps": 8})]
    keys = set()
    for args, kwargs in variants:
        before = len(jitted.calls)
        kernel[(1,)](*args, **kwargs)
        key = tuple(map(argument_key, (*args, kwargs["BLOCK"]))), kwargs.get("num_warps")
        assert (len(jitted.calls) == before + 1) == (key not in keys), (args, kwargs)
        keys.add(key)
    assert argument_key(base[1:]) == (torch.float16, False) and argument_key(base[8:]) == (torch.float16, True)
    assert len(jitted.calls) == 9  # base[8:] keys as base does
    for args, kwargs in variants:  # all kept now: none goes through Triton again
        kernel[(1,)](*args, **kwargs)
    assert len(jitted.calls) == 9


@pytest.mark.parametrize("enter, exit_hook, direct", [
    (None, None, True), (Hooks([]), Hooks([]), True),  # Triton 3.6+: empty hook chains
    (Hooks([print]), Hooks([]), False), (None, Hooks([print]), False), (print, None, False),
])
def test_an_installed_launch_hook_keeps_every_launch_in_triton(enter: Any, exit_hook: Any, direct: bool) -> None:
    jitted = Jitted(NAMES)
    kernel = DirectKernel(jitted, fake_triton(enter, exit_hook))
    x = torch.zeros(4)
    for _ in range(3):
        kernel[(1,)](x, x, 1, BLOCK=4)
    assert len(jitted.calls) == (1 if direct else 3)


def test_without_a_compiled_kernel_every_launch_goes_through_triton() -> None:
    """The interpreter returns no compiled kernel, and ``triton=None`` turns the direct path off."""
    x = torch.zeros(4)
    for jitted, tr in ((Jitted(NAMES, returns=False), fake_triton()), (Jitted(NAMES), None)):
        kernel = DirectKernel(jitted, tr)
        for _ in range(3):
            kernel[(1,)](x, x, 1, BLOCK=4)
        assert len(jitted.calls) == 3 and kernel.compiled == {}


def test_arguments_it_cannot_key_go_through_triton() -> None:
    jitted = Jitted(NAMES)
    kernel = DirectKernel(jitted, fake_triton())
    x = torch.zeros(4)
    for _ in range(2):
        kernel[(1,)](x, x, [1])  # a list cannot be hashed; BLOCK left out (to a default)
        kernel[(1,)](x, x, 1)
    assert len(jitted.calls) == 4 and kernel.compiled == {}


def test_a_keyword_argument_is_keyed_by_its_type_too() -> None:
    """1, 1.0 and True hash alike; passed by keyword, Triton still types them i32, fp32 and u1."""
    jitted = Jitted(NAMES)
    kernel = DirectKernel(jitted, fake_triton())
    x = torch.zeros(4)
    for n in (1, 1.0, True, 1, 1.0, True):
        kernel[(1,)](x, x, n=n, BLOCK=4)
    assert len(jitted.calls) == 3 and len(kernel.compiled) == 3


def test_a_stages_inspection_hook_keeps_every_launch_in_triton() -> None:
    """Triton adds the hook's hash to its key (3.9): with one installed, nothing kept is reused."""
    jitted, tr = Jitted(NAMES), fake_triton()
    tr.knobs.runtime.add_stages_inspection_hook = lambda: ("key", "hash")
    kernel = DirectKernel(jitted, tr)
    x = torch.zeros(4)
    for _ in range(3):
        kernel[(1,)](x, x, 1, BLOCK=4)
    assert len(jitted.calls) == 3 and kernel.compiled == {}


def test_a_knob_that_changes_the_compile_makes_a_new_key() -> None:
    """Triton adds ``knobs.runtime.debug`` and the instrumentation mode to its options: a kernel kept
    before either changed is not the one Triton would run after."""
    jitted, tr = Jitted(NAMES), fake_triton()
    kernel = DirectKernel(jitted, tr)
    x = torch.zeros(4)
    for debug, mode, expected in ((False, "", 1), (False, "", 1), (True, "", 2), (True, "", 2), (True, "fpsan", 3)):
        tr.knobs.runtime.debug, tr.knobs.compilation.instrumentation_mode = debug, mode
        kernel[(1,)](x, x, 1, BLOCK=4)
        assert len(jitted.calls) == expected, (debug, mode)


def test_what_it_cannot_keep_goes_through_triton_every_time() -> None:
    """A pre-run hook, a grid function, a tensor passed by keyword, an argument that hashes by identity:
    Triton's own launch each time, nothing kept (an identity key would grow the cache on every call)."""
    x = torch.zeros(4)

    class Wrapper:  # as triton.reinterpret's: hashed by identity
        pass

    calls = [
        lambda k: k[(1,)](x, x, 1, BLOCK=4),  # with a pre-run hook (below)
        lambda k: k[lambda meta: (1,)](x, x, 1, BLOCK=4),
        lambda k: k[(1,)](x, out=x, n=1, BLOCK=4),
        lambda k: k[(1,)](Wrapper(), x, 1, BLOCK=4),
    ]
    for i, call in enumerate(calls):
        jitted = Jitted(NAMES)
        if i == 0:
            jitted.pre_run_hooks.append(print)
        kernel = DirectKernel(jitted, fake_triton())
        for _ in range(3):
            call(kernel)
        assert len(jitted.calls) == 3 and kernel.compiled == {}, i


def test_the_kept_kernels_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """An argument whose value changes every call (a seed, a step) makes a key per call: past
    ``MAX_KEPT`` such launches go through Triton instead of growing the cache."""
    import variants.triton_launch as launch

    monkeypatch.setattr(launch, "MAX_KEPT", 2)
    jitted = Jitted(NAMES)
    kernel = DirectKernel(jitted, fake_triton())
    x = torch.zeros(4)
    for step in (1, 2, 3, 1, 2, 3):
        kernel[(1,)](x, x, step, BLOCK=4)
    assert len(kernel.compiled) == 2 and len(jitted.calls) == 4  # steps 1 and 2 kept; 3 through Triton twice


def test_direct_launch_only_for_compiled_kernels_of_a_triton_that_was_read() -> None:
    assert TESTED_TRITON == ((3, 6), (3, 9))  # read: the GPU image's and this machine's
    assert triton_version("3.9.0+git1234") == (3, 9) and triton_version("3.10.0rc1") == (3, 10)
    assert direct_launch_problem("3.6.0", False) is None and direct_launch_problem("3.9.1", False) is None
    assert "interpreter" in direct_launch_problem("3.6.0", True)
    for unread in ("3.5.0", "3.7.0", "3.8.2", "3.10.0", "4.0.0"):
        assert "not a version whose launch was read (3.6, 3.9)" in direct_launch_problem(unread, False), unread


# ----------------------------------------------------------------------------------------------
# Against the installed Triton's own JITFunction.run
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def triton_without_gpu(monkeypatch: pytest.MonkeyPatch) -> Any:
    return stand_in_driver(monkeypatch)


def apply_arguments(x: torch.Tensor, channels: int, fusion: int, num_warps: int | None) -> tuple[tuple, dict]:
    """``triton_fused``'s apply launch, as ``fused_forward`` makes it."""
    n, c, h, w = x.shape
    out, cg, ws, sig = torch.empty_like(x), torch.empty(n * c), torch.empty(c), torch.empty(n * h * w)
    strides = (x.stride(0), x.stride(1), x.stride(3))
    kwargs = {"FUSION": fusion, "HAS_SBIAS": False, "STORE_SIG": False, "NUM_CB": 1, "BLOCK_C": 64, "BLOCK_P": 64}
    if num_warps:
        kwargs["num_warps"] = num_warps
    return (x, out, cg, ws, cg, cg, sig, channels, h * w, *strides, *strides), kwargs


def test_the_direct_call_passes_what_triton_passes(triton_without_gpu: Any) -> None:
    import variants.triton_fused as tf

    tf._import_triton()
    compiled: list[Compiled] = []
    kernel = DirectKernel(real_jit(tf._KERNEL_FUNCTIONS["apply"], compiled), triton_without_gpu)
    args, kwargs = apply_arguments(torch.zeros(2, 64, 16, 16, dtype=torch.float16), 64, 0, None)
    kernel[(4, 2)](*args, **kwargs)
    kernel[(4, 2)](*args, **kwargs)
    assert len(compiled) == 1 and len(compiled[0].calls) == 2
    by_triton, direct = compiled[0].calls
    assert len(by_triton) == len(direct) == 9 + len(args) + 6
    assert by_triton[:6] == direct[:6] == (4, 2, 1, 1000, compiled[0].function, ("meta",))
    # every argument, the constexprs included, in signature order
    assert all(a is b for a, b in zip(by_triton[9:], direct[9:], strict=True))
    # Triton passes its launch metadata and hook chains; with no hook installed the launcher calls
    # neither, as for None
    assert direct[6:9] == (None, None, None)
    assert all(hook is None or not hook.calls for hook in by_triton[7:9])


def ran_by(launcher: Any, compiled: list[Compiled], args: tuple, kwargs: dict) -> Compiled:
    """Launch once through ``launcher``; the one recorder among ``compiled`` that ran."""
    before = [len(k.calls) for k in compiled]
    launcher[(1,)](*args, **kwargs)
    ran = [k for i, k in enumerate(compiled) if i >= len(before) or len(k.calls) > before[i]]
    assert len(ran) == 1, f"{len(ran)} kernels ran"
    return ran[0]


def test_a_kept_kernel_is_only_called_where_triton_would_choose_the_same(triton_without_gpu: Any) -> None:
    """Launches that vary alignment, dtype, integers (1, multiples of 16, others), constexprs and
    ``num_warps``, in a random order: each direct call runs a kernel of the specialization Triton's
    own lookup gives for those arguments (asked of a twin ``JITFunction``), and no launch makes
    Triton compile more than it would have alone."""
    import variants.triton_fused as tf

    tf._import_triton()
    fn = tf._KERNEL_FUNCTIONS["apply"]
    ours: list[Compiled] = []
    twins: list[Compiled] = []
    kernel = DirectKernel(real_jit(fn, ours), triton_without_gpu)
    through_triton: list[int] = []
    run = kernel.jitted.run
    kernel.jitted.run = lambda *a, **kw: through_triton.append(1) or run(*a, **kw)  # the launches Triton made
    twin = real_jit(fn, twins)
    storage = torch.zeros(2 * 64 * 16 * 16 + 8, dtype=torch.float32)
    inputs = [storage[:2 * 64 * 256].view(2, 64, 16, 16),
              storage[1:1 + 2 * 64 * 256].view(2, 64, 16, 16),  # 4 bytes off
              storage[2:2 + 2 * 64 * 256].view(2, 64, 16, 16),  # 8 bytes off
              storage[4:4 + 2 * 64 * 256].view(2, 64, 16, 16),  # 16 bytes off
              torch.zeros(2, 64, 16, 16, dtype=torch.float16),
              torch.zeros(2, 64, 16, 16, dtype=torch.bfloat16).to(memory_format=torch.channels_last),
              torch.zeros(1, 64, 1, 16),  # hw = 16, strides of 1
              torch.zeros(2, 64, 1, 17)]  # hw = 17
    rng = random.Random(0)
    for _ in range(120):
        x = rng.choice(inputs)
        args, kwargs = apply_arguments(x, rng.choice([64, 1, 48]), rng.choice([0, 1]), rng.choice([None, 8]))
        chosen = ran_by(twin, twins, args, kwargs)  # the kernel Triton's own lookup runs
        ran = ran_by(kernel, ours, args, kwargs)
        assert ran.spec == chosen.spec, (x.dtype, x.data_ptr() % 16, args[7:], kwargs)
    assert len({k.spec for k in ours}) == len(ours) == len(twins)  # Triton compiled each specialization once
    assert len(through_triton) == len(kernel.compiled) < 60  # the first launch of each key; the rest direct
