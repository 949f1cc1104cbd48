"""The k-mer (order-k Markov) baseline for per-base DNA loss.

An order-k model predicts a base from the k bases before it with add-alpha smoothed counts.
Order 0 is the base-frequency model; a transformer that beats the best order-k model has learned
more than k-mer statistics. Both are scored on the same held-out windows and positions
(:func:`eval_windows`), so their numbers compare directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from paperlab.errors import ICLError
from paperlab.icl.dna import reverse_complement

MAX_ORDER = 12


def _context_index(codes: np.ndarray, order: int, start: int) -> np.ndarray:
    """For targets codes[start:], the base-4 index of the ``order`` bases before each."""
    n = len(codes)
    idx = np.zeros(n - start, dtype=np.int64)
    for j in range(order):
        idx = idx * 4 + codes[start - order + j : n - order + j]
    return idx


@dataclass
class MarkovModel:
    """Order-``order`` Markov chain over A/C/G/T with add-``alpha`` smoothing."""

    order: int
    alpha: float = 0.5
    log_probs: np.ndarray | None = None  # (4**order, 4) natural-log probabilities

    def fit(self, codes: np.ndarray, reverse_complements: bool = True) -> MarkovModel:
        """Count (k+1)-mers in ``codes`` (and its reverse complement, as the transformer sees)."""
        if not 0 <= self.order <= MAX_ORDER:
            raise ICLError(f"Markov order must be in 0..{MAX_ORDER}, got {self.order}")
        counts = np.zeros(4 ** (self.order + 1), dtype=np.int64)
        strands = [codes, reverse_complement(codes)] if reverse_complements else [codes]
        for s in strands:
            ctx = _context_index(s.astype(np.int64), self.order, self.order)
            counts += np.bincount(ctx * 4 + s[self.order :], minlength=counts.size)
        table = counts.reshape(-1, 4).astype(np.float64) + self.alpha
        self.log_probs = np.log(table / table.sum(axis=1, keepdims=True))
        return self

    def nll(self, windows: Sequence[np.ndarray], start: int) -> float:
        """Mean negative log-likelihood (nats per base) of positions ``start:`` of each window."""
        if self.log_probs is None:
            raise ICLError("fit() the Markov model before scoring it")
        if start < self.order:
            raise ICLError(f"scoring must start at position >= order ({self.order})")
        total, count = 0.0, 0
        for w in windows:
            w = w.astype(np.int64)
            ctx = _context_index(w, self.order, start)
            total -= float(self.log_probs[ctx, w[start:]].sum())
            count += len(w) - start
        return total / count


def eval_windows(held_out: np.ndarray, n: int, length: int) -> list[np.ndarray]:
    """``n`` evenly spaced, non-overlapping held-out windows of ``length`` bases."""
    if len(held_out) < n * length:
        n = max(1, len(held_out) // length)
    stride = len(held_out) // n
    return [held_out[i * stride : i * stride + length] for i in range(n)]


def markov_table(
    train: np.ndarray, windows: Sequence[np.ndarray], start: int, orders: Sequence[int] = (0, 2, 4, 6, 8, 10)
) -> dict[int, float]:
    """Held-out nats/base for each Markov order."""
    return {k: MarkovModel(k).fit(train).nll(windows, start) for k in orders}


def bits(nats: float) -> float:
    """Convert nats to bits."""
    return nats / math.log(2)
