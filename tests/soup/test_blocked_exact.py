"""Methods whose elementwise steps run in cache-sized blocks on two threads, against a plain
whole-tensor transcription of mergekit 0.1.5's operations written here: bit for bit, in
float32 and in the half dtypes (``--compute-dtype yaml``), on tensors of several blocks with a
ragged tail, so that a changed operation, operand order or rounding anywhere shows.
"""

from __future__ import annotations

import pytest
import torch

from paperlab.soup.methods import MethodParams, get_method

N = 3 * (1 << 17) + 4099  # three blocks of 128Ki entries and a ragged tail


def inputs(dtype: torch.dtype, count: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """A base-like tensor and models at different distances from it (two near, one far), so
    that no method's result is symmetric in them; bfloat16 values, as checkpoints hold."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(N, generator=g) * 0.02
    scale = [0.1, 0.3, 3.0, 1.0]
    return [(base + torch.randn(N, generator=g) * 0.02 * scale[i % 4]).to(torch.bfloat16).to(dtype)
            for i in range(count)]


def params(method: str, compute: str, **shared: object) -> MethodParams:
    m = get_method(method)
    values = {p.name: p.default for p in m.params if not p.per_model}
    values.update(shared)
    return MethodParams(m.resolve(None, 3, normalize=False), values, {}, (N,), "t", 0, compute)


def karcher_whole(xs: list[torch.Tensor], max_iter: int = 10, tol: float = 1e-5) -> torch.Tensor:
    """mergekit's karcher_merge_tensors, one whole-tensor operation at a time."""
    alphas = [1.0 / len(xs)] * len(xs)
    dtype = torch.float64 if xs[0].dtype == torch.float64 else torch.float32
    norms = [torch.linalg.vector_norm(x.to(dtype)) for x in xs]
    units = [torch.zeros_like(x) if n.item() == 0.0 else (x / n).to(x.dtype) for x, n in zip(xs, norms, strict=True)]
    valid = [i for i, n in enumerate(norms) if n.item() > tol]
    a = [alphas[i] / sum(alphas[j] for j in valid) for i in valid]
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
    return sum(al * n for al, n in zip(alphas, norms, strict=True)) * mean


@pytest.mark.parametrize("compute", ["float32", "bfloat16", "float16"])
def test_karcher(compute: str) -> None:
    xs = inputs(getattr(torch, compute))
    got = get_method("karcher").combine(xs, None, params("karcher", compute))
    assert torch.equal(got, karcher_whole(xs))
    few = get_method("karcher").combine(xs, None, params("karcher", compute, max_iter=1))
    assert torch.equal(few, karcher_whole(xs, max_iter=1))
    assert not torch.equal(few, got)  # the iterations do move the mean


def slerp_whole(a: torch.Tensor, b: torch.Tensor, t: float, compute: str) -> torch.Tensor:
    """mergekit's slerp: float32 inputs (rounded to the compute dtype first), norms and the dot
    product summed over pieces of 2^20 entries, then one whole-tensor mix."""
    piece = 1 << 20
    a, b = a.float(), b.float()
    if compute != "float32":
        a, b = a.to(getattr(torch, compute)).float(), b.to(getattr(torch, compute)).float()
    tt = torch.tensor(t)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x[s: s + piece])
                                                     for s in range(0, x.numel(), piece)]))

    na, nb = norm(a), norm(b)
    na, nb = torch.where(na > 1e-8, na, 1), torch.where(nb > 1e-8, nb, 1)
    dot = torch.stack([((a[s: s + piece] / na) * (b[s: s + piece] / nb)).sum()
                       for s in range(0, a.numel(), piece)]).sum().clamp(-1, 1)
    linear = dot.abs() > 0.9995
    theta = torch.acos(torch.where(linear, 0, dot))
    s = torch.sin(theta)
    res = a * torch.where(linear, 1 - tt, torch.sin((1 - tt) * theta) / s) \
        + b * torch.where(linear, tt, torch.sin(tt * theta) / s)
    return res if compute == "float32" else res.to(getattr(torch, compute))


@pytest.mark.parametrize("compute", ["float32", "bfloat16"])
def test_slerp_over_several_of_mergekits_pieces(compute: str) -> None:
    g = torch.Generator().manual_seed(3)
    n = 2 * (1 << 20) + 12345  # three 2^20 pieces for the norms and the dot product, the last ragged
    a = (torch.randn(n, generator=g) * 0.02).bfloat16()
    b = (a.float() + torch.randn(n, generator=g) * 0.01).bfloat16()
    m = get_method("slerp")
    p = MethodParams((1.0,), {"t": 0.3}, {}, (n,), "t", 0, compute)
    out = torch.full((n + 7,), float("nan"))  # a lent buffer, longer than the tensor
    got = m.combine([b], a, p, out=out)
    assert torch.equal(got, slerp_whole(a, b, 0.3, compute))
    assert torch.equal(m.combine([b], a, p), got)  # without a lent buffer too
    assert torch.equal(m.combine([a], a, p), slerp_whole(a, a, 0.3, compute))  # the straight-line branch
