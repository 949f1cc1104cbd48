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

Both run mergekit's operations one cache-sized block at a time on two threads, into buffers
allocated once per tensor: ``nearswap`` on blocks of entries; ``arcee_fusion`` on blocks of
whole rows (the softmaxes and the KL sums are row by row), with the importances never stored:
the sample for the quantiles is computed at its own indices (each importance is one product of
two values), and the mask is recomputed block by block against the threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from paperlab.soup.methods.base import (
    MergeMethod,
    MethodParams,
    Param,
    compute_dtype,
    in_halves,
    register_method,
    result_in,
    rng_for,
)

if TYPE_CHECKING:
    import torch

QUANTILE_SAMPLE = 1_000_000
_BLOCK = 1 << 16  # entries per block: a few temporaries of it stay in the CPU cache


def _in_blocks(n: int, block: int, device: torch.device, work: Callable[[int, int], None], least: int = 1) -> None:
    """``work(s, e)`` on blocks of [0, n) of ``block`` (and at least ``least``) items each, split
    over two threads on the CPU; ``work`` allocates its buffers on its first call in each thread."""
    block = max(block, least, 1)
    if device.type != "cpu" or n <= block:  # blocks are a CPU-cache trick
        work(0, n)
        return
    bounds = list(range(0, n, block))
    if n - bounds[-1] < least:
        bounds.pop()  # a short last block joins the one before
    spans = list(zip(bounds, [*bounds[1:], n], strict=True))

    def some(lo: int, hi: int) -> None:
        for s, e in spans[lo:hi]:
            work(s, e)

    in_halves(len(spans), 1, some)


class _Scratch:
    """Buffers of one thread, by name, grown when a wider block asks for more."""

    def __init__(self, dt: torch.dtype, device: torch.device) -> None:
        self.dt, self.device, self.bufs = dt, device, {}  # type: ignore[var-annotated]

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        import math

        import torch

        size, dtype = math.prod(shape), dtype or self.dt
        buf = self.bufs.get(name)
        if buf is None or buf.numel() < size or buf.dtype != dtype:
            buf = self.bufs[name] = torch.empty(size, dtype=dtype, device=self.device)
        return buf[:size].view(shape)


def _scratch(dt: torch.dtype, device: torch.device) -> Callable[[], _Scratch]:
    """One :class:`_Scratch` per thread for one tensor."""
    import threading

    local = threading.local()

    def get() -> _Scratch:
        if not hasattr(local, "s"):
            local.s = _Scratch(dt, device)
        return local.s  # type: ignore[no-any-return]

    return get


@register_method
class NearSwap(MergeMethod):
    name = mergekit = "nearswap"
    base = "required"
    reads_only = True  # every block of the inputs is copied before any arithmetic
    writes_out = True
    min_models = max_models = 1
    params: ClassVar[tuple[Param, ...]] = (Param("t", low=0.0, fix="larger t takes more of the other model where the two are close"),)

    def combine(
        self,
        tensors: Sequence[torch.Tensor],
        base: torch.Tensor | None,
        params: MethodParams,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        import torch

        assert base is not None
        t, dt, n = params.get("t"), compute_dtype(params), base.numel()
        res = out[:n] if out is not None and out.dtype == dt and out.device == base.device else \
            torch.empty(n, dtype=dt, device=base.device)
        scratch = _scratch(dt, base.device)

        def work(s: int, e: int) -> None:
            # w = (t / clamp(|a - b|, 1e-6)).clamp(0, 1); w * b + (1 - w) * a, mergekit's order
            # (``t / x`` is torch's ``x.reciprocal() * t``; 1 - w is -w + 1, the same rounding).
            k, buf = e - s, scratch()
            a, b, w = buf.get("a", (k,)).copy_(base[s:e]), buf.get("b", (k,)).copy_(tensors[0][s:e]), buf.get("w", (k,))
            torch.sub(a, b, out=w).abs_().clamp_(min=1e-6).reciprocal_().mul_(t).clamp_(min=0, max=1)
            b.mul_(w)
            a.mul_(w.neg_().add_(1))
            torch.add(b, a, out=res[s:e])

        _in_blocks(n, _BLOCK, base.device, work)
        return res


def _sorted_at(flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``torch.sort(flat).values[idx]`` without sorting it all (equal values at a position are
    interchangeable: the threshold is only compared against, so a zero's sign does not matter).

    Non-negative float32 values order as their bit patterns (NaNs last, as torch's sort puts
    them): a histogram of the top bits finds the bin holding each rank, and only that bin is
    sorted; 10^6 entries take about 9 ms against 95 ms for the sort. Anything else goes to
    numpy's introselect (about 19 ms)."""
    import numpy as np
    import torch

    if flat.device.type != "cpu":
        return torch.sort(flat).values[idx.to(flat.device)]
    wide = flat.to(torch.float32) if flat.dtype in (torch.bfloat16, torch.float16) else flat  # exact, same order
    at = idx.tolist()
    if wide.dtype == torch.float32:
        bits = wide.view(torch.int32)
        if not bool((bits < 0).any()):  # no sign bit set: no negative value, -0.0 or negative NaN
            top = bits >> 15
            ends = torch.bincount(top, minlength=1 << 16).cumsum(0)  # entries in bins 0..b
            found = []
            for k in at:
                b = int(torch.searchsorted(ends, k, right=True))
                before = int(ends[b - 1]) if b > 0 else 0
                found.append(torch.sort(wide[top == b]).values[k - before])
            return torch.stack(found).to(flat.dtype)
    return torch.from_numpy(np.partition(wide.numpy(), at)[at]).to(flat.dtype)


def fusion_threshold(importance: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """median + 1.5 IQR of the importances (a seeded sample of 10^6 of them when there are more)."""
    import torch

    flat = importance.reshape(-1)
    if flat.numel() > QUANTILE_SAMPLE:
        flat = flat[torch.randint(flat.numel(), (QUANTILE_SAMPLE,), generator=gen, device=flat.device)]
    idx = (torch.tensor([0.25, 0.5, 0.75]) * (flat.numel() - 1)).long()
    q1, median, q3 = _sorted_at(flat, idx)
    return median + 1.5 * (q3 - q1)


def _kl_rows(x: torch.Tensor, b: torch.Tensor, buf: _Scratch, out: torch.Tensor) -> None:
    """mergekit's per-row KL(softmax(x) || softmax(b)) of a block of rows, into ``out`` (rows, 1)."""
    import torch

    p = torch.softmax(x, -1, out=buf.get("p", x.shape)).add_(1e-8)
    q = torch.softmax(b, -1, out=buf.get("q", x.shape)).add_(1e-8)
    torch.sum(p.mul_(torch.div(p, q, out=q).log_()), dim=-1, keepdim=True, out=out)


@register_method
class ArceeFusion(MergeMethod):
    name = mergekit = "arcee_fusion"
    base = "required"
    elementwise = False
    reads_only = True  # every block of the inputs is copied before any arithmetic
    writes_out = True
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

        assert base is not None
        shape = params.shape or (base.numel(),)
        dt, n, x = compute_dtype(params), base.numel(), tensors[0]
        width = shape[-1] if shape and shape[-1] > 0 else 1
        rows, step = n // width, _BLOCK // width  # whole rows per block
        kl = torch.empty((rows, 1), dtype=dt, device=base.device)
        scratch = _scratch(dt, base.device)

        def load(s: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
            buf = scratch()
            xb = buf.get("x", (e - s, width)).copy_(x[s * width: e * width].view(e - s, width))
            bb = buf.get("b", (e - s, width)).copy_(base[s * width: e * width].view(e - s, width))
            return xb, bb

        def divergence(s: int, e: int) -> None:
            _kl_rows(*load(s, e), scratch(), kl[s:e])

        # Two rows at least per block: torch splits a reduction with one output over its threads
        # (another sum order) but gives each of several outputs to one thread, as for the tensor.
        _in_blocks(rows, step, base.device, divergence, least=2)
        gen = rng_for(params, 0, base.device)
        if n > QUANTILE_SAMPLE:  # the sampled entries' importances |x - b| * kl, entry by entry
            at = torch.randint(n, (QUANTILE_SAMPLE,), generator=gen, device=base.device)
            sample = torch.empty(QUANTILE_SAMPLE, dtype=dt, device=base.device)

            def gather(s: int, e: int) -> None:  # in blocks into kept buffers: no fresh 4 MB temporaries
                buf, idx = scratch(), at[s:e]
                pick = partial(torch.index_select, dim=0, index=idx)  # five times faster than x[at]
                d = buf.get("x", idx.shape).copy_(pick(x, out=buf.get("gx", idx.shape, x.dtype)))
                d.sub_(buf.get("b", idx.shape).copy_(pick(base, out=buf.get("gb", idx.shape, base.dtype)))).abs_()
                row = torch.floor_divide(idx, width, out=buf.get("i", idx.shape, torch.int64))
                torch.mul(d, torch.index_select(kl.view(-1), 0, row, out=buf.get("p", idx.shape)), out=sample[s:e])

            _in_blocks(QUANTILE_SAMPLE, _BLOCK, base.device, gather)
            threshold = fusion_threshold(sample, gen)
        else:
            xs, bs = x.to(dt).view(rows, width), base.to(dt).view(rows, width)
            threshold = fusion_threshold((xs - bs).abs() * kl, gen)
        res = result_in(out, n, torch.promote_types(dt, torch.float32), base)

        def fuse(s: int, e: int) -> None:
            # b + (x - b) * (|x - b| * kl >= threshold).float(): a float32 mask promotes a
            # half-dtype merge to float32, as in mergekit
            xb, bb = load(s, e)
            buf = scratch()
            d = xb.sub_(bb)
            mask = buf.get("m", d.shape, torch.float32)
            torch.ge(torch.mul(torch.abs(d, out=buf.get("p", d.shape)), kl[s:e], out=buf.get("p", d.shape)), threshold,
                     out=mask)
            prod = mask if res.dtype == torch.float32 else buf.get("r", d.shape, res.dtype)
            torch.add(bb, torch.mul(d, mask, out=prod), out=res[s * width: e * width].view(e - s, width))

        _in_blocks(rows, step, base.device, fuse, least=2)
        return res
