"""Test set-up only: make the registry's torchvision importable beside the CPU torch of this CI.

The registry's torchvision 0.28.0 is built against CUDA torch: beside torch 2.13.0+cpu its C
extension fails to load, and ``import torchvision`` then stops at "operator torchvision::nms does
not exist", because ``torchvision/_meta_registrations.py`` registers fake kernels for ``nms`` and
``qnms`` whether or not the extension loaded. Defining those two schemas (what the extension would
have registered) lets it import. The U-Net's resnet34 encoder calls no torchvision operator, so
nothing runs on these schemas. A torchvision whose extension loads (a matching install, the GPU
machine) is left alone. Never part of the product: ``--context unet`` there says smp is unavailable.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library: torch.library.Library | None = None


def extension_loads() -> bool | None:
    """Whether torchvision's C extension loads against this torch; None when torchvision is absent."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd"))
    if not found:
        return False
    try:
        torch.ops.load_library(str(found[0]))
    except (OSError, RuntimeError):
        return False
    return True


def install() -> bool:
    """Define the schemas when torchvision is there but its extension can't load; whether it did."""
    global _library
    if _library is not None:
        return True
    if extension_loads() is not False or hasattr(torch.ops.torchvision, "nms"):
        return False
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
    return True
