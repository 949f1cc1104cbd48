"""DARE's and DELLA's random drops as a boolean mask and a rescale factor per model, on the CPU,
without a float copy of the dropped task vector.

The whole-tensor drops (:func:`~paperlab.soup.methods.sparsify.bernoulli`,
:func:`~paperlab.soup.methods.sparsify.della_magprune`) return ``delta * mask * (before /
after)``, one new vector per model. Every value of it is recomputed later, one column block at
a time, from the inputs, the mask and the factor; only the two L1 norms are reductions over the
whole tensor, and they are the same torch calls on a tensor holding the same values
(``|delta|``, then ``|delta| * mask``, which is ``|delta * mask|`` for a 0/1 mask), so the
result is the whole-tensor computation's bit for bit.

The draws are the documented ones: ``u ~ U[0, 1)`` from :func:`~paperlab.soup.methods.base.rng_for`
in flat order, keep where ``u < p``. A CPU generator draws a float32 stream one value at a
time, so the draws of consecutive blocks, in order, are those of one whole draw.

DELLA's ``p`` depends on the entry's rank in its row's stable ascending magnitude order. Rather
than a comparison sort of (magnitude, index) pairs, each entry gets one integer key, its
magnitude's float32 bits (ordered as the non-negative floats are; every NaN made one value
above infinity, as torch orders them) shifted left past its column number, so that keys are
distinct and ordered as the stable sort orders the entries; numpy's in-place sort of those keys
(a vectorized quicksort) gives each row's order, and the column number is read back from the
sorted key's low bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from paperlab.soup.methods.base import MethodParams, pool, rng_for
from paperlab.soup.methods.spares import SPARES

if TYPE_CHECKING:
    import torch

RESCALE_EPS = 1e-7
_BLOCK = 1 << 16  # entries per elementwise step: the block's temporaries stay in the CPU cache
_ROW_KEYS = 1 << 18  # entries per DELLA ranking step (a 2 MiB key table)
_NAN_KEY = 0x7F800001  # every NaN's |bits| is above +inf's 0x7F800000: one key for all


def work_dtype(compute: torch.dtype) -> torch.dtype:
    """The dtype a drop computes in on the CPU: mergekit upcasts float16 (torch.bernoulli has
    no float16 CPU kernel), and keeps bfloat16 and float32."""
    import torch

    return torch.float32 if compute == torch.float16 else compute


def in_compute(base: torch.Tensor, compute: torch.dtype, tmp: torch.Tensor) -> torch.Tensor:
    """A block of the base in the compute dtype (a copy in ``tmp`` unless it is already): each
    model's block is then subtracted in one dtype (a half input under float32 converts exactly,
    but an op mixing dtypes runs elementwise, three times slower than the copy and an op in one)."""
    if base.dtype == compute:
        return base
    return tmp[: base.numel()].copy_(base)


def magnitudes(x: torch.Tensor, base: torch.Tensor, compute: torch.dtype, out: torch.Tensor) -> torch.Tensor:
    """``out = |(x - base)|`` in ``out``'s dtype (the work dtype), the difference taken in the
    compute dtype: ``delta.to(work).abs()`` of the whole-tensor drop, block by block."""
    import torch

    n = x.numel()
    c = min(n, _BLOCK)
    d = torch.empty(c, dtype=compute) if out.dtype != compute else None
    b = torch.empty(c, dtype=compute)
    for s in range(0, n, _BLOCK):
        e = min(n, s + _BLOCK)
        blk = out[s:e] if d is None else d[: e - s]  # the difference straight into out when it holds the compute dtype
        blk.copy_(x[s:e])
        blk.sub_(in_compute(base[s:e], compute, b))
        if d is not None:
            out[s:e].copy_(blk)
        out[s:e].abs_()
    return out


class Uniform:
    """The float32 values ``torch.rand(n, generator=gen)`` gives, drawn block after block from
    a freshly seeded CPU generator.

    torch's CPU generator is the standard 32-bit Mersenne Twister seeded with the seed's low 32
    bits (init_genrand), and a float32 draw is the low 24 bits of one output times 2**-24.
    numpy's legacy ``RandomState`` is the same generator, and its ``randint(0, 2**24)`` on
    uint32 is the low 24 bits of one output each (a mask, no rejection): the same values, drawn
    about three times faster. That is checked against torch once per process; if it ever
    differs, torch draws them."""

    def __init__(self, gen: torch.Generator) -> None:
        import numpy as np

        self.gen = gen
        self.state = np.random.RandomState(gen.initial_seed() & 0xFFFFFFFF) if _numpy_matches_torch() else None

    def fill(self, out: torch.Tensor) -> torch.Tensor:
        import numpy as np
        import torch

        if self.state is None:
            return torch.rand(out.numel(), generator=self.gen, dtype=torch.float32, out=out)
        ints = self.state.randint(0, 1 << 24, size=out.numel(), dtype=np.uint32).view(np.int32)
        return out.copy_(torch.from_numpy(ints)).mul_(2.0 ** -24)  # both exact: a 24-bit integer, a power of 2


_NUMPY_MATCHES: bool | None = None


def _numpy_matches_torch() -> bool:
    global _NUMPY_MATCHES
    if _NUMPY_MATCHES is None:
        import numpy as np
        import torch

        seed = 0x5DEECE66D1234567  # high bits set: only the low 32 seed the generator
        want = torch.rand(5000, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
        ints = np.random.RandomState(seed & 0xFFFFFFFF).randint(0, 1 << 24, size=5000, dtype=np.uint32)
        got = torch.from_numpy(ints.view(np.int32)).to(torch.float32).mul_(2.0 ** -24)
        _NUMPY_MATCHES = bool(torch.equal(got, want))
    return _NUMPY_MATCHES


def as_factor(mask: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """A block of a boolean mask as 1/0 in ``out``'s dtype (mergekit's ``mask.to(work_dtype)``).
    Read as bytes: torch converts bool to float one element at a time (and multiplies by a
    bool mask the same way), bytes in vector steps, about 20 times faster."""
    import torch

    return out[: mask.numel()].copy_(mask.view(torch.uint8))


def bernoulli_mask(n: int, density: float, gen: torch.Generator, out: torch.Tensor) -> torch.Tensor:
    """DARE's kept entries: ``u < density`` for the first ``n`` draws of a fresh generator."""
    import torch

    draws = Uniform(gen)
    u = torch.empty(min(n, _BLOCK), dtype=torch.float32)
    for s in range(0, n, _BLOCK):
        e = min(n, s + _BLOCK)
        draws.fill(u[: e - s])
        torch.lt(u[: e - s], density, out=out[s:e])
    return out


def rank_probabilities(cols: int, density: float, epsilon: float) -> torch.Tensor:
    """DELLA's keep probability of the entry of rank r (0-based, ascending) in a row of
    ``cols``: density - epsilon + r / (cols - 1) * 2 epsilon, as the whole-tensor drop computes
    it entry by entry (a lone entry's rank counts as half way)."""
    import torch

    rank = torch.arange(cols).to(torch.float32)
    rank_norm = rank / (cols - 1) if cols > 1 else torch.full_like(rank, 0.5)
    return (density - epsilon) + rank_norm * (2 * epsilon)


def della_mask(mags: torch.Tensor, rows: int, density: float, epsilon: float, gen: torch.Generator,
               out: torch.Tensor) -> torch.Tensor:
    """DELLA's kept entries: ``u < p(rank)``, the rank of each entry of ``mags`` (the flat
    magnitudes of a ``rows`` x cols tensor) in its row's stable ascending order."""
    import torch

    n = mags.numel()
    cols = n // rows
    table = rank_probabilities(cols, density, epsilon)
    draws = Uniform(gen)
    shift = max(1, (cols - 1).bit_length())
    step = max(1, _ROW_KEYS // cols)  # rows per step
    col_ids = torch.arange(cols)
    low = (1 << shift) - 1
    keys = torch.empty((min(rows, step), cols), dtype=torch.int64)
    probs = torch.empty((min(rows, step), cols), dtype=torch.float32)
    u = torch.empty(min(rows, step) * cols, dtype=torch.float32)
    f32 = None if mags.dtype == torch.float32 else torch.empty(min(rows, step) * cols, dtype=torch.float32)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        s, e = r0 * cols, r1 * cols
        m = mags[s:e] if f32 is None else f32[: e - s].copy_(mags[s:e])
        k = keys[: r1 - r0]
        k.copy_(m.view(torch.int32).view(r1 - r0, cols))
        k.clamp_(max=_NAN_KEY).bitwise_left_shift_(shift).bitwise_or_(col_ids)
        k.numpy().sort(axis=1)  # in place; keys are distinct, so any sort gives the stable order
        k.bitwise_and_(low)  # the column of the entry at each rank
        p = probs[: r1 - r0].scatter_(1, k, table.expand(r1 - r0, cols))
        draws.fill(u[: e - s])
        torch.lt(u[: e - s], p.view(-1), out=out[s:e])
    return out


def l1_factor(mags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """The rescale factor ``before / after`` of the L1 norms of delta and of the kept entries,
    or None where either is ~0 (the kept entries are left unscaled). ``mags`` (|delta|) is
    consumed: it ends as |delta * mask|."""
    import torch

    before = mags.sum()
    ones = torch.empty(min(mags.numel(), _BLOCK), dtype=mags.dtype)
    for s in range(0, mags.numel(), _BLOCK):
        e = min(mags.numel(), s + _BLOCK)
        mags[s:e].mul_(as_factor(mask[s:e], ones))
    after = mags.sum()
    if before < RESCALE_EPS or after < RESCALE_EPS:
        return None
    return before / after


def random_drop(x: torch.Tensor, base: torch.Tensor, compute: torch.dtype, keep: str, density: float,
                gen: torch.Generator, *, rescale: bool, rows: int = 1,
                epsilon: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One model's drop: (mask of kept entries, rescale factor or None) for ``keep`` "random"
    (DARE) or "della". The mask is a buffer from :data:`SPARES`, to be given back."""
    import torch

    n = x.numel()
    mask = SPARES.take(n, torch.bool)
    mags = None
    if rescale or keep == "della":
        mags = magnitudes(x, base, compute, SPARES.take(n, work_dtype(compute)))
    if keep == "della":
        assert mags is not None
        della_mask(mags, rows, density, epsilon, gen, mask)
    else:
        bernoulli_mask(n, density, gen, mask)
    factor = l1_factor(mags, mask) if rescale and mags is not None else None
    if mags is not None:
        SPARES.give(mags)
    return mask, factor


def model_drops(tensors: Sequence[torch.Tensor], base: torch.Tensor, params: MethodParams,
                keep: str) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """:func:`random_drop` of every model (None, None where its density is 1), two models at
    once: each model's draws are one sequential stream of its own generator."""
    import torch

    n = base.numel()
    compute = getattr(torch, params.compute)
    shape = params.shape
    rows = shape[0] if shape is not None and len(shape) >= 2 else 1

    def drop(i: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        density = params.of("density", i)
        if density >= 1:
            return None, None
        return random_drop(tensors[i], base, compute, keep, density, rng_for(params, i),
                           rescale=params.get("rescale"), rows=rows,
                           epsilon=params.of("epsilon", i) if keep == "della" else 0.0)

    if n > SPARES.limit:
        SPARES.clear()  # a large tensor: what small ones left goes before its working set
    return list(pool().map(drop, range(len(tensors))))
