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
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from paperlab.soup.errors import WeightsError
from paperlab.soup.methods.base import (
    MergeMethod,
    MethodParams,
    Param,
    blocked,
    compute_dtype,
    differences,
    each,
    give_spares,
    load,
    register_method,
    result_in,
    row_norm,
    row_sum,
    spare,
)
from paperlab.soup.methods.spares import SPARES

if TYPE_CHECKING:
    import torch

# Entries per block of karcher's passes: each iteration is a few cheap operations per model, so
# torch's per-call cost counted at 128 Ki (4M-entry tensors: 175-181 ms against 155-162 ms).
_KARCHER_BLOCK = 1 << 19


@register_method
class MultiSlerp(MergeMethod):
    name = mergekit = "multislerp"
    base = "optional"
    elementwise = False
    reads_only = True  # every input is copied (converted) into the method's own rows first
    writes_out = True
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
        dt = compute_dtype(params)
        n, count = tensors[0].numel(), len(tensors)
        eps = params.get("eps")
        w = torch.tensor(params.weights, dtype=dt, device=tensors[0].device)
        if params.get("normalize_weights"):
            w = w / w.sum()
        # Three vectors whatever the count: the rows of mergekit's stacked xs are written out only
        # for their norms (three at a time, the first in the result's buffer); every later pass
        # converts the inputs again block by block, which reads half the bytes of a stored row.
        bufs = [result_in(out, n, dt, tensors[0]), *(spare(n, dt, tensors[0]) for _ in range(min(count, 3) - 1))]
        norms_: list[torch.Tensor] = []
        for k in range(0, count, len(bufs)):
            group = bufs[: len(tensors[k: k + len(bufs)])]
            blocked(bufs[0], partial(differences, group, tensors[k: k + len(group)], base))
            norms_ += each(row_norm, group)  # torch.norm(xs, dim=-1)
        norms = torch.stack(norms_).view(-1, 1)
        scale = norms + eps
        mean, prods = bufs[0], bufs[1:]  # the mean direction (then the result); units_i * mean (then v)
        blocked(mean, partial(_units_mean, tensors, base, scale, w, mean), rows=count + 1)
        mean_norm = torch.norm(mean)
        if mean_norm < eps:
            give_spares(*prods)
            return _antipodal(tensors, base, w, params)
        dots: list[torch.Tensor] = []
        for k in range(0, count, len(prods)):
            idx = list(range(k, min(count, k + len(prods))))
            blocked(mean, partial(_products, tensors, base, scale, idx, mean, mean_norm if k == 0 else None, prods),
                    rows=2)
            dots += each(row_sum, prods[: len(idx)])
        v = prods[0]
        blocked(mean, partial(_tangent_sum, tensors, base, scale, dots, w, mean, v), rows=count + 2)
        tn = torch.norm(v) + eps
        avg_norm = (norms.squeeze(-1) * w).sum()
        blocked(mean, partial(_exp_map, mean, v, torch.cos(tn), torch.sin(tn) / tn, avg_norm, base))
        give_spares(*prods)
        return mean


def _antipodal(tensors: Sequence[torch.Tensor], base: torch.Tensor | None, w: torch.Tensor,
               params: MethodParams) -> torch.Tensor:
    """mergekit's fallback for two inputs whose weighted mean direction is ~0: the weighted sum."""
    if len(tensors) != 2:
        raise WeightsError(f"multislerp: the weighted mean direction of tensor {params.key!r} is zero (antipodal "
                           "inputs whose weights cancel); change the weights")
    x0, x1 = load(tensors[0], params), load(tensors[1], params)
    b = None
    if base is not None:
        b = load(base, params)
        x0 -= b
        x1 -= b
    res = x0 * w[0] + x1 * w[1]
    return res if b is None else res + b


def _unit(xs: Sequence[torch.Tensor], scale: torch.Tensor, i: int, s: int, e: int, into: torch.Tensor,
          b: torch.Tensor | None) -> torch.Tensor:
    """units_i = (x_i - base) / (norm_i + eps) for one block, into ``into`` (``b``: the base's
    block, converted once per block)."""
    into.copy_(xs[i][s:e])
    if b is not None:
        into.sub_(b)
    return into.div_(scale[i])


def _base_block(base: torch.Tensor | None, s: int, e: int, t: torch.Tensor) -> torch.Tensor | None:
    return None if base is None else t[-1].copy_(base[s:e])


def _units_mean(xs: Sequence[torch.Tensor], base: torch.Tensor | None, scale: torch.Tensor, w: torch.Tensor,
                mean: torch.Tensor, s: int, e: int, t: torch.Tensor) -> None:
    import torch

    b = _base_block(base, s, e, t)
    for i in range(len(xs)):  # t_i = units_i * w_i
        _unit(xs, scale, i, s, e, t[i], b).mul_(w[i])
    torch.sum(t[: len(xs)], 0, out=mean[s:e])  # mean = (units * w).sum(0), a column at a time


def _products(xs: Sequence[torch.Tensor], base: torch.Tensor | None, scale: torch.Tensor, rows: list[int],
              mean: torch.Tensor, mean_norm: torch.Tensor | None, prods: list[torch.Tensor],
              s: int, e: int, t: torch.Tensor) -> None:
    import torch

    m = mean[s:e]
    if mean_norm is not None:  # the first pass also normalises the mean direction
        m.div_(mean_norm)
    b = _base_block(base, s, e, t)
    for k, i in enumerate(rows):  # units_i * mean
        torch.mul(_unit(xs, scale, i, s, e, t[0], b), m, out=prods[k][s:e])


def _tangent_sum(xs: Sequence[torch.Tensor], base: torch.Tensor | None, scale: torch.Tensor, dots: list[torch.Tensor],
                 w: torch.Tensor, mean: torch.Tensor, v: torch.Tensor, s: int, e: int, t: torch.Tensor) -> None:
    import torch

    count, m = len(xs), mean[s:e]
    b = _base_block(base, s, e, t)
    for i in range(count):  # t_i = (units_i - dots_i * mean) * w_i
        u = _unit(xs, scale, i, s, e, t[i], b)
        torch.sub(u, torch.mul(dots[i], m, out=t[count]), out=u).mul_(w[i])
    torch.sum(t[:count], 0, out=v[s:e])  # v = (tangent * w).sum(0)


def _exp_map(mean: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sinc: torch.Tensor, avg_norm: torch.Tensor,
             base: torch.Tensor | None, s: int, e: int, t: torch.Tensor) -> None:
    # (mean * cos|v| + v * (sin|v| / |v|)) * avg_norm (+ base), the scalars on the right as in mergekit
    m = mean[s:e]
    m.mul_(cos).add_(v[s:e].mul_(sinc)).mul_(avg_norm)
    if base is not None:
        m.add_(t.copy_(base[s:e]))


def _weighted_mean(mean: torch.Tensor, a: list[float], us: list[torch.Tensor], s: int, e: int, t: torch.Tensor) -> None:
    import torch

    for ai, u in zip(a, us, strict=True):  # mean (zeros) += a_i * u_i
        mean[s:e].add_(torch.mul(u[s:e], ai, out=t))


def _tangent(tangent: torch.Tensor, mean: torch.Tensor, steps: list[tuple[Any, Any, torch.Tensor]],
             s: int, e: int, t: torch.Tensor) -> None:
    import torch

    g, m = tangent[s:e], mean[s:e]
    g.zero_()
    for coef, dot, u in steps:  # tangent += coef * (u - dot * mean)
        torch.mul(m, dot, out=t)
        torch.sub(u[s:e], t, out=t)
        g.add_(t.mul_(coef))


def _move(mean: torch.Tensor, tangent: torch.Tensor, tn: Any, s: int, e: int, t: torch.Tensor) -> None:
    import torch

    # mean = cos(tn) * mean + sin(tn) * (tangent / tn). The float32 scalars stay the left
    # operands, as in mergekit: a lower-precision tensor then sees them rounded to its own dtype
    # first (on the right they would not be).
    m = mean[s:e]
    torch.div(tangent[s:e], tn, out=t)
    torch.mul(torch.cos(tn), m, out=m).add_(torch.mul(torch.sin(tn), t, out=t))


def karcher_mean(xs: list[torch.Tensor], max_iter: int, tol: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """The equal-weight Karcher mean of flat tensors (see the module docstring).

    ``xs`` are the caller's own copies: they are divided by their norms in place. mergekit's
    arithmetic, element for element: every whole-vector step (each norm and dot product, so the
    rounding of every reduction) is the same call on the same tensor, and the elementwise steps
    run the same operations in the same order one cache-sized block at a time, on two threads,
    into two buffers kept for all iterations (mergekit allocates five vectors per model and
    iteration): the mean in ``out`` (a buffer of the caller's, when it has room) and the tangent.
    """
    import torch

    alphas = [1.0 / len(xs)] * len(xs)
    dtype = torch.float64 if xs[0].dtype == torch.float64 else torch.float32
    norms: list[Any] = [torch.linalg.vector_norm(x.to(dtype)) for x in xs]
    valid = [i for i, nrm in enumerate(norms) if nrm.item() > tol]
    if not valid:
        return sum((x * 0 for x in xs[1:]), xs[0] * 0)
    units = [x.zero_() if nrm.item() == 0.0 else x.div_(nrm) for x, nrm in zip(xs, norms, strict=True)]
    a_sum = sum(alphas[i] for i in valid)
    a = [alphas[i] / a_sum for i in valid]
    us = [units[i] for i in valid]
    mean = result_in(out, us[0].numel(), us[0].dtype, us[0]).zero_()
    tangent = spare(mean.numel(), mean.dtype, mean)
    blocked(mean, partial(_weighted_mean, mean, a, us), block=_KARCHER_BLOCK)
    mn = torch.linalg.vector_norm(mean.to(dtype))
    if mn.item() < tol:
        mean.copy_(us[0])
    else:
        mean.div_(mn)
    for _ in range(max_iter):
        steps = []
        for ai, u in zip(a, us, strict=True):
            dot = torch.clamp(torch.dot(mean, u), -1.0, 1.0)
            theta = torch.arccos(dot)
            if theta.item() < tol:
                continue
            steps.append((ai * (theta / torch.sin(theta)), dot, u))
        blocked(mean, partial(_tangent, tangent, mean, steps), block=_KARCHER_BLOCK)
        tn = torch.linalg.vector_norm(tangent.to(dtype))
        if tn.item() < tol:
            break
        blocked(mean, partial(_move, mean, tangent, tn), block=_KARCHER_BLOCK)
        un = torch.linalg.vector_norm(mean.to(dtype))
        if un.item() > tol:
            mean.div_(un)
    give_spares(tangent)
    scale = sum((al * nrm for al, nrm in zip(alphas[1:], norms[1:], strict=True)), alphas[0] * norms[0])
    return torch.mul(scale, mean, out=mean)


@register_method
class Karcher(MergeMethod):
    name = mergekit = "karcher"
    base = "input"
    elementwise = False
    reads_only = True  # every input is converted into a buffer of the method's own first
    writes_out = True
    params: ClassVar[tuple[Param, ...]] = (Param("max_iter", kind=int, default=10, low=1, fix="at least one step"),
              Param("tol", default=1e-5, low=0.0, open_low=True, fix="a small positive tolerance"))

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if len(tensors) == 1:
            return load(tensors[0], params)
        dt = compute_dtype(params)
        if tensors[0].numel() > SPARES.limit:
            SPARES.clear()  # a large tensor: what small ones left goes before its working set
        xs = [load(x, params, out=spare(x.numel(), dt, x)) for x in tensors]
        mean = karcher_mean(xs, params.get("max_iter"), params.get("tol"), out)
        give_spares(*xs)
        return mean
