"""Merge methods, in an explicit registry. Importing this package registers the built-ins."""

from __future__ import annotations

from paperlab.soup.methods import linear, task_arithmetic, ties, uniform  # noqa: F401  (registers)
from paperlab.soup.methods.base import (
    METHODS,
    MergeMethod,
    MethodParams,
    get_method,
    register_method,
    weighted_sum,
)

__all__ = ["METHODS", "MergeMethod", "MethodParams", "get_method", "register_method", "weighted_sum"]
