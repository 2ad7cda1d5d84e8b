"""The closed-form FLOP count of one scSE configuration: a formula per part, fusion and mode.

:data:`ANALYTIC_FORMULA_MD` states the counting convention (which ops cost what) and the formula
term by term; :func:`analytic_breakdown` and :func:`analytic_flops` compute it from the sizes alone,
running nothing. The counters that run the module (fvcore, ``FlopCounterMode``) are in
``harness.measure.flops``, which applies the same convention and reports this count beside theirs.
"""
from __future__ import annotations

from typing import Any

from variants.reference import FUSIONS

MODES: tuple[str, ...] = ("forward", "train")
#: One multiply-add counts 1 (fvcore's convention) or 2 (FlopCounterMode's, and hardware peaks').
CONVENTIONS: tuple[str, ...] = ("mac=1", "mac=2")

ANALYTIC_FORMULA_MD = r"""
### FLOP counts

Three columns count the FLOPs of a case, each by its own tool and convention:

| column | counted by | one multiply-add is | scope |
|---|---|---|---|
| `fvcore_flops` | fvcore `FlopCountAnalysis`, jit-traced eager reference | 1 flop | forward only (`fvcore_scope`) |
| `torch_flops` | `torch.utils.flop_counter.FlopCounterMode` | 2 flops | forward; + backward in `train` rows |
| `analytic_flops` | the closed form below | 2 flops | forward; + backward in `train` rows |

Neither library counts element-wise work on its own (fvcore warns "Unsupported operator" and
counts 0; FlopCounterMode counts only matmuls and convolutions), and for scSE that is most of the
work. The harness adds one rule to both: every element-wise arithmetic op or comparison (add,
sub, mul, div, neg, maximum, relu, sigmoid, and the backward ops `sigmoid_backward`,
`threshold_backward`) costs **1 flop per output element**; a reduction (mean, sum, pooling, the
bias gradient) costs **1 flop per input element**; a convolution's bias costs 1 flop per output
element; views, copies, concatenation, fills and selects (`where`, `masked_fill`) cost 0.
Any op a counter meets without a rule is listed in `fvcore_uncounted` / `torch_uncounted`.

With N batch, C channels, H×W pixels, K = ⌊C/r⌋ hidden channels, b = 1 with bias (else 0),
m = 2 flops per multiply-add (m = 1 in fvcore's convention),
P = N·C·H·W (elements of x) and Q = N·H·W (elements of the spatial map):

**Forward**

| part | flops |
|---|---|
| cSE: average pool | P |
| cSE: 1×1 conv C→K, ReLU, 1×1 conv K→C, sigmoid | m·2·N·C·K + N·K + N·C + b·(N·K + N·C) |
| cSE: x · gate | P |
| sSE: 1×1 conv C→1, sigmoid | m·N·C·H·W + Q + b·Q |
| sSE: x · gate | P |
| combine `add` / `max` / `mul` | P |
| combine `gate` (σ(α)·c + (1−σ(α))·s) | 3P + 2C |
| combine `concat` (1×1 conv 2C→C) | m·2·C·P + b·P |

Forward total: 3P + m·N·C·(2K + H·W) + N·K + N·C + Q + b·(N·K + N·C + Q) + combine.
For `add` with no bias that is 4P + Q + N·(K + C) + m·(P + 2·N·C·K): the element-wise 4P
outweighs the 2P + 4·N·C·K of the convolutions.

**Backward** (added in `train` rows; the gradient of the output is given, and gradients flow to
x and to every parameter, as for a block inside a network), op by op as PyTorch autograd
computes it:

| part | flops |
|---|---|
| each x · gate product: grad of x, grad of the gate, sum over the broadcast dims | 3P (×2 products)¹ |
| x is read by 4 ops: 3 gradient accumulations | 3P |
| average pool backward (grad / (H·W)) | P |
| sigmoid backward (cSE, sSE), ReLU backward | N·C + Q + N·K |
| each 1×1 conv: grad of input, of weight (+ bias grad, a sum) | 2× its forward multiply-adds + b·its output size |
| combine `add` | 0 |
| combine `max` (autograd's tie-splitting rule: per input a comparison, an equality test, a halving) | 6P |
| combine `mul` | 2P |
| combine `gate` (4 products and 2 sums over P; neg, add and sigmoid backward over C) | 6P + 3C |
| combine `concat` | the 2C→C conv's backward: m·4·C·P + b·P |

Backward total: 10P + N·C + Q + N·K + m·2·N·C·(2K + H·W) + b·(N·K + N·C + Q) + combine's backward.

¹ Autograd skips the sum when nothing was broadcast: cSE's when H·W = 1, sSE's when C = 1, and
the two in `gate` when N·H·W = 1; each skipped sum takes P off.
"""


def check_mode(mode: str) -> None:
    """Raise ValueError unless ``mode`` is one of :data:`MODES` (every count, analytic or not, checks it)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")


def analytic_breakdown(
    batch: int,
    channels: int,
    height: int,
    width: int,
    reduction: int,
    fusion: str,
    bias: bool,
    mode: str,
    convention: str = "mac=2",
) -> dict[str, int]:
    """The closed form of :data:`ANALYTIC_FORMULA_MD`, term by term."""
    check_mode(mode)
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose from {', '.join(FUSIONS)}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose from {', '.join(CONVENTIONS)}")
    m = 1 if convention == "mac=1" else 2
    n, c, hw = batch, channels, height * width
    k = channels // reduction
    if k < 1:
        raise ValueError(f"reduction {reduction} leaves no hidden channel for C={channels}")
    b = 1 if bias else 0
    p, q = n * c * hw, n * hw

    terms: dict[str, int] = {
        "cse_pool": p,
        "cse_mlp": m * 2 * n * c * k + n * k + n * c + b * (n * k + n * c),
        "cse_product": p,
        "sse_conv_sigmoid": m * n * c * hw + q + b * q,
        "sse_product": p,
    }
    combine_fwd = {"add": p, "max": p, "mul": p, "gate": 3 * p + 2 * c, "concat": m * 2 * c * p + b * p}
    terms["combine"] = combine_fwd[fusion]
    if mode == "forward":
        return terms

    # Autograd sums a broadcast gate's gradient back to the gate's shape, unless nothing was broadcast.
    def reduce_to_gate(broadcast: bool) -> int:
        return p if broadcast else 0

    gate_sums = 2 * reduce_to_gate(n * hw > 1)
    combine_bwd = {
        "add": 0, "max": 6 * p, "mul": 2 * p, "gate": 4 * p + gate_sums + 3 * c, "concat": m * 4 * c * p + b * p,
    }
    terms.update({
        "bwd_products": 2 * 2 * p + reduce_to_gate(hw > 1) + reduce_to_gate(c > 1),
        "bwd_grad_accumulation": 3 * p,
        "bwd_pool": p,
        "bwd_activations": n * c + q + n * k,
        "bwd_convs": m * 2 * (2 * n * c * k + n * c * hw) + b * (n * k + n * c + q),
        "bwd_combine": combine_bwd[fusion],
    })
    return terms


def analytic_flops(*args: Any, **kwargs: Any) -> int:
    """The project's closed-form FLOP count of one call (forward, or forward + backward in train);
    the arguments are :func:`analytic_breakdown`'s."""
    return sum(analytic_breakdown(*args, **kwargs).values())
