"""``ties``: TIES-merging (Yadav et al. 2023): trim each task vector, elect a sign, disjoint mean.

Per tensor: d_i = theta_i - base; keep the ``density`` fraction of d_i's entries with the
largest magnitude (ties at the threshold are kept); the elected sign of each entry is the sign
of sum_i w_i * d_i; the merged delta is the weighted mean of the d_i that agree with it (0 where
none does); theta = base + lambda * merged. The magnitude threshold needs the whole tensor, so
this method is not elementwise: the engine hands it whole tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from paperlab.soup.methods.base import MergeMethod, MethodParams, register_method, to_f32

if TYPE_CHECKING:
    import torch


def trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the ``density`` fraction of entries with the largest magnitude (in place)."""
    import torch

    if density >= 1.0 or delta.numel() == 0:
        return delta
    k = int(density * delta.numel())
    if k <= 0:
        return delta.zero_()
    mag = delta.abs()
    # kthvalue of the (n-k+1)-th smallest = k-th largest magnitude
    threshold = torch.kthvalue(mag, delta.numel() - k + 1).values
    return delta.mul_(mag >= threshold)


@register_method
class Ties(MergeMethod):
    """TIES-merging with the 'sum' sign election and a weight-normalised disjoint mean."""

    name = "ties"
    needs_base = True
    elementwise = False

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import torch

        assert base is not None
        b = to_f32(base)
        deltas = []
        for x, w in zip(tensors, params.weights, strict=True):
            d = to_f32(x).sub_(b)
            deltas.append(trim(d, params.density).mul_(w))
        elected = torch.sign(torch.stack(deltas).sum(0))
        merged = torch.zeros_like(b)
        weight_sum = torch.zeros_like(b)
        for d, w in zip(deltas, params.weights, strict=True):
            agree = (torch.sign(d) == elected) & (d != 0)
            merged.add_(d * agree)
            weight_sum.add_(agree.to(torch.float32) * w)
        merged = torch.where(weight_sum > 0, merged / weight_sum.clamp_min(1e-30), torch.zeros_like(b))
        return b.add_(merged.mul_(params.scale))
