"""What runs: model families, size tables, real data, variants and the training step."""

from reports.schema import SIZE_ORDER

from .base import NOMINAL_PARAMS, Unsupported
from .registry import FAMILIES, Case, build_case, get_variant, variant_names

__all__ = [
    "FAMILIES",
    "NOMINAL_PARAMS",
    "SIZE_ORDER",
    "Case",
    "Unsupported",
    "build_case",
    "get_variant",
    "variant_names",
]
