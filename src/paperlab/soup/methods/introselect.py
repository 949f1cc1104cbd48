"""The k entries that torch's CPU sort puts first, found without sorting.

mergekit keeps the ``k`` largest magnitudes of a task vector by ``argsort(descending=True)[:k]``.
When entries tied in magnitude straddle the cut (every tensor of a bf16 checkpoint), which of
them are kept is decided by the sorting algorithm. torch's CPU sort of one float dimension is
libstdc++'s ``std::sort`` (introsort: median-of-three pivot, Hoare partition, insertion sort
below 17 entries) with a "greater than" comparison on the keys only.

This module replays that algorithm, but only on the part of the array that holds position
``k``: each partition splits the range in two and only the half containing the boundary is
followed, so the work is about two passes over the data instead of a full sort. A partition is
replayed with whole-tensor operations: the left scan stops at entries ``<= pivot`` and the right
scan at entries ``>= pivot``, so the j-th left stop is swapped with the j-th right stop until
the scans cross, and only the stops near the crossing need listing.

The replay is checked against torch's own sort the first time it is used; on a torch whose sort
differs, a tensor with NaNs, or a range that would fall back to heapsort (introsort's depth
limit), callers sort instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .spares import SPARES

if TYPE_CHECKING:
    import torch

_THRESHOLD = 16  # libstdc++'s _S_threshold: ranges this small are left to insertion sort
_MATCHES_TORCH: bool | None = None


def _median_position(v: torch.Tensor) -> int:
    """std::__move_median_to_first on positions 1, s/2, s-1 with comp = greater-than: the
    position whose entry is swapped to the front."""
    s = v.numel()
    a, b, c = 1, s // 2, s - 1
    va, vb, vc = v[[a, b, c]].tolist()
    if va > vb:
        return b if vb > vc else (c if va > vc else a)
    if va > vc:
        return a
    return c if vb > vc else b


_CHUNK = 1 << 16  # entries per flatnonzero() call: its int64 output (512 KiB) is reused, not mapped afresh


def _positions(flags: torch.Tensor, offset: int, dtype: torch.dtype, descending: bool = False) -> torch.Tensor:
    """``flags.nonzero() + offset`` as a 1-D tensor of ``dtype``, ascending or descending, made in
    small chunks: no int64 list of the whole tensor is ever held, and nothing is copied to flip.
    numpy's flatnonzero lists a chunk about 9x faster than torch.nonzero (measured on 2.9M
    flags: 3.0 against 26 ms)."""
    import numpy as np
    import torch

    out = torch.empty(int(torch.count_nonzero(flags)), dtype=dtype)
    bits, dest = flags.numpy(), out.numpy()
    at, n = 0, flags.numel()
    starts = range(0, n, _CHUNK)
    for start in reversed(starts) if descending else starts:
        idx = np.flatnonzero(bits[start: start + _CHUNK])
        m = idx.size
        np.add(idx[::-1] if descending else idx, start + offset, out=dest[at: at + m], casting="unsafe")
        at += m
    return out


def _partition(v: torch.Tensor, work: torch.Tensor, dtype: torch.dtype) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Replay std::__unguarded_partition of ``v[1:]`` around the pivot ``v[0]``. Returns the cut
    and the positions that the swaps exchange, pairwise (left ascending, right descending), all
    relative to ``v``. ``work`` is a boolean scratch buffer as long as ``v``."""
    import torch

    s = v.numel()
    p = float(v[0])
    seg, flags = v[1:], work[: s - 1]
    n_gt = int(torch.count_nonzero(torch.gt(seg, p, out=flags)))
    n_eq = int(torch.count_nonzero(torch.eq(seg, p, out=flags)))
    # Every entry > pivot ends left of the cut and every entry < pivot right of it, so the cut
    # (in seg) lies in [n_gt, n_gt + n_eq]: the swapped left stops lie before it and the swapped
    # right stops at or after it. Listing stops beyond those bounds cannot change the replay.
    hi = min(s - 1, n_gt + n_eq + 1)
    left = _positions(torch.le(seg[:hi], p, out=flags[:hi]), 1, dtype)  # the left scan's stops, in order
    right = _positions(torch.ge(seg[n_gt:], p, out=flags[: s - 1 - n_gt]), n_gt + 1, dtype, descending=True)
    n_left, n_right = left.numel(), right.numel()

    def lstop(j: int) -> int:  # past the listed stops the left scan meets a swapped right stop
        return int(left[j]) if j < n_left else s + 1

    def rstop(j: int) -> int:  # the right scan's j-th stop; past the listed ones, the pivot (0)
        return int(right[j]) if j < n_right else 0

    # The scans cross at the first j whose left stop is not before its right stop (left stops
    # rise and right stops fall, so a bisection finds it); after j swaps the left scan stops at
    # right stop j-1 at the latest, since that entry is now <= pivot.
    lo_j, hi_j = 0, n_right
    while lo_j < hi_j:
        mid = (lo_j + hi_j) // 2
        if lstop(mid) >= rstop(mid):
            hi_j = mid
        else:
            lo_j = mid + 1
    j = lo_j
    cut = lstop(j) if j == 0 else min(lstop(j), rstop(j - 1))
    return cut, left[:j], right[:j]


def _find(positions: torch.Tensor, target: int, descending: bool) -> int | None:
    """Where ``target`` sits in a sorted list of positions (a bisection over scalar reads)."""
    lo, hi = 0, positions.numel()
    while lo < hi:
        mid = (lo + hi) // 2
        x = int(positions[mid])
        if x == target:
            return mid
        if (x > target) != descending:
            hi = mid
        else:
            lo = mid + 1
    return None


def _fill(t: torch.Tensor, idx: torch.Tensor, value: bool) -> None:
    """``t[idx] = value``: index_fill_ takes only int64 indices and is 2x faster than indexing."""
    import torch

    if idx.dtype == torch.int64:
        t.index_fill_(0, idx, value)
    else:
        t[idx] = value


def _put(t: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> None:
    """``t[idx] = src`` (unique indices), by index_copy_ where the indices are int64."""
    import torch

    if idx.dtype == torch.int64:
        t.index_copy_(0, idx, src)
    else:
        t[idx] = src


def _identity_half(start: int, stop: int, piv: int, dtype: torch.dtype) -> torch.Tensor:
    """Original indices of positions [start, stop) of the whole tensor after its pivot swap."""
    import torch

    ix = torch.arange(start, stop, dtype=dtype)
    for pos, orig in ((0, piv), (piv, 0)):
        if start <= pos < stop:
            ix[pos - start] = orig
    return ix


def replay_top_k_mask(keys: torch.Tensor, k: int) -> torch.Tensor | None:
    """A boolean mask of the entries ``torch.sort(keys, descending=True)`` puts in its first
    ``k`` positions, or None where the replay does not apply (see the module's doc). ``keys``
    (1-D float, CPU) is consumed: it is permuted in place."""
    import torch

    n = keys.numel()
    mask = SPARES.take(n, torch.bool).zero_()
    if k <= 0:
        return mask
    if k >= n:
        return mask.fill_(True)
    if bool(torch.isnan(keys).any()):
        return None
    work = SPARES.take(n, torch.bool)
    try:
        dtype = _index_dtype(n)
        if n <= _THRESHOLD:
            return _follow(keys, 0, None, k, mask, work, dtype, 0)
        first = _first_level(keys, work, dtype)
        depth = 2 * (n.bit_length() - 1) - 1
        if first.cut <= k:  # the whole left part is kept
            first.mark_left(mask)
            if first.cut == k:
                return mask
            v, ix = first.right(first.v.index_select(0, first.li))
            return _follow(v, first.cut, ix, k, mask, work, dtype, depth)
        v, ix = first.left(first.v.index_select(0, first.ri))
        return _follow(v, 0, ix, k, mask, work, dtype, depth)
    finally:
        SPARES.give(work)


def replay_band_mask(keys: torch.Tensor, k1: int, k2: int) -> torch.Tensor | None:
    """A boolean mask of the entries ``torch.sort(keys, descending=True)`` puts at positions
    [k1, k2) (0 < k1 < k2 < n), or None where the replay does not apply or the first partition
    does not separate the two boundaries (then use two :func:`replay_top_k_mask` calls on fresh
    keys). The first partition, a pass over the whole tensor, is replayed once for both
    boundaries; ``keys`` is consumed."""
    import torch

    n = keys.numel()
    if not 0 < k1 < k2 < n or n <= _THRESHOLD or bool(torch.isnan(keys).any()):
        return None
    dtype = _index_dtype(n)
    work = SPARES.take(n, torch.bool)
    upper = SPARES.take(n, torch.bool).zero_()
    try:
        first = _first_level(keys, work, dtype)
        if not k1 < first.cut <= k2:
            SPARES.give(upper)
            return None
        depth = 2 * (n.bit_length() - 1) - 1
        left_src, right_src = first.v.index_select(0, first.ri), first.v.index_select(0, first.li)
        first.mark_left(upper)  # the first k2: the left part, then the right part's first k2 - cut
        if first.cut < k2:
            v, ix = first.right(right_src)
            if _follow(v, first.cut, ix, k2, upper, work, dtype, depth) is None:
                SPARES.give(upper)
                return None
            del v, ix  # the right part's indices go before the left part's are made
        del right_src
        lower = SPARES.take(n, torch.bool).zero_()  # the first k1, all in the left part
        v, ix = first.left(left_src)
        if _follow(v, 0, ix, k1, lower, work, dtype, depth) is None:
            SPARES.give(upper)
            SPARES.give(lower)
            return None
        upper &= lower.logical_not_()
        SPARES.give(lower)
        return upper
    finally:
        SPARES.give(work)


def _index_dtype(n: int) -> torch.dtype:
    import torch

    # int64 positions index without a conversion (an int32 index is widened on every use, and
    # each widened copy is fresh memory); past SPARES.limit entries int32 halves the lists instead,
    # since there the working set sets the merge's peak memory.
    return torch.int64 if n <= SPARES.limit else torch.int32


@dataclass
class _FirstLevel:
    """The first partition, of the whole tensor, where a position is its entry's original index
    except for the pivot swap (the entry at position ``piv`` is entry 0), so the swap lists serve
    as indices."""

    v: torch.Tensor
    cut: int
    li: torch.Tensor
    ri: torch.Tensor
    piv: int
    dtype: torch.dtype

    def mark_left(self, mask: torch.Tensor) -> None:
        """Mark every entry left of the cut after the swaps."""
        cut, piv = self.cut, self.piv
        mask[:cut] = True
        _fill(mask, self.li, False)
        _fill(mask, self.ri, True)
        # entry piv sits at position 0, always kept; entry 0 at position piv, kept if that
        # position is left of the cut and not swapped out, or swapped in
        mask[piv] = True
        mask[0] = (piv < cut and _find(self.li, piv, False) is None) or _find(self.ri, piv, True) is not None

    def right(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The part right of the cut after the swaps (``src``: the keys at the left stops, read
        before any swap was written) and the original index at each of its positions."""
        cut, li, ri = self.cut, self.li, self.ri
        _put(self.v, ri, src)
        ix = _identity_half(cut, self.v.numel(), self.piv, self.dtype)
        _put(ix, ri - cut, li)
        at_l = _find(li, self.piv, False)
        if at_l is not None:
            ix[int(ri[at_l]) - cut] = 0
        return self.v[cut:], ix

    def left(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The part left of the cut after the swaps (``src``: the keys at the right stops)."""
        li, ri = self.li, self.ri
        _put(self.v, li, src)
        ix = _identity_half(0, self.cut, self.piv, self.dtype)
        _put(ix, li, ri)
        at_r = _find(ri, self.piv, True)
        if at_r is not None:
            ix[int(li[at_r])] = 0
        return self.v[: self.cut], ix


def _first_level(keys: torch.Tensor, work: torch.Tensor, dtype: torch.dtype) -> _FirstLevel:
    piv = _median_position(keys)
    keys[[0, piv]] = keys[[piv, 0]]
    cut, li, ri = _partition(keys, work, dtype)
    return _FirstLevel(keys, cut, li, ri, piv, dtype)


def _follow(v: torch.Tensor, lo: int, ix: torch.Tensor | None, k: int, mask: torch.Tensor, work: torch.Tensor,
            dtype: torch.dtype, depth: int) -> torch.Tensor | None:
    """Replay the partitions of ``v`` (whole-tensor positions ``lo`` on; ``ix``: the original
    index at each of its positions, None for the identity of a tensor too small to partition)
    that hold position ``k``, marking in ``mask`` the entries that end before it."""
    import torch

    while v.numel() > _THRESHOLD:
        if depth == 0:
            return None  # introsort would heapsort this range
        depth -= 1
        assert ix is not None
        piv = _median_position(v)
        v[[0, piv]] = v[[piv, 0]]
        ix[[0, piv]] = ix[[piv, 0]]
        cut, li, ri = _partition(v, work, dtype)
        at_li, at_ri = ix.index_select(0, li), ix.index_select(0, ri)
        if lo + cut <= k:
            _fill(mask, ix[:cut], True)
            _fill(mask, at_li, False)
            _fill(mask, at_ri, True)
            if lo + cut == k:
                return mask
            _put(v, ri, v.index_select(0, li))
            ix = ix[cut:]
            _put(ix, ri - cut, at_li)
            v, lo = v[cut:], lo + cut
        else:
            _put(v, li, v.index_select(0, ri))
            ix = ix[:cut]
            _put(ix, li, at_ri)
            v = v[:cut]
    # The final insertion sort is stable and never moves an entry across a partition.
    order = torch.sort(v, descending=True, stable=True).indices[: k - lo]
    mask[order if ix is None else ix[order]] = True
    return mask


def replay_matches_torch() -> bool:
    """Whether the replay gives torch's own choice on tie-heavy keys (checked once per process)."""
    global _MATCHES_TORCH
    if _MATCHES_TORCH is None:
        import torch

        gen = torch.Generator().manual_seed(0)
        ok = True
        for n in (17, 300, 5000, 70001):
            keys = (torch.randn(n, generator=gen) * 0.01).bfloat16().float().abs()
            keys -= (torch.randn(n, generator=gen) * 0.01).bfloat16().float()
            keys.abs_()
            order = torch.argsort(keys, descending=True)
            for k in (1, n // 3, n // 2, n - 1):
                want = torch.zeros(n, dtype=torch.bool)
                want[order[:k]] = True
                got = replay_top_k_mask(keys.clone(), k)
                ok = ok and got is not None and bool(torch.equal(got, want))
        _MATCHES_TORCH = ok
    return _MATCHES_TORCH
