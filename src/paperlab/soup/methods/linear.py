"""``linear``: theta = sum_i w_i * theta_i (weights divided by their sum when normalising)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from paperlab.soup.methods.base import MergeMethod, MethodParams, register_method, weighted_sum

if TYPE_CHECKING:
    import torch


@register_method
class Linear(MergeMethod):
    """The weighted average that SoCE uses."""

    name = mergekit = "linear"
    default_normalize = True

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return weighted_sum(tensors, params.weights, out)
