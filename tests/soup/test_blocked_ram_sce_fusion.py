"""ram, ramplus_tl, sce, nearswap and arcee_fusion, whose steps run one block of entries (or of
rows) at a time on two threads, against plain whole-tensor transcriptions of mergekit 0.1.5's
operations written here: bit for bit in float32 and in the half dtypes, on tensors of several
blocks with a ragged tail."""

from __future__ import annotations

import math

import pytest
import torch

from paperlab.soup.methods import get_method
from tests.soup.test_blocked_exact import N, inputs, params

COMPUTES = ["float32", "bfloat16", "float16"]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit, NaNs in the same places (of any sign or payload: a vectorised loop and its
    scalar tail make different NaNs): torch.equal says -0.0 == 0.0 and NaN != NaN."""
    if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a.isnan(), b.isnan()):
        return False
    return torch.equal(a.nan_to_num(0.0).view(-1).view(torch.uint8), b.nan_to_num(0.0).view(-1).view(torch.uint8))


def _ram_vectors(xs: list[torch.Tensor], eps: float) -> tuple[torch.Tensor, ...]:
    base, models = xs[0], xs[1:]
    tv = torch.stack([t - base for t in models], dim=0)
    active = tv.abs() > eps
    counts = active.sum(dim=0, keepdim=True)
    return tv, active, counts, counts > 1, counts == 1


def ram_whole(xs: list[torch.Tensor], eps: float) -> torch.Tensor:
    """mergekit's ram_merge, whole tensors."""
    tv, active, counts, overlap, unique = _ram_vectors(xs, eps)
    tv_z = tv * active
    merged = ((tv_z * unique) + (tv_z * overlap / counts.clamp(min=1))).sum(dim=0, keepdim=True)
    return xs[0] + merged.reshape_as(xs[0])


def ramplus_whole(xs: list[torch.Tensor], eps: float, r: float = 0.1, alpha: float = 0.2) -> torch.Tensor:
    """mergekit's ramplus_tl_merge, whole tensors."""
    tv, active, counts, overlap, unique = _ram_vectors(xs, eps)
    rho = (active & overlap).sum(dim=1) / (active & unique).sum(dim=1).clamp(min=eps)
    lam = 1 + r * rho.clamp(min=0, max=alpha)
    tv_z = tv * active
    merged = ((tv_z * unique * lam.unsqueeze(-1)) + (tv_z * overlap / counts.clamp(min=1))).sum(dim=0, keepdim=True)
    return xs[0] + merged.reshape_as(xs[0])


def _split(xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    return xs[1:], xs[0]


def special(xs: list[torch.Tensor], nonfinite: bool = True) -> list[torch.Tensor]:
    """The inputs with signed zeros, equal entries, and (``nonfinite``) infinities and NaNs in a
    few places (in the first block and in the ragged tail), where a changed mask or sum order
    shows in the bits."""
    out = [x.clone() for x in xs]
    values = [-0.0, 0.0, float("inf"), float("nan")] if nonfinite else [-0.0, 0.0, 1.0, -1.0]
    for j, at in enumerate([7, 8, 9, len(xs[0]) - 2003]):
        for i, x in enumerate(out):
            x[at + 100 * i] = values[(i + j) % 4]
        out[-1][at + 1000] = out[0][at + 1000]
        out[-1][at + 2000] = -out[0][at + 2000]
    return out


@pytest.mark.parametrize("compute", COMPUTES)
@pytest.mark.parametrize("eps,count,odd", [(1e-5, 3, False), (2e-3, 3, True), (2e-3, 4, False)])
def test_ram(compute: str, eps: float, count: int, odd: bool) -> None:
    """eps 2e-3: a mix of none, one and several models active; odd: special values."""
    xs = inputs(getattr(torch, compute), count)
    xs = special(xs) if odd else xs
    models, base = _split(xs)
    p = params("ram", compute, epsilon=eps)
    got = get_method("ram").combine(models, base, p)
    assert same(got, ram_whole(xs, eps))
    into = torch.full((base.numel() + 5,), float("nan"))  # the pipeline's float32 accumulator
    assert same(get_method("ram").combine(models, base, p, out=into).to(got.dtype), got)


@pytest.mark.parametrize("compute", COMPUTES)
@pytest.mark.parametrize("eps,count,odd", [(1e-5, 3, False), (2e-3, 3, True), (2e-3, 4, False)])
def test_ramplus_tl(compute: str, eps: float, count: int, odd: bool) -> None:
    xs = inputs(getattr(torch, compute), count)
    xs = special(xs) if odd else xs
    models, base = _split(xs)
    got = get_method("ramplus_tl").combine(models, base, params("ramplus_tl", compute, epsilon=eps))
    want = ramplus_whole(xs, eps)
    assert got.dtype == want.dtype and same(got, want)
    assert not torch.equal(want, ram_whole(xs, eps).to(want.dtype))  # the rescaling does change entries


def sce_whole(xs: list[torch.Tensor], topk: float = 1.0, int8_mask: bool = False) -> torch.Tensor:
    """mergekit's sce_merge (with sce_mask, sce_weight and the sign-consensus get_mask), whole tensors."""
    base, models = xs[0], xs[1:]
    mask_dtype = torch.int8 if int8_mask else base.dtype
    tvs = torch.stack([t - base for t in models], dim=0)
    if topk < 1:
        var = torch.var(tvs, dim=0, unbiased=False)
        k = int(torch.count_nonzero(var) * topk)
        mask = torch.zeros_like(var, dtype=mask_dtype)
        if k > 0:
            mask.view(-1)[torch.topk(var.abs().view(-1), k=k, largest=True).indices] = 1
        tvs = tvs * mask.unsqueeze(0)
    sign = tvs.sign().to(mask_dtype)
    majority = (tvs.sum(dim=0) >= 0).to(mask_dtype) * 2 - 1
    erase = sign == majority
    w = tvs.square().reshape(tvs.shape[0], -1).mean(dim=1)
    total = torch.sum(w).item()
    w = torch.ones_like(w) / w.shape[0] if abs(total) < 1e-6 else w / total
    erased = w.unsqueeze(-1) * erase
    merged = (tvs * erased).sum(dim=0)
    return base + merged / torch.sum(erased, dim=0).clamp(min=1e-6)


def sparse(xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The first model moved from the base in 50 entries only, where the second keeps the base:
    there the only weight is the first model's, under 1e-6, so the division's floor shows."""
    base, other = xs[0], xs[2].clone()
    at = torch.arange(0, len(base), 7919)[:50]
    one = base.clone()
    one[at] = base[at] + 0.01
    other[at] = base[at]
    return [base, one, other]


@pytest.mark.parametrize("compute", COMPUTES)
@pytest.mark.parametrize("topk,int8,count,odd", [(1.0, False, 3, "no"), (0.4, True, 4, "no"), (0.7, False, 3, "special"),
                                                 (1.0, False, 3, "sparse")])
def test_sce(compute: str, topk: float, int8: bool, count: int, odd: str) -> None:
    xs = inputs(getattr(torch, compute), count)
    xs = special(xs, nonfinite=False) if odd == "special" else xs  # one NaN or inf makes every mean square, so all, NaN
    xs = sparse(xs) if odd == "sparse" else xs
    models, base = _split(xs)
    got = get_method("sce").combine(models, base, params("sce", compute, select_topk=topk, int8_mask=int8))
    assert same(got, sce_whole(xs, topk, int8))


def nearswap_whole(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """mergekit's nearswap_merge (a: the base)."""
    weight = (t / torch.abs(a - b).clamp(min=1e-6)).clamp(min=0, max=1)
    return weight * b + (1 - weight) * a


@pytest.mark.parametrize("compute", COMPUTES)
@pytest.mark.parametrize("t,odd", [(0.01, False), (0.001, True)])
def test_nearswap(compute: str, t: float, odd: bool) -> None:
    xs = inputs(getattr(torch, compute), 2)
    xs = special(xs) if odd else xs
    p = params("nearswap", compute, t=t)
    got = get_method("nearswap").combine(xs[1:], xs[0], p)
    assert same(got, nearswap_whole(xs[0], xs[1], t))
    into = torch.full((xs[0].numel() + 5,), float("nan"))
    assert same(get_method("nearswap").combine(xs[1:], xs[0], p, out=into).to(got.dtype), got)


def arcee_whole(base: torch.Tensor, x: torch.Tensor, gen: torch.Generator, sample: int) -> torch.Tensor:
    """mergekit's arcee_fusion_merge_method (its quantiles from a sample drawn with ``gen``)."""
    diff = (x - base).abs()
    p = torch.softmax(x, dim=-1) + 1e-8
    q = torch.softmax(base, dim=-1) + 1e-8
    importance = diff * torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
    flat = importance.reshape(-1)
    if flat.numel() > sample:
        flat = flat[torch.randint(flat.numel(), (sample,), generator=gen)]
    q1, median, q3 = torch.sort(flat).values[(torch.tensor([0.25, 0.5, 0.75]) * (flat.numel() - 1)).long()]
    mask = (importance >= median + 1.5 * (q3 - q1)).float()
    return base + (x - base) * mask


@pytest.mark.parametrize("compute", COMPUTES)
@pytest.mark.parametrize("shape,sample", [((384, 1031), 100_000), ((384, 1031), 1_000_000), ((5, 70001), 1_000_000),
                                          ((N,), 1_000_000), ((3, 7, 18919), 50_000), ((385, 1031), 50_000)])
def test_arcee_fusion(compute: str, shape: tuple[int, ...], sample: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows wider and narrower than a block, one row, three axes; quantiles sampled or not."""
    from dataclasses import replace

    from paperlab.soup.methods import selective
    from paperlab.soup.methods.base import rng_for

    monkeypatch.setattr(selective, "QUANTILE_SAMPLE", sample)
    xs = [x[: math.prod(shape)] for x in inputs(getattr(torch, compute), 2)]
    p = replace(params("arcee_fusion", compute), shape=shape)
    got = get_method("arcee_fusion").combine(xs[1:], xs[0], p)
    want = arcee_whole(xs[0].view(shape), xs[1].view(shape), rng_for(p, 0), sample).view(-1)
    assert same(got, want)
    if compute == "float32":
        assert 0 < int((got != xs[0]).sum()) < got.numel() // 2  # some entries, not most, move


@pytest.mark.parametrize("kind", ["spread", "ties", "zeros", "nan", "negative", "bfloat16", "boundary"])
def test_order_statistics_are_the_sorts(kind: str) -> None:
    """The quantiles' order statistics, by a histogram of the bit patterns or by numpy's
    partition, are the values torch.sort puts at those positions."""
    from paperlab.soup.methods.selective import _sorted_at

    g = torch.Generator().manual_seed(1)
    v = torch.rand(100_003, generator=g) ** 4 * 1e-3
    if kind == "ties":
        v = (v * 1e4).round() / 1e4  # few distinct values, long runs of equal ones
    elif kind == "zeros":
        v[: 60_000] = 0.0  # the median falls in a bin of zeros
    elif kind == "nan":
        v[::7] = float("nan")  # sorted last, as torch does
    elif kind == "negative":
        v -= 2e-4
    elif kind == "bfloat16":
        v = v.to(torch.bfloat16)
    elif kind == "boundary":  # the first quartile's rank is the first entry of a bin
        v = torch.ones(100_001)
        v[:25_000] = 1e-6
    idx = (torch.tensor([0.25, 0.5, 0.75]) * (v.numel() - 1)).long()
    assert same(_sorted_at(v, idx), torch.sort(v).values[idx])


@pytest.mark.parametrize("compute", COMPUTES)
def test_sce_one_thread(compute: str) -> None:
    """With one torch thread (as the CLI runs) the mean squares are taken one model at a time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xs = sparse(inputs(getattr(torch, compute), 3))
        got = get_method("sce").combine(xs[1:], xs[0], params("sce", compute))
        assert same(got, sce_whole(xs))
    finally:
        torch.set_num_threads(threads)
