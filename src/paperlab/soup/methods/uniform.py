"""``uniform``: the plain mean of the models (a "uniform soup")."""

from __future__ import annotations

from typing import ClassVar

from paperlab.soup.methods.base import Param, register_method
from paperlab.soup.methods.linear import Linear


@register_method
class Uniform(Linear):
    """Every model weighs 1/N; the arithmetic is linear's weighted sum with those weights."""

    name = "uniform"
    mergekit = ""  # mergekit's linear with equal weights
    base = "none"
    params: ClassVar[tuple[Param, ...]] = (Param("normalize", kind=bool, default=True),)
