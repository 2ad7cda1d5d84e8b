"""What must match between two runs whose timings are put side by side, read from their env.json.

``ENVIRONMENT`` is the one list: ``compare`` warns of each fact that differs and says how to make a
comparable run (and judges no slowdown where a sweep setting differs), ``merge`` refuses runs that
differ, and ``run --resume`` warns.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.results.store import key_value


def config_of(env: Mapping[str, Any]) -> Mapping[str, Any]:
    """An env.json's sweep settings; none where ``config`` is not an object (a hand-edited ``"x"``
    ended compare in an AttributeError)."""
    config = env.get("config")
    return config if isinstance(config, Mapping) else {}


@dataclass(frozen=True)
class EnvFact:
    """A fact about where a run was measured that decides whether two runs' timings belong together."""

    key: str  # in env.json
    words: str  # how a message names it
    #: "cpu" or "cuda": it only matters on that kind of device (None: on both).
    device: str | None = None
    #: ``compare`` warns when it differs (the timings may not be comparable).
    compare: bool = True
    #: ``merge`` refuses runs where it differs, and ``run --resume`` warns.
    merge: bool = True
    #: Whether only runs inside networks (``--context``) depend on it.
    networks: bool = False
    #: Whether it is a setting of the sweep (env.json's ``config``), and its value where a run
    #: made before the setting existed does not record it.
    in_config: bool = False
    default: Any = None
    #: The ``run`` flag that sets it, when a rerun can match it (``--threads``); else None.
    flag: str | None = None
    #: How to make a comparable run when no flag sets it.
    remedy: str = "compare runs made in the same environment, or save a baseline in this one (run --save-baseline)"

    def value(self, env: Mapping[str, Any]) -> Any:
        """Its value in an env.json."""
        where = config_of(env) if self.in_config else env
        return where.get(self.key, self.default)

    def advice(self, baseline: Any, current: Any) -> str:
        """One plain line: what differs and how to make a run comparable with the baseline."""
        verb = "differ" if self.words.endswith("s") else "differs"
        if self.flag is not None and baseline is not None:
            value = str(baseline).lower() if isinstance(baseline, bool) else baseline
            remedy = f"rerun with {self.flag} {value}"
        else:
            remedy = self.remedy
        return f"{self.words} {verb}: baseline {_shown(baseline)}, this run {_shown(current)}; {remedy}"


def _shown(value: Any) -> str:
    return "unknown" if value is None else str(value)


_SAME_MACHINE = ("timings from another machine are not comparable: compare runs from one machine, or save a "
                 "baseline on this one (run --save-baseline)")


#: The one list of what must match between runs put side by side.
ENVIRONMENT: tuple[EnvFact, ...] = (
    EnvFact("device", "device type", compare=False),  # compare refuses different devices outright
    EnvFact("gpu_name", "GPU model", "cuda", remedy=_SAME_MACHINE),
    EnvFact("cpu_model", "CPU model", "cpu", remedy=_SAME_MACHINE),
    EnvFact("torch", "torch version", remedy="install the baseline's torch, or save a baseline with this one "
                                             "(run --save-baseline)"),
    EnvFact("cuda", "CUDA version", "cuda", remedy="install the baseline's CUDA build of torch, or save a baseline "
                                                   "with this one (run --save-baseline)"),
    EnvFact("triton", "Triton version", compare=False),
    EnvFact("smp", "segmentation_models_pytorch version", networks=True,
            remedy="install the baseline's segmentation_models_pytorch: its networks change between releases"),
    EnvFact("torchvision", "torchvision version", networks=True,
            remedy="install the baseline's torchvision: the networks' encoders come from it"),
    # float32 convolutions on CUDA run in TF32 where it is on (cuDNN's default): several times faster
    EnvFact("tf32", "TF32 setting", "cuda", remedy="set torch.backends.cudnn.allow_tf32 and "
                                                   "torch.backends.cuda.matmul.allow_tf32 as the baseline had them"),
    EnvFact("hostname", "host", merge=False, remedy="run on the baseline's host, or save a baseline on this one "
                                                    "(run --save-baseline)"),
    # merge checks the sweep's threads setting
    EnvFact("threads", "torch threads", "cpu", merge=False, flag="--threads"),
    EnvFact("steady_malloc", "steady CPU allocator", "cpu", merge=False, flag="--steady-malloc"),
    # pooled from several processes, a median moves less between runs than one process's does
    EnvFact("processes", "worker processes per case", merge=False, flag="--processes", in_config=True, default=1),
    # on CUDA a hot L2 makes a call read faster than a cold one: no slowdown, no speed-up (merge checks it)
    EnvFact("cache", "L2 cache mode", "cuda", merge=False, flag="--cache", in_config=True,
            default="cold"),
    # a plugin may run under a built-in's name (eager, what every speedup is over): only the names
    # both runs ran are compared, and runs from before it was recorded (2026-11-28) are unknown, not other
    EnvFact("variant_sources", "variants' code",
            remedy="run each name from the same code: install the plugins the baseline ran, or save a baseline "
                   "with these (run --save-baseline)"),
)


def shared_sources(before: Any, after: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The variant sources of the names both runs ran that differ, as (baseline's, current's)."""
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return {}, {}
    differ = [name for name in before if name in after and before[name] != after[name]]
    return {n: before[n] for n in differ}, {n: after[n] for n in differ}


def device_type(device: Any) -> str | None:
    """``cuda`` for ``cuda:1``: which of a machine's GPUs ran a case is no part of what the case is
    (the GPU's model is, and ``gpu_name`` says it), so runs on ``cuda:0`` and ``cuda`` match."""
    value = key_value(device)
    return None if value is None else str(value).split(":")[0]


def env_differences(a: Mapping[str, Any], b: Mapping[str, Any], device: str | None,
                    purpose: str) -> list[tuple[EnvFact, Any, Any]]:
    """The facts of ``ENVIRONMENT`` used for ``purpose`` (``compare``/``merge``) on which two env.json
    differ; ``device`` (``cuda:1`` or ``cuda``) picks the facts of its type."""
    if purpose == "compare" and (not a or not b):  # no env.json, or an unreadable one: the loader's note
        return []  # says its environment was not checked; its facts' defaults would read as known values
    device = device_type(device)
    networks = any(config_of(env).get("contexts") for env in (a, b))
    out = []
    for fact in ENVIRONMENT:
        if not getattr(fact, purpose) or (fact.device is not None and device is not None and fact.device != device):
            continue
        if fact.networks and not networks:  # a block alone never runs the networks' libraries
            continue
        before, after = fact.value(a), fact.value(b)
        if fact.networks and (before is None or after is None):  # recorded since 2026-11-27: unknown, not other
            continue
        if fact.key == "variant_sources":
            before, after = shared_sources(before, after)
        same = device_type(before) == device_type(after) if fact.key == "device" else before == after
        if not same:
            out.append((fact, before, after))
    return out


def env_advice(baseline: Mapping[str, Any], current: Mapping[str, Any], device: str | None) -> list[str]:
    """For ``compare``: one plain line per fact that differs, saying how to make a comparable run."""
    return [fact.advice(b, c) for fact, b, c in env_differences(baseline, current, device, "compare")]
