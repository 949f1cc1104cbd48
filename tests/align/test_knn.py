"""Exact k-NN: blockwise (numpy rows, torch symmetric tiles) equals the full sort, ties included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperlab.align.knn import knn_blockwise, knn_full, knn_torch
from paperlab.errors import AlignError


def test_tie_rule_lower_index_wins() -> None:
    # item 1 (e2) is orthogonal to items 0, 2 and 3: all three tie at 0, so index 0 wins
    x = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32)
    for got in (
        knn_full(x, 2),
        knn_blockwise(x, 2, block_size=1),
        knn_torch(x, 2, block_size=1).numpy(),
    ):
        assert got[0].tolist() == [3, 1]  # the duplicate first, then the lower of the ties
        assert got[1].tolist() == [0, 2]
        assert got[3].tolist() == [0, 1]


def test_self_is_excluded_even_for_duplicates() -> None:
    x = np.ones((5, 2), dtype=np.float32)  # everything ties: neighbours are the lowest others
    got = knn_blockwise(x, 2, block_size=2)
    assert got.tolist() == [[1, 2], [0, 2], [0, 1], [0, 1], [0, 1]]
    assert (knn_torch(x, 2, block_size=2).numpy() == got).all()


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(3, 60),
    d=st.integers(1, 4),
    k_frac=st.floats(0.0, 1.0),
    block=st.integers(3, 70),
    seed=st.integers(0, 2**16),
)
def test_blockwise_equals_full_with_heavy_ties(
    n: int, d: int, k_frac: float, block: int, seed: int
) -> None:
    # small integer features make many exactly equal similarities, including -0.0 vs 0.0
    x = np.random.default_rng(seed).integers(-2, 3, size=(n, d)).astype(np.float32)
    k = 1 + int(k_frac * (n - 2))
    full = knn_full(x, k)
    assert np.array_equal(knn_blockwise(x, k, block_size=block), full)
    assert np.array_equal(knn_torch(x, k, block_size=block).numpy(), full)


def test_blockwise_equals_full_on_real_sized_floats() -> None:
    x = np.random.default_rng(0).standard_normal((1500, 96)).astype(np.float32)
    full = knn_full(x, 10)
    assert np.array_equal(knn_blockwise(x, 10, block_size=128), full)
    assert np.array_equal(knn_blockwise(x, 10), full)
    # torch's own full-matrix sort is the reference for the torch path (its matmul may round
    # differently from numpy's BLAS)
    t = torch.from_numpy(x)
    s = t @ t.T
    s.fill_diagonal_(float("-inf"))
    ref = torch.argsort(s, dim=1, descending=True, stable=True)[:, :10]
    assert torch.equal(knn_torch(t, 10, block_size=256), ref)


def test_bad_k_and_bad_values_raise() -> None:
    x = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(AlignError, match="1 <= k <= N-1"):
        knn_blockwise(x, 4)
    x[0, 0] = np.nan
    with pytest.raises(AlignError, match="NaN"):
        knn_blockwise(x, 1)
