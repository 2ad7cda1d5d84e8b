"""``--shard K/N``: a deterministic 1/N of a sweep, balanced by estimated cost rather than by count.

Every shard expands the same case list from the same flags and keeps its own part, so N processes
(one per GPU, one per Slurm array task, one per CI job) need no coordination, and merging the N run
folders gives exactly the unsharded sweep.

The unit of assignment is a *configuration* (every variant of one dtype, mode, shape, batch,
reduction, fusion and bias), never a single case: the variants compared in a report's row then ran
side by side on the same machine, as in an unsharded run. Groups are assigned by greedy
longest-processing-time (LPT: the costliest group first, each to the least-loaded shard), which is
within 4/3 of the best possible makespan.
"""
from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from harness.measure.timing import TimingPolicy
from harness.sweep.cases import Case
from harness.sweep.config import Shard
from variants.registry import Variant
from variants.tags import Tags, tags_of

#: Rough seconds of the first call (compilation, autotuning) by what a variant declares.
COMPILE_FIRST_CALL_S = 30.0
AUTOTUNE_FIRST_CALL_S = 120.0
#: Seconds per element for everything that scales with the tensor: the float64 check, the first
#: call, calibrated blocks. Only ratios matter; this puts a 64x128x128 batch of 32 near a second.
PER_ELEMENT_S = 5e-8
MODE_FACTOR: Mapping[str, float] = {"forward": 1.0, "train": 3.0}  # backward costs about twice a forward
DTYPE_FACTOR: Mapping[str, float] = {"float64": 2.0, "float32": 1.0, "float16": 0.75, "bfloat16": 0.75}


def first_call_s(variant: Variant | None) -> float:
    """What a variant's first call costs beyond a plain call: a declared ``first_call_s`` tag, else a
    guess from the ``compiles``/``compile_mode`` tags the compiled variants carry."""
    tags = tags_of(variant) if variant is not None else Tags()
    if tags.first_call_s is not None:
        return tags.first_call_s
    if tags.compile_mode == "max-autotune":
        return AUTOTUNE_FIRST_CALL_S
    return COMPILE_FIRST_CALL_S if tags.compiles else 0.0


def estimate_cost(case: Case, variant: Variant | None) -> float:
    """Estimated seconds for one case: the default timing budget (the same for every case), a size
    term (batch·C·H·W × mode × dtype) and the variant's first-call cost. Never the run's own timing
    flags: a shard's cases must not depend on them, or a shard resumed with another ``--max-time``
    would leave cases to no shard and take others twice."""
    default = TimingPolicy()
    budget = default.warmup_s + default.max_time_s
    elements = case.batch * case.channels * case.height * case.width
    size = elements * PER_ELEMENT_S * MODE_FACTOR.get(case.mode, 1.0) * DTYPE_FACTOR.get(case.dtype, 1.0)
    return budget + size + first_call_s(variant)


def group_key(case: Case) -> tuple[object, ...]:
    """The configuration a case belongs to: its key without the variant."""
    return (case.device, case.dtype, case.mode, case.batch, case.channels, case.height, case.width,
            case.reduction, case.fusion, case.bias)  # fmt: skip


def assign(cases: Sequence[Case], count: int, variants: Mapping[str, Variant] | None = None) -> list[list[Case]]:
    """The shards' cases, each in sweep order, for the first ``min(count, configurations)`` shards:
    with more shards than configurations each configuration gets one to itself and the rest get
    none (so ``--shard 1/10^20`` costs no memory). Deterministic: ties go by sweep order and to the
    lowest shard, so every process computes the same split."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, case in enumerate(cases):
        groups.setdefault(group_key(case), []).append(i)
    known = variants or {}
    costed = [
        (sum(estimate_cost(cases[i], known.get(cases[i].variant)) for i in members), members[0], members)
        for members in groups.values()
    ]
    costed.sort(key=lambda item: (-item[0], item[1]))  # costliest first; equal costs in sweep order
    count = min(count, len(costed))  # the shards past it are empty: LPT fills empty shards lowest first
    loads = [(0.0, shard) for shard in range(count)]  # a heap of (load, shard); ties → lowest shard
    picked: list[list[int]] = [[] for _ in range(count)]
    for cost, _, members in costed:
        load, shard = heapq.heappop(loads)
        picked[shard].extend(members)
        heapq.heappush(loads, (load + cost, shard))
    return [[cases[i] for i in sorted(members)] for members in picked]


def select(cases: Sequence[Case], shard: Shard | None, variants: Mapping[str, Variant] | None = None) -> list[Case]:
    """The cases of ``shard`` (all of them without one)."""
    if shard is None:
        return list(cases)
    shards = assign(cases, shard.count, variants)
    return shards[shard.index - 1] if shard.index <= len(shards) else []
