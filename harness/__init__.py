"""A benchmarking and profiling harness for scSE variants: verified first, then timed, then reported.

The names below are imported on first use: ``import harness`` (and ``python -m harness --help``)
does not import torch; ``harness.run`` does.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.api import run
    from harness.sweep.config import ConfigError, SweepConfig
    from variants.registry import Variant, get_variant, list_variants, register

#: Each public name → the module that defines it.
_HOMES: dict[str, str] = {
    "run": "harness.api",
    "ConfigError": "harness.sweep.options",
    "SweepConfig": "harness.sweep.config",
    "Variant": "variants.registry",
    "get_variant": "variants.registry",
    "list_variants": "variants.registry",
    "register": "variants.registry",
}

__all__ = ["ConfigError", "SweepConfig", "Variant", "get_variant", "list_variants", "register", "run"]


def __getattr__(name: str) -> Any:
    """The public names only; anything else is an AttributeError, as without this hook."""
    if name not in _HOMES:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
