"""Optional dependencies in tests: a module that fails to import, for any reason, skips with the reason."""
from __future__ import annotations

import importlib
from types import ModuleType

import pytest


def why_unavailable(module: str) -> str | None:
    """None when ``module`` imports; else one line saying why not.

    Not only ``ImportError``: a torchvision built for another torch raises ``RuntimeError`` on import,
    a broken CUDA toolkit ``OSError``; either must skip the tests that need it, not stop collection.
    """
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure to import means "not available here"
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"{module} does not import here: {type(exc).__name__}: {first}"
    return None


def require(module: str) -> ModuleType:
    """The imported module, or skip the calling test (or module, at import) with why it is unavailable."""
    why = why_unavailable(module)
    if why is not None:
        pytest.skip(why, allow_module_level=True)
    return importlib.import_module(module)
