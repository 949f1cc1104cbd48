"""``ram`` and ``ramplus_tl`` (Reinforced Agent Merging), as mergekit 0.1.5 computes them.

Per tensor, with base b and task vectors d_i = x_i - b: an entry of d_i is active when
|d_i| > epsilon. Where exactly one model is active its delta is added whole; where several are,
their deltas are averaged; where none is, the base stays:

    theta = b + sum_i d_i [active_i] ([unique] * lambda_i + [shared] / count)

``ram`` has lambda_i = 1. ``ramplus_tl`` rescales each model's unique entries by
lambda_i = 1 + r * clip(rho_i, 0, alpha), rho_i = (its shared active entries) / (its unique
active entries) over the whole tensor ("tensor-local"), so it works on whole tensors; ``ram``
is elementwise and streams in pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from paperlab.soup.methods.base import MergeMethod, MethodParams, Param, load, register_method

if TYPE_CHECKING:
    import torch

EPSILON = Param("epsilon", default=1e-5, low=0.0, fix="entries at or below it count as unchanged")


def _vectors(tensors: Sequence[torch.Tensor], b: torch.Tensor, params: MethodParams,
             eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task vectors (N, n), the active mask and the per-entry count of active models (1, n)."""
    import torch

    tv = torch.empty((len(tensors), b.numel()), dtype=b.dtype, device=b.device)
    for i, x in enumerate(tensors):
        tv[i] = load(x, params).sub_(b)
    active = tv.abs() > eps
    return tv, active, active.sum(dim=0, keepdim=True)


@register_method
class Ram(MergeMethod):
    name = mergekit = "ram"
    base = "required"
    params: ClassVar[tuple[Param, ...]] = (EPSILON,)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert base is not None
        b = load(base, params)
        tv, active, counts = _vectors(tensors, b, params, params.get("epsilon"))
        tv_z = tv * active
        del tv, active
        merged = ((tv_z * (counts == 1)) + (tv_z * (counts > 1) / counts.clamp(min=1))).sum(dim=0, keepdim=True)
        return b.add_(merged.reshape(-1))


@register_method
class RamPlus(MergeMethod):
    name = mergekit = "ramplus_tl"
    base = "required"
    elementwise = False
    params: ClassVar[tuple[Param, ...]] = (Param("r", default=0.1, low=0.0, fix="the strength of the unique-entry rescaling"),
              Param("alpha", default=0.2, low=0.0, fix="the bound on the shared/unique ratio"), EPSILON)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert base is not None
        eps = params.get("epsilon")
        b = load(base, params)
        tv, active, counts = _vectors(tensors, b, params, eps)
        shared, unique = counts > 1, counts == 1
        rho = (active & shared).sum(dim=1) / (active & unique).sum(dim=1).clamp(min=eps)
        lam = 1 + params.get("r") * rho.clamp(min=0, max=params.get("alpha"))
        tv_z = tv * active
        del tv, active
        merged = ((tv_z * unique * lam.unsqueeze(-1)) + (tv_z * shared / counts.clamp(min=1))).sum(dim=0, keepdim=True)
        return b + merged.reshape(-1)
