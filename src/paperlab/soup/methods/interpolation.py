"""Geometric methods: slerp, nuslerp, model_stock, and passthrough (mergekit's semantics).

- ``slerp`` (base + exactly one model, parameter ``t``): spherical interpolation of the two
  whole tensors in float32. With a = base, b = other, both flattened: cos = <a/|a|, b/|b|> (a
  norm under 1e-8 counts as 1); when |cos| > 0.9995 the result is the straight line
  (1-t) a + t b, else sin((1-t) theta)/sin(theta) a + sin(t theta)/sin(theta) b with
  theta = acos(cos). Norms and the dot product are summed over pieces of 2^20 elements (the norm
  of the pieces' norms), as mergekit does, so the coefficients are mergekit's to the last bit.
- ``nuslerp`` (two models with weights, base optional): t = w_2 / (w_1 + w_2) (0.5 when the sum is
  ~0); slerp between the two tensors (or, with a base, between their task vectors, added back to
  the base), over the whole flattened tensor (``nuslerp_flatten: true``, the default), or row by
  row (``nuslerp_flatten: false``) or column by column (``nuslerp_row_wise: true``); an
  (anti)parallel pair (1 - cos^2 <= 1e-16) falls back to the straight line.
- ``model_stock`` (base + at least two models): t = N cos / (1 + (N-1) cos) with cos the mean
  cosine between the models' task vectors (each pair, whole tensor, or per row with
  ``filter_wise: true``); theta = t * mean(x_i) + (1 - t) * base; t = 0 where the denominator
  is ~0 (|.| < 1e-6).
- ``passthrough`` (one model): the tensor unchanged, times its optional ``scale``; used with
  ``slices`` to stack layers of different models.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from paperlab.soup.methods.base import (
    MergeMethod,
    MethodParams,
    Param,
    _tmp,
    blocked,
    compute_dtype,
    differences,
    each,
    give_spares,
    load,
    register_method,
    result_in,
    rounded,
    spare,
)

if TYPE_CHECKING:
    import torch

DOT_THRESHOLD = 0.9995
NORM_EPS = 1e-8
_PIECE = 1 << 20  # mergekit's slerp chunk


def _chunked_norm(x: torch.Tensor) -> torch.Tensor:
    import torch

    parts = each(torch.linalg.vector_norm, [x[s: s + _PIECE] for s in range(0, x.numel(), _PIECE)])
    return torch.linalg.vector_norm(torch.stack(parts))


@register_method
class Slerp(MergeMethod):
    name = mergekit = "slerp"
    base = "required"
    elementwise = False
    reads_only = True  # the inputs are converted into the method's own vectors first
    writes_out = True
    min_models = max_models = 1
    params: ClassVar[tuple[Param, ...]] = (Param("t", low=0.0, high=1.0, fix="0 is the base model, 1 the other"),)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert base is not None
        import torch

        f32, n = torch.float32, base.numel()
        if n == 0:
            return torch.empty(0, dtype=f32, device=base.device)
        a = rounded(result_in(out, n, f32, base).copy_(base), params)
        b = rounded(spare(n, f32, base).copy_(tensors[0]), params)
        t = torch.tensor(params.get("t"), dtype=f32, device=a.device)
        na = _chunked_norm(a)
        nb = _chunked_norm(b)
        na = torch.where(na > NORM_EPS, na, 1)
        nb = torch.where(nb > NORM_EPS, nb, 1)

        def dot_part(s: int) -> torch.Tensor:  # ((a / na) * (b / nb)).sum() over one of mergekit's pieces
            e = min(n, s + _PIECE)
            buf = _tmp(2 * (e - s), a.device)  # this thread's, kept: no fresh 4 MiB temporaries
            ua, ub = buf[: e - s], buf[e - s:]
            return torch.div(a[s:e], na, out=ua).mul_(torch.div(b[s:e], nb, out=ub)).sum()

        dot = torch.stack(each(dot_part, range(0, n, _PIECE))).sum().clamp(-1, 1)
        linear = dot.abs() > DOT_THRESHOLD
        theta = torch.acos(torch.where(linear, 0, dot))
        s = torch.sin(theta)
        ca = torch.where(linear, 1 - t, torch.sin((1 - t) * theta) / s)
        cb = torch.where(linear, t, torch.sin(t * theta) / s)

        def mix(s: int, e: int, _: torch.Tensor) -> None:  # a * ca + b * cb
            a[s:e].mul_(ca).add_(b[s:e].mul_(cb))

        blocked(a, mix)
        give_spares(b)
        return a if params.compute == "float32" else a.to(compute_dtype(params))


def _nuslerp(t: float, v0: torch.Tensor, v1: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Slerp over the last axis of two tensors."""
    import torch

    u0 = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = torch.sum(u0 * u1, dim=-1, keepdim=True).clamp(-1, 1)
    del u0, u1
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    sin = torch.sin(theta)
    sph = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / sin
    return torch.where(colinear, (1 - t) * v0 + t * v1, sph)


@register_method
class NuSlerp(MergeMethod):
    name = mergekit = "nuslerp"
    base = "optional"
    elementwise = False
    reads_only = True  # the inputs are copied (converted) into the method's own vectors first
    writes_out = True
    min_models = max_models = 2
    params: ClassVar[tuple[Param, ...]] = (Param("weight", per_model=True), Param("nuslerp_flatten", kind=bool, default=True),
              Param("nuslerp_row_wise", kind=bool, default=False))

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        w0, w1 = params.weights
        total = w0 + w1
        t = 0.5 if abs(total) < 1e-6 else w1 / total
        if params.get("nuslerp_flatten"):
            return _nuslerp_flat(t, tensors[0], tensors[1], base, compute_dtype(params), out)
        x0, x1 = load(tensors[0], params), load(tensors[1], params)
        b = load(base, params) if base is not None else None
        if b is not None:
            x0.sub_(b)
            x1.sub_(b)
        shape = params.shape or (x0.numel(),)
        m0, m1 = x0.reshape(shape), x1.reshape(shape)
        if params.get("nuslerp_row_wise"):  # slerp the row vectors (mergekit's dim=0)
            m0, m1 = m0.transpose(0, -1), m1.transpose(0, -1)
            res = _nuslerp(t, m0, m1).transpose(0, -1).reshape(-1)
        else:
            res = _nuslerp(t, m0, m1).reshape(-1)
        return res if b is None else b.add_(res)


def _unit_product(v0: torch.Tensor, v1: torch.Tensor, n0: torch.Tensor, n1: torch.Tensor,
                  s: int, e: int, t: torch.Tensor) -> None:
    import torch

    u0, u1 = torch.div(v0[s:e], n0, out=t[0]), torch.div(v1[s:e], n1, out=t[1])
    torch.mul(u0, u1, out=v1[s:e])  # v0_u * v1_u, over v1 (rebuilt from the inputs at the end)


def _second(x1: torch.Tensor, base: torch.Tensor | None, s: int, e: int, t: torch.Tensor) -> torch.Tensor:
    """v1 = x1 - base for one block into t[0] (the base's block left in t[1])."""
    v1 = t[0].copy_(x1[s:e])
    return v1 if base is None else v1.sub_(t[1].copy_(base[s:e]))


def _spherical(v0: torch.Tensor, x1: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor, sin: torch.Tensor,
               base: torch.Tensor | None, s: int, e: int, t: torch.Tensor) -> None:
    import torch

    # (sin((1-t) theta) * v0 + sin(t theta) * v1) / sin(theta) (+ base), into v0
    v1 = _second(x1, base, s, e, t)
    a = v0[s:e]
    torch.mul(c0, a, out=a).add_(torch.mul(c1, v1, out=v1)).div_(sin)
    if base is not None:
        a.add_(t[1])


def _straight(v0: torch.Tensor, x1: torch.Tensor, t_: float, base: torch.Tensor | None,
              s: int, e: int, t: torch.Tensor) -> None:
    v1 = _second(x1, base, s, e, t)
    a = v0[s:e]  # (1 - t) * v0 + t * v1 (+ base), into v0
    a.mul_(1 - t_).add_(v1.mul_(t_))
    if base is not None:
        a.add_(t[1])


def _nuslerp_flat(t: float, x0: torch.Tensor, x1: torch.Tensor, base: torch.Tensor | None,
                  dt: torch.dtype, out: torch.Tensor | None, eps: float = 1e-8) -> torch.Tensor:
    """:func:`_nuslerp` of the whole flattened tensors, the elementwise steps in cache-sized
    blocks on two threads, every reduction the same whole-tensor call as mergekit's. Two
    vectors: the first difference (then the result, in ``out`` when it has room) and the
    second (then the product of the units; the last pass converts the input again)."""
    import torch

    n = x0.numel()
    v0, v1 = result_in(out, n, dt, x0), spare(n, dt, x0)
    blocked(v0, partial(differences, [v0, v1], [x0, x1], base))
    n0, n1 = (x.clamp(min=1e-7) for x in each(lambda v: torch.norm(v, dim=-1, keepdim=True), [v0, v1]))
    blocked(v0, partial(_unit_product, v0, v1, n0, n1), rows=2)
    cos = torch.sum(v1, dim=-1, keepdim=True).clamp(-1, 1)
    give_spares(v1)
    if ((1 - cos.square()) <= eps**2).item():  # colinear: mergekit's torch.where takes the straight line
        blocked(v0, partial(_straight, v0, x1, t, base), rows=2)
    else:
        theta = torch.acos(cos)
        blocked(v0, partial(_spherical, v0, x1, torch.sin((1 - t) * theta), torch.sin(t * theta), torch.sin(theta),
                            base), rows=2)
    return v0


@register_method
class ModelStock(MergeMethod):
    name = mergekit = "model_stock"
    base = "required"
    elementwise = False
    reads_only = True  # the offsets and the final mix read the inputs block by block, never write them
    writes_out = True
    min_models = 2
    params: ClassVar[tuple[Param, ...]] = (Param("filter_wise", kind=bool, default=False),)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import torch

        assert base is not None
        if not params.get("filter_wise"):
            return _model_stock_flat(tensors, base, compute_dtype(params), out)
        w0 = load(base, params)
        shape = params.shape or (w0.numel(),)
        w0m = w0.reshape(shape) if len(shape) >= 2 else w0.reshape(1, -1)
        ws = [load(x, params).reshape(w0m.shape) for x in tensors]
        offsets = [w - w0m for w in ws]
        cos = []
        for i, a in enumerate(offsets):
            for b in offsets[i + 1:]:
                norms = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
                cos.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
        del offsets
        t = _stock_ratio(cos, len(ws))
        avg = sum(ws[1:], ws[0] + 0) / len(ws)  # mergekit's sum(ws): 0 + w1 + w2 ... (0 + -0 is +0)
        return (t * avg + (1 - t) * w0m).reshape(-1)


def _stock_ratio(cos: list[torch.Tensor], n: int) -> torch.Tensor:
    """t = N c / (1 + (N-1) c) from the pairwise cosines (0 where the denominator is ~0)."""
    import torch

    c = torch.stack(cos).mean(dim=0).unsqueeze(-1)
    denom = 1 + (n - 1) * c
    singular = denom.abs() < 1e-6
    return torch.where(singular, torch.zeros_like(c), (n * c) / torch.where(singular, torch.ones_like(denom), denom))


def _pair_product(a: torch.Tensor, b: torch.Tensor, prod: torch.Tensor, s: int, e: int, t: torch.Tensor) -> None:
    import torch

    torch.mul(a[s:e], b[s:e], out=prod[s:e])


def _stock_mix(res: torch.Tensor, xs: Sequence[torch.Tensor], base: torch.Tensor, t_: torch.Tensor,
               one_minus_t: torch.Tensor, s: int, e: int, t: torch.Tensor) -> None:
    import torch

    a = res[s:e]  # t * (0 + w_1 + ... + w_N) / N + (1 - t) * w_0, in the compute dtype
    a.copy_(xs[0][s:e]).add_(0)
    for x in xs[1:]:
        a.add_(t.copy_(x[s:e]))
    torch.mul(t_, a.div_(len(xs)), out=a).add_(torch.mul(one_minus_t, t.copy_(base[s:e]), out=t))


def _model_stock_flat(xs: Sequence[torch.Tensor], base: torch.Tensor, dt: torch.dtype,
                      out: torch.Tensor | None) -> torch.Tensor:
    """model_stock over the whole flattened tensors: the offsets, pairwise products and final mix
    in cache-sized blocks on two threads, every norm and sum the same whole-tensor call as
    mergekit's. The first offset lives where the result goes (``out`` when it has room), the
    last pair's product overwrites the first of them, and the mix reads the inputs again: two
    vectors for two models."""
    import torch

    n = base.numel()
    res = result_in(out, n, dt, base)
    offsets = [res, *(spare(n, dt, base) for _ in xs[1:])]
    blocked(res, partial(differences, offsets, xs, base))
    norms = each(lambda v: torch.norm(v, dim=-1), offsets)
    pairs = [(i, j) for i in range(len(xs)) for j in range(i + 1, len(xs))]
    prod = spare(n, dt, base) if len(pairs) > 1 else offsets[0]
    cos = []
    for i, j in pairs:
        last = (i, j) == pairs[-1]
        into = offsets[i] if last else prod  # nothing reads offset i after its last pair
        blocked(res, partial(_pair_product, offsets[i], offsets[j], into))
        cos.append((into.sum(dim=-1) / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1))
    give_spares(*offsets[1:], *([prod] if len(pairs) > 1 else []))
    t = _stock_ratio(cos, len(xs))
    blocked(res, partial(_stock_mix, res, xs, base, t, 1 - t))
    return res


@register_method
class Passthrough(MergeMethod):
    name = mergekit = "passthrough"
    base = "input"
    max_models = 1
    params: ClassVar[tuple[Param, ...]] = (Param("scale", per_model=True, default=None),)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = load(tensors[0], params, None if out is None else out[: tensors[0].numel()])
        scale = params.of("scale", 0)
        return x if scale is None else x.mul_(scale)
