"""The method registry: name -> implementation (``grouprank``, ``pointwise``, ``listwise``)."""

from paperlab.rerank.methods import grouprank, listwise, pointwise  # noqa: F401  (registers)
from paperlab.rerank.methods.base import METHODS, Method, get_method

__all__ = ["METHODS", "Method", "get_method"]
