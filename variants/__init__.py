"""scSE implementations, importable on their own: the reference module and a registry of variants."""
from variants.reference import FUSIONS, ScSE, cSE, sSE
from variants.registry import (
    ENTRY_POINT_GROUP,
    Variant,
    add_variant,
    all_variants,
    get_variant,
    list_variants,
    register,
    unregister,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "FUSIONS",
    "ScSE",
    "Variant",
    "add_variant",
    "all_variants",
    "cSE",
    "get_variant",
    "list_variants",
    "register",
    "sSE",
    "unregister",
]
