"""The reference module is the seed's scSE: same names, same output; the other fusions are what they say."""
from __future__ import annotations

import pytest
import torch
from seed_scse import scSE as SeedScSE

from variants import FUSIONS, ScSE


def test_seed_state_dict_loads_strictly_and_matches() -> None:
    torch.manual_seed(0)
    seed = SeedScSE(32)
    ours = ScSE(32)
    ours.load_state_dict(seed.state_dict(), strict=True)
    x = torch.randn(3, 32, 64, 64)
    assert set(ours.state_dict()) == {"cse.fc.0.weight", "cse.fc.2.weight", "sse.Conv1x1.weight"}
    torch.testing.assert_close(ours(x), seed(x), rtol=0, atol=0)
    assert ours(x).shape == (3, 32, 64, 64)  # the seed post's own check


def test_our_state_dict_loads_into_the_seed() -> None:
    ours = ScSE(16)
    seed = SeedScSE(16)
    seed.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(seed(x), ours(x), rtol=0, atol=0)


def branches(m: ScSE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return m.cse(x), m.sse(x)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fusions_combine_the_two_branches_as_documented(fusion: str) -> None:
    torch.manual_seed(1)
    m = ScSE(8, reduction=4, fusion=fusion).double()
    if fusion == "gate":
        torch.nn.init.normal_(m.gate)
    x = torch.randn(2, 8, 4, 3, dtype=torch.float64)
    c, s = branches(m, x)
    expected = {
        "add": lambda: c + s,
        "max": lambda: torch.maximum(c, s),
        "mul": lambda: c * s,
        "gate": lambda: torch.sigmoid(m.gate) * c + (1 - torch.sigmoid(m.gate)) * s,
        "concat": lambda: torch.nn.functional.conv2d(torch.cat([c, s], 1), m.project.weight),
    }[fusion]()
    torch.testing.assert_close(m(x), expected)


def test_bias_adds_parameters_with_the_seed_names() -> None:
    names = set(ScSE(8, 2, bias=True).state_dict())
    assert {"cse.fc.0.bias", "cse.fc.2.bias", "sse.Conv1x1.bias"} <= names


@pytest.mark.parametrize(("channels", "reduction"), [(8, 16), (0, 1), (8, 0)])
def test_impossible_configurations_are_refused(channels: int, reduction: int) -> None:
    with pytest.raises(ValueError):
        ScSE(channels, reduction)


def test_unknown_fusion_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fusion"):
        ScSE(8, fusion="sum")
