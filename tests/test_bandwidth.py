"""The bandwidth floors and the copy-bandwidth probe."""
from __future__ import annotations

import math

import pytest
import torch

from harness.measure import bandwidth as bw
from harness.sweep.cases import Case
from variants.reference import FUSIONS, ScSE


def shape(batch: int, channels: int, height: int, width: int, dtype: str | torch.dtype, reduction: int = 2,
          fusion: str = "add", bias: bool = False, mode: str = "forward") -> Case:
    return Case("eager", "cpu", dtype, mode, batch, channels, height, width, reduction, fusion, bias)  # type: ignore[arg-type]


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels,reduction", [(64, 2), (3, 1), (96, 4), (1024, 16)])
def test_weight_count_matches_the_module(fusion: str, bias: bool, channels: int, reduction: int) -> None:
    module = ScSE(channels, reduction, fusion, bias)
    assert bw.weight_count(channels, reduction, fusion, bias) == sum(p.numel() for p in module.parameters())


def test_floors_of_a_benchmark_shape() -> None:
    # N=32, 64x128x128 in float16: the activation is 64 MiB; the weights 2*32*64 + 64 values
    tensor = 32 * 64 * 128 * 128 * 2
    weights = (2 * 32 * 64 + 64) * 2
    assert tensor == 64 * 2**20
    assert bw.bytes_min(shape(32, 64, 128, 128, torch.float16)) == 2 * tensor + weights
    assert bw.bytes_fused(shape(32, 64, 128, 128, torch.float16)) == 3 * tensor + weights
    assert bw.bytes_min(shape(32, 64, 128, 128, "float16")) == bw.bytes_min(shape(32, 64, 128, 128, torch.float16))
    assert bw.bytes_min(shape(32, 64, 128, 128, "float32")) == 2 * bw.bytes_min(shape(32, 64, 128, 128, "float16"))


def test_bias_gate_and_concat_add_weight_bytes() -> None:
    base = bw.bytes_min(shape(8, 64, 32, 32, "float32"))
    assert bw.bytes_min(shape(8, 64, 32, 32, "float32", bias=True)) == base + (32 + 64 + 1) * 4
    assert bw.bytes_min(shape(8, 64, 32, 32, "float32", fusion="gate")) == base + 64 * 4
    assert bw.bytes_min(shape(8, 64, 32, 32, "float32", fusion="concat")) == base + 2 * 64 * 64 * 4


def test_train_floors() -> None:
    tensor = 4 * 16 * 8 * 8 * 4
    weights = bw.weight_count(16) * 4
    assert bw.bytes_min(shape(4, 16, 8, 8, "float32", mode="train")) == 5 * tensor + 3 * weights
    assert bw.bytes_fused(shape(4, 16, 8, 8, "float32", mode="train")) == 8 * tensor + 3 * weights
    with pytest.raises(ValueError, match="mode"):
        bw.bytes_min(shape(4, 16, 8, 8, "float32", mode="inference"))


def test_invalid_shapes() -> None:
    with pytest.raises(ValueError):
        bw.bytes_min(shape(0, 16, 8, 8, "float32"))
    with pytest.raises(ValueError):
        bw.bytes_min(shape(1, 3, 8, 8, "float32", reduction=4))
    with pytest.raises(TypeError):
        bw.bytes_min(shape(1, 3, 8, 8, "not_a_dtype"))


def test_rates() -> None:
    assert bw.achieved_gbps(3_000_000_000, 1.5) == pytest.approx(2.0)
    assert bw.pct_of_peak_bw(1_500_000_000, 1.0, 3e9) == pytest.approx(50.0)
    assert math.isnan(bw.achieved_gbps(10, 0.0))
    assert math.isnan(bw.pct_of_peak_bw(10, 1.0, 0.0))


def test_cpu_copy_bandwidth_is_plausible() -> None:
    rate = bw.measure_copy_bandwidth("cpu", nbytes=8 * 2**20, repeats=5, warmup=1)
    # any machine this runs on copies between 100 MB/s and 10 TB/s (read + write counted)
    assert 1e8 < rate < 1e13


def test_copy_bandwidth_counts_read_and_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fake clock that says every copy takes 1 s, the rate is 2 × the buffer size."""
    ticks = iter(float(i) for i in range(100))
    monkeypatch.setattr(bw.time, "perf_counter", lambda: next(ticks))
    assert bw.measure_copy_bandwidth("cpu", nbytes=1000, repeats=3, warmup=0) == pytest.approx(2000.0)


def test_bandwidth_columns_of_a_case() -> None:
    from harness.sweep.cases import Case

    case = Case("eager", "cuda", "float16", "forward", 32, 64, 128, 128, 2, "add", False)
    cols = bw.bandwidth_columns(case, median_ms=0.1, peak_bytes_per_s=3.0e12)
    assert set(cols) == set(bw.BANDWIDTH_COLUMNS)
    assert cols["bytes_min"] == bw.bytes_min(shape(32, 64, 128, 128, "float16"))
    assert cols["bytes_fused"] == bw.bytes_fused(shape(32, 64, 128, 128, "float16"))
    assert cols["achieved_gbps"] == pytest.approx(cols["bytes_min"] / 1e-4 / 1e9)
    assert cols["pct_of_peak_bw"] == pytest.approx(100 * cols["bytes_min"] / 1e-4 / 3.0e12)
    skipped = bw.bandwidth_columns(case)
    assert skipped["achieved_gbps"] is None and skipped["pct_of_peak_bw"] is None
    train = bw.bandwidth_columns(Case("eager", "cuda", "float16", "train", 32, 64, 128, 128, 2, "add", False), 1.0)
    assert train["bytes_min"] == bw.bytes_min(shape(32, 64, 128, 128, "float16", mode="train"))
    assert train["pct_of_peak_bw"] is None  # no copy bandwidth measured


@pytest.mark.cuda
def test_cuda_copy_bandwidth_is_plausible() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    rate = bw.measure_copy_bandwidth("cuda", nbytes=256 * 2**20, repeats=5)
    assert 1e10 < rate < 2e13  # 10 GB/s .. 20 TB/s
