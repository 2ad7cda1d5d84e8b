"""triton_fused's forward timed at each channel-block cap, per shape and dtype: data for its block sizes.

``block_sizes`` caps BLOCK_C at ``max_block_c`` (128) and gives BLOCK_P the rest of a 4096-value
tile, so the cap sets the tile's shape: for 32×256×64×64 float16 it is [128, 32], whose NCHW rows are
64 contiguous bytes. That shape reached 42% of the copy bandwidth on an H200, against 64–67% for the
two shapes whose rows are 128–256 bytes (``KERNEL_NOTES.md``). Before changing the heuristic, this
measures it: GPU time (the harness's CUDA clock, cold L2) and the share of copy bandwidth on the
three-pass bytes, for every cap. Cap 256 is the one that gives C = 256 a single channel block, so
that the apply kernel reads x once ([256, 16] tiles, 32-byte rows) instead of twice, the second
time from cache; a cap that gives a tile already timed for the shape is skipped. On a GPU
(``bash .ci/gpu tune`` runs the first)::

    python .ci/tune_fused.py                      # the benchmark shapes, float16 and float32
    python .ci/tune_fused.py --shapes 256x64x64 --caps 64,128,256 --layouts nchw,channels_last

A script beside the CI's, not a module of ``harness`` or ``variants``: it reaches into one variant
(``max_block_c``) with the harness's clock, which neither package may do.

Each line is checked against the float64 reference before it is timed. CPU (the interpreter) only
for checking this script runs: its times mean nothing.
"""
from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from harness.measure.bandwidth import measure_copy_bandwidth
from harness.measure.correctness import normwise_error, tolerance
from harness.measure.stats import median_ci
from harness.measure.timing import CpuClock, TimingPolicy, measure
from variants.reference import ScSE


@dataclass(frozen=True)
class Tile:
    """One measured configuration: the shape, the cap, the tile it gives, and its GPU time."""

    shape: tuple[int, int, int, int]
    dtype: str
    layout: str
    cap: int
    block_c: int
    block_p: int
    median_us: float
    ci_us: tuple[float, float]
    pct_of_copy: float | None


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in s.split("x")) for s in text.split(",") if s.strip()]  # type: ignore[misc]


def tune(shapes: Sequence[tuple[int, int, int]], batch: int, dtypes: Sequence[str], layouts: Sequence[str],
         caps: Sequence[int], device: torch.device, max_time_s: float = 0.5) -> Iterator[Tile]:
    """Every (shape, dtype, layout, cap), checked against float64, then timed; each as it is done."""
    import variants.triton_fused as tf

    if device.type == "cuda":
        from harness.measure.torch_stream import make_cuda_clock

        clock = make_cuda_clock(device, "cold")
        copy_bw: float | None = measure_copy_bandwidth(device)
    else:
        clock, copy_bw = CpuClock(), None
    policy = TimingPolicy(warmup_s=0.1, max_time_s=max_time_s)
    for c, h, w in shapes:
        torch.manual_seed(0)
        ref = ScSE(c, 2, "add")
        for dtype in dtypes:
            x = torch.randn(batch, c, h, w, device=device).to(getattr(torch, dtype))
            want = copy.deepcopy(ref).double().to(device)(x.double())
            for layout in layouts:
                xl = x.to(memory_format=torch.channels_last) if layout == "channels_last" else x
                tried = set()
                for cap in caps:
                    block_c, block_p, _ = tf.block_sizes(c, h * w, cap)
                    if (block_c, block_p) in tried:  # a cap at or above C gives the tile a smaller one gave
                        continue
                    tried.add((block_c, block_p))
                    module = tf.TritonScSE(ref, max_block_c=cap).to(device=device, dtype=torch.float32)
                    with torch.no_grad():
                        error = normwise_error(module(xl), want)
                        if error > tolerance(dtype, device.type):
                            raise AssertionError(f"{c}x{h}x{w} {dtype} {layout} cap {cap}: error {error:.3g}")
                        timing = measure(lambda m=module, t=xl: m(t), clock, policy)
                    median = float(np.median(timing.samples_ms)) * 1e3  # as median_ci's interval is of
                    low, high = median_ci(timing.samples_ms)
                    moved = 3 * x.numel() * x.element_size()  # x read twice, the output written once
                    pct = 100 * moved / (median * 1e-6) / copy_bw if copy_bw else None
                    yield Tile((batch, c, h, w), dtype, layout, cap, block_c, block_p, median, (low * 1e3, high * 1e3),
                               pct)


HEADER = ("| shape | dtype | layout | cap | tile [BLOCK_C, BLOCK_P] | GPU µs [95% CI] | % of copy bw |\n"
          "|---|---|---|---|---|---|---|")


def row(t: Tile) -> str:
    """One Markdown table row: printed as soon as it is measured, so a run cut short keeps it."""
    pct = f"{t.pct_of_copy:.0f}%" if t.pct_of_copy is not None else "—"
    return (f"| {'x'.join(map(str, t.shape))} | {t.dtype} | {t.layout} | {t.cap} | [{t.block_c}, {t.block_p}] "
            f"| {t.median_us:.1f} [{t.ci_us[0]:.1f}, {t.ci_us[1]:.1f}] | {pct} |")


def fastest(tiles: Sequence[Tile]) -> list[str]:
    """Per shape, dtype and layout, the cap with the lowest median."""
    best: dict[tuple, Tile] = {}
    for t in tiles:
        key = (t.shape, t.dtype, t.layout)
        if key not in best or t.median_us < best[key].median_us:
            best[key] = t
    return [f"fastest: {'x'.join(map(str, t.shape))} {t.dtype} {t.layout}: cap {t.cap} "
            f"[{t.block_c}, {t.block_p}], {t.median_us:.1f} µs" for t in best.values()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python .ci/tune_fused.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="64x128x128,256x64x64,32x256x256", help="CxHxW, comma-separated")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtypes", default="float16,float32")
    p.add_argument("--layouts", default="nchw", help="nchw, channels_last or both")
    p.add_argument("--caps", default="16,32,64,128,256",
                   help="max_block_c values (one that gives a tile already timed is skipped)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--max-time", type=float, default=0.5, help="seconds of timed samples per line")
    args = p.parse_args(argv)
    import variants.triton_fused as tf

    reason = tf.triton_unavailable(args.device)
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    try:
        shapes = parse_shapes(args.shapes)
        caps = [int(v) for v in args.caps.split(",")]
    except ValueError as exc:
        print(f"error: --shapes or --caps: {exc}", file=sys.stderr)
        return 2
    layouts = args.layouts.split(",")
    unknown = sorted(set(layouts) - {"nchw", "channels_last"})
    if unknown:
        print(f"error: --layouts: {', '.join(unknown)} (nchw, channels_last)", file=sys.stderr)
        return 2
    print(HEADER, flush=True)
    tiles = []
    for tile in tune(shapes, args.batch, args.dtypes.split(","), layouts, caps, torch.device(args.device),
                     args.max_time):
        tiles.append(tile)
        print(row(tile), flush=True)
    print("\n".join(fastest(tiles)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
