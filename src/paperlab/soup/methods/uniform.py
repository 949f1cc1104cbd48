"""``uniform``: the plain mean of the models (a "uniform soup")."""

from __future__ import annotations

from paperlab.soup.methods.base import register_method
from paperlab.soup.methods.linear import Linear


@register_method
class Uniform(Linear):
    """Every model weighs 1/N; weights given by the user are refused unless all equal.

    The arithmetic is linear's weighted sum; only the weights differ (fixed at 1/N).
    """

    name = "uniform"
    mergekit = ""  # mergekit's linear with equal weights
    takes_weights = False
    model_params = ()
