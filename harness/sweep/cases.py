"""Cases: the frozen identity of one measurement, and the expansion of a sweep into them."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from harness.sweep.config import SweepConfig

#: The columns that identify a case; results are matched, resumed and compared on these.
KEY_COLUMNS: tuple[str, ...] = (
    "variant", "device", "dtype", "mode", "batch", "channels", "height", "width", "reduction", "fusion", "bias",
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

    @property
    def key(self) -> tuple[object, ...]:
        return tuple(getattr(self, c) for c in KEY_COLUMNS)

    @property
    def shape(self) -> str:
        return f"{self.channels}x{self.height}x{self.width}"

    @property
    def label(self) -> str:
        """A short human label for progress bars and logs."""
        return f"{self.variant} {self.shape} b{self.batch} {self.dtype} {self.mode} r{self.reduction} {self.fusion}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def expand(config: SweepConfig) -> list[Case]:
    """Every case of the sweep. Variants of one configuration are adjacent, so that drift over a
    long sweep touches the variants being compared alike."""
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
