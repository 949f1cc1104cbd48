"""Geometric methods: slerp, nuslerp, model_stock, and passthrough (mergekit's semantics).

- ``slerp`` (base + exactly one model, parameter ``t``): spherical interpolation of the two
  whole tensors. With a = base, b = other, both flattened: cos = <a/|a|, b/|b|> (a norm under
  1e-8 counts as 1); when |cos| > 0.9995 the result is the straight line (1-t) a + t b, else
  sin((1-t) theta)/sin(theta) a + sin(t theta)/sin(theta) b with theta = acos(cos). The
  coefficients apply to the raw tensors, so norms are interpolated along with the direction.
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
from typing import TYPE_CHECKING

from paperlab.soup.methods.base import MergeMethod, MethodParams, register_method, to_f32

if TYPE_CHECKING:
    import torch

DOT_THRESHOLD = 0.9995
NORM_EPS = 1e-8


@register_method
class Slerp(MergeMethod):
    name = mergekit = "slerp"
    needs_base = True
    elementwise = False
    takes_weights = False
    min_models = max_models = 1
    shared_params = ("t",)
    model_params = ()

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert base is not None
        import torch

        a, b = to_f32(base), to_f32(tensors[0])
        # Scalars stay float32 tensors, computed in mergekit's order, so that the coefficients
        # (and with them the rounding of each element) are the same as mergekit's.
        t = torch.tensor(params.t, dtype=torch.float32)
        na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
        na = torch.where(na > NORM_EPS, na, 1.0)
        nb = torch.where(nb > NORM_EPS, nb, 1.0)
        dot = ((a / na) * (b / nb)).sum().clamp(-1, 1) if a.numel() else torch.tensor(1.0)
        if bool(dot.abs() > DOT_THRESHOLD):
            ca, cb = 1 - t, t
        else:
            theta = torch.acos(dot)
            s = torch.sin(theta)
            ca, cb = torch.sin((1 - t) * theta) / s, torch.sin(t * theta) / s
        return a.mul_(ca).add_(b.mul_(cb))


def _nuslerp(t: float, v0: torch.Tensor, v1: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise slerp over the last axis of two 2-D float32 tensors."""
    import torch

    u0 = v0 / v0.norm(dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / v1.norm(dim=-1, keepdim=True).clamp(min=1e-7)
    cos = (u0 * u1).sum(dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    sin = torch.sin(theta)
    sph = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.where(colinear, torch.ones_like(sin), sin)
    return torch.where(colinear, (1 - t) * v0 + t * v1, sph)


@register_method
class NuSlerp(MergeMethod):
    name = mergekit = "nuslerp"
    base_optional = True
    elementwise = False
    prenormalize = False
    min_models = max_models = 2
    shared_params = ("nuslerp_flatten", "nuslerp_row_wise", "weight")
    model_params = ("weight",)

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
        x0, x1 = to_f32(tensors[0]), to_f32(tensors[1])
        b = to_f32(base) if base is not None else None
        if b is not None:
            x0.sub_(b)
            x1.sub_(b)
        shape = params.shape or (x0.numel(),)
        if params.option("nuslerp_flatten", True) or len(shape) < 2:
            res = _nuslerp(t, x0.reshape(1, -1), x1.reshape(1, -1)).reshape(-1)
        elif params.option("nuslerp_row_wise", False):
            m0, m1 = x0.reshape(shape[0], -1).T, x1.reshape(shape[0], -1).T
            res = _nuslerp(t, m0, m1).T.reshape(-1)
        else:
            res = _nuslerp(t, x0.reshape(shape[0], -1), x1.reshape(shape[0], -1)).reshape(-1)
        return res.add_(b) if b is not None else res


@register_method
class ModelStock(MergeMethod):
    name = mergekit = "model_stock"
    needs_base = True
    elementwise = False
    takes_weights = False
    min_models = 2
    shared_params = ("filter_wise",)
    model_params = ()

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import torch

        assert base is not None
        w0 = to_f32(base)
        shape = params.shape or (w0.numel(),)
        rows = shape[0] if params.option("filter_wise", False) and len(shape) >= 2 else 1
        w0m = w0.reshape(rows, -1)
        ws = [to_f32(x).reshape(rows, -1) for x in tensors]
        offsets = [w - w0m for w in ws]
        cos = []
        for i, a in enumerate(offsets):
            for b in offsets[i + 1:]:
                norms = a.norm(dim=-1) * b.norm(dim=-1)
                cos.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
        c = torch.stack(cos).mean(dim=0).unsqueeze(-1)
        n = len(ws)
        denom = 1 + (n - 1) * c
        singular = denom.abs() < 1e-6
        t = torch.where(singular, torch.zeros_like(c), (n * c) / torch.where(singular, torch.ones_like(denom), denom))
        avg = ws[0].clone()
        for w in ws[1:]:
            avg.add_(w)
        avg.div_(n)
        return (t * avg + (1 - t) * w0m).reshape(-1)


@register_method
class Passthrough(MergeMethod):
    name = mergekit = "passthrough"
    takes_weights = False
    min_models = max_models = 1
    shared_params = ("scale",)
    model_params = ("scale",)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = to_f32(tensors[0], None if out is None else out[: tensors[0].numel()])
        return x.mul_(params.scale) if params.scale != 1 else x
