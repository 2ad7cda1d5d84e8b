"""``triton_fused``: scSE in two passes over x, forward and backward, in Triton.

The module as written moves the activation about nine times; this one reads x twice and writes
the output once:

* pass 1 (``_pool_kernel``) sums x per (n, c) over a slice of the pixels; the slices are added and
  the tiny excitation MLP runs on the pooled (N, C) vector in torch ops;
* pass 2 (``_apply_kernel``) reads a tile of pixels with all channels, computes the spatial logit
  (a dot over C, looping over channel blocks when C is large) and writes
  ``combine(x·c, x·σ(s))`` directly.

Backward reads x and dy twice and writes dx once: ``_bwd_reduce_kernel`` makes the per-pixel
dσ(s) and per-(n, c) dc sums in one pass; the MLP's backward runs in torch; ``_bwd_dx_kernel``
writes dx and the spatial weights' gradient partials. All arithmetic accumulates in float32.

Kernels are compiled lazily with ``triton.jit`` at first use, not at import, because Triton reads
``TRITON_INTERPRET`` when a function is decorated: jitting late lets a process that imported this
module first still run the kernels in the interpreter on CPU once the variable is set.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from variants.registry import register
from variants.weights import ReferenceWeights

# Triton is imported on first use, not here: its standard library (tl.zeros, tl.sum, ...) is
# jitted when triton.language is imported, in interpreter mode only if TRITON_INTERPRET=1 is set
# by then. Importing it lazily lets a process import the registry first and set the variable
# later. The kernels' bodies find these module globals once ``_import_triton`` has filled them.
triton: Any = None
tl: Any = None

#: Fusions the kernels implement, with their code in the kernels. ``concat`` needs a 2C→C matmul
#: per pixel, which is no longer a memory-bound epilogue, so it is left to other variants.
FUSION_CODES: dict[str, int] = {"add": 0, "max": 1, "mul": 2, "gate": 3}
#: Largest channel block held in registers at once; larger C loops over blocks.
MAX_BLOCK_C = 128
#: Elements per tile (BLOCK_C x BLOCK_P) the pixel block size is derived from.
TILE_ELEMENTS = 4096


def interpret_requested() -> bool:
    """Whether the environment asks for Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def language_interpreted() -> bool | None:
    """Whether the already-imported ``triton.language`` was set up for the interpreter; None if not imported."""
    lang = sys.modules.get("triton.language")
    if lang is None:
        return None
    return type(getattr(lang, "zeros", None)).__name__ == "InterpretedFunction"


def _mode_problem() -> str | None:
    """A mismatch between the environment and the mode triton.language was imported in, or None."""
    imported = language_interpreted()
    if imported is None or imported == interpret_requested():
        return None
    if imported:
        return "triton was imported with TRITON_INTERPRET=1, which is now unset; keep it set for the whole process"
    return ("TRITON_INTERPRET=1 was set after triton was imported; set it before the process starts "
            "(or before anything imports triton)")


def triton_installed() -> bool:
    return triton is not None or importlib.util.find_spec("triton") is not None


def triton_unavailable(device: torch.device | str = "cuda") -> str | None:
    """Why the Triton kernels cannot run on ``device`` here, or None when they can."""
    if not triton_installed():
        return "triton is not installed"
    problem = _mode_problem()
    if problem:
        return problem
    if interpret_requested():
        return None
    dev = torch.device(device).type
    if dev == "cpu":
        return "triton on CPU needs CUDA or TRITON_INTERPRET=1 (the interpreter, for correctness only)"
    if not torch.cuda.is_available():
        return "triton needs a CUDA GPU (none found) or TRITON_INTERPRET=1"
    return None


def _available() -> str | None:
    """Registry check (no device given): usable when CUDA works or the interpreter is on."""
    if not triton_installed():
        return "triton is not installed"
    problem = _mode_problem()
    if problem:
        return problem
    if interpret_requested() or torch.cuda.is_available():
        return None
    return "triton needs CUDA or TRITON_INTERPRET=1 (the CPU interpreter, for correctness only)"


def _import_triton() -> None:
    global triton, tl
    if triton is None:
        import triton as triton_module
        import triton.language as tl_module

        triton, tl = triton_module, tl_module


# --------------------------------------------------------------------------------------------
# Kernels. Plain functions here; ``_kernels()`` jits them on first use (see the module docstring).
# x is addressed as base + n*sN + c*sC + p*sP with p = h*W + w, which covers NCHW (sP = 1) and
# channels_last (sC = 1, sP = C) alike; other layouts are made contiguous first.
# --------------------------------------------------------------------------------------------


def _pool_kernel(
    x_ptr, part_ptr, C, HW, sN, sC, sP, TILES_PER_PROG,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """part[n, split, c] = sum of x[n, c, p] over this program's pixel tiles."""
    pid_split = tl.program_id(0)
    pid_cb = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    offs_c = pid_cb * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    base = x_ptr + n * sN + offs_c[:, None].to(tl.int64) * sC
    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    for t in range(0, TILES_PER_PROG):
        offs_p = (pid_split * TILES_PER_PROG + t) * BLOCK_P + tl.arange(0, BLOCK_P)
        mask = mask_c[:, None] & (offs_p[None, :] < HW)
        xv = tl.load(base + offs_p[None, :].to(tl.int64) * sP, mask=mask, other=0.0)
        acc += xv.to(tl.float32)
    n_splits = tl.num_programs(0)
    tl.store(part_ptr + (n * n_splits + pid_split) * C + offs_c, tl.sum(acc, axis=1), mask=mask_c)


def _apply_kernel(
    x_ptr, out_ptr, cg_ptr, ws_ptr, bs_ptr, gate_ptr, sig_ptr,
    C, HW, sN, sC, sP, oN, oC, oP,
    FUSION: tl.constexpr, HAS_SBIAS: tl.constexpr, STORE_SIG: tl.constexpr,
    NUM_CB: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """out[n, :, tile] = combine(x·c, x·σ(ws·x + bs)) for one tile of pixels and every channel."""
    pid_p = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < HW
    ar_c = tl.arange(0, BLOCK_C)
    x_base = x_ptr + n * sN + offs_p[None, :].to(tl.int64) * sP
    o_base = out_ptr + n * oN + offs_p[None, :].to(tl.int64) * oP

    # the spatial logit: a dot over every channel block
    s = tl.zeros([BLOCK_P], dtype=tl.float32)
    if NUM_CB == 1:
        offs_c = ar_c
        mask_c = offs_c < C
        mask = mask_c[:, None] & mask_p[None, :]
        xv = tl.load(x_base + offs_c[:, None].to(tl.int64) * sC, mask=mask, other=0.0).to(tl.float32)
        ws = tl.load(ws_ptr + offs_c, mask=mask_c, other=0.0)
        s += tl.sum(xv * ws[:, None], axis=0)
    else:
        for cb in range(0, NUM_CB):
            offs_c = cb * BLOCK_C + ar_c
            mask_c = offs_c < C
            mask = mask_c[:, None] & mask_p[None, :]
            xb = tl.load(x_base + offs_c[:, None].to(tl.int64) * sC, mask=mask, other=0.0).to(tl.float32)
            wb = tl.load(ws_ptr + offs_c, mask=mask_c, other=0.0)
            s += tl.sum(xb * wb[:, None], axis=0)
    if HAS_SBIAS:
        s += tl.load(bs_ptr).to(tl.float32)
    sig = 1.0 / (1.0 + tl.exp(-s))
    if STORE_SIG:
        tl.store(sig_ptr + n * HW + offs_p, sig, mask=mask_p)

    # the output, channel block by channel block (the second read of x hits cache when NUM_CB > 1)
    for cb in range(0, NUM_CB):
        offs_c = cb * BLOCK_C + ar_c
        mask_c = offs_c < C
        mask = mask_c[:, None] & mask_p[None, :]
        if NUM_CB > 1:
            xv = tl.load(x_base + offs_c[:, None].to(tl.int64) * sC, mask=mask, other=0.0).to(tl.float32)
        cg = tl.load(cg_ptr + n * C + offs_c, mask=mask_c, other=0.0)[:, None]
        sg = sig[None, :]
        if FUSION == 0:  # add
            y = xv * (cg + sg)
        elif FUSION == 1:  # max
            y = tl.maximum(xv * cg, xv * sg)
        elif FUSION == 2:  # mul
            y = (xv * cg) * (xv * sg)
        else:  # gate: σ(α)·x·c + (1 − σ(α))·x·σ(s), σ(α) precomputed per channel
            g = tl.load(gate_ptr + offs_c, mask=mask_c, other=0.0)[:, None]
            y = xv * (g * cg + (1.0 - g) * sg)
        tl.store(o_base + offs_c[:, None].to(tl.int64) * oC, y.to(out_ptr.dtype.element_ty), mask=mask)


def _bwd_reduce_kernel(
    x_ptr, dy_ptr, cg_ptr, sig_ptr, gate_ptr, ds_ptr, dcg_part_ptr, dgate_part_ptr,
    C, HW, sN, sC, sP, gN, gC, gP,
    FUSION: tl.constexpr, NUM_CB: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """One read of x and dy per pixel tile gives ds (per pixel) and dc, dσ(α) partials (per channel).

    With u = x·c, v = x·σ(s) and y = combine(u, v), a = ∂y/∂u and b = ∂y/∂v per element:
    dc = Σ_p dy·a·x, dσ(s) = Σ_c dy·b·x, and for gate dσ(α) = Σ_p dy·(u − v).
    """
    pid_p = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    n_tiles = tl.num_programs(0)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < HW
    ar_c = tl.arange(0, BLOCK_C)
    sig = tl.load(sig_ptr + n * HW + offs_p, mask=mask_p, other=0.0)
    sg = sig[None, :]
    x_base = x_ptr + n * sN + offs_p[None, :].to(tl.int64) * sP
    g_base = dy_ptr + n * gN + offs_p[None, :].to(tl.int64) * gP
    dsig = tl.zeros([BLOCK_P], dtype=tl.float32)
    for cb in range(0, NUM_CB):
        offs_c = cb * BLOCK_C + ar_c
        mask_c = offs_c < C
        mask = mask_c[:, None] & mask_p[None, :]
        xv = tl.load(x_base + offs_c[:, None].to(tl.int64) * sC, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(g_base + offs_c[:, None].to(tl.int64) * gC, mask=mask, other=0.0).to(tl.float32)
        cg = tl.load(cg_ptr + n * C + offs_c, mask=mask_c, other=0.0)[:, None]
        gx = dy * xv
        if FUSION == 0:  # add: a = b = 1
            dcg = tl.sum(gx, axis=1)
            dsig += tl.sum(gx, axis=0)
        elif FUSION == 1:  # max: the larger branch takes the gradient, ties split it (as torch does)
            u = xv * cg
            v = xv * sg
            a = tl.where(u > v, 1.0, tl.where(u == v, 0.5, 0.0))
            dcg = tl.sum(gx * a, axis=1)
            dsig += tl.sum(gx * (1.0 - a), axis=0)
        elif FUSION == 2:  # mul: a = v, b = u
            dcg = tl.sum(gx * xv * sg, axis=1)
            dsig += tl.sum(gx * xv * cg, axis=0)
        else:  # gate: a = σ(α), b = 1 − σ(α)
            g = tl.load(gate_ptr + offs_c, mask=mask_c, other=0.0)[:, None]
            dcg = tl.sum(gx * g, axis=1)
            dsig += tl.sum(gx * (1.0 - g), axis=0)
            tl.store(dgate_part_ptr + (n * n_tiles + pid_p) * C + offs_c, tl.sum(gx * (cg - sg), axis=1),
                     mask=mask_c)
        tl.store(dcg_part_ptr + (n * n_tiles + pid_p) * C + offs_c, dcg, mask=mask_c)
    tl.store(ds_ptr + n * HW + offs_p, dsig * sig * (1.0 - sig), mask=mask_p)


def _bwd_dx_kernel(
    x_ptr, dy_ptr, dx_ptr, cg_ptr, sig_ptr, ds_ptr, ws_ptr, dm_ptr, gate_ptr, dws_part_ptr,
    C, HW, sN, sC, sP, gN, gC, gP, dN, dC, dP,
    FUSION: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """dx = dy·(a·c + b·σ(s)) + ws·ds + dm/HW, element-wise; plus Σ_p ds·x partials for dws."""
    pid_p = tl.program_id(0)
    pid_cb = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    n_tiles = tl.num_programs(0)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_cb * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_p = offs_p < HW
    mask_c = offs_c < C
    mask = mask_c[:, None] & mask_p[None, :]
    c64 = offs_c[:, None].to(tl.int64)
    p64 = offs_p[None, :].to(tl.int64)
    xv = tl.load(x_ptr + n * sN + c64 * sC + p64 * sP, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + n * gN + c64 * gC + p64 * gP, mask=mask, other=0.0).to(tl.float32)
    sg = tl.load(sig_ptr + n * HW + offs_p, mask=mask_p, other=0.0)[None, :]
    ds = tl.load(ds_ptr + n * HW + offs_p, mask=mask_p, other=0.0)[None, :]
    cg = tl.load(cg_ptr + n * C + offs_c, mask=mask_c, other=0.0)[:, None]
    ws = tl.load(ws_ptr + offs_c, mask=mask_c, other=0.0)[:, None]
    dm = tl.load(dm_ptr + n * C + offs_c, mask=mask_c, other=0.0)[:, None]
    if FUSION == 0:
        direct = cg + sg
    elif FUSION == 1:
        u = xv * cg
        v = xv * sg
        a = tl.where(u > v, 1.0, tl.where(u == v, 0.5, 0.0))
        direct = a * cg + (1.0 - a) * sg
    elif FUSION == 2:
        direct = 2.0 * xv * cg * sg
    else:
        g = tl.load(gate_ptr + offs_c, mask=mask_c, other=0.0)[:, None]
        direct = g * cg + (1.0 - g) * sg
    dx = dy * direct + ws * ds + dm
    tl.store(dx_ptr + n * dN + c64 * dC + p64 * dP, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dws_part_ptr + (n * n_tiles + pid_p) * C + offs_c, tl.sum(xv * ds, axis=1), mask=mask_c)


_KERNEL_FUNCTIONS = {
    "pool": _pool_kernel,
    "apply": _apply_kernel,
    "bwd_reduce": _bwd_reduce_kernel,
    "bwd_dx": _bwd_dx_kernel,
}
_JITTED: dict[bool, SimpleNamespace] = {}


def _kernels() -> SimpleNamespace:
    """The kernels, jitted on first use in the mode triton.language was imported in."""
    if not triton_installed():
        raise RuntimeError("triton is not installed")
    _import_triton()
    problem = _mode_problem()
    if problem:
        raise RuntimeError(problem)
    mode = bool(language_interpreted())
    if mode not in _JITTED:
        # triton.jit picks JITFunction or InterpretedFunction from TRITON_INTERPRET at this moment,
        # which _mode_problem has just checked agrees with the mode of triton.language
        _JITTED[mode] = SimpleNamespace(**{k: triton.jit(f) for k, f in _KERNEL_FUNCTIONS.items()})
    return _JITTED[mode]


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------


def _next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


def block_sizes(channels: int, hw: int, max_block_c: int = MAX_BLOCK_C) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_P, number of channel blocks) for a C x HW problem.

    A tile holds about ``TILE_ELEMENTS`` values so registers suffice at every C; BLOCK_P stays at
    least 16 so NCHW loads along pixels coalesce.
    """
    block_c = max(2, min(_next_pow2(channels), _next_pow2(max_block_c)))
    block_p = max(16, min(_next_pow2(hw), TILE_ELEMENTS // block_c))
    return block_c, block_p, -(-channels // block_c)


def pixel_strides(t: torch.Tensor) -> tuple[int, int, int] | None:
    """(sN, sC, sP) when (h, w) collapse to one pixel index p = h*W + w with stride sP, else None."""
    _, _, h, w = t.shape
    if h > 1 and w > 1 and t.stride(2) != w * t.stride(3):
        return None
    sp = t.stride(3) if w > 1 else t.stride(2)
    return t.stride(0), t.stride(1), sp


def as_kernel_layout(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when it is NCHW- or channels_last-dense (no copy), else a contiguous copy."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        if pixel_strides(t) is not None:
            return t
    return t.contiguous()


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1  # the interpreter runs programs one after another: fewer is faster


def pool_mean(x: torch.Tensor, max_block_c: int = MAX_BLOCK_C) -> torch.Tensor:
    """Pass 1: the (N, C) float32 mean of x over its pixels."""
    k = _kernels()
    n, c, h, w = x.shape
    hw = h * w
    block_c, block_p, num_cb = block_sizes(c, hw, max_block_c)
    tiles = -(-hw // block_p)
    # split the pixels so the grid fills the device about four times over
    want = max(1, 4 * _num_sms(x.device) // max(1, n * num_cb))
    splits = max(1, min(tiles, want))
    tiles_per_prog = -(-tiles // splits)
    splits = -(-tiles // tiles_per_prog)
    part = torch.empty((n, splits, c), device=x.device, dtype=torch.float32)
    sn, sc, sp = pixel_strides(x)
    k.pool[(splits, num_cb, n)](x, part, c, hw, sn, sc, sp, tiles_per_prog, BLOCK_C=block_c, BLOCK_P=block_p)
    return part.sum(dim=1) / hw


def _weights_fp32(w: torch.Tensor | None) -> torch.Tensor | None:
    return None if w is None else w.detach().to(torch.float32)


def _excite(mean: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor,
            b2: torch.Tensor | None) -> torch.Tensor:
    """σ(W2 relu(W1 m + b1) + b2) on the (N, C) pooled vector, in float32."""
    hidden = F.relu(F.linear(mean, w1.reshape(w1.shape[0], -1), b1))
    return torch.sigmoid(F.linear(hidden, w2.reshape(w2.shape[0], -1), b2))


class ScSEFunction(torch.autograd.Function):
    """scSE with fused Triton kernels forward and backward.

    Inputs: x, w1, b1, w2, b2, ws, bs, alpha (the gate logits), fusion, max_block_c; any bias or
    alpha may be None. Gradients flow to x and every parameter given.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor,
                b2: torch.Tensor | None, ws: torch.Tensor, bs: torch.Tensor | None, alpha: torch.Tensor | None,
                fusion: str, max_block_c: int) -> torch.Tensor:
        k = _kernels()
        code = FUSION_CODES[fusion]
        if x.dim() != 4:
            raise ValueError(f"expected an NCHW tensor, got shape {tuple(x.shape)}")
        xk = as_kernel_layout(x)
        n, c, h, w = xk.shape
        hw = h * w
        mean = pool_mean(xk, max_block_c)
        cg = _excite(mean, _weights_fp32(w1), _weights_fp32(b1), _weights_fp32(w2), _weights_fp32(b2)).contiguous()
        ws32 = ws.detach().reshape(-1).to(torch.float32).contiguous()
        bs32 = bs.detach().reshape(-1).to(torch.float32) if bs is not None else ws32
        gate = torch.sigmoid(alpha.detach().reshape(-1).to(torch.float32)).contiguous() if alpha is not None else ws32
        need_grad = any(ctx.needs_input_grad)
        sig = torch.empty((n, hw), device=x.device, dtype=torch.float32) if need_grad else ws32
        out = torch.empty_like(xk)  # keeps xk's memory format (NCHW or channels_last)
        block_c, block_p, num_cb = block_sizes(c, hw, max_block_c)
        sn, sc, sp = pixel_strides(xk)
        on, oc, op = pixel_strides(out)
        grid = (-(-hw // block_p), n)
        k.apply[grid](xk, out, cg, ws32, bs32, gate, sig, c, hw, sn, sc, sp, on, oc, op,
                      FUSION=code, HAS_SBIAS=bs is not None, STORE_SIG=need_grad,
                      NUM_CB=num_cb, BLOCK_C=block_c, BLOCK_P=block_p)
        if need_grad:
            ctx.save_for_backward(xk, mean, cg, sig, gate if alpha is not None else None, w1, b1, w2, b2, ws, bs,
                                  alpha)
            ctx.fusion = fusion
            ctx.max_block_c = max_block_c
        return out

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        k = _kernels()
        xk, mean, cg, sig, gate, w1, b1, w2, b2, ws, bs, alpha = ctx.saved_tensors
        code = FUSION_CODES[ctx.fusion]
        n, c, h, w = xk.shape
        hw = h * w
        block_c, block_p, num_cb = block_sizes(c, hw, ctx.max_block_c)
        tiles = -(-hw // block_p)
        dyk = as_kernel_layout(dy)
        sn, sc, sp = pixel_strides(xk)
        gn, gc, gp = pixel_strides(dyk)
        dummy = sig
        gate_arg = gate if gate is not None else dummy

        ds = torch.empty((n, hw), device=xk.device, dtype=torch.float32)
        dcg_part = torch.empty((n, tiles, c), device=xk.device, dtype=torch.float32)
        dgate_part = torch.empty((n, tiles, c), device=xk.device, dtype=torch.float32) if gate is not None else dummy
        k.bwd_reduce[(tiles, n)](xk, dyk, cg, sig, gate_arg, ds, dcg_part, dgate_part,
                                 c, hw, sn, sc, sp, gn, gc, gp,
                                 FUSION=code, NUM_CB=num_cb, BLOCK_C=block_c, BLOCK_P=block_p)
        dcg = dcg_part.sum(dim=1)

        # the excitation MLP's backward, on (N, C): small, so torch's autograd does it
        params = [w1, b1, w2, b2]
        with torch.enable_grad():
            m = mean.detach().requires_grad_(True)
            p32 = [None if p is None else p.detach().to(torch.float32).requires_grad_(True) for p in params]
            cg_again = _excite(m, *p32)
            leaves = [m] + [p for p in p32 if p is not None]
            grads = torch.autograd.grad(cg_again, leaves, grad_outputs=dcg)
        dm = (grads[0] / hw).contiguous()
        it = iter(grads[1:])
        dparams = [None if p is None else next(it) for p in p32]

        dx = torch.empty_like(xk)
        dn, dc, dp = pixel_strides(dx)
        ws32 = ws.detach().reshape(-1).to(torch.float32).contiguous()
        dws_part = torch.empty((n, tiles, c), device=xk.device, dtype=torch.float32)
        k.bwd_dx[(tiles, num_cb, n)](xk, dyk, dx, cg, sig, ds, ws32, dm, gate_arg, dws_part,
                                     c, hw, sn, sc, sp, gn, gc, gp, dn, dc, dp,
                                     FUSION=code, BLOCK_C=block_c, BLOCK_P=block_p)
        dws = dws_part.sum(dim=(0, 1)).reshape(ws.shape)
        dbs = ds.sum().reshape(bs.shape) if bs is not None else None
        dalpha = None
        if alpha is not None:
            dalpha = (dgate_part.sum(dim=(0, 1)) * gate * (1.0 - gate)).reshape(alpha.shape)

        def cast(g: torch.Tensor | None, like: torch.Tensor | None) -> torch.Tensor | None:
            return None if g is None or like is None else g.to(like.dtype)

        dw1, db1, dw2, db2 = dparams
        return (
            dx if ctx.needs_input_grad[0] else None,
            cast(dw1, w1).reshape(w1.shape), cast(db1, b1), cast(dw2, w2).reshape(w2.shape), cast(db2, b2),
            cast(dws, ws), cast(dbs, bs), cast(dalpha, alpha), None, None,
        )


def scse_fused(module: torch.nn.Module, x: torch.Tensor, max_block_c: int = MAX_BLOCK_C) -> torch.Tensor:
    """Run ``module`` (an ``ScSE`` or anything with its parameter names) through the fused kernels."""
    fusion = module.fusion
    if fusion not in FUSION_CODES:
        raise ValueError(f"triton_fused supports fusion {', '.join(FUSION_CODES)}, not {fusion!r}")
    fc1, fc2, conv = module.cse.fc[0], module.cse.fc[2], module.sse.Conv1x1
    alpha = module.gate if fusion == "gate" else None
    return ScSEFunction.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, conv.weight, conv.bias, alpha,
                              fusion, max_block_c)


class TritonScSE(ReferenceWeights):
    """Holds a copy of the reference's parameters under the same names; forward is fused."""

    def __init__(self, reference: torch.nn.Module, max_block_c: int = MAX_BLOCK_C) -> None:
        super().__init__(reference)
        self.max_block_c = max_block_c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scse_fused(self, x, self.max_block_c)


@register(
    "triton_fused",
    "two-pass fused Triton kernels (pool; logit+combine), fused backward; x read twice, out written once",
    devices=("cuda", "cpu"),
    dtypes=("float32", "float16", "bfloat16"),
    fusions=tuple(FUSION_CODES),
    available=_available,
    tags={"interpreted_on_cpu": True},
)
def build_triton_fused(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The fused module on ``device``; parameters stay float32 whatever ``dtype`` the input has.

    The kernels read the weights into float32 anyway (a few KB next to the activation), and
    float32 master weights, as under autocast, keep max fusion's branch choices, and so its
    gradients, those of the float32 reference instead of flipping where a rounded weight moves
    x·c past x·σ(s).
    """
    reason = triton_unavailable(device)
    if reason:
        raise RuntimeError(reason)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"triton_fused computes float32, float16 or bfloat16 inputs, not {dtype}")
    return TritonScSE(reference).to(device=device, dtype=torch.float32)
