"""A benchmarking and profiling harness for scSE variants: verified first, then timed, then reported."""
from harness.api import run
from harness.sweep.config import ConfigError, SweepConfig
from variants.registry import Variant, get_variant, list_variants, register

__all__ = ["ConfigError", "SweepConfig", "Variant", "get_variant", "list_variants", "register", "run"]
