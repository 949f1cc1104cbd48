"""``uniform``: the plain mean of the models (a "uniform soup")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from paperlab.soup.methods.base import MergeMethod, MethodParams, register_method, weighted_sum

if TYPE_CHECKING:
    import torch


@register_method
class Uniform(MergeMethod):
    """Every model weighs 1/N; weights given by the user are refused unless all equal."""

    name = "uniform"
    takes_weights = False

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return weighted_sum(tensors, params.weights, out)
