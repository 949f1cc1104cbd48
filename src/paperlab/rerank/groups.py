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

from paperlab.rerank.config import RerankConfig


@dataclass(frozen=True)
class Group:
    """One group: its repeat number and the 0-based candidate indices it holds, in prompt order."""

    repeat: int
    members: tuple[int, ...]


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


def make_groups(n: int, cfg: RerankConfig) -> list[Group]:
    """Build the groups of all repeats for ``n`` candidates.

    The sizes come from ``cfg`` (validated there, once): ``group_size`` passages per group at
    most; ``stride`` (None: ``group_size``) from one group's start to the next within a repeat;
    ``repeats`` shuffled passes; ``seed`` (repeat ``r`` uses the stream seeded with
    ``(seed, r)``); ``shuffle`` False keeps the input order.

    Returns:
        Groups of every repeat, repeat by repeat. With no overlap every index appears exactly
        ``repeats`` times; with overlap at least ``repeats`` times.
    """
    size = cfg.group_size
    stride = size if cfg.stride is None else cfg.stride
    if n <= 0:
        return []
    groups: list[Group] = []
    for r in range(cfg.repeats):
        order = list(range(n))
        if cfg.shuffle:
            random.Random(f"{cfg.seed}:{r}").shuffle(order)
        groups.extend(Group(r, tuple(w)) for w in _windows(order, size, stride))
    return groups
