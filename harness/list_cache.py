"""``harness list``'s last answer, kept so that asking again takes a fraction of a second.

Listing the variants means importing torch and asking each variant whether it can run here (the
compile variants import Inductor to find a C++ compiler): over 4 s on a 2-core VM, most of it
imports. What the answer depends on is cheap to read without torch: the interpreter and its import
path, the versions of the packages variants rely on, the plugins' entry points, versions and source
files, the project's own source files, the environment (but the shell's bookkeeping, e.g. ``PWD``),
and whether an NVIDIA driver is loaded. Those make the key; a listing saved under the same key is
shown as it was. ``list --refresh`` asks again. The cache lives in ``$HARNESS_CACHE_DIR`` (default
``~/.cache/scse-harness``); a cache that cannot be read or written is ignored.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

CACHE_ENV = "HARNESS_CACHE_DIR"
#: Environment variables left out of the key: the shell's bookkeeping, which changes between two
#: commands and no check reads. Every other variable is in it, since a check (a plugin's too) may read
#: any: an extra miss costs one slow listing, a wrong hit a wrong answer.
VOLATILE_ENV: frozenset[str] = frozenset({"_", "PWD", "OLDPWD", "SHLVL", "LINES", "COLUMNS", "HISTCMD", "SECONDS",
                                          "RANDOM", "LINENO", "PS1", "PS2", "PROMPT_COMMAND"})  # fmt: skip
#: Distributions whose presence or version changes what can run.
DISTRIBUTIONS: tuple[str, ...] = ("torch", "triton", "torchvision", "segmentation_models_pytorch", "nvidia-ml-py")
PLUGIN_GROUPS: tuple[str, ...] = ("harness.variants", "harness.contexts")
#: Files whose presence says an NVIDIA driver is loaded (their contents: its version).
DRIVER_FILES: tuple[str, ...] = ("/proc/driver/nvidia/version", "/dev/nvidiactl")
SOURCE_ROOTS: tuple[Path, ...] = (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1] / "variants")
#: Listings kept; older ones (other keys) are removed when a new one is saved.
KEEP = 16


@dataclass(frozen=True)
class Entry:
    """One listed variant or context. ``state`` is None when ready, else why not."""

    name: str
    description: str
    devices: str
    state: str | None


@dataclass(frozen=True)
class Listing:
    """What ``list`` shows: the device judged, the variants, and the contexts."""

    device: str
    variants: tuple[Entry, ...]
    contexts: tuple[Entry, ...]
    #: The plugins that failed to load, one line each: said again when the listing is shown from here.
    problems: tuple[str, ...] = ()


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "scse-harness")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _driver() -> list[str | None]:
    out: list[str | None] = []
    for name in DRIVER_FILES:
        path = Path(name)
        try:
            out.append(path.read_text()[:200] if path.is_file() else ("present" if path.exists() else None))
        except OSError:
            out.append("present")
    return out


def _sources() -> list[tuple[str, int, int]]:
    files = []
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".cu", ".cpp", ".h") and "__pycache__" not in path.parts:
                st = path.stat()
                files.append((str(path), st.st_mtime_ns, st.st_size))
    return files


def _plugin_sources() -> list[object]:
    """Each plugin's distribution version and its top-level package's source files (name, mtime,
    size): a plugin edited and reinstalled (an editable install keeps its entry points) must not be
    listed as it was. The package is found, never imported."""
    import importlib.util

    out: list[object] = []
    for group in PLUGIN_GROUPS:
        for ep in importlib.metadata.entry_points(group=group):
            dist = getattr(ep, "dist", None)
            out.append((ep.name, getattr(dist, "version", None)))
            try:
                spec = importlib.util.find_spec(ep.value.split(":")[0].split(".")[0])
            except (ImportError, ValueError):
                continue
            roots = list(spec.submodule_search_locations or []) if spec else []
            files = [Path(f) for r in roots for f in sorted(Path(r).rglob("*.py"))]
            if spec and spec.origin and not roots:
                files.append(Path(spec.origin))
            for path in files:
                try:
                    st = path.stat()
                except OSError:
                    continue
                out.append((str(path), st.st_mtime_ns, st.st_size))
    return out


def key(device: str | None) -> str:
    """The hash of everything the listing for ``device`` (None: the default device) depends on."""
    points = (ep for group in PLUGIN_GROUPS for ep in importlib.metadata.entry_points(group=group))
    plugins = sorted((ep.group, ep.name, ep.value) for ep in points)
    parts = {
        "device": device,
        "python": [sys.executable, sys.version, list(sys.path)],
        "versions": {name: _version(name) for name in DISTRIBUTIONS},
        "plugins": plugins,
        "plugin_sources": _plugin_sources(),
        "env": {k: v for k, v in os.environ.items() if k not in VOLATILE_ENV},
        "driver": _driver(),
        "sources": _sources(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _path(key: str) -> Path:
    return cache_dir() / f"list-{key}.json"


def load(key: str) -> Listing | None:
    """The listing saved under ``key``, or None (never saved, changed since, or unreadable)."""
    try:
        data = json.loads(_path(key).read_text())
        listing = Listing(data["device"], tuple(Entry(**e) for e in data["variants"]),
                          tuple(Entry(**e) for e in data["contexts"]), tuple(data.get("problems", ())))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return listing if well_formed(listing) else None


def well_formed(listing: Listing) -> bool:
    """Whether a saved listing is one ``list`` made: text where text belongs and some variant in it (a
    damaged file's number for a name ended ``list`` in a TypeError, and its empty lists answered "no
    variant matches 'eager'")."""
    entries = (*listing.variants, *listing.contexts)
    return (isinstance(listing.device, str) and bool(listing.variants)
            and all(isinstance(e.name, str) and isinstance(e.description, str) and isinstance(e.devices, str)
                    and (e.state is None or isinstance(e.state, str)) for e in entries)
            and all(isinstance(p, str) for p in listing.problems))  # fmt: skip


def save(key: str, listing: Listing) -> None:
    """Keep ``listing`` under ``key`` (atomically), the key taken before the listing was made: importing
    torch sets environment variables of its own. A cache that can't be written is skipped."""
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(f".{os.getpid()}.part")
        part.write_text(json.dumps(asdict(listing)))
        part.replace(path)
        for old in sorted(path.parent.glob("list-*.json"), key=lambda f: f.stat().st_mtime, reverse=True)[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        return
