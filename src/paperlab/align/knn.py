"""Exact k-nearest neighbours by inner product, blockwise, with a deterministic tie rule.

Neighbours of item ``i`` are the ``k`` items ``j != i`` with the largest similarity
``s_ij = <x_i, x_j>`` (callers L2-normalise first when they want cosine).

Tie rule (documented, deterministic): candidates are ranked by ``(-s_ij, j)``: a higher
similarity comes first and, among exactly equal similarities, the LOWER index wins. This is the
order a stable sort of ``-s`` gives, so the straightforward full-matrix reference
(:func:`knn_full`, or a stable ``torch.argsort``) and the blockwise routines agree exactly.

How the blockwise routines stay exact without sorting whole rows:

1. a fast partial selection on the float similarities (``argpartition`` / ``topk``) finds the
   k+1 largest per row; the k best are exact unless the k-th and (k+1)-th values are equal,
   when the selection may pick any of several equal values;
2. such rows are detected (k-th value == (k+1)-th value) and redone on unique 64-bit keys ``(ordered_bits(s) << 32) | (2^31 - 1 - j)``:
   ``ordered_bits`` maps a float32 to an int32 whose integer order is the float order, so keys
   compare similarities first and break ties by the lower index, and a partial selection over
   distinct keys has exactly one answer;
3. the k winners are ordered by the same keys.

Both :func:`knn_blockwise` (numpy) and :func:`knn_torch` use symmetric tiles: ``s_ij == s_ji``, so each off-diagonal tile is multiplied once and serves
both its rows and its columns (half the matmul work), and per-item best-k lists are merged tile
by tile under the same total order (the top k of a union of exact top-k lists is exact).
Memory: one tile/block of similarities plus the ``(N, k)`` result; never an ``N x N`` matrix.

Similarities are float32. BLAS accumulates each dot product over the feature axis in the same
order whatever the row/column split, which is what makes blockwise and full agree bit for bit;
the tests and the benchmark check it (numpy's and torch's BLAS may round differently from each
other, so each backend is compared with its own full-matrix reference).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from paperlab.errors import AlignError

log = logging.getLogger(__name__)

#: Tile side: a 2048 x 2048 float32 tile plus selection scratch is about 64 MiB, whatever N.
DEFAULT_TILE = 2048
#: Low 32 bits of a key hold ``_LOW_MAX - j`` (>= 0 for any index j >= -1 used here).
_LOW_MAX = 2**31 - 1


def _check_k(n: int, k: int) -> None:
    if not 1 <= k <= n - 1:
        raise AlignError(f"k={k} is invalid for {n} items: use 1 <= k <= N-1 = {n - 1}")


def _tile_size(n: int, block_size: int | None) -> int:
    if block_size is None:
        return min(n, DEFAULT_TILE)
    if block_size < 1:
        raise AlignError(f"block_size={block_size} must be >= 1")
    return block_size


def _ordered_keys_np(vals: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """float32 values and their int64 indices -> unique int64 keys (value desc, index asc)."""
    v = (vals + np.float32(0.0)).astype(np.float32, copy=False)  # -0.0 -> +0.0: equal bits
    bits = v.view(np.int32)
    # negative floats: flip the magnitude bits so that integer order == float order
    bits = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)
    return (bits.astype(np.int64) << 32) | (_LOW_MAX - np.asarray(idx, dtype=np.int64))


def _as_f32(x: Any) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if a.ndim != 2:
        raise AlignError(f"features must be a 2-D array (items, dims), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise AlignError("features contain NaN or inf; clean or drop those items first")
    return a


def _select_tile_np(sims: np.ndarray, k: int, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of ``sims`` (B, W) under the tie rule, best first.

    ``cols`` (W,) holds the global index of each column. Returns ``(values, global_indices)``,
    both (B, min(k, W)).
    """
    width = sims.shape[1]
    if width <= k:  # the whole tile row is the candidate list: nothing to choose
        return sims, np.broadcast_to(cols, sims.shape)
    # A fast partial selection on the floats, placing the k-th and (k+1)-th largest values
    # exactly. Only when those two are equal can the choice among equal values at the k-th
    # place be ambiguous; such rows are redone below on the unique keys.
    part_all = np.argpartition(sims, [width - k - 1, width - k], axis=1)
    kth = np.take_along_axis(sims, part_all[:, width - k : width - k + 1], axis=1)[:, 0]
    nxt = np.take_along_axis(sims, part_all[:, width - k - 1 : width - k], axis=1)[:, 0]
    part = part_all[:, width - k :]  # (B, k)
    tied = np.nonzero(kth == nxt)[0]
    if len(tied):
        keys = _ordered_keys_np(sims[tied], cols[None, :])
        part[tied] = np.argpartition(keys, width - k, axis=1)[:, width - k :]
    return np.take_along_axis(sims, part, axis=1), cols[part]


def _merge_np(
    vals: np.ndarray, idx: np.ndarray, new_vals: np.ndarray, new_idx: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two candidate lists per row into the best k under the tie rule, best first."""
    v = np.concatenate([vals, new_vals], axis=1)
    i = np.concatenate([idx, new_idx], axis=1)
    order = np.argsort(-_ordered_keys_np(v, i), axis=1)[:, :k]  # unique keys: a total order
    return np.take_along_axis(v, order, axis=1), np.take_along_axis(i, order, axis=1)


def knn_blockwise(x: Any, k: int, block_size: int | None = None) -> np.ndarray:
    """Exact inner-product k-NN (self excluded) in symmetric tiles, numpy.

    Args:
        x: (N, D) features (not normalised here).
        k: neighbours per item, 1 <= k <= N-1.
        block_size: tile side; default 2048 (about 64 MiB of scratch per tile).

    Returns:
        (N, k) int64 neighbour indices, best first, ties to the lower index.
    """
    a = _as_f32(x)
    n = a.shape[0]
    _check_k(n, k)
    tile = _tile_size(n, block_size)
    best_v = np.full((n, k), -np.inf, dtype=np.float32)
    best_i = np.full((n, k), -1, dtype=np.int64)
    starts = list(range(0, n, tile))
    for a0 in starts:
        a1 = min(n, a0 + tile)
        cols_a = np.arange(a0, a1)
        for b0 in (s for s in starts if s >= a0):
            b1 = min(n, b0 + tile)
            sims = a[a0:a1] @ a[b0:b1].T  # (BA, BB)
            if b0 == a0:
                np.fill_diagonal(sims, -np.inf)  # exclude self
            v, i = _select_tile_np(sims, k, np.arange(b0, b1))
            best_v[a0:a1], best_i[a0:a1] = _merge_np(best_v[a0:a1], best_i[a0:a1], v, i, k)
            if b0 != a0:  # the same tile, read by columns, serves the rows of block b
                v, i = _select_tile_np(np.ascontiguousarray(sims.T), k, cols_a)
                best_v[b0:b1], best_i[b0:b1] = _merge_np(best_v[b0:b1], best_i[b0:b1], v, i, k)
    return best_i


def knn_full(x: Any, k: int) -> np.ndarray:
    """Reference k-NN: the full (N, N) similarity matrix and a stable sort (O(N^2) memory).

    Same tie rule as :func:`knn_blockwise` (a stable sort of ``-s`` puts lower indices first).
    """
    a = _as_f32(x)
    n = a.shape[0]
    _check_k(n, k)
    sims = a @ a.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k].astype(np.int64)


def _keys_torch(vals: Any, idx: Any) -> Any:
    """float32 values and their int64 indices -> unique int64 keys (value desc, index asc)."""
    import torch

    bits = (vals + 0.0).view(torch.int32)  # -0.0 -> +0.0 first: equal floats, equal keys
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (bits.to(torch.int64) << 32) | (_LOW_MAX - idx)


def _select_block_torch(sims: Any, k: int, cols: Any) -> tuple[Any, Any]:
    """Top-k of each row of ``sims`` (B, W) under the tie rule, best first.

    ``cols`` (W,) holds the global column index of each of the W columns. Returns
    ``(values, global_indices)``, both (B, min(k, W)).
    """
    import torch

    width = sims.shape[1]
    if width <= k:  # the whole tile row is the candidate list: nothing to choose, no ties
        idx = torch.arange(width, device=sims.device).expand(sims.shape[0], width)
        return sims, cols[idx]
    # k+1 largest, sorted: only when the k-th and (k+1)-th values are equal can topk's choice
    # among equal values at the k-th place be ambiguous; such rows are redone on unique keys
    vals, idx = torch.topk(sims, k + 1, dim=1, largest=True, sorted=True)  # (B, k+1)
    tied = vals[:, k - 1] == vals[:, k]
    vals, idx = vals[:, :k].clone(), idx[:, :k].clone()
    if bool(tied.any()):
        rows = torch.nonzero(tied).squeeze(1)
        keys = _keys_torch(sims[rows], cols.unsqueeze(0))
        idx[rows] = torch.topk(keys, k, dim=1).indices
        vals[rows] = torch.gather(sims[rows], 1, idx[rows])
    return vals, cols[idx]


def _merge_torch(vals: Any, idx: Any, new_vals: Any, new_idx: Any, k: int) -> tuple[Any, Any]:
    """Merge two candidate lists per row into the best k under the tie rule, best first."""
    import torch

    v = torch.cat([vals, new_vals], dim=1)
    i = torch.cat([idx, new_idx], dim=1)
    order = torch.topk(_keys_torch(v, i), k, dim=1, largest=True, sorted=True).indices
    return torch.gather(v, 1, order), torch.gather(i, 1, order)


def knn_torch(x: Any, k: int, block_size: int | None = None, device: str | None = None) -> Any:
    """Exact inner-product k-NN in symmetric tiles with torch (CUDA when present).

    Same keys and tie rule as :func:`knn_blockwise`; ``torch.topk`` over unique int64 keys has
    a single answer, so CPU, CUDA and numpy agree whenever the float32 similarities do.

    Returns:
        (N, k) int64 torch tensor of neighbour indices on the chosen device.
    """
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x
    t = t.to(device=dev, dtype=torch.float32).contiguous()
    if t.ndim != 2:
        raise AlignError(f"features must be a 2-D array (items, dims), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise AlignError("features contain NaN or inf; clean or drop those items first")
    n = t.shape[0]
    _check_k(n, k)
    tile = _tile_size(n, block_size)
    # Symmetric tiling: s_ij == s_ji, so each off-diagonal tile (I, J) is multiplied once and
    # serves the rows of I (its rows) and the rows of J (its columns): half the matmul work.
    # Running best-k lists per item are merged tile by tile; merging exact top-k lists under a
    # total order gives the exact global top-k.
    best_v = torch.full((n, k), float("-inf"), device=dev)
    best_i = torch.full((n, k), -1, dtype=torch.int64, device=dev)
    starts = list(range(0, n, tile))
    for a0 in starts:
        a1 = min(n, a0 + tile)
        cols_a = torch.arange(a0, a1, device=dev)
        for b0 in starts:
            if b0 < a0:
                continue
            b1 = min(n, b0 + tile)
            cols_b = torch.arange(b0, b1, device=dev)
            sims = t[a0:a1] @ t[b0:b1].T  # (BA, BB)
            if b0 == a0:
                sims.fill_diagonal_(float("-inf"))  # exclude self
            v, i = _select_block_torch(sims, k, cols_b)
            best_v[a0:a1], best_i[a0:a1] = _merge_torch(best_v[a0:a1], best_i[a0:a1], v, i, k)
            if b0 != a0:
                v, i = _select_block_torch(sims.T.contiguous(), k, cols_a)
                best_v[b0:b1], best_i[b0:b1] = _merge_torch(best_v[b0:b1], best_i[b0:b1], v, i, k)
    return best_i
