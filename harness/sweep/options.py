"""The sweep's options, in one table: the CLI's flags, the config file's keys, ``harness.run``'s
keywords and what ``run --resume`` reads back from env.json all come from ``OPTIONS``.

A config file, and ``harness.run``, may spell an option as its flag (``batch-sizes``, ``bias``,
``max-time``) or as its keyword (``batch_sizes``, ``biases``, ``max_time_s``): ``SPELLINGS``.

This module imports nothing heavy (no torch): ``python -m harness --help`` builds its parser from it.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """Bad input from the user: the message is one line that names the problem (and the flag)."""


@dataclass(frozen=True)
class Option:
    """One option of a sweep."""

    #: The keyword of ``harness.run`` and the field of ``SweepConfig`` (``SweepConfig.timing``'s when ``timing``).
    name: str
    #: The command-line flag.
    flag: str
    help: str
    #: Part of the timing policy (stored under env.json's ``config.timing``).
    timing: bool = False
    #: A flag that takes no value (``--isolate``).
    switch: bool = False
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    #: The CLI's group of flags: None for the sweep itself.
    group: str | None = None
    #: Where and how this run writes, not what it measures: ``run --resume`` does not read it back.
    per_run: bool = False

    @property
    def key(self) -> str:
        """The flag without its dashes, as a config file may spell it."""
        return self.flag.removeprefix("--")


FAULTS = "faults and scaling out"
OPTIONS: tuple[Option, ...] = (
    Option("device", "--device", "cpu, cuda or cuda:N (default: cuda when available, else cpu)"),
    Option("variants", "--variants", "comma-separated names or globs, e.g. 'eager*,compile'"),
    Option("shapes", "--shapes", "comma-separated CxHxW, e.g. 32x64x64,64x128x128"),
    Option("batch_sizes", "--batch-sizes", "comma-separated, e.g. 1,8,32"),
    Option("dtypes", "--dtypes", "float32, float16, bfloat16, float64 (comma-separated)"),
    Option("modes", "--modes", "forward (no autograd) and/or train (forward + backward)"),
    Option("reductions", "--reductions", "channel reductions r (C//r hidden channels), e.g. 2,16"),
    Option("fusions", "--fusions", "add, max, mul, gate, concat (comma-separated)"),
    Option("biases", "--bias", "false, true or both: false,true"),
    Option("contexts", "--context",
           "run the variants inside a network, every scSE block swapped: unet, unet_compiled, unet_graphed "
           "(comma-separated; see `harness list`)"),
    Option("threads", "--threads", "torch CPU threads for the run (default: torch's own)"),
    Option("steady_malloc", "--steady-malloc",
           "CPU: keep glibc malloc from returning memory to the OS between calls (default true)"),
    Option("cache", "--cache", "CUDA: flush L2 before each call (cold, default) or not", choices=("cold", "hot")),
    Option("warmup_s", "--warmup", "warm-up seconds per case (default 0.1)", timing=True),
    Option("min_samples", "--min-samples", "samples before the CI test may stop (default 10)", timing=True),
    Option("max_samples", "--max-samples", "hard cap on samples per case (default 2000)", timing=True),
    Option("rel_ci", "--rel-ci", "stop when the median's CI, checked at 99.5%%, is within ± this (default 0.01)",
           timing=True),
    Option("max_time_s", "--max-time", "time budget per case in seconds (default 2)", timing=True),
    Option("processes", "--processes",
           "spread each case's samples over K worker processes (started once, reused) and pool them, a "
           "configuration's variants measured round by round (default 1)",
           metavar="K"),
    Option("seed", "--seed", "seed for weights and inputs (default 0)"),
    Option("out", "--out", "run folder (default results/runs/<time>-<device>)", per_run=True),
    Option("overwrite", "--overwrite",
           "replace the run already in --out (its files only); without it such a folder is refused",
           switch=True, per_run=True),
    Option("isolate", "--isolate", "run cases in a worker process: a crash or hang becomes a crashed/timeout row",
           switch=True, group=FAULTS),
    Option("case_timeout", "--case-timeout",
           "kill a case's worker after S seconds (status=timeout); implies --isolate (default 600)", metavar="S",
           group=FAULTS),
    Option("oom_retry", "--oom-retry", "on oom, retry at half the batch; batch_run records the batch measured",
           switch=True, group=FAULTS),
    Option("shard", "--shard", "run only shard K of N (balanced by estimated cost)", metavar="K/N", group=FAULTS),
)  # fmt: skip
OPTION_NAMES: tuple[str, ...] = tuple(o.name for o in OPTIONS)
TIMING_OPTIONS: tuple[str, ...] = tuple(o.name for o in OPTIONS if o.timing)
#: The options ``run --resume`` reads back from env.json (not where or how the run writes).
RESUMED_OPTIONS: tuple[str, ...] = tuple(o.name for o in OPTIONS if not o.per_run)
#: Each option's flag, by name: messages name an option as the user types it.
FLAGS: dict[str, str] = {o.name: o.flag for o in OPTIONS}
#: Every spelling a config file or ``harness.run`` may use for an option (its flag's or its keyword's,
#: dashes and underscores alike) → its name. The one list of what is accepted, and of what errors show.
SPELLINGS: dict[str, str] = {
    spelling.replace("-", "_"): o.name for o in OPTIONS for spelling in (o.key, o.name)
}


def as_keywords(message: str, given: Iterable[str] = ()) -> str:
    """``message`` with each flag of a sweep option (``--batch-sizes``), and ``--config`` and
    ``--resume``, written as a Python caller names it: the keyword it gave (``batch_size``), else
    the option's name (``batch_sizes``)."""
    typed = {option_name(key): key for key in given}
    keywords = {flag: typed.get(name) or name for name, flag in FLAGS.items()} | {"--config": "config",
                                                                                 "--resume": "resume"}
    switches = {o.flag for o in OPTIONS if o.switch}
    message = re.sub(r"give (--[a-z][a-z0-9-]*)",  # "give --overwrite": a switch is given as name=True
                     lambda m: f"give {keywords[m.group(1)]}=True" if m.group(1) in switches else m.group(), message)
    return re.sub(r"--[a-z][a-z0-9-]*", lambda m: keywords.get(m.group(), m.group()), message)


def option_name(key: str) -> str | None:
    """The option a config key or keyword names (``max-time``, ``max_time_s``, ``bias``), or None."""
    return SPELLINGS.get(key.strip().replace("-", "_"))


def known_spellings(sep: str = "_") -> str:
    """Every accepted spelling, an option's together (``bias/biases``), words joined by ``sep``."""
    groups: dict[str, list[str]] = {}
    for spelling, name in SPELLINGS.items():
        groups.setdefault(name, []).append(spelling.replace("_", sep))
    return ", ".join("/".join(group) for group in groups.values())


#: ``run`` flags that say how to run a sweep, not what it is: given on the command line only.
RUN_ONLY_FLAGS: tuple[str, ...] = ("quiet", "profile", "save-baseline", "resume")


def unknown_option_message(key: str, what: str = "option", sep: str = "_") -> str:
    """One line naming the unknown option, the nearest accepted spelling and all of them; for a
    config key that is a flag of the command line only (``quiet``), where to give it instead."""
    flag = key.strip().replace("_", "-")
    if flag in RUN_ONLY_FLAGS and what == "key":  # a config file's; Python has keywords of its own
        return f"{what} {key!r} is not a sweep setting: give --{flag} on the command line"
    close = difflib.get_close_matches(key.strip().replace("-", "_"), list(SPELLINGS), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0].replace('_', sep)}?" if close else ";"
    return f"unknown {what} {key!r}{hint} known: {known_spellings(sep)}"


def by_name(options: Mapping[str, Any], what: str = "option", sep: str = "_") -> dict[str, Any]:
    """``options`` keyed by option name, whichever accepted spelling each came in (``max_time`` →
    ``max_time_s``), so that Python keywords and config keys are read alike. None means "not given"
    and is dropped; an unknown spelling, or one option given twice, is a ``ConfigError``."""
    out: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    for key, value in options.items():
        name = option_name(str(key))
        if name is None:
            raise ConfigError(unknown_option_message(str(key), what, sep))
        if value is None:
            continue
        if name in out:
            raise ConfigError(f"{what}s {spelt[name]!r} and {str(key)!r} are the same option ({FLAGS[name]}); "
                              "give one")
        out[name], spelt[name] = value, str(key)
    return out
