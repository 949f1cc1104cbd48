"""Methods that pick, entry by entry, how much of the other model to take: ``nearswap`` and
``arcee_fusion`` (mergekit 0.1.5's semantics; base + exactly one other model).

- ``nearswap``: w = clamp(t / max(|b - x|, 1e-6), 0, 1) per entry, theta = w x + (1 - w) b:
  entries where the two models nearly agree move to the other model, distant ones stay.
- ``arcee_fusion``: importance = |x - b| * KL(softmax(x) || softmax(b)), the KL taken over the
  last axis of the tensor (each row; a 1-D tensor is one row; 1e-8 added to both
  distributions); threshold = median + 1.5 IQR of the importances (quantiles read from the
  sorted values at index floor(q (n - 1)), q in float32); theta = b + (x - b) [importance >=
  threshold]. Above 1,000,000 entries the quantiles come from a sample of 1,000,000 entries
  drawn with replacement, as mergekit does; ours are drawn from the tensor's
  seeded generator (see :func:`~paperlab.soup.methods.base.rng_for`), so a run is reproducible;
  mergekit's come from torch's global generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from paperlab.soup.methods.base import (
    MergeMethod,
    MethodParams,
    Param,
    load,
    register_method,
    rng_for,
)

if TYPE_CHECKING:
    import torch

QUANTILE_SAMPLE = 1_000_000


@register_method
class NearSwap(MergeMethod):
    name = mergekit = "nearswap"
    base = "required"
    min_models = max_models = 1
    params: ClassVar[tuple[Param, ...]] = (Param("t", low=0.0, fix="larger t takes more of the other model where the two are close"),)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert base is not None
        a, b = load(base, params), load(tensors[0], params)
        w = (params.get("t") / (a - b).abs_().clamp_(min=1e-6)).clamp_(min=0, max=1)
        return w * b + (1 - w) * a


def fusion_threshold(importance: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """median + 1.5 IQR of the importances (a seeded sample of 10^6 of them when there are more)."""
    import torch

    flat = importance.reshape(-1)
    if flat.numel() > QUANTILE_SAMPLE:
        flat = flat[torch.randint(flat.numel(), (QUANTILE_SAMPLE,), generator=gen, device=flat.device)]
    ordered = torch.sort(flat).values
    idx = (torch.tensor([0.25, 0.5, 0.75]) * (ordered.numel() - 1)).long()
    q1, median, q3 = ordered[idx.to(ordered.device)]
    return median + 1.5 * (q3 - q1)


@register_method
class ArceeFusion(MergeMethod):
    name = mergekit = "arcee_fusion"
    base = "required"
    elementwise = False
    min_models = max_models = 1
    params: ClassVar[tuple[Param, ...]] = ()

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        assert base is not None
        shape = params.shape or (base.numel(),)
        b, x = load(base, params).reshape(shape), load(tensors[0], params).reshape(shape)
        p = F.softmax(x, dim=-1) + 1e-8
        q = F.softmax(b, dim=-1) + 1e-8
        kl = torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
        del p, q
        importance = (x - b).abs() * kl
        mask = (importance >= fusion_threshold(importance, rng_for(params, 0, b.device))).float()
        del importance
        return (b + (x - b) * mask).reshape(-1)
