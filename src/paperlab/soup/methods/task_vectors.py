"""Task-vector methods: task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs,
breadcrumbs_ties, della, della_linear (mergekit's "generalized task arithmetic").

Per tensor, with base b, models x_i, weights w_i (all in float32):

    d_i   = drop(x_i - b)          # none | magnitude (ties) | random (dare) | outliers (breadcrumbs) | rank (della)
    d_i  *= w_i
    sign election (ties, dare_ties, breadcrumbs_ties, della):
        s  = +1 where sum_i d_i >= 0 else -1      (a zero sum elects +; mergekit's rule)
        m_i = sign(d_i) == s                       (a zero entry never votes)
        D  = sum_i d_i * m_i,  W = sum_i w_i * m_i (W = 1 where no model agrees)
    otherwise:
        D  = sum_i d_i,        W = sum_i w_i      (W = 1 when |W| < 1e-8)
    normalize: D /= W;  lambda: D *= lambda;  theta = b + D

Defaults follow mergekit: normalize is on for ties and della, off for the rest; rescale (the
kept entries scaled back to the dropped vector's L1 norm) is on for dare_* and della*.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from paperlab.soup.methods import sparsify
from paperlab.soup.methods.base import MergeMethod, MethodParams, register_method, rng_for, to_f32

if TYPE_CHECKING:
    import torch


class TaskVectorMethod(MergeMethod):
    """The shared computation; subclasses choose the drop and whether signs are elected."""

    needs_base = True
    allow_negative = True
    prenormalize = False
    consensus: ClassVar[bool] = False
    drop: ClassVar[str | None] = None  # None | "magnitude" | "random" | "outliers" | "della"
    default_rescale: ClassVar[bool] = False
    shared_params: ClassVar[tuple[str, ...]] = ("normalize", "lambda", "rescale", "int8_mask", "weight", "density")
    model_params: ClassVar[tuple[str, ...]] = ("weight", "density")

    def _drop(self, d: torch.Tensor, i: int, params: MethodParams) -> torch.Tensor:
        density = params.density_of(i)
        rescale = self.default_rescale if params.rescale is None else params.rescale
        if self.drop == "magnitude":
            return sparsify.magnitude(d, density, rescale)
        if self.drop == "outliers":
            gamma = params.gammas[i] if params.gammas is not None else 0.01
            return sparsify.magnitude_outliers(d, density, gamma, rescale)
        if self.drop == "random":
            return sparsify.bernoulli(d, density, rng_for(params, i, d.device), rescale)
        if self.drop == "della":
            eps = params.epsilons[i] if params.epsilons is not None else 0.15
            return sparsify.della_magprune(d, params.shape, density, eps, rng_for(params, i, d.device), rescale)
        return d

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import torch

        assert base is not None  # validated before any work
        b = to_f32(base)
        deltas = []
        for i, (x, w) in enumerate(zip(tensors, params.weights, strict=True)):
            d = self._drop(to_f32(x).sub_(b), i, params)
            deltas.append(d.mul_(w))
        if self.consensus:
            total = deltas[0].clone()
            for d in deltas[1:]:
                total.add_(d)
            elected = torch.where(total >= 0, 1.0, -1.0)
            del total
            mixed = torch.zeros_like(b)
            divisor = torch.zeros_like(b)
            for d, w in zip(deltas, params.weights, strict=True):
                agree = (torch.sign(d) == elected).to(torch.float32)
                mixed.add_(d * agree)
                divisor.add_(agree * w)
            divisor[divisor == 0] = 1.0
        else:
            mixed = deltas[0]
            for d in deltas[1:]:
                mixed.add_(d)
            total_w = sum(params.weights)
            divisor = torch.tensor(1.0 if abs(total_w) < 1e-8 else total_w, dtype=torch.float32)
        if params.normalize:
            mixed = mixed.div_(divisor)
        if params.scale != 1:
            mixed = mixed.mul_(params.scale)
        return b.add_(mixed)


@register_method
class TaskArithmetic(TaskVectorMethod):
    """theta = base + lambda * sum_i w_i (x_i - base) (Ilharco et al. 2023); elementwise."""

    name = mergekit = "task_arithmetic"
    # density is accepted (mergekit's configs give it) and has no effect: nothing is dropped.


@register_method
class Ties(TaskVectorMethod):
    """TIES-merging (Yadav et al. 2023): magnitude trim, sign election, disjoint mean."""

    name = mergekit = "ties"
    elementwise = False
    consensus = True
    drop = "magnitude"
    default_normalize = True


@register_method
class DareLinear(TaskVectorMethod):
    """DARE (Yu et al. 2024): random drop with L1 rescale, then a weighted sum of task vectors."""

    name = mergekit = "dare_linear"
    elementwise = False
    drop = "random"
    default_rescale = True


@register_method
class DareTies(TaskVectorMethod):
    """DARE's random drop followed by TIES's sign election."""

    name = mergekit = "dare_ties"
    elementwise = False
    consensus = True
    drop = "random"
    default_rescale = True


@register_method
class Breadcrumbs(TaskVectorMethod):
    """Model Breadcrumbs (Davari & Belilovsky 2023): drop the largest outliers and the smallest."""

    name = mergekit = "breadcrumbs"
    elementwise = False
    drop = "outliers"
    shared_params = (*TaskVectorMethod.shared_params, "gamma")
    model_params = ("weight", "density", "gamma")


@register_method
class BreadcrumbsTies(Breadcrumbs):
    """Breadcrumbs' drop followed by TIES's sign election."""

    name = mergekit = "breadcrumbs_ties"
    consensus = True


@register_method
class Della(TaskVectorMethod):
    """DELLA (Deep et al. 2024): drop by magnitude rank (MagPrune), L1 rescale, sign election."""

    name = mergekit = "della"
    elementwise = False
    consensus = True
    drop = "della"
    default_rescale = True
    default_normalize = True
    shared_params = (*TaskVectorMethod.shared_params, "epsilon")
    model_params = ("weight", "density", "epsilon")


@register_method
class DellaLinear(Della):
    """DELLA's drop with a plain weighted sum (no sign election)."""

    name = mergekit = "della_linear"
    consensus = False
    default_normalize = False
