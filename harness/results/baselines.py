"""Committed baselines, one per device model: a timing is only comparable with one from the same hardware.

``results/baselines/<slug>/`` holds a copy of a run folder (results.jsonl, results.csv, env.json,
report.md). The slug is the GPU model on CUDA and the CPU model on CPU, so that CI on an H100
finds the H100 baseline and a laptop never silently compares with it.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where baselines live, relative to the project root (the CLI's working directory).
DEFAULT_ROOT = Path("results/baselines")
#: What a baseline keeps of a run folder; results.jsonl is required, the others are copied when present.
RUN_FILES: tuple[str, ...] = ("results.jsonl", "results.csv", "env.json", "report.md")
#: Trademark noise that makes the same CPU read differently across kernels and firmware.
_NOISE = re.compile(r"\((?:r|tm)\)|\bcpu\b|\bprocessor\b|@.*$", re.IGNORECASE)


class BaselineError(LookupError):
    """No baseline can be saved or found; the message is one line fit to show a user."""


class NoBaseline(BaselineError):
    """The run is sound, but no baseline was committed for its device yet (CI passes with a notice;
    any other ``BaselineError`` is bad input)."""


def device_model(env: Mapping[str, Any]) -> str:
    """The hardware a run's timings belong to: the GPU model on CUDA, the CPU model otherwise."""
    device = str(env.get("device") or "cpu").split(":")[0]
    name = env.get("gpu_name") if device == "cuda" else env.get("cpu_model")
    if not name:
        raise BaselineError(f"the run's env.json names no {'GPU' if device == 'cuda' else 'CPU'} model")
    return str(name)


def device_slug(env: Mapping[str, Any]) -> str:
    """A folder name for the device: ``cuda-nvidia-h100-80gb-hbm3``, ``cpu-intel-xeon-platinum-8375c``.

    The device type is part of it, so a CPU and a GPU baseline never share a folder. Clock speeds
    after ``@`` and ``(R)``/``(TM)`` marks are dropped: they vary between reports of one model.
    """
    device = str(env.get("device") or "cpu").split(":")[0]
    model = _NOISE.sub(" ", device_model(env))
    words = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return f"{device}-{words}" if words else device


def _read_env(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "env.json"
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BaselineError(f"{path}: cannot read the run's environment ({exc})") from None
    if not isinstance(env, dict):
        raise BaselineError(f"{path}: not a JSON object")
    return env


def _cases(run_dir: Path) -> int:
    """How many cases a run folder timed (rows cut off by a kill not counted): what a baseline is
    worth. A case that failed, skipped or was measured at a halved batch compares with nothing."""
    from harness.results.store import read_jsonl, row_key
    from harness.results.tables import smaller_batch

    rows = read_jsonl(run_dir / "results.jsonl", notes=[])
    last = {row_key(r): r for r in rows}  # a resumed run's last row of a case is the one that counts
    return sum(r.get("status") == "ok" and smaller_batch(r) is None for r in last.values())


def _settings(env: Mapping[str, Any]) -> dict[str, Any]:
    """What a CPU timing depends on beyond the hardware: the torch threads and the worker processes."""
    return {"threads": env.get("threads"), "processes": (env.get("config") or {}).get("processes", 1)}


@dataclass(frozen=True)
class Replacement:
    """What saving a run as its device's baseline replaces: a baseline held ``before`` cases, the
    run ``after``; ``changes`` are the settings that differ (``threads 4 → 1``)."""

    path: Path
    before: int | None  # None: the old baseline cannot be read (nothing in it worth keeping)
    after: int
    changes: tuple[str, ...]

    def __str__(self) -> str:
        before = "an unreadable baseline" if self.before is None else f"{self.before} timed cases"
        return f"{before} → {self.after}" + "".join(f"; {c}" for c in self.changes)


def replacement(run_dir: str | Path, root: str | Path = DEFAULT_ROOT) -> Replacement | None:
    """What ``save_baseline(run_dir, root)`` would replace, or None when the device has no baseline yet."""
    src = Path(run_dir)
    target = Path(root) / device_slug(_read_env(src))
    if not (target / "results.jsonl").is_file():
        return None
    new = _settings(_read_env(src))
    try:
        old, before = _settings(_read_env(target)), _cases(target)
    except (BaselineError, OSError, ValueError) as exc:  # a broken baseline must not block its own repair
        return Replacement(target, None, _cases(src), (str(exc).splitlines()[0],))
    changes = tuple(f"{k} {old[k]} → {new[k]}" for k in old if old[k] != new[k])
    return Replacement(target, before, _cases(src), changes)


def check_room(device_env: Mapping[str, Any], cases: int, root: str | Path = DEFAULT_ROOT) -> None:
    """Before a sweep of ``cases`` cases that is to be saved as a baseline: refuse it (``BaselineError``)
    when the device's baseline already times more cases than the sweep has, as ``save_baseline``
    would refuse it at the end, after the whole sweep ran for nothing. ``device_env``: the ``device``
    and its ``gpu_name`` or ``cpu_model``."""
    target = Path(root) / device_slug(device_env)
    if not (target / "results.jsonl").is_file():
        return
    try:
        before = _cases(target)
    except (OSError, ValueError):  # a broken baseline must not block its own repair
        return
    if before > cases:
        raise BaselineError(f"{target} holds {before} timed cases, this sweep only {cases}; it would be kept: "
                            "give --replace-baseline to replace it, or run the sweep it was made with (its "
                            "env.json's config)")


def save_baseline(run_dir: str | Path, root: str | Path = DEFAULT_ROOT, *, force: bool = False) -> Path:
    """Copy a run folder to ``root/<slug>/``, replacing the previous baseline for that device.

    A baseline of more timed cases is kept unless ``force``: a quick run of a few cases, or one whose
    cases failed, would otherwise silently replace the committed sweep. A run that timed no case is
    never a baseline. The copy is written beside the target and renamed into place, so a failure
    half-way leaves the old baseline intact.
    """
    src = Path(run_dir)
    if not (src / "results.jsonl").is_file():
        raise BaselineError(f"{src}: not a run folder (no results.jsonl)")
    target = Path(root) / device_slug(_read_env(src))
    if _cases(src) == 0:
        raise BaselineError(f"{src}: no case was timed (all failed or skipped); nothing to compare with")
    replaced = replacement(src, root)
    if replaced is not None and replaced.before is not None and replaced.after < replaced.before and not force:
        raise BaselineError(f"{replaced.path} holds {replaced.before} timed cases, this run only {replaced.after}; "
                            "kept it; give --replace-baseline (force=True from Python) to replace it")  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for name in RUN_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, staging / name)
        for png in sorted(src.glob("*.png")):  # report.md may embed them
            shutil.copy2(png, staging / png.name)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def list_baselines(root: str | Path = DEFAULT_ROOT) -> list[str]:
    """The slugs that have a baseline, sorted."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / "results.jsonl").is_file())  # fmt: skip


def find_baseline(env: Mapping[str, Any], root: str | Path = DEFAULT_ROOT) -> Path:
    """The baseline folder for the device described by ``env``; a one-line error naming the others."""
    slug = device_slug(env)
    path = Path(root) / slug
    if (path / "results.jsonl").is_file():
        return path
    others = list_baselines(root)
    if others:
        known = f"; baselines exist for: {', '.join(others)}"
    elif not Path(root).is_dir() and Path(root).is_absolute():  # a folder named, not found
        known = f"; there is no folder {root}"
    elif not Path(root).is_dir():  # run from outside the repository: its relative default is not here
        known = (f"; there is no {root} folder in {Path.cwd()}: run from the repository's root, or give "
                 f"--baselines-dir")
    else:
        known = f"; {root} holds none"
    raise NoBaseline(
        f"no baseline for {device_model(env)!r} ({slug}){known}. "
        "Save one with: python -m harness run ... --save-baseline"
    )


def find_baseline_for(run: str | Path, root: str | Path = DEFAULT_ROOT) -> Path:
    """The baseline matching the device that ``run`` (a run folder or a file in one) was measured on."""
    p = Path(run)
    if not p.exists():
        raise BaselineError(f"{run}: no such file or folder")
    folder = p if p.is_dir() else p.parent
    if not (folder / "env.json").is_file():
        raise BaselineError(f"{folder}: no env.json, so the device it ran on is unknown")
    return find_baseline(_read_env(folder), root)
