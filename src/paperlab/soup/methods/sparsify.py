"""Dropping entries of a task vector: by magnitude (TIES), magnitude without outliers
(breadcrumbs), at random (DARE), at random by magnitude rank (DELLA).

All work on a flat tensor in the compute dtype and return a new one, in mergekit 0.1.5's
order of operations (``mergekit/sparsify.py``), with two choices of ours where it leaves
things to chance:
- exactly ``k`` entries are kept. When entries tied in magnitude straddle the cut (common with
  bf16 inputs), the ones kept are those torch's descending ``argsort`` of the float32 magnitudes
  puts first, which is mergekit's own call: the choice is deterministic for a torch version
  (checked across thread counts) and so matches mergekit's. On the CPU that set is found
  without sorting, by replaying torch's sort only where it decides the cut
  (:mod:`~paperlab.soup.methods.introselect`); when no tie straddles the cut, a linear-time
  selection is tried first (most float32 tensors; not on half-precision inputs, where ties
  straddle the cut in every tensor we measured);
- random drops draw ``u ~ U[0, 1)`` per entry from :func:`~paperlab.soup.methods.base.rng_for`
  and keep the entry when ``u < p`` (a Bernoulli(p) draw), so a merge is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import introselect

if TYPE_CHECKING:
    import torch

RESCALE_EPS = 1e-7


def rescaled(delta: torch.Tensor, mask: torch.Tensor, rescale: bool) -> torch.Tensor:
    """``delta * mask``, scaled back to ``delta``'s L1 norm when ``rescale`` (left alone when
    either norm is ~0), in ``delta``'s dtype. Without rescaling ``delta`` is masked in place
    (the same values: only the copy is saved)."""
    if not rescale:
        return delta.mul_(mask)
    kept = delta * mask
    before = delta.abs().sum()
    after = kept.abs().sum()
    if before < RESCALE_EPS or after < RESCALE_EPS:
        return kept
    return kept * (before / after)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    import torch

    # mergekit upcasts float16 on the CPU (torch.bernoulli has no float16 kernel there).
    return torch.float32 if x.device.type == "cpu" and x.dtype == torch.float16 else x.dtype


def top_k_mask(keys: torch.Tensor, k: int, remake: Callable[[], torch.Tensor], *,
               select_first: bool = True) -> torch.Tensor:
    """A boolean mask of the k largest entries of ``keys`` (float32 magnitudes), chosen as
    mergekit chooses. ``keys`` is consumed (permuted in place, which saves a copy of the
    tensor); ``remake`` gives them again, for the rare tensor the sort replay hands back.
    (Multiplying by the mask gives the same values as mergekit's 0/1 mask in the tensor's dtype.)

    ``select_first`` tries the linear-time selection first. It never pays on half-precision
    inputs: their deltas take few distinct values, so ties straddle the cut in every tensor of a
    real checkpoint (we measured 3 x 0.25B bf16 Llamas); either way the mask is the same."""
    import torch

    n = keys.numel()
    if select_first:
        cut = torch.kthvalue(keys, n - k + 1).values
        above = keys > cut
        at = keys == cut
        room = k - int(above.sum())
        if room == int(at.sum()):  # every entry at the cut is kept: no choice to make, no sort
            return above.logical_or_(at)
        del above, at, cut
    if keys.device.type == "cpu" and introselect.replay_matches_torch():
        mask = introselect.replay_top_k_mask(keys, k)
        if mask is not None:
            return mask
        keys = remake()
    if keys.device.type == "cpu":  # the permutation in place is the one ``argsort`` returns: same kernel
        order = torch.empty(n, dtype=torch.int64)
        torch.sort(keys, descending=True, out=(keys, order))
    else:  # accelerators: mergekit's own call, unchanged (an aliased sort there is not checked)
        order = torch.argsort(keys, descending=True)
    mask = torch.zeros(n, dtype=torch.bool, device=keys.device)
    mask[order[:k]] = True
    return mask


def kept_count(n: int, density: float) -> int:
    """How many entries a magnitude drop at ``density`` keeps (mergekit's count, at least 1)."""
    return max(1, int(density * n))


def magnitude(delta: torch.Tensor, density: float, rescale: bool = False) -> torch.Tensor:
    """Keep the ``max(1, int(density * n))`` entries of largest magnitude."""
    n = delta.numel()
    if density >= 1 or n == 0:
        return delta
    mask = top_k_mask(delta.abs().float(), kept_count(n, density), lambda: delta.abs().float())
    return rescaled(delta, mask, rescale)


def magnitude_outliers(delta: torch.Tensor, density: float, gamma: float, rescale: bool = False) -> torch.Tensor:
    """Breadcrumbs: drop the ``int(gamma * n)`` largest entries and then the smallest, keeping
    ``int(density * n)`` (fewer outliers are dropped when both cannot be met)."""
    import torch

    n = delta.numel()
    if density >= 1 or n == 0:
        return delta
    if delta.device.type == "cpu":
        return rescaled(delta, outlier_mask(lambda: delta.abs().float(), n, density, gamma), rescale)
    bottom, target = _outlier_band(n, density, gamma)
    order = torch.sort(delta.abs().float(), descending=False).indices  # mergekit's call, ties included
    mask = torch.zeros(n, dtype=delta.dtype, device=delta.device)
    mask[order[bottom: bottom + target]] = 1
    del order
    return rescaled(delta, mask, rescale)


def _outlier_band(n: int, density: float, gamma: float) -> tuple[int, int]:
    """Breadcrumbs' band of an ascending magnitude sort: (start, length). ``int(density * n)``
    entries are kept, above the smallest and below the ``int(gamma * n)`` largest (fewer of
    those are dropped when both cannot be met)."""
    target = int(density * n)
    return max(0, n - target - int(gamma * n)), target


def outlier_mask(magnitudes: Callable[[], torch.Tensor], n: int, density: float, gamma: float) -> torch.Tensor:
    """Breadcrumbs' boolean mask on the CPU: positions [bottom, bottom + target) of mergekit's
    ascending sort of the float32 ``magnitudes()`` (a fresh tensor at each call), found as the
    first bottom + target less the first bottom. An ascending sort makes every comparison that
    a descending sort of the negated keys makes, so the sort replay finds both sets."""
    bottom, target = _outlier_band(n, density, gamma)

    def negated() -> torch.Tensor:
        return magnitudes().neg_()

    if bottom and introselect.replay_matches_torch():  # both boundaries in one replay where it can
        band = introselect.replay_band_mask(negated(), bottom, bottom + target)
        if band is not None:
            return band
    kept = top_k_mask(negated(), bottom + target, negated, select_first=False)
    if bottom:
        kept &= ~top_k_mask(negated(), bottom, negated, select_first=False)
    return kept


def bernoulli(delta: torch.Tensor, density: float, gen: torch.Generator, rescale: bool = True) -> torch.Tensor:
    """DARE: keep each entry with probability ``density``."""
    import torch

    if density >= 1:
        return delta
    work = _work_dtype(delta)
    u = torch.rand(delta.numel(), generator=gen, dtype=torch.float32, device=delta.device)
    mask = (u < density).to(work)
    del u
    return rescaled(delta.to(work), mask, rescale).to(delta.dtype)


def della_magprune(delta: torch.Tensor, shape: tuple[int, ...] | None, density: float, epsilon: float,
                   gen: torch.Generator, rescale: bool = True) -> torch.Tensor:
    """DELLA: keep each entry with a probability that grows with its magnitude rank in its row,
    from ``density - epsilon`` (smallest) to ``density + epsilon`` (largest).

    Rows are the first axis of a 2-D or larger tensor (the rest flattened); a 1-D tensor is one
    row; an entry alone in its row is kept with probability ``density``.
    """
    import torch

    if density >= 1:
        return delta
    work = _work_dtype(delta)
    rows = shape[0] if shape is not None and len(shape) >= 2 else 1
    m = delta.reshape(rows, -1)
    cols = m.shape[1]
    # The rank of each entry in its row's stable magnitude order (mergekit's argsort of the
    # argsort): the inverse permutation, scattered in one pass instead of a second sort.
    order = torch.argsort(m.abs(), dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(cols, device=m.device).expand(rows, cols))
    del order
    rank = rank.to(torch.float32)
    rank_norm = rank / (cols - 1) if cols > 1 else torch.full_like(rank, 0.5)
    del rank
    probs = (density - epsilon) + rank_norm * (2 * epsilon)
    u = torch.rand(delta.numel(), generator=gen, dtype=torch.float32, device=delta.device)
    mask = (u < probs.reshape(-1)).to(work)
    del u, probs
    return rescaled(delta.to(work), mask, rescale).to(delta.dtype)
