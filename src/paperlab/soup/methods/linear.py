"""``linear``: theta = sum_i w_i * theta_i, divided by sum_i w_i when normalising (mergekit's order:
the weighted sum first, one division at the end)."""

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
    prenormalize = False

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        acc = weighted_sum(tensors, params.weights, out)
        if params.normalize:
            import torch

            # The float32 sum of the float32 weights, as mergekit divides by it.
            total = torch.tensor(params.weights, dtype=torch.float32).sum()
            if float(total) != 1.0:
                acc.div_(total)
        return acc
