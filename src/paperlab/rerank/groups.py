"""Group construction: shuffle the candidates once per repeat and cut them into groups.

Published GroupRank inference: 6 repeats, each a fresh random shuffle of the top-100 cut into
groups of 20 with stride 20 (no overlap). Where the paper is silent we choose:

- no overlap (``stride >= group_size``): the shuffled list is split into ``ceil(n/size)``
  groups of nearly equal size (e.g. 101 passages -> 17,17,17,17,17,16) rather than leaving a
  lone passage in a last group of 1, which the model could not compare with anything;
- overlap (``stride < group_size``): windows start at 0, stride, 2*stride, ... and the last
  window is aligned to the end of the list, so every group is full and every passage is in at
  least one group per repeat.

Each repeat's shuffle is seeded from (seed, repeat), so adding repeats keeps earlier ones.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from paperlab.rerank.errors import RerankConfigError


@dataclass(frozen=True)
class Group:
    """One group: its repeat number and the 0-based candidate indices it holds, in prompt order."""

    repeat: int
    members: tuple[int, ...]


def _check(n: int, group_size: int, stride: int, repeats: int) -> None:
    if n < 0:
        raise RerankConfigError(f"number of passages must be >= 0, got {n}")
    if group_size < 1:
        raise RerankConfigError(f"group_size must be >= 1, got {group_size}; use e.g. 20")
    if stride < 1:
        raise RerankConfigError(f"stride must be >= 1, got {stride}; use the group size for no overlap")
    if repeats < 1:
        raise RerankConfigError(f"repeats must be >= 1, got {repeats}; use e.g. 6")


def _windows(order: list[int], size: int, stride: int) -> list[list[int]]:
    n = len(order)
    if n <= size:
        return [order]
    if stride >= size:
        k = math.ceil(n / size)
        base, extra = divmod(n, k)
        out, start = [], 0
        for j in range(k):
            length = base + (1 if j < extra else 0)
            out.append(order[start : start + length])
            start += length
        return out
    starts = list(range(0, n - size + 1, stride))
    if starts[-1] + size < n:
        starts.append(n - size)
    return [order[s : s + size] for s in starts]


def make_groups(n: int, group_size: int = 20, stride: int | None = None, repeats: int = 6,
                seed: int = 0, shuffle: bool = True) -> list[Group]:
    """Build the groups of all repeats.

    Args:
        n: number of candidates.
        group_size: passages per group (at most).
        stride: start-to-start distance of groups within a repeat; None means ``group_size``.
        repeats: how many shuffled passes over the candidates.
        seed: shuffle seed; repeat ``r`` uses the stream seeded with ``(seed, r)``.
        shuffle: False keeps the input order (useful for tests and one-repeat runs).

    Returns:
        Groups of every repeat, repeat by repeat. With no overlap every index appears exactly
        ``repeats`` times; with overlap at least ``repeats`` times.

    Raises:
        RerankConfigError: a parameter is out of range.
    """
    stride = group_size if stride is None else stride
    _check(n, group_size, stride, repeats)
    if n == 0:
        return []
    groups: list[Group] = []
    for r in range(repeats):
        order = list(range(n))
        if shuffle:
            random.Random(f"{seed}:{r}").shuffle(order)
        groups.extend(Group(r, tuple(w)) for w in _windows(order, group_size, stride))
    return groups
