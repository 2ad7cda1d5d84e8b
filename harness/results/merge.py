"""``python -m harness merge RUN... --out MERGED``: join run folders (shards, resumed pieces) into one.

Merging refuses, with one line naming the case or the setting and both runs, anything that would
make the merged run say something no single run measured:

- a case (by its key) in two runs, or twice in one: a *duplicate* when both rows agree, a
  *conflict* when they do not; either way one of them would be silently dropped;
- runs measured under different settings: another seed, timing policy, cache policy or thread
  count, or another device type, GPU model, torch, CUDA or Triton version, TF32 setting (and CPU
  model for CPU runs). ``allow_mixed_env`` turns the environment differences into warnings.

The inputs are only read. A last line cut off by a kill is skipped with a warning (``run --resume``
repairs a run folder in place). Every input's env.json and rows are read before any two are compared:
a folder that is no run of this harness is named as such, not as a setting of None.

What the merged run's readers must know (a configuration split between runs, environments waved
through by ``allow_mixed_env``) is warned of and kept in its env.json under ``MERGE_WARNINGS``,
which report.md quotes at its top, also when ``report`` rebuilds it.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.results.environment import env_differences
from harness.results.report import (
    CASES_PLANNED,
    MERGE_WARNINGS,
    UNFINISHED,
    VARIANT_DESCRIPTIONS,
    cases_left,
    write_reports,
)
from harness.results.store import (
    ENV_JSON,
    ERRORS_LOG,
    RESULTS_JSONL,
    RunFolder,
    read_env,
    row_key,
    run_folder_of,
    to_frame,
)
from harness.sweep.cases import KEY_COLUMNS
from harness.sweep.config import ConfigError

#: Sweep settings every merged run must share (keys of env.json's ``config``).
CONFIG_MUST_MATCH: tuple[str, ...] = ("seed", "timing", "cache", "threads", "steady_malloc")
#: Config lists that may differ between merged runs; the merged env.json records their union.
SWEPT: tuple[str, ...] = ("variants", "shapes", "batch_sizes", "dtypes", "modes", "reductions", "fusions", "biases",
                          "explicit_variants", "contexts")
#: Fields that say whether two rows of one case agree (a duplicate) or not (a conflict).
RESULT_FIELDS: tuple[str, ...] = ("status", "reason", "median_ms", "n_samples", "max_rel_err")


class MergeError(ConfigError):
    """Runs that cannot be merged: one line naming the case or setting and the runs involved."""


@dataclass(frozen=True)
class MergeResult:
    out: Path
    runs: tuple[Path, ...]
    rows: int


def _label(row: Mapping[str, Any]) -> str:
    where = f"{row['context']}/" if row.get("context") else ""  # unet/eager and unet_compiled/eager differ
    shape = f"{row.get('channels')}x{row.get('height')}x{row.get('width')}"
    return (f"{where}{row.get('variant')} {shape} b{row.get('batch')} "
            f"{row.get('dtype')} {row.get('mode')} r{row.get('reduction')} {row.get('fusion')} bias={row.get('bias')} "
            f"on {row.get('device')}")  # fmt: skip


def _read_env(run: Path) -> dict[str, Any]:
    """The run's env.json, refused unless ``harness run`` could have written it: every check of
    settings reads its config, and a missing one read as a seed of None."""
    if not (run / ENV_JSON).exists():
        raise MergeError(f"{run}: no {ENV_JSON}: not a run folder made by `harness run` (or its {ENV_JSON} "
                         "was lost), so its settings cannot be checked")  # fmt: skip
    try:
        env = read_env(run / ENV_JSON)
    except OSError as exc:
        raise MergeError(str(exc)) from None
    config = env.get("config")
    if config is not None and not isinstance(config, Mapping):  # hand-damaged: every check below reads it
        raise MergeError(f"{run / ENV_JSON}: its config is {config!r}, not the sweep's settings")
    if not config:  # another tool's env.json: `harness run` stores its sweep before the first case
        raise MergeError(f"{run / ENV_JSON}: no sweep settings in it (no config): not a run folder made by "
                         "`harness run`")  # fmt: skip
    return env


def _first_difference(key: str, a: Any, b: Any) -> tuple[str, Any, Any]:
    """Where two values of a setting first differ: inside a group of settings (``timing``), the one
    that differs (``timing.max_time_s``), not the two whole groups."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for sub in (*a, *(k for k in b if k not in a)):
            if a.get(sub) != b.get(sub):
                return _first_difference(f"{key}.{sub}", a.get(sub), b.get(sub))
    return key, a, b


def setting_text(key: str, value: Any) -> str:
    """A setting as a message shows it: a threads setting of None is no number but torch's default."""
    if value is None:
        return "torch's default" if key == "threads" else "not set"
    return repr(value)


def check_settings(envs: Mapping[Path, Mapping[str, Any]], allow_mixed_env: bool = False) -> list[str]:
    """Refuse runs measured under different sweep settings or (unless allowed) environments; returns
    the differences allowed, each warned of, for the merged run to keep."""
    allowed: list[str] = []
    first, *rest = envs.items()
    for run, env in rest:
        inside = [bool((e.get("config") or {}).get("contexts")) for e in (first[1], env)]
        if inside[0] != inside[1]:  # a sweep is of blocks or of networks: no one config holds both
            blocks, networks = (first[0], run) if inside[1] else (run, first[0])
            raise MergeError(f"{blocks} timed blocks alone but {networks} timed them inside networks (--context); "
                             "merge only runs of the same sweep")  # fmt: skip
        for key in CONFIG_MUST_MATCH:
            a, b = (first[1].get("config") or {}).get(key), (env.get("config") or {}).get(key)
            if a != b:
                name, a, b = _first_difference(key, a, b)
                raise MergeError(f"conflicting setting {name}: {setting_text(name, a)} in {first[0]} but "
                                 f"{setting_text(name, b)} in {run}; "
                                 "merge only runs of the same sweep")  # fmt: skip
        for fact, a, b in env_differences(first[1], env, env.get("device"), "merge"):
            message = f"different environment: {fact.key} is {a!r} in {first[0]} but {b!r} in {run}"
            if not allow_mixed_env:
                raise MergeError(message + " (--allow-mixed-env to merge anyway)")
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            allowed.append(message)
    return allowed


#: The env key of a merged run: the shards ("K/N") its rows came from, so that merging it again
#: with the rest of the split counts them (its own config's shard is None).
MERGED_SHARDS = "merged_shards"
#: How a missing-shard warning starts: recomputed by each merge, never carried over from a run merged before.
MISSING_SHARDS = "shard(s) "


def shards_of(envs: Mapping[Path, Mapping[str, Any]]) -> dict[int, set[int]]:
    """The shards the runs hold, by split size: a shard's own, and those a merged run came from."""
    seen: dict[int, set[int]] = {}
    for env in envs.values():
        shard = (env.get("config") or {}).get("shard")
        held = [f"{shard['index']}/{shard['count']}"] if isinstance(shard, Mapping) else []
        held += [str(s) for s in env.get(MERGED_SHARDS) or []]
        for text in held:
            k, _, n = text.partition("/")
            if k.isdigit() and n.isdigit():  # a hand-edited env.json's other text names no shard
                seen.setdefault(int(n), set()).add(int(k))
    return seen


def check_shards(envs: Mapping[Path, Mapping[str, Any]]) -> list[str]:
    """Which shards of an N-way split are missing (a warning, not an error: a shard may be empty)."""
    return [f"{k}/{n}" for n, got in sorted(shards_of(envs).items()) for k in range(1, n + 1) if k not in got]


def split_configurations(where: Mapping[tuple[object, ...], tuple[Path, Mapping[str, Any]]]) -> list[str]:
    """The configurations (a case key without its variant) whose variants come from more than one
    run, each as a label naming the runs: their speedups compare runs made apart, not side by side
    (shards never split one)."""
    variant = KEY_COLUMNS.index("variant")
    runs: dict[tuple[object, ...], dict[Path, str]] = {}
    first: dict[tuple[object, ...], Mapping[str, Any]] = {}
    for key, (run, row) in where.items():
        config = key[:variant] + key[variant + 1:]
        runs.setdefault(config, {}).setdefault(run, str(row.get("variant")))
        first.setdefault(config, row)
    split = []
    for config, by_run in runs.items():
        if len(by_run) > 1:
            shape = _label(first[config]).split(" ", 1)[1]  # the label without its variant
            split.append(f"{shape} ({', '.join(f'{v} from {r.name}' for r, v in by_run.items())})")
    return split


def collect_rows(rows_of: Mapping[Path, Sequence[dict[str, Any]]]) -> tuple[list[dict[str, Any]], str | None]:
    """Every row of every run, refusing a case key that appears twice; with a warning, or None, of
    configurations split between runs (``split_configurations``), which the merged report repeats."""
    where: dict[tuple[object, ...], tuple[Path, dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    for run, run_rows in rows_of.items():
        for row in run_rows:
            key = row_key(row)
            if key in where:
                other, seen = where[key]
                same = all(seen.get(f) == row.get(f) for f in RESULT_FIELDS)
                runs_text = f"twice in {run}" if other == run else f"in {other} and {run}"
                kind = "duplicate case" if same else "conflicting results for case"
                raise MergeError(f"{kind} {_label(row)}: {runs_text}")
            where[key] = (run, row)
            rows.append(row)
    split = split_configurations(where)
    if not split:
        return rows, None
    message = (f"{len(split)} configuration(s) hold variants measured in different runs, e.g. {split[0]}: "
               "their speedups compare runs made apart, not side by side")  # fmt: skip
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    return rows, message


def join_errors(runs: Sequence[Path], folder: RunFolder) -> None:
    """Every run's ``ERRORS_LOG``, in order, into the merged folder's: a failed case's traceback is not
    left behind in a shard's folder."""
    for run in runs:
        try:
            text = (run / ERRORS_LOG).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError as exc:
            warnings.warn(f"{run / ERRORS_LOG} not merged: {exc.strerror or exc}", RuntimeWarning, stacklevel=3)
            continue
        with (folder.path / ERRORS_LOG).open("a", encoding="utf-8") as f:
            f.write(f"##### from {run}\n{text.rstrip()}\n\n")


def merge(runs: Sequence[str | Path], out: str | Path, allow_mixed_env: bool = False) -> MergeResult:
    """Join ``runs`` into a new run folder ``out``: results.jsonl, results.csv, report.md, env.json,
    and errors.log where a run has one (each run's tracebacks under its folder's name)."""
    paths = [run_folder_of(r) for r in ([runs] if isinstance(runs, (str, Path)) else runs)]  # RUN/results.jsonl: RUN
    if not paths:
        raise MergeError("give at least one run folder to merge")
    if not str(out).strip():  # Path("") is the current directory, never what was meant
        raise MergeError("--out is empty; name a new folder for the merged run, e.g. results/runs/merged")
    target = Path(out)
    resolved: dict[Path, Path] = {}
    for path in paths:
        if not path.exists():
            raise MergeError(f"{path}: no such run folder")
        if not path.is_dir() or not ((path / RESULTS_JSONL).exists() or (path / ENV_JSON).exists()):
            raise MergeError(f"{path}: not a run folder (no results.jsonl or env.json)")
        if path.resolve() in resolved:
            raise MergeError(f"{path} is given twice (as {resolved[path.resolve()]} too)")
        resolved[path.resolve()] = path
    if target.resolve() in resolved:
        raise MergeError(f"--out {target} is one of the runs to merge; merge into a new folder")
    if any((target / name).exists() for name in (RESULTS_JSONL, ENV_JSON)):  # a run, finished or not
        raise MergeError(f"--out {target} already holds a run; merge into a new folder")
    envs = {p: _read_env(p) for p in paths}
    rows_of = {p: RunFolder(p, create=False).rows() for p in paths}  # each run whole before any is compared
    if not any(rows_of.values()):  # a shard may hold none, but not every run: the merge would be no run at all
        raise MergeError(f"nothing to merge: no results in {' or '.join(str(p / RESULTS_JSONL) for p in paths)}")
    notes = check_settings(envs, allow_mixed_env)
    rows, split = collect_rows(rows_of)
    notes += [split] if split else []
    missing = check_shards(envs)
    if missing:  # kept in report.md too: said on stderr alone, the merged report looked complete
        partial = (f"{MISSING_SHARDS}{', '.join(missing)} are not among the runs merged: the merged run is not "
                   "the whole sweep")  # fmt: skip
        warnings.warn(partial, RuntimeWarning, stacklevel=2)
        notes.append(partial)
    folder = RunFolder(target)
    for row in rows:
        folder.append(row)
    env = dict(next(iter(envs.values())))
    config = dict(env.get("config") or {}) | {"shard": None, "out": str(target)}
    for key in SWEPT:  # runs of other variants or shapes may be merged too: record the union
        values = [v for e in envs.values() for v in ((e.get("config") or {}).get(key) or [])]
        config[key] = list({json.dumps(v): v for v in values}.values())
    seen = lambda key: sorted({str(e[key]) for e in envs.values() if e.get(key)})  # noqa: E731
    env |= {"config": config, "merged_from": [str(p) for p in paths], "merged_hosts": seen("hostname"),
            "merged_git_commits": seen("git_commit")}  # fmt: skip
    for key in ("variant_sources", VARIANT_DESCRIPTIONS):  # runs of other variants: every run's names
        env[key] = {k: v for e in envs.values() if isinstance(e.get(key), Mapping) for k, v in e[key].items()}
    kept = [str(w) for e in envs.values() if isinstance(e.get(MERGE_WARNINGS), list) for w in e[MERGE_WARNINGS]
            if not str(w).startswith(MISSING_SHARDS)]  # which shards are missing is this merge's to say
    shards = shards_of(envs)
    if shards:
        env[MERGED_SHARDS] = [f"{k}/{n}" for n, got in sorted(shards.items()) for k in sorted(got)]
    env.pop(MERGE_WARNINGS, None)  # a merged run merged again: its runs' warnings still hold of its rows
    if kept + notes:
        env[MERGE_WARNINGS] = list(dict.fromkeys(kept + notes))
    left = sum(cases_left(envs[p], len(rows_of[p])) for p in paths)  # every run's, not the first's alone
    env.pop(UNFINISHED, None)
    env.pop(CASES_PLANNED, None)  # the first run's; the merged run's left cases are counted here
    if left:
        env[UNFINISHED] = left
    folder.write_env(env)
    write_reports(folder, to_frame(rows), env)
    join_errors(paths, folder)
    return MergeResult(target, tuple(paths), len(rows))
