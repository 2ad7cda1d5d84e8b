"""The conformance suite's data model: what it feeds a variant and how it reports what it found.

``InputSpec`` and ``INPUTS`` are the inputs each configuration is run on, ``Config`` one
configuration of the math, ``Failure`` one problem on one configuration and input, and
``ConformanceReport`` / ``ConformanceError`` everything one ``check_variant`` found. The checks
that fill them are in ``harness.testing``, the public entry point, which re-exports these names.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class InputSpec:
    """One input the suite feeds a variant: its size and its memory layout."""

    name: str
    batch: int
    channels: int
    height: int
    width: int
    layout: str = "contiguous"  # or "non_contiguous", "channels_last"
    #: The values are ``offset + scale * N(0, 1)``: a large offset makes half-precision sums overflow.
    scale: float = 1.0
    offset: float = 0.0

    def make(self, seed: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        """A normal input drawn in float32 on the CPU (the same on every device)."""
        gen = torch.Generator().manual_seed(seed)
        n, c, h, w = self.batch, self.channels, self.height, self.width
        size = (n, c, 2 * w, h) if self.layout == "non_contiguous" else (n, c, h, w)
        x = (self.offset + self.scale * torch.randn(size, generator=gen)).to(device=device, dtype=dtype)
        if self.layout == "non_contiguous":
            # Every other row of a wider tensor, then H and W swapped: contiguous in neither NCHW
            # nor NHWC, and H, W can't be merged by .view (as a transposed activation can't).
            x = x[:, :, ::2].transpose(2, 3)
        elif self.layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        return x


#: The inputs every configuration is checked on.
INPUTS: tuple[InputSpec, ...] = (
    InputSpec("main", 2, 16, 8, 8),
    InputSpec("batch1", 1, 16, 8, 8),
    InputSpec("odd", 2, 3, 7, 5),
    InputSpec("non_contiguous", 2, 16, 8, 8, "non_contiguous"),
    InputSpec("channels_last", 2, 16, 8, 8, "channels_last"),
)
#: channels_last activations around 2 over 256×256 pixels: their sum (~1.3e5) overflows float16
#: (max 65504), so a squeeze that accumulates in half precision gives Inf, then NaN (pytorch#43992).
#: The values stay small, so the gates are as well conditioned as on N(0, 1). Not among ``INPUTS``
#: (half a million elements a case): give it to ``check_variant(..., inputs=[...])`` for a 16-bit variant.
OVERFLOW_INPUT = InputSpec("overflow_channels_last", 1, 8, 256, 256, "channels_last", scale=0.5, offset=2.0)
INPUTS_BY_NAME: dict[str, InputSpec] = {spec.name: spec for spec in (*INPUTS, OVERFLOW_INPUT)}


@dataclass(frozen=True)
class Config:
    """A configuration of the math: what the reference is built with, and how it is run."""

    dtype: str
    mode: str
    fusion: str
    bias: bool
    reduction: int

    @property
    def label(self) -> str:
        return f"{self.dtype}-{self.mode}-{self.fusion}-bias{int(self.bias)}-r{self.reduction}"


@dataclass(frozen=True)
class Failure:
    """One thing that went wrong, on one configuration and input."""

    variant: str
    config: Config
    input: str
    problem: str

    def __str__(self) -> str:
        return f"{self.variant} [{self.config.label}, input {self.input}]: {self.problem}"


class ConformanceError(AssertionError):
    """A variant failed conformance; ``failures`` lists every problem found."""

    def __init__(self, variant: str, failures: Sequence[Failure], checked: int, note: str | None = None) -> None:
        self.variant = variant
        self.failures = list(failures)
        lines = [f"variant {variant!r} failed {len(self.failures)} conformance check(s) in {checked} run(s):"]
        lines += [f"  - {f}" for f in self.failures]
        super().__init__(f"variant {variant!r}: {note}" if note else "\n".join(lines))


@dataclass
class ConformanceReport:
    """What ``check_variant`` did: runs checked, configurations skipped (with why) and failures."""

    variant: str
    checked: list[tuple[Config, str]] = field(default_factory=list)
    skipped: list[tuple[Config, str]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No failure, and something was checked: a variant unavailable here has passed nothing."""
        return not self.failures and bool(self.checked)

    def __str__(self) -> str:
        """A summary a person can read (the dataclass's own repr lists every run): the verdict, the
        counts, each failure, and why configurations were skipped."""
        verdict = "passed" if self.passed else "FAILED" if self.failures else "nothing checked"
        lines = [f"{self.variant}: {verdict}: {len(self.checked)} run(s) checked, {len(self.failures)} "
                 f"failure(s), {len(self.skipped)} configuration(s) skipped"]  # fmt: skip
        lines += [f"  - {f}" for f in self.failures]
        reasons: dict[str, int] = {}
        for _, reason in self.skipped:
            reasons[reason] = reasons.get(reason, 0) + 1
        lines += [f"  skipped {n}: {reason}" for reason, n in sorted(reasons.items())]
        return "\n".join(lines)

    def raise_for_failures(self) -> ConformanceReport:
        """Raise ``ConformanceError`` listing every failure; also when nothing at all was checked."""
        if self.failures:
            raise ConformanceError(self.variant, self.failures, len(self.checked))
        if not self.checked:
            reasons = "; ".join(sorted({r for _, r in self.skipped})) or "no configuration requested"
            raise ConformanceError(self.variant, [], 0, note=f"nothing was checked: {reasons}")
        return self
