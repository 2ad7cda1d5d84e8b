"""Sweep configuration: parsed and validated once, from flags, a TOML file or Python arguments.

Every value may arrive as a comma-separated string (the CLI), a list (TOML, Python) or a scalar;
``SweepConfig.build`` turns them all into one frozen, validated object, and every problem is a
``ConfigError`` whose message is a single line fit to show a user.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import re
import threading
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from harness.measure.timing import CACHE_MODES, TimingPolicy
from harness.sweep.options import FLAGS, TIMING_OPTIONS, ConfigError, by_name, option_name
from harness.sweep.options import OPTION_NAMES as OPTION_NAMES  # re-exported: the names build takes
from variants.reference import FUSIONS
from variants.registry import DTYPES, MODES, all_variants, find_variant, unknown_variant_message

Shape = tuple[int, int, int]  # (C, H, W)
#: Beyond these a value is a typo: torch's thread pool crashed the process at 99999 threads on the
#: 2-core VM (5000 ran), and each process is a worker with its own torch.
MAX_THREADS = 1024
MAX_PROCESSES = 256
T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``, both counted from 1 as written: ``--shard 2/4``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 1 ≤ K ≤ N, e.g. --shard 1/4")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, value: Any) -> Shard:
        """``"K/N"``, a ``Shard``, ``{"index": K, "count": N}`` (env.json) or ``[K, N]``."""
        if isinstance(value, Shard):
            return value
        if isinstance(value, Mapping) and {"index", "count"} <= set(value):
            value = [value["index"], value["count"]]
        if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
            value = f"{value[0]}/{value[1]}"
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
        if match is None:
            raise ValueError(f"malformed shard {value!r}: expected K/N with 1 ≤ K ≤ N, e.g. --shard 2/4")
        return cls(int(match[1]), int(match[2]))


#: The default sweep, per device type. The CPU one must finish in under 3 minutes on 2 cores with
#: every variant registered: seven variants × 2 shapes × 1 batch × 2 modes = 28 cases, at
#: ≤ 2.1 s of timing each plus torch.compile's four compiles (≈ 10 s cold, 2–6 s after). On the CPU
#: the control (eager measured twice) is one of them: a shared VM read identical code up to 1.48×
#: apart, and the answer table's ties follow what the run saw. A GPU run asks for it by name.
DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {
        "variants": ("eager", "control", "eager_factored", "mean_squeeze", "channels_last", "amp_bf16", "compile"),
        "shapes": ((32, 64, 64), (64, 32, 32)),
        "batch_sizes": (8,),
        "dtypes": ("float32",),
        "modes": ("forward", "train"),
    },
    "cuda": {  # the choices a GPU user weighs; cuda_fused builds an extension on first use, so ask for it
        "variants": ("eager", "eager_factored", "channels_last", "compile", "cuda_graph", "triton_fused"),
        "shapes": ((64, 128, 128), (256, 64, 64)),
        "batch_sizes": (8, 32),
        "dtypes": ("float32", "float16"),
        "modes": ("forward", "train"),
    },
}


#: The defaults with ``--context``: a network per case, so one small input on the CPU (finishing in
#: about a minute) and a realistic one on CUDA. Contexts fix reduction, fusion and bias (their blocks').
CONTEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {
        "variants": ("eager", "eager_factored", "mean_squeeze", "channels_last", "smp"),
        "shapes": ((3, 128, 128),),
        "batch_sizes": (1,),
        "dtypes": ("float32",),
        "modes": ("forward", "train"),
    },
    "cuda": {
        "variants": ("eager", "eager_factored", "channels_last", "compile", "cuda_graph", "triton_fused", "smp"),
        "shapes": ((3, 512, 512),),
        "batch_sizes": (8,),
        "dtypes": ("float16", "float32"),
        "modes": ("forward", "train"),
    },
}
#: Options a context decides for itself.
CONTEXT_FIXED: tuple[str, ...] = ("reductions", "fusions", "biases")


@dataclass(frozen=True)
class SweepConfig:
    """What to measure and how. ``build`` is the only way in that validates."""

    device: str = "cpu"
    variants: tuple[str, ...] = ("eager",)
    shapes: tuple[Shape, ...] = ((32, 64, 64),)
    batch_sizes: tuple[int, ...] = (1, 8)
    dtypes: tuple[str, ...] = ("float32",)
    modes: tuple[str, ...] = ("forward", "train")
    reductions: tuple[int, ...] = (2,)
    fusions: tuple[str, ...] = ("add",)
    biases: tuple[bool, ...] = (False,)
    #: Networks to run the variants inside (``variants.contexts``); empty: the block alone.
    contexts: tuple[str, ...] = ()
    threads: int | None = None
    #: CPU: keep glibc from handing freed memory back to the OS between calls (harness.measure.allocator).
    steady_malloc: bool = True
    cache: str = "cold"
    timing: TimingPolicy = field(default_factory=TimingPolicy)
    seed: int = 0
    out: str | None = None
    #: Variant names the user spelled out (not matched by a glob): some variants time only then.
    explicit_variants: frozenset[str] = frozenset()
    # faults and scaling out (harness.sweep.isolation, harness.sweep.oom, harness.sweep.sharding)
    #: Run every case in a worker child process (crashes and hangs become rows).
    isolate: bool = False
    #: Seconds a case may take in a worker before it is killed (``timeout`` row); implies ``isolate``.
    case_timeout: float | None = None
    #: On ``oom``, try again at half the batch (``batch_run`` records the batch measured).
    oom_retry: bool = False
    #: Run only this shard of the case list (``K/N``).
    shard: Shard | None = None
    #: Spread each case's samples over this many worker processes and pool them (as pyperf does):
    #: separate processes differ by 10-20% on a shared CPU, and one process's samples cannot show it.
    processes: int = 1
    #: Clear the run already in ``out`` (its files only) instead of refusing the folder.
    overwrite: bool = False

    @classmethod
    def build(cls, config_file: str | Path | None = None, **options: Any) -> SweepConfig:
        """Merge defaults ← config file ← ``options`` (None means "not given"), then validate."""
        merged: dict[str, Any] = {}
        if config_file is not None:
            merged.update(read_toml(config_file))
        merged.update(by_name(options))  # ``max_time=1`` as well as ``max_time_s=1``, as in a config file
        device = resolve_device(str(merged.get("device", "auto")))
        contexts = named("contexts", lambda: parse_contexts(merged.get("contexts", ()), device))
        defaults = (CONTEXT_DEFAULTS if contexts else DEFAULTS)[torch.device(device).type]
        if contexts:  # the default images have the networks' own input channels (a grey-scale network's 1)
            defaults = defaults | {"shapes": network_default_shapes(contexts, defaults["shapes"])}
        base = cls()  # the dataclass's own defaults, under the device's
        get = lambda key: merged.get(key, defaults.get(key, getattr(base, key)))  # noqa: E731

        names, explicit = named("variants", lambda: expand_variants(parse_strings(get("variants"), "variant")))
        if "variants" not in merged:  # the default list is not the user naming a variant
            explicit = []
        policy = timing_policy(merged, base.timing)
        config = cls(
            device=device,
            variants=tuple(names),
            shapes=named("shapes", lambda: parse_shapes(get("shapes"))),
            batch_sizes=named("batch_sizes", lambda: parse_ints(get("batch_sizes"), "batch size")),
            dtypes=named("dtypes", lambda: parse_choices(get("dtypes"), DTYPES, "dtype")),
            modes=named("modes", lambda: parse_choices(get("modes"), MODES, "mode")),
            reductions=named("reductions", lambda: parse_ints(get("reductions"), "reduction")),
            fusions=named("fusions", lambda: parse_choices(get("fusions"), FUSIONS, "fusion")),
            biases=named("biases", lambda: parse_bools(get("biases"), "bias")),
            contexts=contexts,
            threads=None if merged.get("threads") is None else parse_int(merged["threads"], FLAGS["threads"],
                                                                         maximum=MAX_THREADS),
            steady_malloc=one(parse_bools(merged.get("steady_malloc", True), FLAGS["steady_malloc"]),
                              FLAGS["steady_malloc"]),
            cache=one(named("cache", lambda: parse_choices(get("cache"), CACHE_MODES, "cache")), FLAGS["cache"]),
            timing=policy,
            seed=parse_int(get("seed"), FLAGS["seed"], minimum=0),
            out=parse_out(merged.get("out")),
            explicit_variants=frozenset(explicit),
            **fault_options(merged),
        )
        if contexts:
            config = config.fixed_by_contexts(merged)
        config.check_reductions()
        config.check_case_timeout()
        return config

    def fixed_by_contexts(self, given: Mapping[str, Any]) -> SweepConfig:
        """This configuration with the reductions, fusions and biases its networks' blocks have; a
        different value given for one of them is an error (the same one, as ``--resume`` passes, is not)."""
        from variants.contexts import get_context

        fixed = {
            "reductions": tuple(dict.fromkeys(get_context(n).reduction for n in self.contexts)),
            "fusions": tuple(dict.fromkeys(get_context(n).fusion for n in self.contexts)),
            "biases": tuple(dict.fromkeys(get_context(n).bias for n in self.contexts)),
        }
        for key in CONTEXT_FIXED:
            if key in given and set(getattr(self, key)) != set(fixed[key]):
                raise ConfigError(f"{FLAGS[key]} does not apply with {FLAGS['contexts']}: a network's blocks fix it "
                                  f"({self.contexts[0]}: {context_settings(self.contexts[0])})")
        return dataclasses.replace(self, **fixed)

    def check_reductions(self) -> None:
        """Every reduction must leave at least one hidden channel for every shape; in a network,
        every shape must be the network's input."""
        if self.contexts:
            for name in self.contexts:
                check_network_shapes(name, self.shapes)
            return
        for c, _, _ in self.shapes:
            for r in self.reductions:
                if c // r < 1:
                    raise ConfigError(f"{FLAGS['reductions']}: reduction {r} leaves no hidden channel for C={c} "
                                      f"(C//r = {c // r}) in {FLAGS['shapes']}")

    def check_case_timeout(self) -> None:
        """A time limit no longer than what each worker call warms up and samples for would kill every
        case, and each kill starts a fresh worker whose first case also pays its imports: ``--case-timeout
        1`` timed out every case of a default run on the 2-core VM."""
        if self.case_timeout is None:
            return
        busy = self.timing.warmup_s + self.timing.max_time_s / self.processes
        if self.case_timeout <= busy:
            share = f" / {FLAGS['processes']} {self.processes}" if self.processes > 1 else ""
            raise ConfigError(f"{FLAGS['case_timeout']} {self.case_timeout:g} s would kill every case: each warms up "
                              f"and samples for {busy:g} s ({FLAGS['warmup_s']} {self.timing.warmup_s:g} + "
                              f"{FLAGS['max_time_s']} {self.timing.max_time_s:g}{share}) before its other passes; "
                              "give several times that")

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly record of the configuration (for env.json)."""
        d = dataclasses.asdict(self)
        d["explicit_variants"] = sorted(self.explicit_variants)
        return d




def named(name: str, parse: Callable[[], T]) -> T:
    """``parse()``, its ``ConfigError`` prefixed with the option's flag unless it names it already."""
    try:
        return parse()
    except ConfigError as exc:
        if FLAGS[name] in str(exc):
            raise
        raise ConfigError(f"{FLAGS[name]}: {exc}") from None


#: The longest warm-up a case may ask for: ten minutes, past any clock's or cache's settling.
MAX_WARMUP_S = 600.0
#: The longest time budget a case may ask for (an hour), and the most samples (each kept, 8 bytes, in
#: its row): the first Ctrl-C waits for the case in progress, so a case of 1e9 s or 1e9 samples ran
#: on past it, and only a second one ended the run.
MAX_TIME_S = 3600.0
MAX_SAMPLES = 10_000_000


def timing_policy(merged: Mapping[str, Any], base: TimingPolicy) -> TimingPolicy:
    """The timing options, each checked and named by its flag; then ``TimingPolicy``'s own checks,
    whose ``ValueError`` becomes a ``ConfigError`` naming the flags too."""
    value = lambda name: merged.get(name, getattr(base, name))  # noqa: E731
    min_samples = parse_int(value("min_samples"), FLAGS["min_samples"], maximum=MAX_SAMPLES)
    max_samples = parse_int(value("max_samples"), FLAGS["max_samples"], maximum=MAX_SAMPLES)
    if min_samples > max_samples:
        raise ConfigError(f"{FLAGS['min_samples']} {min_samples} exceeds {FLAGS['max_samples']} {max_samples}")
    try:
        return TimingPolicy(
            # seconds per case, before any sample: --warmup 1e9 ran on past the first Ctrl-C, which waits for the case
            warmup_s=parse_float(value("warmup_s"), FLAGS["warmup_s"], minimum=0.0, maximum=MAX_WARMUP_S),
            min_samples=min_samples,
            max_samples=max_samples,
            rel_ci=parse_float(value("rel_ci"), FLAGS["rel_ci"], minimum=1e-6, below=1.0),
            max_time_s=parse_float(value("max_time_s"), FLAGS["max_time_s"], minimum=1e-3, maximum=MAX_TIME_S),
        )
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        message = str(exc)
        for name in TIMING_OPTIONS:
            message = message.replace(name, FLAGS[name])
        raise ConfigError(f"timing options: {message}") from None


def fault_options(merged: Mapping[str, Any]) -> dict[str, Any]:
    """The options of faults and scaling out, validated: a time limit implies isolation (only a
    child process can be killed)."""
    timeout = merged.get("case_timeout")
    # the longest wait Python's queues and locks take (about 292 years): beyond it they raise
    timeout = None if timeout is None else parse_float(timeout, FLAGS["case_timeout"], minimum=1e-3,
                                                       maximum=threading.TIMEOUT_MAX)
    try:
        shard = None if merged.get("shard") is None else Shard.parse(merged["shard"])
    except ValueError as exc:
        raise ConfigError(str(exc) if FLAGS["shard"] in str(exc) else f"{FLAGS['shard']}: {exc}") from None
    switch = lambda name: one(parse_bools(merged.get(name, False), FLAGS[name]), FLAGS[name])  # noqa: E731
    return {
        "isolate": switch("isolate") or timeout is not None,
        "case_timeout": timeout,
        "oom_retry": switch("oom_retry"),
        "shard": shard,
        "processes": parse_int(merged.get("processes", 1), FLAGS["processes"], maximum=MAX_PROCESSES),
        "overwrite": switch("overwrite"),
    }


def parse_out(value: Any) -> str | None:
    """The run folder; an empty name would be the current directory, never what was meant."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):  # a config's `out = 5` made a folder "5", `true` one "True"
        raise ConfigError(f"{FLAGS['out']} must be a folder name, got {value!r}")
    text = str(value)
    if not text.strip():
        raise ConfigError(f"{FLAGS['out']} is empty; name a run folder, e.g. results/runs/mine")
    return text


def one(values: tuple[Any, ...], what: str) -> Any:
    """The single value of an option that takes one (``--cache``, ``--steady-malloc``)."""
    if len(values) != 1:
        raise ConfigError(f"{what} takes one value, got {', '.join(map(str, values))}")
    return values[0]


def read_toml(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file, by name; a key may be spelt as its flag (``batch-sizes``, ``max-time``)
    or as its keyword (``batch_sizes``, ``max_time_s``)."""
    if not str(path).strip():
        raise ConfigError("--config is empty; name a TOML file")
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config {str(p)!r}: the file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {str(p)!r}: the file cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {str(p)!r} is not valid TOML: {exc}") from None
    table = data.get("sweep", data)
    if not isinstance(table, Mapping):
        raise ConfigError(f"--config {str(p)!r}: [sweep] must be a table")
    others = [k for k, v in data.items() if k != "sweep" and isinstance(v, Mapping)]
    options = [k for k in others if option_name(k) is not None]
    if options:  # `shard = {index = 1}` or a [shard] table: an option given a table for its value
        raise ConfigError(f"--config {str(p)!r}: {options[0]!r} is given a table; it takes a value, "
                          f"as {FLAGS[option_name(options[0]) or '']} does")  # fmt: skip
    if others:  # a misspelt [sweep], or a table that would be silently ignored
        raise ConfigError(f"--config {str(p)!r}: [{others[0]}] is not read; options go either at the top "
                          "level or under [sweep]")  # fmt: skip
    outside = [k for k in data if k != "sweep"] if "sweep" in data else []
    if outside:
        raise ConfigError(f"--config {str(p)!r}: {outside[0]!r} is outside [sweep] and would be ignored; "
                          "put every option under [sweep], or none")  # fmt: skip
    try:
        return by_name(table, "key", sep="-")
    except ConfigError as exc:
        raise ConfigError(f"--config {str(p)!r}: {exc}") from None


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when there is one; asking for CUDA where there is none is an error."""
    device = device.strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device: unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"--device {device}: CUDA is not available here ({why})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type != "cpu":
        raise ConfigError(f"--device: unsupported device {device!r}; use cpu, cuda or cuda:N")
    return "cpu" if dev.type == "cpu" else str(dev)  # one CPU device: cpu:0 is cpu, as the rows say


def _items(value: Any) -> list[Any]:
    """A flat list from a comma-separated string, a scalar or an iterable of either. An empty item
    between two others is refused (``1,,32``: a value lost in typing, and the sweep ran without it);
    a comma at either end is not."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if ",," in ",".join(parts).strip(","):
            raise ConfigError(f"{value!r} has an empty item between two commas")
        return [p for p in parts if p]
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        out: list[Any] = []
        for v in value:
            out.extend(_items(v) if isinstance(v, str) else [v])
        return out
    return [value]


def parse_strings(value: Any, what: str) -> list[str]:
    items = [str(v) for v in _items(value)]
    if not items:
        raise ConfigError(f"no {what} given")
    return items


def parse_int(value: Any, what: str, minimum: int = 1, maximum: int | None = None) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{what} must be ≥ {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{what} must be ≤ {maximum}, got {number}")
    return number


def parse_float(value: Any, what: str, minimum: float, below: float | None = None,
                maximum: float | None = None) -> float:
    """A finite number ≥ ``minimum`` (and < ``below``, ≤ ``maximum``): NaN and infinity are never a setting."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    if number < minimum:
        raise ConfigError(f"{what} must be ≥ {minimum:g}, got {value!r}")
    if below is not None and number >= below:
        raise ConfigError(f"{what} must be below {below:g} (a fraction, e.g. 0.01), got {value!r}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{what} must be ≤ {maximum:g}, got {value!r}")
    return number


def parse_ints(value: Any, what: str) -> tuple[int, ...]:
    items = _items(value)
    if not items:
        raise ConfigError(f"no {what} given")
    return tuple(dict.fromkeys(parse_int(v, what) for v in items))


def parse_bools(value: Any, what: str) -> tuple[bool, ...]:
    truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    out = []
    for v in _items(value):
        if isinstance(v, bool):
            out.append(v)
        elif str(v).strip().lower() in truth:
            out.append(truth[str(v).strip().lower()])
        else:
            raise ConfigError(f"{what} must be true or false, got {v!r}")
    if not out:
        raise ConfigError(f"no {what} given")
    return tuple(dict.fromkeys(out))


def parse_choices(value: Any, choices: Iterable[str], what: str) -> tuple[str, ...]:
    allowed = tuple(choices)
    items = [str(v).strip().lower() for v in _items(value)]
    if not items:
        raise ConfigError(f"no {what} given")
    for item in items:
        if item not in allowed:
            raise ConfigError(f"unknown {what} {item!r}; choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(items))


def parse_shape(text: Any) -> Shape:
    """``"32x64x64"`` (C x H x W) or a 3-item list to a positive (C, H, W) triple."""
    parts = text if isinstance(text, (list, tuple)) else str(text).lower().replace("×", "x").split("x")
    if len(parts) != 3:
        raise ConfigError(f"malformed shape {text!r}: expected CxHxW, e.g. 32x64x64")
    try:
        c, h, w = (int(str(p).strip()) for p in parts)
    except ValueError:
        raise ConfigError(f"malformed shape {text!r}: expected CxHxW with integers, e.g. 32x64x64") from None
    if min(c, h, w) < 1:
        raise ConfigError(f"shape {text!r} has a zero or negative size")
    return (c, h, w)


def parse_shapes(value: Any) -> tuple[Shape, ...]:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        items: list[Any] = list(value)
    else:
        items = _items(value)
    if not items:
        raise ConfigError("no shape given")
    return tuple(dict.fromkeys(parse_shape(v) for v in items))


def parse_contexts(value: Any, device: str) -> tuple[str, ...]:
    """Context names, each registered and able to run here (smp importable, CUDA for a CUDA graph)."""
    from variants.contexts import all_contexts, unknown_context_message

    names = tuple(dict.fromkeys(str(v) for v in _items(value)))
    if not names and isinstance(value, (str, list)):  # "--context $NET" or `context = [$NETS]` with nothing in it
        raise ConfigError(f"no context named in {value!r}; leave the option out to time the blocks alone")
    known = all_contexts() if names else {}
    for name in names:
        if name not in known:
            raise ConfigError(unknown_context_message(name, known))
        why = known[name].unavailable() or known[name].unsupported(device, "forward")
        if why:
            raise ConfigError(f"{name} is unavailable here: {why}")
    return names


def network_default_shapes(contexts: Sequence[str], shapes: Sequence[Shape]) -> tuple[Shape, ...]:
    """The default shapes with the channels of the networks' input, when the networks agree on it."""
    from variants.contexts import get_context

    channels = {get_context(n).in_channels for n in contexts}
    if len(channels) != 1:
        return tuple(shapes)  # networks of different inputs: --shapes must say which (one line says so)
    (c,) = channels
    return tuple((c, h, w) for _, h, w in shapes)


def context_settings(name: str) -> str:
    """What a context fixes, as flags: ``--reductions 16 --fusions add --bias true``."""
    from variants.contexts import get_context

    c = get_context(name)
    return f"{FLAGS['reductions']} {c.reduction} {FLAGS['fusions']} {c.fusion} {FLAGS['biases']} {str(c.bias).lower()}"


def check_network_shapes(name: str, shapes: Sequence[Shape]) -> None:
    """Each shape must be the network's input: its channels, and a size it can halve as it must."""
    from variants.contexts import get_context

    context = get_context(name)
    for c, h, w in shapes:
        if c != context.in_channels:
            raise ConfigError(f"{FLAGS['shapes']}: {name} takes {context.in_channels} input channels, not {c} "
                              f"(shapes are the network's input, e.g. {context.in_channels}x128x128)")
        m = context.size_multiple
        if h % m or w % m:
            raise ConfigError(f"{FLAGS['shapes']}: {name} needs height and width that are multiples of {m}, "
                              f"got {c}x{h}x{w}")


def expand_variants(patterns: list[str]) -> tuple[list[str], list[str]]:
    """Glob patterns to registered names (in registry order); also the names spelled out exactly."""
    known = all_variants()
    names: list[str] = []
    explicit: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matched = [n for n in known if fnmatch.fnmatchcase(n, pattern)]
            if not matched:
                raise ConfigError(f"no variant matches {pattern!r}; known: {', '.join(sorted(known))}")
        else:
            try:
                found = find_variant(pattern)  # a registered name, or a form of one (graphed_<name>)
            except ValueError as exc:
                raise ConfigError(f"{FLAGS['variants']}: {exc}") from None
            if found is None:
                raise ConfigError(unknown_variant_message(pattern, known))
            matched = [pattern]
            explicit.append(pattern)
        names.extend(m for m in matched if m not in names)
    return names, explicit
