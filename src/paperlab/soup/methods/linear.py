"""``linear``: theta = sum_i w_i * theta_i, divided by sum_i w_i when normalising (mergekit's order:
the weighted sum in float32 first, one division at the end, then the compute dtype)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from paperlab.soup.methods.base import (
    MergeMethod,
    MethodParams,
    Param,
    compute_dtype,
    register_method,
    weighted_sum,
)

if TYPE_CHECKING:
    import torch


@register_method
class Linear(MergeMethod):
    """The weighted average that SoCE uses."""

    name = mergekit = "linear"
    base = "input"
    reads_only = True  # weighted_sum copies each input block before any arithmetic
    params: ClassVar[tuple[Param, ...]] = (Param("weight", per_model=True), Param("normalize", kind=bool, default=True))

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import torch

        acc = weighted_sum(tensors, params.weights, out, params.compute)
        if params.get("normalize"):
            # The float32 sum of the float32 weights, as mergekit divides by it.
            total = torch.tensor(params.weights, dtype=torch.float32).sum()
            if float(total) != 1.0:
                acc.div_(total)
        if params.compute != "float32":
            acc.copy_(acc.to(compute_dtype(params)))  # mergekit returns the sum in its compute dtype
        return acc
