"""``sce`` (FuseChat's Select, Calculate, Erase; Wan et al. 2024), as mergekit 0.1.5 computes it.

Per tensor, with base b and task vectors d_i = x_i - b stacked over the models:

    select: with select_topk < 1, keep the positions whose variance over the models (population
            variance) is among the int(select_topk * nonzero) largest; zero the rest in every d_i
    calculate: w_i = mean(d_i^2), divided by sum_i w_i (1/N each when that sum is under 1e-6)
    erase: TIES's sign election m_i over the (selected) deltas
    theta = b + sum_i d_i w_i m_i / max(sum_i w_i m_i, 1e-6)

No user weights: the weights are computed from the deltas. Ties at the variance cut go the way
``torch.topk`` takes them (mergekit's own call).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from paperlab.soup.methods.base import MergeMethod, MethodParams, Param, load, register_method
from paperlab.soup.methods.task_vectors import INT8_MASK, elect

if TYPE_CHECKING:
    import torch


def _select(tvs: torch.Tensor, topk: float, mask_dtype: torch.dtype) -> torch.Tensor:
    import torch

    var = torch.var(tvs, dim=0, unbiased=False)
    k = int(torch.count_nonzero(var) * topk)
    mask = torch.zeros_like(var, dtype=mask_dtype)
    if k > 0:
        mask.view(-1)[torch.topk(var.abs().view(-1), k=k, largest=True).indices] = 1
    return mask


@register_method
class Sce(MergeMethod):
    name = mergekit = "sce"
    base = "required"
    elementwise = False
    params: ClassVar[tuple[Param, ...]] = (Param("select_topk", default=1.0, low=0.0, high=1.0, open_low=True,
                    fix="the share of highest-variance positions kept; 1 keeps all"), INT8_MASK)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import torch

        assert base is not None
        b = load(base, params)
        tvs = torch.empty((len(tensors), b.numel()), dtype=b.dtype, device=b.device)  # (N, n)
        for i, x in enumerate(tensors):
            tvs[i] = load(x, params).sub_(b)
        mask_dtype = torch.int8 if params.get("int8_mask") else b.dtype
        if params.get("select_topk") < 1:
            tvs = tvs * _select(tvs, params.get("select_topk"), mask_dtype).unsqueeze(0)
        erase = elect(tvs, params.get("int8_mask"))
        w = tvs.square().mean(dim=1)  # (N,)
        total = torch.sum(w).item()
        w = torch.ones_like(w) / w.shape[0] if abs(total) < 1e-6 else w / total
        erased = w.unsqueeze(-1) * erase  # (N, n)
        del erase
        merged = (tvs * erased).sum(dim=0)
        del tvs
        return b.add_(merged / torch.sum(erased, dim=0).clamp(min=1e-6))
