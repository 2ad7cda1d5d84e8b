"""The variant registry: a small API that variants depend on, and that knows nothing of the runner.

A variant is a named way to compute scSE. ``build(reference, device, dtype)`` returns a callable
that computes the same function as ``reference`` (an ``ScSE`` on the CPU in float32) with the same
weights, on ``device``, for inputs of ``dtype``. Other packages add variants through the
entry-point group ``harness.variants``; each entry point names a module (imported for its
``@register`` calls), a ``Variant``, or a function returning one or several.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import inspect
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from variants.reference import FUSIONS
from variants.tags import Tags

ENTRY_POINT_GROUP = "harness.variants"
#: Modules whose import registers the built-in variants (plugins come from ``ENTRY_POINT_GROUP``).
BUILTIN_MODULES: tuple[str, ...] = ("variants.builtin",)
DEVICES: tuple[str, ...] = ("cpu", "cuda")
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")
MODES: tuple[str, ...] = ("forward", "train")

Builder = Callable[[torch.nn.Module, torch.device, torch.dtype], Callable[[torch.Tensor], torch.Tensor]]


def always_available() -> str | None:
    """The default availability check: nothing is missing."""
    return None


def checked(available: Callable[[], str | None]) -> str | None:
    """What an availability check says; its failure is a reason too, never a crash of the tool."""
    try:
        return available()
    except Exception as exc:  # an availability check must never take the tool down
        return f"availability check failed: {exc}"


@dataclass(frozen=True)
class Variant:
    """What the harness needs to know about one implementation of scSE."""

    name: str
    description: str
    build: Builder
    devices: frozenset[str] = frozenset(DEVICES)
    dtypes: frozenset[str] = frozenset(("float32", "float16", "bfloat16"))
    modes: frozenset[str] = frozenset(MODES)
    fusions: frozenset[str] = frozenset(FUSIONS)
    available: Callable[[], str | None] = always_available
    #: Declared traits as (key, value) pairs; read them typed with ``variants.tags.tags_of``.
    tags: tuple[tuple[str, object], ...] = field(default=())

    def unsupported(self, device: str, dtype: str, mode: str, fusion: str) -> str | None:
        """Why this variant can't run the combination, or None when it can."""
        dev = torch.device(device).type
        if dev not in self.devices:
            return f"{self.name} runs on {', '.join(sorted(self.devices))}, not {dev}"
        if dtype not in self.dtypes:
            return f"{self.name} supports {', '.join(sorted(self.dtypes))}, not {dtype}"
        if mode not in self.modes:
            return f"{self.name} supports mode {', '.join(sorted(self.modes))}, not {mode}"
        if fusion not in self.fusions:
            return f"{self.name} supports fusion {', '.join(sorted(self.fusions))}, not {fusion}"
        return None

    def unavailable(self, device: str) -> str | None:
        """Why this variant can't run here at all (a missing library, no CUDA), or None."""
        dev = torch.device(device).type
        if dev not in self.devices:
            return f"needs {' or '.join(d.upper() if d == 'cuda' else d for d in sorted(self.devices))}"
        return checked(self.available)


_REGISTRY: dict[str, Variant] = {}
_entry_points_loaded = False
#: Who registered each variant: "built-in", "plugin 'name' (module)", or "this process".
_SOURCES: dict[str, str] = {}
#: Names two plugins both registered: neither is run under it (``unknown_variant_message`` says why).
_CONFLICTS: dict[str, tuple[str, ...]] = {}
#: The plugin whose entry point is being loaded, while it is (``load_plugins``).
_loading: str | None = None
#: Registrations of variants and contexts so far, refused ones included: a plugin that made none
#: is told so (``load_plugins``).
_registrations = 0


def _as_set(values: Iterable[str] | str) -> frozenset[str]:
    """A registration's devices, dtypes, modes or fusions: a comma-separated text as the CLI takes
    them (``"float32,float16"`` was one unknown dtype, so every case skipped), or an iterable."""
    return frozenset(_split(values))


#: What each set a variant declares may hold.
KNOWN: dict[str, tuple[str, ...]] = {"devices": DEVICES, "dtypes": DTYPES, "modes": MODES, "fusions": FUSIONS}


def check_declared(variant: Variant) -> None:
    """A variant's declared sets hold known values (``("fp32",)``, ``("forwards",)`` and ``("gpu",)``
    were accepted, and every case then skipped), and its build takes ``(reference, device, dtype)``."""
    for what, known in KNOWN.items():
        declared = getattr(variant, what)
        if not declared:
            raise ValueError(f"{what} is empty; give at least one of {', '.join(known)}")
        unknown = sorted(set(declared) - set(known))
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown {what[:-1]} {unknown[0]!r}{hint} (known: {', '.join(known)})")
    try:
        signature = inspect.signature(variant.build)
    except (TypeError, ValueError):  # a callable whose signature Python cannot read: left to the call
        return
    try:
        signature.bind(None, None, None)
    except TypeError as exc:
        raise ValueError(f"build must take (reference, device, dtype): {exc}") from None


def add_named(table: dict[str, Any], item: Any, kind: str, replace: bool = False) -> Any:
    """Put ``item`` in ``table`` under its ``name``: letters, digits, '_', '-' or '.', and a name already
    taken by a different ``kind`` only with ``replace`` (the registries of variants and of contexts)."""
    global _registrations
    _registrations += 1
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", item.name):
        raise ValueError(f"{kind} name {item.name!r} must be letters, digits, '_', '-' or '.'")
    if item.name in table and not replace and table[item.name] != item:
        raise ValueError(f"{kind} {item.name!r} is already registered")
    table[item.name] = item
    return item


def add_variant(variant: Variant, *, replace: bool = False) -> Variant:
    """Register ``variant``; a second variant under a taken name is an error unless ``replace``, and
    so are tags ``Tags.parse`` refuses or that cannot be hashed (a list where a tuple belongs): a
    registration fails, not every sweep that meets the variant."""
    try:
        hash(variant.tags)
        Tags.parse(dict(variant.tags))
        check_declared(variant)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"variant {variant.name!r}: {exc}") from None
    if _loading is not None:
        return _add_from_plugin(variant, _loading, replace)
    added = add_named(_REGISTRY, variant, "variant", replace)
    module = getattr(variant.build, "__module__", None)
    builtin = isinstance(module, str) and module.split(".")[0] == __name__.split(".")[0]  # this package's
    _SOURCES[variant.name] = "built-in" if builtin else "this process"
    return added


def _add_from_plugin(variant: Variant, source: str, replace: bool) -> Variant:
    """A plugin's registration. A name another plugin took too is run under neither: which one won
    would hang on the order entry points load in, and the loser's other variants were lost with it.
    A built-in name is kept unless the plugin says ``replace``, and a replaced built-in is said
    aloud (``eager`` is what every speedup is measured against). Either way the plugin's other
    variants still load: each problem is one warning, not an exception."""
    global _registrations
    _registrations += 1
    name = variant.name
    if name in _CONFLICTS:
        _CONFLICTS[name] = tuple(sorted((*_CONFLICTS[name], source)))
        return variant
    owner = _SOURCES.get(name)
    if name in _REGISTRY and owner is not None and owner != source:
        if not owner.startswith("plugin ") and not replace:  # built-in, or registered by this process
            warnings.warn(f"{source} registers variant {name!r}, a {owner} name, without replace=True: "
                          f"kept the {owner} one, ignored the plugin's", PluginWarning, stacklevel=4)
            return variant
        if owner.startswith("plugin "):
            first, second = _CONFLICTS[name] = tuple(sorted((owner, source)))  # whichever order they loaded in
            del _REGISTRY[name]
            warnings.warn(f"variant {name!r} is registered by two plugins, {first} and {second}: neither is run "
                          "under that name; uninstall one, or rename its variant", PluginWarning, stacklevel=4)
            return variant
        warnings.warn(f"{source} replaces the {owner} variant {name!r}: runs of {name!r} time the plugin's code "
                      f"({variant.build.__module__})", PluginWarning, stacklevel=4)
    add_named(_REGISTRY, variant, "variant", replace=True)
    _SOURCES[name] = source
    return variant


def variant_source(name: str) -> str | None:
    """Who registered ``name``: "built-in", "plugin 'x' (module)" or "this process"; None if unknown.
    A made form (``graphed_<name>``) is its wrapped variant's, since that is whose code it runs."""
    if name not in _SOURCES and name in _MADE:
        return _SOURCES.get(_MADE[name][1].name)
    return _SOURCES.get(name)


def tags_checked(tags: dict[str, object]) -> dict[str, object]:
    """The tags with each list given as a tuple (``biases=[False]`` is natural to write), once
    ``Tags.parse`` has accepted them (a mistyped tag fails here)."""
    tags = {k: tuple(v) if isinstance(v, list) else v for k, v in tags.items()}
    for key, value in tags.items():
        try:
            hash(value)
        except TypeError:
            raise ValueError(f"tag {key!r} must be a plain value (text, a number, a tuple), got {value!r}") from None
    Tags.parse(tags)
    return tags


def register(
    name: str,
    description: str,
    *,
    devices: Iterable[str] | str = DEVICES,
    dtypes: Iterable[str] | str = ("float32", "float16", "bfloat16"),
    modes: Iterable[str] | str = MODES,
    fusions: Iterable[str] | str = FUSIONS,
    available: Callable[[], str | None] = always_available,
    replace: bool = False,
    tags: dict[str, object] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator: register the decorated ``build(reference, device, dtype)`` function as a variant."""

    def decorate(build: Builder) -> Builder:
        try:
            checked_tags = tuple(sorted(tags_checked(tags or {}).items()))
        except ValueError as exc:  # named, as add_variant names what it refuses
            raise ValueError(f"variant {name!r}: {exc}") from None
        add_variant(
            Variant(
                name=name,
                description=description,
                build=build,
                devices=_as_set(devices),
                dtypes=_as_set(dtypes),
                modes=_as_set(modes),
                fusions=_as_set(fusions),
                available=available,
                tags=checked_tags,
            ),
            replace=replace,
        )
        return build

    return decorate


def registered(name: str) -> Variant:
    """A variant registered so far, without loading plugins: for a registration derived from another."""
    return _REGISTRY[name]


def unregister(name: str) -> None:
    """Remove a variant (tests use this to clean up)."""
    _REGISTRY.pop(name, None)
    _SOURCES.pop(name, None)
    _CONFLICTS.pop(name, None)


def load_entry_points() -> list[str]:
    """Import every ``harness.variants`` entry point once; returns warnings for broken plugins."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    return load_plugins(ENTRY_POINT_GROUP, Variant, add_variant, "variant", track=True)


class PluginWarning(RuntimeWarning):
    """A plugin's problem, said by the registry: the CLI shows it as one line, though it points at
    the plugin's own ``@register`` line (``cli.plain_warnings``)."""


#: A plugin slower to import than this is named (``load_plugins``): a plugin that took 8 s slowed a
#: one-case run from 4 s to 12 s, and each worker of ``--processes 2`` as much again, unsaid.
SLOW_PLUGIN_S = 2.0


def load_plugins(group: str, kind: type, add: Callable[[Any], object], what: str, track: bool = False) -> list[str]:
    """Import every entry point of ``group``. Each names a module (imported for the registrations it
    makes), an instance of ``kind`` (given to ``add``), or a function returning one or several.
    One broken plugin never hides the others: it becomes a warning, returned too. ``track``: the
    variants registered meanwhile are the plugin's (``_add_from_plugin``)."""
    global _loading
    problems: list[str] = []
    for ep in importlib.metadata.entry_points(group=group):
        if track:
            _loading = f"plugin {ep.name!r} ({ep.value})"
        before = _registrations
        # a module loaded again: its registrations ran on its first import
        imported = ep.attr is None and ep.module in sys.modules
        started = time.perf_counter()
        try:
            obj = ep.load()
            if isinstance(obj, kind):
                add(obj)
            elif callable(obj) and not isinstance(obj, type):
                made = obj()
                items = [made] if isinstance(made, kind) else made or ()
                items = list(items) if isinstance(items, Iterable) and not isinstance(items, (str, bytes)) else None
                if items is None or not all(isinstance(i, kind) for i in items):
                    raise TypeError(f"{ep.value} returned {type(made).__name__}, not a {kind.__name__} or a list "
                                    "of them")
                for item in items:
                    add(item)
            took = time.perf_counter() - started
            if took > SLOW_PLUGIN_S and not imported:  # else nothing names what slows every run
                message = (f"{what} plugin {ep.name!r} ({ep.value}) took {took:.1f} s to import: every run, and "
                           "every worker process of --isolate or --processes, pays that")
                problems.append(message)
                warnings.warn(message, PluginWarning, stacklevel=3)
            if _registrations == before and not imported:
                message = (f"{what} plugin {ep.name!r} ({ep.value}) registered no {what}: its entry point must name a "
                           f"module that registers some, a {kind.__name__}, or a function returning some")
                problems.append(message)
                warnings.warn(message, PluginWarning, stacklevel=3)
        except (Exception, SystemExit) as exc:  # one broken plugin (one exiting on import too) must not hide the others
            message = f"{what} plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
            problems.append(message)
            warnings.warn(message, PluginWarning, stacklevel=3)
        finally:
            _loading = None
    return problems


def reload_entry_points() -> list[str]:
    """Forget that entry points were loaded and load them again (for tests and long sessions)."""
    global _entry_points_loaded
    _entry_points_loaded = False
    return load_entry_points()


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def all_variants() -> dict[str, Variant]:
    """Every registered variant, built-in and from plugins, by name."""
    for module in BUILTIN_MODULES:  # loaded by name, as plugins are: the registry depends on none of them
        importlib.import_module(module)
    load_entry_points()
    return dict(_REGISTRY)


def list_variants(patterns: Iterable[str] | str = "*", exclude: Iterable[str] | str = ()) -> list[str]:
    """Names matching any of the glob ``patterns`` (comma-separated allowed) and none of ``exclude``."""
    include = _split(patterns) or ["*"]
    excluded = _split(exclude)
    names = all_variants()
    picked = {
        n
        for n in names
        if any(fnmatch.fnmatchcase(n, p) for p in include) and not any(fnmatch.fnmatchcase(n, p) for p in excluded)
    }
    return sorted(picked, key=_natural_key)


#: Forms of any variant, asked for by name: a name's prefix, and what makes that form of a variant,
#: raising ValueError where it has none (``graphed_<name>``, added by ``variants.cuda_graph``). A
#: form per variant registered up front would double ``list``; made forms are kept apart from the
#: registry (``_MADE``), so that no glob, ``list`` or test parametrisation depends on which forms a
#: process happened to ask for before.
_FORMS: dict[str, Callable[[Variant], Variant]] = {}
_MADE: dict[str, tuple[Variant, Variant]] = {}  # a form made, and the variant it wraps


def add_form(prefix: str, make: Callable[[Variant], Variant]) -> None:
    """Let ``<prefix><name>`` name ``make(variant <name>)`` for every variant, plugins' too."""
    _FORMS[prefix] = make


def find_variant(name: str) -> Variant | None:
    """The variant called ``name``: registered, or a form of a registered one (made once); None when
    it is neither. A ValueError says why a variant has no such form."""
    found = all_variants()
    if name in found:
        return found[name]
    for prefix, make in _FORMS.items():
        inner = name[len(prefix):]
        if name.startswith(prefix) and inner in found:
            if name not in _MADE or _MADE[name][1] is not found[inner]:  # made again for a replaced variant
                form = make(found[inner])
                check_declared(form)
                _MADE[name] = (form, found[inner])
            return _MADE[name][0]
    return None


def with_forms(names: Iterable[str]) -> dict[str, Variant]:
    """Every registered variant, and the forms among ``names`` (a sweep's): what a run looks its
    variants up in."""
    return all_variants() | {n: v for n in names if n not in _REGISTRY and (v := find_variant(n)) is not None}


def get_variant(name: str) -> Variant:
    """The variant called ``name`` (or a form of one, ``find_variant``); a KeyError that suggests the
    nearest names, or says why a variant has no such form, otherwise."""
    try:
        found = find_variant(name)
    except ValueError as exc:
        raise KeyError(str(exc)) from None
    if found is not None:
        return found
    raise KeyError(unknown_variant_message(name))


def unknown_variant_message(name: str, known: Iterable[str] | None = None) -> str:
    """One line naming the unknown variant and the nearest registered names, or the plugins that
    both registered it."""
    if name in _CONFLICTS:
        return (f"variant {name!r} is registered by {len(_CONFLICTS[name])} plugins, "
                f"{', '.join(_CONFLICTS[name])}: uninstall all but one, or rename")
    names = sorted(known if known is not None else all_variants())
    close = nearest(name, names)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(names)}"
    return f"unknown variant {name!r}{hint}"


def nearest(name: str, names: Iterable[str], n: int = 3) -> list[str]:
    """The names a mistyped ``name`` most likely meant: close spellings (difflib's default cutoff;
    at 0.5, ``nope`` suggested ``compile``), then the names that contain it (``cuda``: ``cuda_fused``,
    ``cuda_graph``). Empty when nothing is near, so the caller lists them all instead."""
    names = list(names)
    found = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    found += [k for k in names if name and name in k and k not in found]
    return found[:n]


def _split(values: Iterable[str] | str) -> list[str]:
    """Turn a comma-separated string or an iterable of them into a flat list (never per character)."""
    items = [values] if isinstance(values, str) else list(values)
    return [p.strip() for item in items for p in item.split(",") if p.strip()]
