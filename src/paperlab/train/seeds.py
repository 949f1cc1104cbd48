"""Randomness drawn per sample, from the sample's global index, never from a process's stream.

A global batch of B samples at step s holds the samples with global indices 0..B-1; rank r of W
trains the rows ``r*B/W .. (r+1)*B/W - 1``. Everything random about a sample (its data window,
its mask, its noise, its dropout) comes from a generator seeded by (run seed, step, index), so
one process and N processes draw the same numbers for the same sample and train the same
model up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, step, index, ...): nearby inputs give unrelated seeds."""
    h = 0x6A09E667F3BCC908
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h & ((1 << 63) - 1)


def sample_generator(*parts: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded by :func:`sample_seed` of ``parts``."""
    return torch.Generator(device=device).manual_seed(sample_seed(*parts))


@dataclass
class _Rows:
    seeds: list[int]
    calls: int = field(default=0)


_ROWS: ContextVar[_Rows | None] = ContextVar("paperlab_train_row_seeds", default=None)


@contextmanager
def row_seeds(seeds: Sequence[int]) -> Iterator[None]:
    """Within the block, :class:`RowDropout` draws row i's mask from ``seeds[i]``.

    A task sets it around its forward pass with one seed per row of the model's input (from
    :func:`sample_seed` of the row's global sample index), so dropout does not depend on which
    process holds the row or on which other rows share its batch.
    """
    token = _ROWS.set(_Rows(list(seeds)))
    try:
        yield
    finally:
        _ROWS.reset(token)


class RowDropout(nn.Module):
    """Dropout whose mask for each batch row comes from that row's seed (see :func:`row_seeds`).

    Outside a :func:`row_seeds` block it is plain dropout on torch's global generator. Each call
    in a forward pass takes the next site number, so every layer draws its own mask; a forward
    pass recomputed by activation checkpointing would draw new ones (do not combine the two).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p} is not in [0, 1)")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        rows = _ROWS.get()
        if rows is None:
            return F.dropout(x, self.p, training=True)
        if x.shape[0] != len(rows.seeds):
            raise RuntimeError(f"row_seeds gave {len(rows.seeds)} seeds for a batch of {x.shape[0]} rows")
        site = rows.calls
        rows.calls += 1
        keep = torch.stack([
            torch.rand(x.shape[1:], generator=sample_generator(s, site, device=x.device), device=x.device)
            for s in rows.seeds
        ]) >= self.p  # (B, ...)
        return x * keep.to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
