"""Built-in variants. Each is a few lines: a ``@register`` decorator on a build function."""
from __future__ import annotations

import copy

import torch

from variants.registry import register


def clone(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of the reference with the same weights, on ``device`` in ``dtype``."""
    return copy.deepcopy(reference).to(device=device, dtype=dtype)


@register("eager", "the seed's scSE module, as written (two full-size products and a sum)",
          dtypes=("float32", "float16", "bfloat16", "float64"))
def build_eager(reference: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    return clone(reference, device, dtype)


# The A/A control: eager's own build under a name of its own (``harness.results.recommend``).
register("control", "eager built and measured a second time, as a control: how far it reads from eager is "
         "noise no single case's interval shows; never ranked",
         dtypes=("float32", "float16", "bfloat16", "float64"))(build_eager)

# The variant zoo: one module per family, each registering on import.
import variants.amp  # noqa: E402,F401
import variants.compiled  # noqa: E402,F401
import variants.cuda_fused  # noqa: E402,F401
import variants.cuda_graph  # noqa: E402,F401
import variants.eager_forms  # noqa: E402,F401
import variants.smp  # noqa: E402,F401
import variants.triton_fused  # noqa: E402,F401
import variants.triton_fused_l2  # noqa: E402,F401

# Graphed forms of the fast forwards, once what they wrap is registered.
from variants.cuda_graph import GRAPHED, register_graphed  # noqa: E402
from variants.registry import registered  # noqa: E402

for _name in GRAPHED:
    register_graphed(registered(_name))
