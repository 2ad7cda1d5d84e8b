"""``triton_fused_l2``: triton_fused's forward in batch chunks sized to L2.

The chunk arithmetic is checked exactly; the chunked forward, in Triton's interpreter
(``TRITON_INTERPRET=1``, as tox sets), against triton_fused's own forward (the same kernels on
fewer samples: the same values) and the float64 reference, for chunks of one, two and three samples
(the last one short), both layouts and every fusion, with its launches counted: three per chunk.
Its speed, the point of it, needs a GPU (``results/baselines/sweep-fused-targets.toml``).
"""
from __future__ import annotations

import copy

import pytest
import torch
from launch_count import count_host_work

from harness.measure.correctness import normwise_error, tolerance
from variants.reference import ScSE
from variants.triton_fused_l2 import L2_SHARE, chunk_samples

MiB = 1 << 20


def test_a_chunk_fills_at_most_the_share_of_l2_and_holds_a_sample_at_least() -> None:
    sample = 64 * 128 * 128 * 2  # float16 64x128x128: 2 MiB read, 2 MiB written
    assert L2_SHARE == 0.5
    assert chunk_samples(32, sample, 50 * MiB) == 6  # an H100: 6 samples, 24 MiB of x and output
    assert chunk_samples(32, sample, 60 * MiB) == 7  # an H200
    assert chunk_samples(32, sample, 8 * MiB) == 1  # the pair exactly fills half
    assert chunk_samples(32, sample, 8 * MiB - 1) == 1  # less than a sample: still one
    assert chunk_samples(4, sample, 1 << 40) == 4  # never more than the batch
    assert chunk_samples(32, sample, 50 * MiB, share=0.25) == 3


@pytest.fixture
def l2() -> object:
    import variants.triton_fused as tf

    reason = tf.triton_unavailable("cpu")
    if reason:
        pytest.skip(reason)
    import variants.triton_fused_l2 as l2

    return l2


@pytest.mark.parametrize("fusion", ["add", "max", "mul", "gate"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("per_chunk", [1, 2, 3])
def test_chunks_compute_what_triton_fused_computes(l2, fusion: str, layout: str, per_chunk: int) -> None:  # noqa: ANN001
    import variants.triton_fused as tf

    torch.manual_seed(per_chunk)
    ref = ScSE(12, 3, fusion, bias=fusion != "add")
    if fusion == "gate":
        torch.nn.init.normal_(ref.gate)
    x = torch.randn(5, 12, 6, 7)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    sample_bytes = x[0].numel() * x.element_size()
    cache = int(2 * per_chunk * sample_bytes / L2_SHARE)  # exactly per_chunk samples
    assert chunk_samples(5, sample_bytes, cache) == per_chunk
    module = l2.TritonL2ScSE(ref, cache)
    with torch.no_grad(), count_host_work() as work:
        y = module(x)
    chunks = -(-5 // per_chunk)
    assert work.launches == ["_pool_kernel", "_excite_kernel", "_apply_kernel"] * chunks
    with torch.no_grad():
        whole = tf.TritonScSE(ref)(x)
    assert torch.equal(y, whole)
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    want = copy.deepcopy(ref).double()(x.double())
    assert normwise_error(y, want) <= tolerance("float32", "cpu")


def test_it_refuses_what_it_does_not_compute(l2) -> None:  # noqa: ANN001
    module = l2.build_triton_fused_l2(ScSE(8, 2, "add"), torch.device("cpu"), torch.float32)
    x = torch.randn(2, 8, 4, 4)
    with pytest.raises(RuntimeError, match="forward only"):
        module(x)  # parameters that require grad, grad enabled: a backward could follow
    with pytest.raises(ValueError, match="float64"):
        l2.build_triton_fused_l2(ScSE(8, 2, "add"), torch.device("cpu"), torch.float64)
    with torch.no_grad():
        assert module(x).shape == x.shape


def test_an_output_slice_must_match_the_input_it_is_written_for(l2) -> None:  # noqa: ANN001
    import variants.triton_fused as tf

    module = tf.TritonScSE(ScSE(8, 2, "add"))
    x = torch.randn(2, 8, 4, 4)
    with pytest.raises(ValueError, match="out must be"):
        tf.fused_forward(x, module.weights, out=torch.empty(2, 8, 4, 4).to(memory_format=torch.channels_last))
    out = torch.empty(4, 8, 4, 4)
    with torch.no_grad():
        y = tf.fused_forward(x, module.weights, out=out[2:])[0]
    assert y.data_ptr() == out[2:].data_ptr() and torch.equal(out[2:], module(x))


@pytest.mark.cuda
def test_cuda_chunks_by_the_cards_own_l2() -> None:
    """On a GPU the chunk comes from the card's L2: a batch of several chunks, float16, both layouts."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import variants.triton_fused as tf
    import variants.triton_fused_l2 as l2

    reason = tf.triton_unavailable("cuda")
    if reason:
        pytest.skip(reason)
    dev = torch.device("cuda")
    ref = ScSE(64, 2, "add")
    module = l2.build_triton_fused_l2(ref, dev, torch.float16)
    sample_bytes = 64 * 128 * 128 * 2
    n = 3 * chunk_samples(64, sample_bytes, l2.l2_bytes(dev))  # three chunks at least
    assert chunk_samples(n, sample_bytes, module.cache_bytes) < n
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(n, 64, 128, 128, device=dev).to(torch.float16).to(memory_format=memory_format)
        with torch.no_grad():
            y = module(x)
        want = copy.deepcopy(ref).double().to(dev)(x.double())
        assert normwise_error(y, want) <= tolerance("float16", "cuda")
