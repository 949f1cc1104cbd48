"""Spherical means of several models: ``multislerp`` and ``karcher`` (mergekit 0.1.5's semantics).

- ``multislerp`` (weights, base optional: then it works on task vectors and adds the base back):
  flatten each tensor, w normalised to sum 1 (``normalize_weights``), units u_i = x_i / (|x_i| + eps);
  the weighted mean direction m = normalise(sum_i w_i u_i); tangent vectors u_i - <u_i, m> m;
  their weighted sum v mapped back with the exponential map, m cos|v| + v sin|v| / |v| (|v| + eps),
  and scaled by the weighted mean norm sum_i w_i |x_i|. One model is returned as it is. A weighted
  mean direction of ~0 (antipodal inputs) falls back to the weighted sum for two models and is
  an error for more.
- ``karcher`` (no weights; a ``base_model`` counts as one more input, as in mergekit): the
  Riemannian mean of the unit directions with equal weights, by up to ``max_iter`` fixed-point
  steps (stop when the tangent's norm is under ``tol``), scaled by the mean norm. Inputs with a
  norm at or under ``tol`` take no part in the direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from paperlab.soup.errors import WeightsError
from paperlab.soup.methods.base import MergeMethod, MethodParams, Param, load, register_method

if TYPE_CHECKING:
    import torch


@register_method
class MultiSlerp(MergeMethod):
    name = mergekit = "multislerp"
    base = "optional"
    elementwise = False
    allow_negative = True
    params: ClassVar[tuple[Param, ...]] = (Param("weight", per_model=True), Param("normalize_weights", kind=bool, default=True),
              Param("eps", default=1e-8, low=0.0, open_low=True, fix="a small positive constant"))

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import torch

        if len(tensors) == 1:
            return load(tensors[0], params)
        b = load(base, params) if base is not None else None
        xs = torch.stack([load(x, params) for x in tensors])  # (N, n)
        if b is not None:
            xs -= b
        eps = params.get("eps")
        w = torch.tensor(params.weights, dtype=xs.dtype, device=xs.device)
        if params.get("normalize_weights"):
            w = w / w.sum()
        norms = torch.norm(xs, dim=-1, keepdim=True)
        units = xs / (norms + eps)
        mean = (units * w.view(-1, 1)).sum(0)
        mean_norm = torch.norm(mean)
        if mean_norm < eps:
            if xs.shape[0] != 2:
                raise WeightsError(f"multislerp: the weighted mean direction of tensor {params.key!r} is zero (antipodal "
                                   "inputs whose weights cancel); change the weights")
            res = xs[0] * w[0] + xs[1] * w[1]
            return res if b is None else res + b
        mean = mean / mean_norm
        dots = (units * mean).sum(-1, keepdim=True)
        tangent = units - dots * mean
        del units
        v = (tangent * w.view(-1, 1)).sum(0)
        del tangent
        vn = torch.norm(v) + eps
        res = mean * torch.cos(vn) + v * (torch.sin(vn) / vn)
        res = res * (norms.squeeze(-1) * w).sum()
        return res if b is None else res + b


def karcher_mean(xs: list[torch.Tensor], max_iter: int, tol: float) -> torch.Tensor:
    """The equal-weight Karcher mean of flat tensors (see the module docstring)."""
    import torch

    alphas = [1.0 / len(xs)] * len(xs)
    dtype = torch.float64 if xs[0].dtype == torch.float64 else torch.float32
    norms: list[Any] = []
    units = []
    for x in xs:
        nrm = torch.linalg.vector_norm(x.to(dtype))
        norms.append(nrm)
        units.append(torch.zeros_like(x) if nrm.item() == 0.0 else (x / nrm).to(x.dtype))
    valid = [i for i, nrm in enumerate(norms) if nrm.item() > tol]
    if not valid:
        return sum((x * 0 for x in xs[1:]), xs[0] * 0)
    a_sum = sum(alphas[i] for i in valid)
    a = [alphas[i] / a_sum for i in valid]
    us = [units[i] for i in valid]
    mean = torch.zeros_like(us[0])
    for ai, u in zip(a, us, strict=True):
        mean += ai * u
    mn = torch.linalg.vector_norm(mean.to(dtype))
    mean = us[0].clone() if mn.item() < tol else (mean / mn).to(mean.dtype)
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for ai, u in zip(a, us, strict=True):
            dot = torch.clamp(torch.dot(mean, u), -1.0, 1.0)
            theta = torch.arccos(dot)
            if theta.item() < tol:
                continue
            tangent += ai * (theta / torch.sin(theta)) * (u - dot * mean)
        tn = torch.linalg.vector_norm(tangent.to(dtype))
        if tn.item() < tol:
            break
        mean = (torch.cos(tn) * mean + torch.sin(tn) * (tangent / tn)).to(mean.dtype)
        un = torch.linalg.vector_norm(mean.to(dtype))
        if un.item() > tol:
            mean = (mean / un).to(mean.dtype)
    scale = sum((al * nrm for al, nrm in zip(alphas[1:], norms[1:], strict=True)), alphas[0] * norms[0])
    return scale * mean


@register_method
class Karcher(MergeMethod):
    name = mergekit = "karcher"
    base = "input"
    elementwise = False
    params: ClassVar[tuple[Param, ...]] = (Param("max_iter", kind=int, default=10, low=1, fix="at least one step"),
              Param("tol", default=1e-5, low=0.0, open_low=True, fix="a small positive tolerance"))

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        xs = [load(x, params) for x in tensors]
        if len(xs) == 1:
            return xs[0]
        return karcher_mean(xs, params.get("max_iter"), params.get("tol"))
