"""``triton_fused``: scSE in two passes over x, forward and backward, in Triton, with little host work.

The module as written moves the activation about nine times and runs a dozen small kernels; this
one reads x twice, writes the output once, and launches three kernels per forward, four per
backward, with no torch arithmetic on the host (only ``torch.empty`` for outputs and one float32
workspace, split into views):

* forward: ``_pool_kernel`` sums x per (n, c) over a split of the pixels into a workspace of
  partials; ``_excite_kernel`` (one program per sample) adds the partials into the mean and runs the
  excitation MLP, σ(W2 relu(W1 m + b1) + b2), in registers; ``_apply_kernel`` reads a tile of
  pixels with all channels, computes the spatial logit (a dot over C, looping over channel blocks
  when C is large) and writes ``combine(x·c, x·σ(s))``, σ(α) of the gate computed in place.
* backward: ``_bwd_reduce_kernel`` makes the per-pixel dσ(s) and per-tile dc partials in one read of
  x and dy; ``_bwd_excite_kernel`` (one program per sample) runs the MLP's backward to dm;
  ``_bwd_dx_kernel`` writes dx and the spatial weights' gradient partials; ``_bwd_params_kernel``
  sums every parameter's gradient over the batch. All arithmetic accumulates in float32.

Parameters are read by the kernels where they live: the module keeps them float32 and contiguous
from the moment it is built, so a call converts nothing, and an optimizer's in-place update is seen
by the next call. The grids and block sizes of a shape are computed once (``launch_plan``, cached).

Kernels are compiled lazily with ``triton.jit`` at first use, not at import, because Triton reads
``TRITON_INTERPRET`` when a function is decorated: jitting late lets a process that imported this
module first still run the kernels in the interpreter on CPU once the variable is set.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from variants.registry import register
from variants.triton_launch import DirectKernel, direct_launch_problem
from variants.weights import FUSION_CODES, KernelWeights, ReferenceWeights, check_channels, kernel_weights

# Triton is imported on first use, not here: its standard library (tl.zeros, tl.sum, ...) is
# jitted when triton.language is imported, in interpreter mode only if TRITON_INTERPRET=1 is set
# by then. Importing it lazily lets a process import the registry first and set the variable
# later. The kernels' bodies find these module globals once ``_import_triton`` has filled them.
triton: Any = None
tl: Any = None

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


def _loop_probe(out_ptr, n):
    """Counts a loop whose bound is a runtime argument, as the kernels' tile loops are."""
    count = 0
    for _ in range(0, n):
        count += 1
    tl.store(out_ptr, count)


@functools.cache
def _interpreter_problem() -> str | None:
    """Why Triton's CPU interpreter cannot run these kernels here, or None. Triton 3.6's reads a
    runtime loop bound with ``int()`` of a one-element numpy array, which numpy 2.4 refuses (2.3.5 did
    not): every kernel then fails in its first loop, and each case would report it as its own error."""
    import numpy

    _import_triton()
    out = torch.zeros(1, dtype=torch.int32)
    try:
        triton.jit(_loop_probe)[(1,)](out, 3)
    except Exception as exc:  # noqa: BLE001 - whatever stops it stops the kernels too
        cause = exc.__cause__ or exc
        said = " ".join(str(cause).split())  # one line, whatever the exception spans
        return (f"triton {triton.__version__}'s interpreter cannot run a kernel loop beside numpy {numpy.__version__} "
                f"({type(cause).__name__}: {said}); triton 3.6's needs numpy older than 2.4, triton 3.9's does not")
    if int(out[0]) != 3:
        return f"triton {triton.__version__}'s interpreter ran a 3-step loop {int(out[0])} times"
    return None


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
        return _interpreter_problem()
    if torch.device(device).type == "cpu":
        return "triton on CPU needs CUDA or TRITON_INTERPRET=1 (the interpreter, for correctness only)"
    if not torch.cuda.is_available():
        return "triton needs a CUDA GPU (none found) or TRITON_INTERPRET=1 (the CPU interpreter, for correctness only)"
    return None


def _available() -> str | None:
    """Registry check (no device given): usable when CUDA works or the interpreter is on."""
    return triton_unavailable("cuda")


def _import_triton() -> None:
    global triton, tl
    if triton is None:
        import triton as triton_module
        import triton.language as tl_module

        triton, tl = triton_module, tl_module


# --------------------------------------------------------------------------------------------
# Kernels. Plain functions here; ``_kernels()`` jits them on first use (see the module docstring).
# x is addressed as base + n*sN + c*sC + p*sP with p = h*W + w, which covers NCHW (sP = 1) and
# channels_last (sC = 1, sP = C) alike; other layouts are made contiguous first. Parameters are
# read in their own dtype and converted to float32 in registers; w1 is (HID, C) and w2 (C, HID),
# row-major, as a 1x1 conv's contiguous weight is.
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


def _excite_kernel(
    part_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, mean_ptr, hid_ptr, cg_ptr,
    C, HID, SPLITS, inv_hw,
    HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, STORE_SAVED: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """cg[n] = σ(W2 relu(W1 m + b1) + b2), m = Σ_split part[n] / HW, for the sample n of this program.

    The hidden vector stays in registers; C is walked in blocks of BLOCK_K, twice (fc1, fc2). In
    train mode m and relu(·) are stored for the backward.
    """
    n = tl.program_id(0).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    mask_h = offs_h < HID
    ar_s = tl.arange(0, BLOCK_S)
    ar_k = tl.arange(0, BLOCK_K)
    pre = tl.zeros([BLOCK_H], dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        offs_k = k0 + ar_k
        mask_k = offs_k < C
        total = tl.zeros([BLOCK_K], dtype=tl.float32)
        for s0 in range(0, SPLITS, BLOCK_S):
            offs_s = s0 + ar_s
            mask = (offs_s < SPLITS)[:, None] & mask_k[None, :]
            total += tl.sum(tl.load(part_ptr + (n * SPLITS + offs_s[:, None]) * C + offs_k[None, :], mask=mask,
                                    other=0.0), axis=0)
        m = total * inv_hw
        if STORE_SAVED:
            tl.store(mean_ptr + n * C + offs_k, m, mask=mask_k)
        w1 = tl.load(w1_ptr + offs_h[:, None] * C + offs_k[None, :], mask=mask_h[:, None] & mask_k[None, :],
                     other=0.0).to(tl.float32)
        pre += tl.sum(w1 * m[None, :], axis=1)
    if HAS_B1:
        pre += tl.load(b1_ptr + offs_h, mask=mask_h, other=0.0).to(tl.float32)
    hid = tl.maximum(pre, 0.0, propagate_nan=tl.PropagateNan.ALL)  # relu(NaN) is NaN, as torch's: a GPU's max drops it
    if STORE_SAVED:
        tl.store(hid_ptr + n * HID + offs_h, hid, mask=mask_h)
    for c0 in range(0, C, BLOCK_K):
        offs_c = c0 + ar_k
        mask_c = offs_c < C
        w2 = tl.load(w2_ptr + offs_c[:, None] * HID + offs_h[None, :], mask=mask_c[:, None] & mask_h[None, :],
                     other=0.0).to(tl.float32)
        z = tl.sum(w2 * hid[None, :], axis=1)
        if HAS_B2:
            z += tl.load(b2_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        tl.store(cg_ptr + n * C + offs_c, 1.0 / (1.0 + tl.exp(-z)), mask=mask_c)


def _apply_kernel(
    x_ptr, out_ptr, cg_ptr, ws_ptr, bs_ptr, alpha_ptr, sig_ptr,
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
        ws = tl.load(ws_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        s += tl.sum(xv * ws[:, None], axis=0)
    else:
        for cb in range(0, NUM_CB):
            offs_c = cb * BLOCK_C + ar_c
            mask_c = offs_c < C
            mask = mask_c[:, None] & mask_p[None, :]
            xb = tl.load(x_base + offs_c[:, None].to(tl.int64) * sC, mask=mask, other=0.0).to(tl.float32)
            wb = tl.load(ws_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
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
            y = tl.maximum(xv * cg, xv * sg, propagate_nan=tl.PropagateNan.ALL)  # torch.maximum keeps NaN
        elif FUSION == 2:  # mul
            y = (xv * cg) * (xv * sg)
        else:  # gate: σ(α)·x·c + (1 − σ(α))·x·σ(s)
            a = tl.load(alpha_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
            g = (1.0 / (1.0 + tl.exp(-a)))[:, None]
            y = xv * (g * cg + (1.0 - g) * sg)
        tl.store(o_base + offs_c[:, None].to(tl.int64) * oC, y.to(out_ptr.dtype.element_ty), mask=mask)


def _bwd_reduce_kernel(
    x_ptr, dy_ptr, cg_ptr, sig_ptr, alpha_ptr, ds_ptr, dcg_part_ptr, dgate_part_ptr, dbs_part_ptr,
    C, HW, sN, sC, sP, gN, gC, gP,
    FUSION: tl.constexpr, HAS_SBIAS: tl.constexpr, NUM_CB: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """One read of x and dy per pixel tile gives ds (per pixel) and per-tile partials of dc, dσ(α), dbs.

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
            alpha = tl.load(alpha_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
            g = (1.0 / (1.0 + tl.exp(-alpha)))[:, None]
            dcg = tl.sum(gx * g, axis=1)
            dsig += tl.sum(gx * (1.0 - g), axis=0)
            tl.store(dgate_part_ptr + (n * n_tiles + pid_p) * C + offs_c, tl.sum(gx * (cg - sg), axis=1),
                     mask=mask_c)
        tl.store(dcg_part_ptr + (n * n_tiles + pid_p) * C + offs_c, dcg, mask=mask_c)
    ds = dsig * sig * (1.0 - sig)  # 0 on masked pixels, where σ was loaded as 0
    tl.store(ds_ptr + n * HW + offs_p, ds, mask=mask_p)
    if HAS_SBIAS:
        tl.store(dbs_part_ptr + n * n_tiles + pid_p, tl.sum(ds, axis=0))


def _bwd_excite_kernel(
    dcg_part_ptr, dgate_part_ptr, dbs_part_ptr, cg_ptr, hid_ptr, w1_ptr, w2_ptr,
    dz_ptr, dpre_ptr, dm_ptr, dgate_ptr, dbs_n_ptr,
    C, HID, TILES, inv_hw,
    GATE: tl.constexpr, HAS_SBIAS: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """The excitation MLP's backward for the sample n of this program, from the per-tile dc partials.

    dz = dc·σ'(z) (fc2's pre-activation), dpre = (W2ᵀ dz)·[h > 0] (fc1's), dm = W1ᵀ dpre / HW (the
    mean's, spread over the pixels by ``_bwd_dx_kernel``); the tile partials of dσ(α) and dbs are
    summed per sample on the way. The weights' gradients need a sum over n: ``_bwd_params_kernel``.
    """
    n = tl.program_id(0).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    mask_h = offs_h < HID
    ar_s = tl.arange(0, BLOCK_S)
    ar_k = tl.arange(0, BLOCK_K)
    dh = tl.zeros([BLOCK_H], dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        offs_k = k0 + ar_k
        mask_k = offs_k < C
        dcg = tl.zeros([BLOCK_K], dtype=tl.float32)
        dgate = tl.zeros([BLOCK_K], dtype=tl.float32)
        for s0 in range(0, TILES, BLOCK_S):
            offs_s = s0 + ar_s
            mask = (offs_s < TILES)[:, None] & mask_k[None, :]
            idx = (n * TILES + offs_s[:, None]) * C + offs_k[None, :]
            dcg += tl.sum(tl.load(dcg_part_ptr + idx, mask=mask, other=0.0), axis=0)
            if GATE:
                dgate += tl.sum(tl.load(dgate_part_ptr + idx, mask=mask, other=0.0), axis=0)
        if GATE:
            tl.store(dgate_ptr + n * C + offs_k, dgate, mask=mask_k)
        cg = tl.load(cg_ptr + n * C + offs_k, mask=mask_k, other=0.0)
        dz = dcg * cg * (1.0 - cg)
        tl.store(dz_ptr + n * C + offs_k, dz, mask=mask_k)
        w2 = tl.load(w2_ptr + offs_k[:, None] * HID + offs_h[None, :], mask=mask_k[:, None] & mask_h[None, :],
                     other=0.0).to(tl.float32)
        dh += tl.sum(w2 * dz[:, None], axis=0)
    hid = tl.load(hid_ptr + n * HID + offs_h, mask=mask_h, other=0.0)
    dpre = tl.where(hid > 0.0, dh, 0.0)  # relu's gradient where its output is positive, as torch's
    tl.store(dpre_ptr + n * HID + offs_h, dpre, mask=mask_h)
    for k0 in range(0, C, BLOCK_K):
        offs_k = k0 + ar_k
        mask_k = offs_k < C
        w1 = tl.load(w1_ptr + offs_h[:, None] * C + offs_k[None, :], mask=mask_h[:, None] & mask_k[None, :],
                     other=0.0).to(tl.float32)
        tl.store(dm_ptr + n * C + offs_k, tl.sum(w1 * dpre[:, None], axis=0) * inv_hw, mask=mask_k)
    if HAS_SBIAS:
        dbs = tl.zeros([BLOCK_S], dtype=tl.float32)
        for s0 in range(0, TILES, BLOCK_S):
            offs_s = s0 + ar_s
            dbs += tl.load(dbs_part_ptr + n * TILES + offs_s, mask=offs_s < TILES, other=0.0)
        tl.store(dbs_n_ptr + n, tl.sum(dbs, axis=0))


def _bwd_dx_kernel(
    x_ptr, dy_ptr, dx_ptr, cg_ptr, sig_ptr, ds_ptr, ws_ptr, dm_ptr, alpha_ptr, dws_part_ptr,
    C, HW, sN, sC, sP, gN, gC, gP, dN, dC, dP, TILES_PER_PROG,
    FUSION: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """dx = dy·(a·c + b·σ(s)) + ws·ds + dm/HW over this program's pixel tiles; Σ_p ds·x partials for dws.

    The grid is the pool's, (splits, channel blocks, N), so the dws partials are as few as its.
    """
    pid_split = tl.program_id(0)
    pid_cb = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    n_splits = tl.num_programs(0)
    offs_c = pid_cb * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    c64 = offs_c[:, None].to(tl.int64)
    cg = tl.load(cg_ptr + n * C + offs_c, mask=mask_c, other=0.0)[:, None]
    ws = tl.load(ws_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)[:, None]
    dm = tl.load(dm_ptr + n * C + offs_c, mask=mask_c, other=0.0)[:, None]
    if FUSION == 3:
        alpha = tl.load(alpha_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        g = (1.0 / (1.0 + tl.exp(-alpha)))[:, None]
    dws = tl.zeros([BLOCK_C], dtype=tl.float32)
    for t in range(0, TILES_PER_PROG):
        offs_p = (pid_split * TILES_PER_PROG + t) * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < HW
        mask = mask_c[:, None] & mask_p[None, :]
        p64 = offs_p[None, :].to(tl.int64)
        xv = tl.load(x_ptr + n * sN + c64 * sC + p64 * sP, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + n * gN + c64 * gC + p64 * gP, mask=mask, other=0.0).to(tl.float32)
        sg = tl.load(sig_ptr + n * HW + offs_p, mask=mask_p, other=0.0)[None, :]
        ds = tl.load(ds_ptr + n * HW + offs_p, mask=mask_p, other=0.0)[None, :]
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
            direct = g * cg + (1.0 - g) * sg
        dx = dy * direct + ws * ds + dm
        tl.store(dx_ptr + n * dN + c64 * dC + p64 * dP, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dws += tl.sum(xv * ds, axis=1)
    tl.store(dws_part_ptr + (n * n_splits + pid_split) * C + offs_c, dws, mask=mask_c)


def _bwd_params_kernel(
    dpre_ptr, mean_ptr, dz_ptr, hid_ptr, dws_part_ptr, dgate_ptr, dbs_n_ptr, alpha_ptr,
    dw1_ptr, db1_ptr, dw2_ptr, db2_ptr, dws_ptr, dbs_ptr, dalpha_ptr,
    N, C, HID, ROWS,
    HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, HAS_SBIAS: tl.constexpr, GATE: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """Every parameter's gradient for one block of channels, summed over the batch, in its dtype.

    dW1[:, blk] = Σ_n dpre ⊗ m, dW2[blk, :] = Σ_n dz ⊗ h, db2 = Σ_n dz, dσ(α)·σ'(α), and dws from the
    (n, split) partials. db1 and dbs are summed by every program and stored by the first (cheaper
    than a launch of their own).
    """
    pid = tl.program_id(0)
    offs_c = pid * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_c = offs_c < C
    offs_h = tl.arange(0, BLOCK_H)
    mask_h = offs_h < HID
    dw1 = tl.zeros([BLOCK_H, BLOCK_K], dtype=tl.float32)
    dw2 = tl.zeros([BLOCK_K, BLOCK_H], dtype=tl.float32)
    db1 = tl.zeros([BLOCK_H], dtype=tl.float32)
    db2 = tl.zeros([BLOCK_K], dtype=tl.float32)
    dgate = tl.zeros([BLOCK_K], dtype=tl.float32)
    for n in range(0, N):
        dpre = tl.load(dpre_ptr + n * HID + offs_h, mask=mask_h, other=0.0)
        hid = tl.load(hid_ptr + n * HID + offs_h, mask=mask_h, other=0.0)
        m = tl.load(mean_ptr + n * C + offs_c, mask=mask_c, other=0.0)
        dz = tl.load(dz_ptr + n * C + offs_c, mask=mask_c, other=0.0)
        dw1 += dpre[:, None] * m[None, :]
        dw2 += dz[:, None] * hid[None, :]
        db1 += dpre
        db2 += dz
        if GATE:
            dgate += tl.load(dgate_ptr + n * C + offs_c, mask=mask_c, other=0.0)
    tl.store(dw1_ptr + offs_h[:, None] * C + offs_c[None, :], dw1.to(dw1_ptr.dtype.element_ty),
             mask=mask_h[:, None] & mask_c[None, :])
    tl.store(dw2_ptr + offs_c[:, None] * HID + offs_h[None, :], dw2.to(dw2_ptr.dtype.element_ty),
             mask=mask_c[:, None] & mask_h[None, :])
    if HAS_B1:
        tl.store(db1_ptr + offs_h, db1.to(db1_ptr.dtype.element_ty), mask=mask_h & (offs_h * 0 + pid == 0))
    if HAS_B2:
        tl.store(db2_ptr + offs_c, db2.to(db2_ptr.dtype.element_ty), mask=mask_c)
    if GATE:
        alpha = tl.load(alpha_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        g = 1.0 / (1.0 + tl.exp(-alpha))
        tl.store(dalpha_ptr + offs_c, (dgate * g * (1.0 - g)).to(dalpha_ptr.dtype.element_ty), mask=mask_c)
    ar_r = tl.arange(0, BLOCK_R)
    dws = tl.zeros([BLOCK_K], dtype=tl.float32)
    for r0 in range(0, ROWS, BLOCK_R):
        offs_r = r0 + ar_r
        mask = (offs_r < ROWS)[:, None] & mask_c[None, :]
        dws += tl.sum(tl.load(dws_part_ptr + offs_r[:, None].to(tl.int64) * C + offs_c[None, :], mask=mask,
                              other=0.0), axis=0)
    tl.store(dws_ptr + offs_c, dws.to(dws_ptr.dtype.element_ty), mask=mask_c)
    if HAS_SBIAS:
        dbs = tl.zeros([BLOCK_R], dtype=tl.float32)
        for r0 in range(0, N, BLOCK_R):
            dbs += tl.load(dbs_n_ptr + r0 + ar_r, mask=r0 + ar_r < N, other=0.0)
        total = tl.zeros([BLOCK_R], dtype=tl.float32) + tl.sum(dbs, axis=0)
        tl.store(dbs_ptr + ar_r, total.to(dbs_ptr.dtype.element_ty), mask=ar_r + pid == 0)


_KERNEL_FUNCTIONS = {
    "pool": _pool_kernel,
    "excite": _excite_kernel,
    "apply": _apply_kernel,
    "bwd_reduce": _bwd_reduce_kernel,
    "bwd_excite": _bwd_excite_kernel,
    "bwd_dx": _bwd_dx_kernel,
    "bwd_params": _bwd_params_kernel,
}
_JITTED: SimpleNamespace | None = None


def _kernels() -> SimpleNamespace:
    """The kernels, jitted on first use in the mode triton.language was imported in, each launched
    through ``DirectKernel`` (its compiled form called directly after the first launch, on a GPU).

    Checked until the first success only: triton.language is imported once per process, so the
    mode the kernels were jitted in cannot change afterwards, and a call skips the checks.
    """
    global _JITTED
    if _JITTED is not None:
        return _JITTED
    if not triton_installed():
        raise RuntimeError("triton is not installed")
    _import_triton()
    problem = _mode_problem()
    if problem:
        raise RuntimeError(problem)
    # triton.jit picks JITFunction or InterpretedFunction from TRITON_INTERPRET at this moment,
    # which _mode_problem has just checked agrees with the mode of triton.language
    direct = None if direct_launch_problem(triton.__version__, interpret_requested()) else triton
    _JITTED = SimpleNamespace(**{k: DirectKernel(triton.jit(f), direct) for k, f in _KERNEL_FUNCTIONS.items()})
    return _JITTED


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------

#: Programs per SM that a streaming pass over x aims for: 8 programs of 4 warps keep 32 warps
#: resident per SM, enough loads in flight to cover DRAM latency (H100: ~3 TB/s × ~1 µs ≈ 24 KB
#: per SM), and a few waves so that a ragged last wave costs little.
PROGRAMS_PER_SM = 8


def _next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def block_sizes(channels: int, hw: int, max_block_c: int = MAX_BLOCK_C) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_P, number of channel blocks) for a C x HW problem.

    A tile holds about ``TILE_ELEMENTS`` values so registers suffice at every C; BLOCK_P stays at
    least 16 so NCHW loads along pixels coalesce.
    """
    block_c = max(2, min(_next_pow2(channels), _next_pow2(max_block_c)))
    block_p = max(16, min(_next_pow2(hw), TILE_ELEMENTS // block_c))
    return block_c, block_p, -(-channels // block_c)


def pool_splits(batch: int, num_cb: int, tiles: int, num_sms: int) -> tuple[int, int]:
    """(splits, tiles per program) of the pixel axis for a streaming grid (splits, num_cb, batch).

    Heuristic: aim for at least ``PROGRAMS_PER_SM · num_sms`` programs in all. Each (n, channel
    block) needs ``want = ceil(PROGRAMS_PER_SM · SMs / (N · channel blocks))`` splits; a split takes
    ``max(1, tiles // want)`` whole tiles (the last one the rest), which gives between ``want`` and
    ``2·want`` splits, or one per tile when there are fewer tiles than that. So small C with a large
    image (one channel block, hundreds of tiles) still gets 8–16 programs per SM, and large N·C gets
    one split, i.e. one partial per (n, c). The partials are N·splits·C floats, at most about
    2 · PROGRAMS_PER_SM · SMs · BLOCK_C.
    """
    want = max(1, _cdiv(PROGRAMS_PER_SM * num_sms, batch * num_cb))
    per_prog = max(1, tiles // want)
    return _cdiv(tiles, per_prog), per_prog


@dataclass(frozen=True)
class LaunchPlan:
    """Grids, block sizes and workspace sizes for one problem shape (see ``launch_plan``).

    block_c, block_p, num_cb, tiles: the pixel-tile kernels' tiling (``block_sizes``); splits,
    tiles_per_prog: the streaming grids' pixel split (``pool_splits``); block_h, block_k: the MLP
    kernels' hidden vector (all of it) and channel block, a [block_h, block_k] tile holding about
    ``TILE_ELEMENTS``; block_s, block_t, block_r: rows per step when summing pool partials, tile
    partials and (n, split) partials.
    """

    batch: int
    channels: int
    hidden: int
    hw: int
    gate: bool
    block_c: int
    block_p: int
    num_cb: int
    tiles: int
    splits: int
    tiles_per_prog: int
    block_h: int
    block_k: int
    block_s: int
    block_t: int
    block_r: int

    @property
    def param_blocks(self) -> int:
        return _cdiv(self.channels, self.block_k)

    @property
    def forward_workspace(self) -> tuple[int, ...]:
        """float32 sizes: pool partials, mean, hidden, cg, σ(s) (the last three saved for backward)."""
        n, c = self.batch, self.channels
        return n * self.splits * c, n * c, n * self.hidden, n * c, n * self.hw

    @property
    def backward_workspace(self) -> tuple[int, ...]:
        """float32 sizes: ds, dc / dσ(α) / dbs tile partials, dz, dpre, dm, per-sample dσ(α) and dbs, dws partials."""
        n, c = self.batch, self.channels
        gate_c = c if self.gate else 0
        return (n * self.hw, n * self.tiles * c, n * self.tiles * gate_c, n * self.tiles, n * c, n * self.hidden,
                n * c, n * gate_c, n, n * self.splits * c)


@functools.lru_cache(maxsize=256)
def launch_plan(batch: int, channels: int, hidden: int, hw: int, num_sms: int, gate: bool = False,
                max_block_c: int = MAX_BLOCK_C) -> LaunchPlan:
    """The plan for a shape, cached: a call of the variant repeats none of this arithmetic."""
    block_c, block_p, num_cb = block_sizes(channels, hw, max_block_c)
    tiles = _cdiv(hw, block_p)
    splits, per_prog = pool_splits(batch, num_cb, tiles, num_sms)
    block_h = max(2, _next_pow2(hidden))
    block_k = max(2, min(_next_pow2(channels), TILE_ELEMENTS // block_h))

    def rows(count: int) -> int:
        return max(2, min(_next_pow2(count), TILE_ELEMENTS // block_k))

    return LaunchPlan(batch, channels, hidden, hw, gate, block_c, block_p, num_cb, tiles, splits, per_prog,
                      block_h, block_k, rows(splits), rows(tiles), rows(batch * splits))


def pixel_strides(t: torch.Tensor) -> tuple[int, int, int] | None:
    """(sN, sC, sP) when (h, w) collapse to one pixel index p = h*W + w with stride sP, else None."""
    _, _, h, w = t.shape
    sn, sc, sh, sw = t.stride()
    if h > 1 and w > 1 and sh != w * sw:
        return None
    return sn, sc, sw if w > 1 else sh


def as_kernel_layout(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when it is NCHW- or channels_last-dense (no copy), else a contiguous copy."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        if pixel_strides(t) is not None:
            return t
    return t.contiguous()


@functools.cache
def _cuda_property(index: int, name: str) -> int:
    return getattr(torch.cuda.get_device_properties(index), name)


def cuda_property(device: torch.device, name: str) -> int:
    """A property of CUDA ``device`` (``multi_processor_count``, ``L2_cache_size``), read once per device."""
    return _cuda_property(device.index if device.index is not None else torch.cuda.current_device(), name)


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return cuda_property(device, "multi_processor_count")
    return 1  # the interpreter runs programs one after another: fewer is faster


def _launch_pool(k: SimpleNamespace, x: torch.Tensor, plan: LaunchPlan, part: torch.Tensor,
                 strides: tuple[int, int, int] | None = None) -> None:
    sn, sc, sp = strides or pixel_strides(x)
    k.pool[(plan.splits, plan.num_cb, plan.batch)](x, part, plan.channels, plan.hw, sn, sc, sp, plan.tiles_per_prog,
                                                   BLOCK_C=plan.block_c, BLOCK_P=plan.block_p)


def pool_mean(x: torch.Tensor, max_block_c: int = MAX_BLOCK_C) -> torch.Tensor:
    """Pass 1 alone: the (N, C) float32 mean of x over its pixels (the forward sums in-kernel instead)."""
    xk = as_kernel_layout(x)
    n, c, h, w = xk.shape
    plan = launch_plan(n, c, 1, h * w, _num_sms(x.device), max_block_c=max_block_c)
    part = torch.empty((n, plan.splits, c), device=x.device, dtype=torch.float32)
    _launch_pool(_kernels(), xk, plan, part)
    return part.sum(dim=1) / (h * w)


def fused_forward(x: torch.Tensor, w: KernelWeights, max_block_c: int = MAX_BLOCK_C, save: bool = False,
                  out: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], LaunchPlan]:
    """The forward's three launches: pool, excite, apply. With ``save``, also (xk, workspace, mean,
    hid, cg, σ(s)): the input as the kernels read it, the float32 buffer (``LaunchPlan.forward_workspace``)
    and the four views of it that the backward reads; without, those go unwritten
    and only the pool partials and the channel gates are allocated. ``out``: where to write the
    output, strided as the input the kernels read (a slice of a larger output: ``triton_fused_l2``).
    No autograd here: a caller that records wraps it (``ScSEFunction``, or ``_saving_op`` under
    ``torch.compile``).
    """
    k = _kernels()
    if x.dim() != 4:
        raise ValueError(f"expected an NCHW tensor, got shape {tuple(x.shape)}")
    xk = as_kernel_layout(x)
    n, c, h, width = xk.shape
    check_channels(xk, w)
    b1, b2, bs, alpha = w.b1, w.b2, w.bs, w.alpha
    plan = launch_plan(n, c, w.w1.shape[0], h * width, _num_sms(x.device), alpha is not None, max_block_c)
    if out is not None and (out.shape != xk.shape or out.stride() != xk.stride() or out.dtype != xk.dtype):
        raise ValueError(f"out must be shaped, strided and typed as the input the kernels read: {tuple(xk.shape)}, "
                         f"{xk.stride()}, {xk.dtype}")
    if save:
        workspace = torch.empty(sum(plan.forward_workspace), device=x.device, dtype=torch.float32)
        part, mean, hid, cg, sig = workspace.split(plan.forward_workspace)
    else:  # mean, hid and σ(s) are neither written nor read: any pointer will do
        part = torch.empty(plan.forward_workspace[0], device=x.device, dtype=torch.float32)
        cg = mean = hid = sig = torch.empty(plan.forward_workspace[3], device=x.device, dtype=torch.float32)
    strides = pixel_strides(xk)
    _launch_pool(k, xk, plan, part, strides)
    k.excite[(n,)](part, w.w1, cg if b1 is None else b1, w.w2, cg if b2 is None else b2, mean, hid, cg,
                   c, plan.hidden, plan.splits, 1.0 / plan.hw,
                   HAS_B1=b1 is not None, HAS_B2=b2 is not None, STORE_SAVED=save,
                   BLOCK_S=plan.block_s, BLOCK_K=plan.block_k, BLOCK_H=plan.block_h)
    if out is None:
        out = torch.empty_like(xk)  # keeps xk's memory format (NCHW or channels_last), so its strides too
    k.apply[(plan.tiles, n)](xk, out, cg, w.ws, cg if bs is None else bs, cg if alpha is None else alpha, sig,
                             c, plan.hw, *strides, *strides,
                             FUSION=FUSION_CODES[w.fusion], HAS_SBIAS=bs is not None, STORE_SIG=save,
                             NUM_CB=plan.num_cb, BLOCK_C=plan.block_c, BLOCK_P=plan.block_p)
    return out, ((xk, workspace, mean, hid, cg, sig) if save else ()), plan


def fused_backward(dy: torch.Tensor, saved: tuple[torch.Tensor, ...], w: KernelWeights,
                   plan: LaunchPlan) -> tuple[torch.Tensor | None, ...]:
    """The backward's four launches, from (xk, mean, hid, cg, σ(s)) as ``fused_forward(save=True)``
    kept them: the gradients of x, w1, b1, w2, b2, ws, bs and alpha (None for an absent bias or
    gate), each in its parameter's dtype."""
    k = _kernels()
    xk, mean, hid, cg, sig = saved
    w1, b1, w2, b2, ws, bs, alpha = w[:-1]
    n, c, hw = plan.batch, plan.channels, plan.hw
    code = FUSION_CODES[w.fusion]
    dyk = as_kernel_layout(dy)
    xs, gs = pixel_strides(xk), pixel_strides(dyk)
    ds, dcg_part, dgate_part, dbs_part, dz, dpre, dm, dgate, dbs_n, dws_part = torch.empty(
        sum(plan.backward_workspace), device=xk.device, dtype=torch.float32).split(plan.backward_workspace)
    alpha_arg = cg if alpha is None else alpha
    k.bwd_reduce[(plan.tiles, n)](xk, dyk, cg, sig, alpha_arg, ds, dcg_part, dgate_part, dbs_part,
                                  c, hw, *xs, *gs,
                                  FUSION=code, HAS_SBIAS=bs is not None, NUM_CB=plan.num_cb,
                                  BLOCK_C=plan.block_c, BLOCK_P=plan.block_p)
    k.bwd_excite[(n,)](dcg_part, dgate_part, dbs_part, cg, hid, w1, w2, dz, dpre, dm, dgate, dbs_n,
                       c, plan.hidden, plan.tiles, 1.0 / hw,
                       GATE=alpha is not None, HAS_SBIAS=bs is not None,
                       BLOCK_S=plan.block_t, BLOCK_K=plan.block_k, BLOCK_H=plan.block_h)
    dx = torch.empty_like(xk)
    k.bwd_dx[(plan.splits, plan.num_cb, n)](xk, dyk, dx, cg, sig, ds, ws, dm, alpha_arg, dws_part,
                                            c, hw, *xs, *gs, *pixel_strides(dx), plan.tiles_per_prog,
                                            FUSION=code, BLOCK_C=plan.block_c, BLOCK_P=plan.block_p)
    grads = [None if p is None else torch.empty_like(p) for p in (w1, b1, w2, b2, ws, bs, alpha)]
    dw1, db1, dw2, db2, dws, dbs, dalpha = (cg if g is None else g for g in grads)
    k.bwd_params[(plan.param_blocks,)](dpre, mean, dz, hid, dws_part, dgate, dbs_n, alpha_arg,
                                       dw1, db1, dw2, db2, dws, dbs, dalpha,
                                       n, c, plan.hidden, n * plan.splits,
                                       HAS_B1=b1 is not None, HAS_B2=b2 is not None, HAS_SBIAS=bs is not None,
                                       GATE=alpha is not None,
                                       BLOCK_K=plan.block_k, BLOCK_H=plan.block_h, BLOCK_R=plan.block_r,
                                       num_warps=8)
    return (dx, *grads)


class ScSEFunction(torch.autograd.Function):
    """scSE with fused Triton kernels forward (3 launches) and backward (4 launches).

    Inputs: x, w1, b1, w2, b2, ws, bs, alpha (the gate logits), fusion, max_block_c; any bias or alpha
    may be None. Gradients flow to x and every parameter given, each in its own dtype. Used only when
    a backward can follow (``run_fused``): its forward always keeps what the backward reads.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor,
                b2: torch.Tensor | None, ws: torch.Tensor, bs: torch.Tensor | None, alpha: torch.Tensor | None,
                fusion: str, max_block_c: int) -> torch.Tensor:
        out, saved, plan = fused_forward(x, KernelWeights(w1, b1, w2, b2, ws, bs, alpha, fusion), max_block_c,
                                         save=True)
        xk, _, mean, hid, cg, sig = saved
        ctx.save_for_backward(xk, mean, hid, cg, sig, w1, b1, w2, b2, ws, bs, alpha)
        ctx.plan = plan
        ctx.fusion = fusion
        return out

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph=True: a gradient penalty would silently get no gradient
            raise RuntimeError("triton_fused has no double backward (create_graph=True); use eager for it")
        *saved, w1, b1, w2, b2, ws, bs, alpha = ctx.saved_tensors
        w = KernelWeights(w1, b1, w2, b2, ws, bs, alpha, ctx.fusion)
        dx, *grads = fused_backward(dy, tuple(saved), w, ctx.plan)
        return (dx if ctx.needs_input_grad[0] else None, *grads, None, None)


@torch.library.custom_op("scse::triton_fused_forward", mutates_args=())
def _forward_op(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor,
                b2: torch.Tensor | None, ws: torch.Tensor, bs: torch.Tensor | None, alpha: torch.Tensor | None,
                fusion: str, max_block_c: int) -> torch.Tensor:
    """The inference forward as one operator that ``torch.compile`` keeps whole: traced, the Triton
    launches broke Inductor on an H200 (a network compiled around triton_fused blocks failed)."""
    return fused_forward(x, KernelWeights(w1, b1, w2, b2, ws, bs, alpha, fusion), max_block_c)[0]


@_forward_op.register_fake
def _(x: torch.Tensor, *args: Any) -> torch.Tensor:
    return torch.empty_like(as_kernel_layout(x))


def _plan_of(x: torch.Tensor, w1: torch.Tensor, gate: bool, max_block_c: int) -> LaunchPlan:
    n, c, h, width = x.shape
    return launch_plan(n, c, w1.shape[0], h * width, _num_sms(x.device), gate, max_block_c)


@torch.library.custom_op("scse::triton_fused_forward_saving", mutates_args=())
def _saving_op(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor,
               b2: torch.Tensor | None, ws: torch.Tensor, bs: torch.Tensor | None, alpha: torch.Tensor | None,
               fusion: str, max_block_c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The recording forward as one operator for ``torch.compile``: the output and the float32
    workspace the backward reads; its backward is ``_backward_op``, another opaque operator."""
    w = KernelWeights(w1, b1, w2, b2, ws, bs, alpha, fusion)
    out, (_, workspace, *_views), _ = fused_forward(x, w, max_block_c, save=True)
    return out, workspace


@_saving_op.register_fake
def _(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor, b2: torch.Tensor | None,
      ws: torch.Tensor, bs: torch.Tensor | None, alpha: torch.Tensor | None, fusion: str,
      max_block_c: int) -> tuple[torch.Tensor, torch.Tensor]:
    if any(isinstance(d, torch.SymInt) for d in x.shape):  # compiled with dynamic shapes: the plan needs ints
        size = torch.library.get_ctx().new_dynamic_size()  # the workspace's size, unknown until it runs
    else:
        size = sum(_plan_of(x, w1, alpha is not None, max_block_c).forward_workspace)
    return torch.empty_like(as_kernel_layout(x)), x.new_empty(size, dtype=torch.float32)


@torch.library.custom_op("scse::triton_fused_backward", mutates_args=())
def _backward_op(dy: torch.Tensor, x: torch.Tensor, workspace: torch.Tensor, w1: torch.Tensor,
                 b1: torch.Tensor | None, w2: torch.Tensor, b2: torch.Tensor | None, ws: torch.Tensor,
                 bs: torch.Tensor | None, alpha: torch.Tensor | None, fusion: str,
                 max_block_c: int) -> list[torch.Tensor]:
    """The gradients of x and of each parameter given (absent biases and gate left out)."""
    w = KernelWeights(w1, b1, w2, b2, ws, bs, alpha, fusion)
    xk = as_kernel_layout(x)
    plan = _plan_of(xk, w1, alpha is not None, max_block_c)
    _, mean, hid, cg, sig = workspace.split(plan.forward_workspace)
    grads = fused_backward(dy, (xk, mean, hid, cg, sig), w, plan)
    return [g for g in grads if g is not None]


@_backward_op.register_fake
def _(dy: torch.Tensor, x: torch.Tensor, workspace: torch.Tensor, *weights: Any) -> list[torch.Tensor]:
    params = weights[:7]
    return [torch.empty_like(as_kernel_layout(x))] + [torch.empty_like(p) for p in params if p is not None]


def _saving_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, *weights, fusion, max_block_c = inputs
    ctx.save_for_backward(x, output[1], *weights)
    ctx.fusion, ctx.max_block_c = fusion, max_block_c


def _saving_backward(ctx: Any, dout: torch.Tensor, _: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    x, workspace, *weights = ctx.saved_tensors
    present = iter(_backward_op(dout, x, workspace, *weights, ctx.fusion, ctx.max_block_c))
    dx = next(present)
    return (dx, *(None if p is None else next(present) for p in weights), None, None)


_saving_op.register_autograd(_saving_backward, setup_context=_saving_context)


def run_fused(x: torch.Tensor, w: KernelWeights, max_block_c: int = MAX_BLOCK_C) -> torch.Tensor:
    """The fused forward, through autograd only when a backward can follow: ``Function.apply`` costs
    more host time than the rest of an inference call (28 of 50 µs on the 2-core VM). Under
    ``torch.compile`` each is an opaque operator (the recording one with a backward of its own), so a
    compiled network keeps the fused blocks in its graph without tracing their launches."""
    if x.numel() == 0:  # an empty batch: an empty answer, still on autograd's graph (the kernels' grids can't be empty)
        check_channels(x, w)
        return x.mul(0)
    records = torch.is_grad_enabled() and (x.requires_grad or any(t is not None and t.requires_grad for t in w[:-1]))
    if torch.compiler.is_compiling():
        return _saving_op(x, *w, max_block_c)[0] if records else _forward_op(x, *w, max_block_c)
    if records:
        return ScSEFunction.apply(x, *w, max_block_c)
    return fused_forward(x, w, max_block_c)[0]


def scse_fused(module: torch.nn.Module, x: torch.Tensor, max_block_c: int = MAX_BLOCK_C) -> torch.Tensor:
    """Run ``module`` (an ``ScSE`` or anything with its parameter names) through the fused kernels."""
    weights = module.weights if isinstance(module, TritonScSE) else kernel_weights(module)
    return run_fused(x, weights, max_block_c)


class TritonScSE(ReferenceWeights):
    """Holds a copy of the reference's parameters under the same names; forward is fused.

    ``weights`` (``ReferenceWeights``) is gathered and checked when the module is built and again
    whenever ``.to()`` and friends may have replaced the parameters, never per call.
    """

    def __init__(self, reference: torch.nn.Module, max_block_c: int = MAX_BLOCK_C) -> None:
        super().__init__(reference)
        self.max_block_c = max_block_c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_fused(x, self.weights, self.max_block_c)


@register(
    "triton_fused",
    "two-pass fused Triton kernels (pool; MLP; logit+combine), fused backward; x read twice, out written once",
    devices=("cuda", "cpu"),
    dtypes=("float32", "float16", "bfloat16"),
    fusions=tuple(FUSION_CODES),
    available=_available,
    tags={"interpreted_on_cpu": True},
)
def build_triton_fused(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The fused module on ``device``; parameters are float32 whatever ``dtype`` the input has.

    Float32 once, here, so a call converts nothing: the kernels read the weights (a few KB next to
    the activation) where they live. Float32 master weights, as under autocast, also keep max
    fusion's branch choices, and so its gradients, those of the float32 reference instead of
    flipping where a rounded weight moves x·c past x·σ(s).
    """
    reason = triton_unavailable(device)
    if reason:
        raise RuntimeError(reason)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"triton_fused computes float32, float16 or bfloat16 inputs, not {dtype}")
    return TritonScSE(reference).to(device=device, dtype=torch.float32)
