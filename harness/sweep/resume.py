"""``run --resume RUN``: finish a sweep that was killed, interrupted or ran out of time.

The sweep is the one stored in RUN's env.json; flags given now may change only how a case survives
a crash, hang or OOM (``MAY_CHANGE``), never the sweep or how it measures. The cases already in
RUN's results.jsonl (matched by their key, whatever their status) are skipped, and the rest are
appended to the same file. A last line cut off by a kill is dropped with a warning and the file is
truncated to its last whole row, so the rows appended next start on a line of their own.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.results.environment import env_differences
from harness.results.record import case_of
from harness.results.store import ENV_JSON, RESULTS_JSONL, RunFolder, read_env, run_folder_of
from harness.sweep.cases import Case
from harness.sweep.config import ConfigError, SweepConfig, read_toml
from harness.sweep.options import FLAGS, RESUMED_OPTIONS, TIMING_OPTIONS


def stored_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """env.json's ``config`` (``SweepConfig.as_dict``) as options for ``SweepConfig.build``; not
    where or how that run wrote (``--out``, ``--overwrite``)."""
    options = {k: v for k, v in config.items() if k in RESUMED_OPTIONS}
    timing = config.get("timing") or {}
    options |= {k: timing[k] for k in TIMING_OPTIONS if k in timing}
    # a block sweep stores no contexts as []: given back, it would read as a context list left empty
    return {k: v for k, v in options.items() if v is not None and not (k == "contexts" and not v)}


def config_for(run: str | Path, config_file: str | Path | None, options: Mapping[str, Any]) -> SweepConfig:
    """The sweep to resume: RUN's stored one ← ``config_file`` ← ``options``, written into RUN."""
    path = run_folder_of(run)  # RUN/results.jsonl means RUN
    if path.is_file():  # results.csv or report.md, tab-completed: name the folder it is in
        raise ConfigError(f"--resume {str(path)!r} is a file; give its run folder: --resume {str(path.parent)!r}")
    if not path.is_dir():
        raise ConfigError(f"--resume {str(path)!r}: no such run folder")
    env_path = path / ENV_JSON
    if not env_path.exists() and not (path / RESULTS_JSONL).exists():
        raise ConfigError(f"--resume {str(path)!r}: not a run folder (no env.json or results.jsonl)")
    out = options.get("out")
    if out is not None and Path(out).resolve() != path.resolve():
        raise ConfigError(f"--resume appends to {str(path)!r} itself; drop --out {str(out)!r}")
    try:
        stored = read_env(env_path).get("config")
        if not stored:  # a sweep run with every default would still have stored them all
            raise ConfigError(f"--resume {str(path)!r}: no sweep is stored in it (env.json has no config), so what "
                              "is left to run is unknown; start a new run")  # fmt: skip
        sweep = stored_options(stored)
        named = frozenset(stored.get("explicit_variants", ()))
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"--resume {str(path)!r}: env.json cannot be read: {exc}") from None
    given = {k: v for k, v in options.items() if v is not None}
    if "variants" not in given:  # else "--variants: unknown variant", a flag the user never gave
        from variants.registry import find_variant

        def known(name: str) -> bool:  # registered, or a form of a registered one (graphed_<name>)
            try:
                return find_variant(name) is not None
            except ValueError:
                return False

        gone = [v for v in sweep.get("variants") or [] if not known(v)]  # env.json stores a list of names
        if gone:
            raise ConfigError(f"--resume {str(path)!r}: its sweep names {', '.join(map(repr, gone))}, no longer "
                              "registered here (its plugin uninstalled, or failing to import: see `python -m "
                              "harness list`); install it again, or start a new run")  # fmt: skip
    cfg = SweepConfig.build(None, **(sweep | (read_toml(config_file) if config_file is not None else {}) | given
                                     | {"out": str(path)}))  # fmt: skip
    check_unchanged(SweepConfig.build(None, **(sweep | {"out": str(path)})), cfg)
    if "variants" not in given and "explicit_variants" in stored:
        # The stored names are all spelled out; which of them the user named is what was stored.
        cfg = dataclasses.replace(cfg, explicit_variants=named)
    return cfg


#: What a resume may change: how a case survives a crash, hang or OOM, never what is measured or how.
MAY_CHANGE: frozenset[str] = frozenset({"isolate", "case_timeout", "oom_retry"})


def _value(cfg: SweepConfig, name: str) -> Any:
    value = getattr(cfg.timing, name) if name in TIMING_OPTIONS else getattr(cfg, name)
    return frozenset(value) if isinstance(value, tuple) else value  # a list's order is no part of the sweep


def check_unchanged(stored: SweepConfig, resumed: SweepConfig) -> None:
    """Refuse a resume whose flags (or config file) change the sweep or how it measures: the rows kept
    were taken under the stored settings, so the run would mix two sweeps (the cases of the stored
    one left out would stay unfinished, and env.json describe only the new one)."""
    for name in RESUMED_OPTIONS:
        if name in MAY_CHANGE or _value(stored, name) == _value(resumed, name):
            continue
        before, now = (_shown(getattr(c.timing, name) if name in TIMING_OPTIONS else getattr(c, name))
                       for c in (stored, resumed))  # fmt: skip
        raise ConfigError(f"--resume finishes the run's own sweep, but {FLAGS[name]} {now} differs from its {before}; "
                          f"drop {FLAGS[name]}, or start a new run in another --out")


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join("x".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in value)
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def check_environment(stored: Mapping[str, Any], device: str) -> None:
    """Warn when the rows kept were measured elsewhere (a requeued job on another node): the run's
    env.json will describe only the environment of the rows added now."""
    from harness.measure import envinfo

    if not stored:
        return
    now = envinfo.collect(device)
    for fact, before, after in env_differences(stored, now, now.get("device"), "merge"):
        warnings.warn(f"resuming in another environment: {fact.key} was {before!r}, now {after!r}; "
                      "the run mixes rows from both", RuntimeWarning, stacklevel=3)  # fmt: skip


def split(folder: RunFolder, cases: Sequence[Case],
          device: str | None = None) -> tuple[list[dict[str, Any]], list[Case]]:
    """The rows RUN already holds (the file repaired first) and the cases still to run; with
    ``device``, also warn if RUN was measured in another environment."""
    if device is not None:
        check_environment(folder.read_env(), device)
    folder.repair()
    rows = folder.rows()
    try:  # read as cases: an old row without bias or context is the block alone, without bias
        done = {case_of(r) for r in rows}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--resume: {folder.jsonl}: a row's case cannot be read ({exc})") from None
    return rows, [c for c in cases if c not in done]


def split_sessions(kept: Sequence[Mapping[str, Any]], added: Sequence[Mapping[str, Any]]) -> str | None:
    """A line for report.md when a configuration's variants were timed some before the run was
    resumed and some after (a requeued job may resume hours later, elsewhere): their speedups then
    compare times measured apart, not side by side, as ``merge`` says of runs. None when none is."""
    def configuration(row: Mapping[str, Any]) -> Case:
        return dataclasses.replace(case_of(row), variant="")

    # a speedup sets two timed variants side by side: a row skipped or failed on one side splits nothing
    before = {configuration(r) for r in kept if r.get("status") == "ok"}
    split = [c for c in dict.fromkeys(configuration(r) for r in added if r.get("status") == "ok") if c in before]
    if not split:
        return None
    return (f"{len(split)} configuration(s) hold variants timed before the run was resumed and after it, e.g. "
            f"{split[0].label.strip()}: their speedups compare times measured apart, not side by side")

