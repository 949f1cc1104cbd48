"""Merge methods, in an explicit registry. Importing this package registers the built-ins."""

from __future__ import annotations

from paperlab.soup.methods import (  # noqa: F401  (registers)
    interpolation,
    linear,
    ram,
    sce,
    selective,
    spherical,
    task_vectors,
    uniform,
)
from paperlab.soup.methods.base import (
    METHODS,
    REQUIRED,
    MergeMethod,
    MethodParams,
    Param,
    get_method,
    register_method,
    rng_for,
    weighted_sum,
)

__all__ = ["METHODS", "REQUIRED", "MergeMethod", "MethodParams", "Param", "get_method", "register_method", "rng_for",
           "weighted_sum"]
