"""``task_arithmetic``: theta = base + lambda * sum_i w_i * (theta_i - base) (Ilharco et al. 2023)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from paperlab.soup.methods.base import MergeMethod, MethodParams, register_method, to_f32

if TYPE_CHECKING:
    import torch


@register_method
class TaskArithmetic(MergeMethod):
    """Adds weighted task vectors to a base; negative weights (task negation) are allowed."""

    name = "task_arithmetic"
    needs_base = True
    allow_negative = True

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert base is not None  # validated before any work
        b = to_f32(base)
        acc = None
        tmp = None
        for x, w in zip(tensors, params.weights, strict=True):
            tmp = to_f32(x, tmp)
            tmp.sub_(b).mul_(w)
            if acc is None:
                acc, tmp = tmp, None
            else:
                acc.add_(tmp)
        assert acc is not None
        acc.mul_(params.scale)
        return acc.add_(b)
