"""ram, ramplus_tl, sce, nearswap and arcee_fusion, whose steps run one block of entries (or of
rows) at a time on two threads, against plain whole-tensor transcriptions of mergekit 0.1.5's
operations written here: bit for bit in float32 and in the half dtypes, on tensors of several
blocks with a ragged tail."""

from __future__ import annotations

import pytest
import torch

from paperlab.soup.methods import get_method
from tests.soup.test_blocked_exact import inputs, params

COMPUTES = ["float32", "bfloat16", "float16"]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit: torch.equal says -0.0 == 0.0 and NaN != NaN."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8))


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


def special(xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The inputs with signed zeros, equal entries, infinities and NaNs in a few places (in the
    first block and in the ragged tail), where a changed mask or sum order shows in the bits."""
    out = [x.clone() for x in xs]
    for j, at in enumerate([7, 8, 9, len(xs[0]) - 2003]):
        for i, x in enumerate(out):
            x[at + 100 * i] = [-0.0, 0.0, float("inf"), float("nan")][(i + j) % 4]
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
