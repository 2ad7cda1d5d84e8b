"""Cases: the frozen identity of one measurement, and the expansion of a sweep into them."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from harness.sweep.config import SweepConfig

#: The columns that identify a case; results are matched, resumed and compared on these.
KEY_COLUMNS: tuple[str, ...] = (
    "variant", "device", "dtype", "mode", "batch", "channels", "height", "width", "reduction", "fusion", "bias",
    "context",
)  # fmt: skip


@dataclass(frozen=True, order=True)
class Case:
    """One variant on one configuration: what ``torch.utils.benchmark`` calls a TaskSpec."""

    variant: str
    device: str
    dtype: str
    mode: str
    batch: int
    channels: int
    height: int
    width: int
    reduction: int
    fusion: str
    bias: bool = False
    #: The network the variant runs inside (``variants.contexts``); empty: the block alone. In a
    #: context, channels/height/width are the network's input, and reduction, fusion and bias its blocks'.
    context: str = ""

    @property
    def key(self) -> tuple[object, ...]:
        return tuple(getattr(self, c) for c in KEY_COLUMNS)

    @property
    def shape(self) -> str:
        return f"{self.channels}x{self.height}x{self.width}"

    @property
    def label(self) -> str:
        """A short human label for progress bars and logs."""
        where = f"{self.context}/" if self.context else ""
        return (f"{where}{self.variant} {self.shape} b{self.batch} {self.dtype} {self.mode} r{self.reduction} "
                f"{self.fusion}")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def expand(config: SweepConfig) -> list[Case]:
    """Every case of the sweep. Variants of one configuration are adjacent, so that drift over a
    long sweep touches the variants being compared alike."""
    if config.contexts:
        return expand_contexts(config)
    cases = []
    for dtype in config.dtypes:
        for mode in config.modes:
            for c, h, w in config.shapes:
                for batch in config.batch_sizes:
                    for reduction in config.reductions:
                        for fusion in config.fusions:
                            for bias in config.biases:
                                for variant in config.variants:
                                    case = Case(variant, config.device, dtype, mode, batch, c, h, w,
                                                reduction, fusion, bias)
                                    cases.append(case)
    return cases


def expand_contexts(config: SweepConfig) -> list[Case]:
    """Every case of a sweep inside networks: each context's blocks fix reduction, fusion and bias.
    The forms of a network (eager, compiled, graphed) of a configuration are adjacent too."""
    from variants.contexts import get_context

    contexts = [get_context(name) for name in config.contexts]
    cases = []
    for dtype in config.dtypes:
        for mode in config.modes:
            for c, h, w in config.shapes:
                for batch in config.batch_sizes:
                    for ctx in contexts:
                        for variant in config.variants:
                            cases.append(Case(variant, config.device, dtype, mode, batch, c, h, w,
                                              ctx.reduction, ctx.fusion, ctx.bias, ctx.name))
    return cases
