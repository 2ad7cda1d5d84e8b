"""The fused kernels' speed targets, asserted on a real GPU run (never in timed unit tests).

Runs ``results/baselines/sweep-fused-targets.toml`` (forward, N=32, three shapes, float16 and
float32) and the same shapes in train mode for eager, triton_fused and graphed_triton_fused, then
checks case by case:

- forward GPU time (``median_ms``): triton_fused moves its three-pass bytes (``bytes_fused``: x
  read twice, the output written once) at ≥ 80% of the copy bandwidth, is ≥ 3× eager and ≥ 1.5× the
  best torch.compile mode; its host time per call (``host_ms``) is ≤ 40 µs; end to end (``wall_ms``)
  it is ≥ 2× eager at float16 32×64×128×128;
- train: GPU time ≥ 1.8× eager, host time ≤ 100 µs (triton_fused, and its graphed form);
- graphed forms: host time ≤ 15 µs a call;
- cuda_fused's forward within 10% of triton_fused's;
- stretch: triton_fused_l2 (batch chunks that fit in L2) below the three-pass floor in GPU time.

Skipped without CUDA (unless ``HARNESS_FUSED_RUNS`` names finished runs), and by the plain
``pytest`` run like every benchmark here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

import harness
from harness.results.store import load_results, to_frame

# Not marked ``cuda``: with HARNESS_FUSED_RUNS the targets are judged on any machine; without it,
# the ``sweep`` fixture skips where there is no GPU.
CONFIG = Path(__file__).resolve().parents[2] / "results" / "baselines" / "sweep-fused-targets.toml"
KEYS = ["dtype", "mode", "batch", "channels", "height", "width"]
COMPILE_MODES = ("compile", "compile_max_autotune")
GRAPHED = ("cuda_graph", "graphed_triton_fused", "graphed_triton_fused_l2", "graphed_cuda_fused")


#: Run folders already holding the two sweeps (``forward,train``), e.g. from ``.ci/gpu fused``: the
#: targets are judged on them instead of running the sweeps again.
RUNS_ENV = "HARNESS_FUSED_RUNS"
TRAIN = {"modes": "train", "variants": "eager,triton_fused,graphed_triton_fused"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    if os.environ.get(RUNS_ENV):
        runs = [load_results(p) for p in os.environ[RUNS_ENV].split(",")]
        frames, env = [to_frame(r.rows) for r in runs], runs[0].env
    else:
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
        root = tmp_path_factory.mktemp("fused")
        frames = [harness.run(CONFIG, out=root / "forward"), harness.run(CONFIG, out=root / "train", **TRAIN)]
        env = json.loads((Path(frames[0].attrs["run_dir"]) / "env.json").read_text())
    frame = pd.concat(frames, ignore_index=True)
    broken = frame[frame["status"].isin(["mismatch", "error"])]
    assert broken.empty, broken[["variant", "dtype", "mode", "reason"]].to_string()
    frame.attrs["copy_bandwidth_bytes_s"] = env.get("copy_bandwidth_bytes_s")
    return frame


def column(frame: pd.DataFrame, variant: str, name: str = "median_ms") -> pd.Series:
    """The variant's ``name`` per case; a variant this machine could not run at all is skipped with its reason
    (cuda_fused needs nvcc), never judged as slow."""
    rows = frame[frame["variant"] == variant]
    if not rows.empty and (rows["status"] == "skipped").all():
        pytest.skip(f"{variant}: {rows['reason'].iloc[0]}")
    ok = rows[rows["status"] == "ok"]
    return ok.set_index(KEYS)[name]


def mode(frame: pd.DataFrame, which: str) -> pd.DataFrame:
    return frame[frame["mode"] == which]


#: What the targets are judged on: three shapes at N=32 in float16 and float32, forward and train.
EXPECTED_CASES = {"forward": 6, "train": 6}


@pytest.mark.parametrize("which", list(EXPECTED_CASES))
def test_the_runs_cover_every_shape_and_dtype(sweep: pd.DataFrame, which: str) -> None:
    """A run cut short (or limited to one dtype to fit a GPU call) is judged on what it holds by the
    tests below, and fails here: its verdicts cover fewer cases than the targets name."""
    for variant in ("eager", "triton_fused"):
        cases = column(mode(sweep, which), variant)
        assert len(cases) == EXPECTED_CASES[which], f"{variant} {which}: {len(cases)} cases\n{cases.to_string()}"


def test_triton_fused_moves_its_three_pass_bytes_at_80_percent_of_copy_bandwidth(sweep: pd.DataFrame) -> None:
    rows = mode(sweep, "forward")
    rows = rows[(rows["variant"] == "triton_fused") & (rows["status"] == "ok")]
    share = rows["bytes_fused"] / (rows["median_ms"] * 1e-3) / sweep.attrs["copy_bandwidth_bytes_s"]
    assert not rows.empty
    assert (share >= 0.80).all(), share.to_string()


def test_triton_fused_forward_gpu_time_is_3x_eager(sweep: pd.DataFrame) -> None:
    fwd = mode(sweep, "forward")
    speedup = (column(fwd, "eager") / column(fwd, "triton_fused")).dropna()
    assert not speedup.empty
    assert (speedup >= 3.0).all(), speedup.to_string()


def test_triton_fused_forward_gpu_time_is_1_5x_the_best_compile_mode(sweep: pd.DataFrame) -> None:
    fwd = mode(sweep, "forward")
    best = pd.concat([column(fwd, m) for m in COMPILE_MODES], axis=1).min(axis=1)
    speedup = (best / column(fwd, "triton_fused")).dropna()
    assert not speedup.empty
    assert (speedup >= 1.5).all(), speedup.to_string()


@pytest.mark.parametrize(("which", "limit_ms"), [("forward", 0.040), ("train", 0.100)])
def test_triton_fused_host_time_per_call(sweep: pd.DataFrame, which: str, limit_ms: float) -> None:
    host = column(mode(sweep, which), "triton_fused", "host_ms")
    assert not host.empty
    assert (host <= limit_ms).all(), host.to_string()


def test_triton_fused_is_2x_eager_end_to_end_at_fp16_n32_64x128x128(sweep: pd.DataFrame) -> None:
    fwd = mode(sweep, "forward")
    key = ("float16", "forward", 32, 64, 128, 128)
    speedup = column(fwd, "eager", "wall_ms")[key] / column(fwd, "triton_fused", "wall_ms")[key]
    assert speedup >= 2.0, speedup


def test_triton_fused_train_gpu_time_is_1_8x_eager(sweep: pd.DataFrame) -> None:
    train = mode(sweep, "train")
    speedup = (column(train, "eager") / column(train, "triton_fused")).dropna()
    assert not speedup.empty
    assert (speedup >= 1.8).all(), speedup.to_string()


def test_graphed_triton_fused_train_step_costs_at_most_100_us_of_host_time(sweep: pd.DataFrame) -> None:
    """The train host target met the way the notes expect it can be: forward and backward replayed."""
    host = column(mode(sweep, "train"), "graphed_triton_fused", "host_ms")
    assert not host.empty
    assert (host <= 0.100).all(), host.to_string()


@pytest.mark.parametrize("variant", GRAPHED)
def test_a_graphed_form_costs_at_most_15_us_of_host_time(sweep: pd.DataFrame, variant: str) -> None:
    host = column(mode(sweep, "forward"), variant, "host_ms")
    assert not host.empty
    assert (host <= 0.015).all(), host.to_string()


def test_cuda_fused_within_10_percent_of_triton_fused(sweep: pd.DataFrame) -> None:
    fwd = mode(sweep, "forward")
    ratio = (column(fwd, "cuda_fused") / column(fwd, "triton_fused")).dropna()
    assert not ratio.empty
    assert (ratio <= 1.10).all(), ratio.to_string()


def test_stretch_triton_fused_l2_goes_below_the_three_pass_floor(sweep: pd.DataFrame) -> None:
    """With x's second read served from L2, memory sees two passes: the GPU time can beat the time
    three passes take at the measured copy bandwidth (``bytes_fused`` / copy bandwidth)."""
    rows = mode(sweep, "forward")
    rows = rows[(rows["variant"] == "triton_fused_l2") & (rows["status"] == "ok")]
    if rows.empty:
        pytest.skip("no triton_fused_l2 rows in this run")
    floor_ms = rows["bytes_fused"] / sweep.attrs["copy_bandwidth_bytes_s"] * 1e3
    share = (rows["median_ms"] / floor_ms).set_axis(rows.set_index(KEYS).index)
    assert (share < 1.0).all(), share.to_string()
