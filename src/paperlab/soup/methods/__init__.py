"""Merge methods, in an explicit registry. Importing this package registers the built-ins."""

from __future__ import annotations

from paperlab.soup.methods import interpolation, linear, task_vectors, uniform  # noqa: F401  (registers)
from paperlab.soup.methods.base import (
    METHODS,
    MergeMethod,
    MethodParams,
    get_method,
    register_method,
    rng_for,
    weighted_sum,
)

__all__ = ["METHODS", "MergeMethod", "MethodParams", "get_method", "register_method", "rng_for", "weighted_sum"]
