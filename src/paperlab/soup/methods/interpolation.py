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
from typing import TYPE_CHECKING, ClassVar

from paperlab.soup.methods.base import (
    MergeMethod,
    MethodParams,
    Param,
    compute_dtype,
    load,
    register_method,
    rounded,
)

if TYPE_CHECKING:
    import torch

DOT_THRESHOLD = 0.9995
NORM_EPS = 1e-8
_PIECE = 1 << 20  # mergekit's slerp chunk


def _chunked_norm(x: torch.Tensor) -> torch.Tensor:
    import torch

    parts = [torch.linalg.vector_norm(x[s: s + _PIECE]) for s in range(0, x.numel(), _PIECE)]
    return torch.linalg.vector_norm(torch.stack(parts))


@register_method
class Slerp(MergeMethod):
    name = mergekit = "slerp"
    base = "required"
    elementwise = False
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

        f32 = torch.float32
        a, b = rounded(base.to(f32, copy=True), params), rounded(tensors[0].to(f32, copy=True), params)
        t = torch.tensor(params.get("t"), dtype=f32, device=a.device)
        if a.numel() == 0:
            return a
        na = _chunked_norm(a)
        nb = _chunked_norm(b)
        na = torch.where(na > NORM_EPS, na, 1)
        nb = torch.where(nb > NORM_EPS, nb, 1)
        parts = [((a[s: s + _PIECE] / na) * (b[s: s + _PIECE] / nb)).sum() for s in range(0, a.numel(), _PIECE)]
        dot = torch.stack(parts).sum().clamp(-1, 1)
        linear = dot.abs() > DOT_THRESHOLD
        theta = torch.acos(torch.where(linear, 0, dot))
        s = torch.sin(theta)
        ca = torch.where(linear, 1 - t, torch.sin((1 - t) * theta) / s)
        cb = torch.where(linear, t, torch.sin(t * theta) / s)
        res = a.mul_(ca).add_(b.mul_(cb))
        return res if params.compute == "float32" else res.to(compute_dtype(params))


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
        x0, x1 = load(tensors[0], params), load(tensors[1], params)
        b = load(base, params) if base is not None else None
        if b is not None:
            x0.sub_(b)
            x1.sub_(b)
        shape = params.shape or (x0.numel(),)
        flatten = params.get("nuslerp_flatten")
        if flatten:
            res = _nuslerp(t, x0, x1)
        else:
            m0, m1 = x0.reshape(shape), x1.reshape(shape)
            if params.get("nuslerp_row_wise"):  # slerp the row vectors (mergekit's dim=0)
                m0, m1 = m0.transpose(0, -1), m1.transpose(0, -1)
                res = _nuslerp(t, m0, m1).transpose(0, -1).reshape(-1)
            else:
                res = _nuslerp(t, m0, m1).reshape(-1)
        return res if b is None else b.add_(res)


@register_method
class ModelStock(MergeMethod):
    name = mergekit = "model_stock"
    base = "required"
    elementwise = False
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
        w0 = load(base, params)
        shape = params.shape or (w0.numel(),)
        if params.get("filter_wise"):
            w0m = w0.reshape(shape) if len(shape) >= 2 else w0.reshape(1, -1)
        else:
            w0m = w0
        ws = [load(x, params).reshape(w0m.shape) for x in tensors]
        offsets = [w - w0m for w in ws]
        cos = []
        for i, a in enumerate(offsets):
            for b in offsets[i + 1:]:
                norms = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
                cos.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
        del offsets
        c = torch.stack(cos).mean(dim=0).unsqueeze(-1)
        n = len(ws)
        denom = 1 + (n - 1) * c
        singular = denom.abs() < 1e-6
        t = torch.where(singular, torch.zeros_like(c), (n * c) / torch.where(singular, torch.ones_like(denom), denom))
        avg = sum(ws[1:], ws[0]) / n  # mergekit's sum(ws): 0 + w1 + w2 ... (adding to 0 is exact)
        return (t * avg + (1 - t) * w0m).reshape(-1)


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
