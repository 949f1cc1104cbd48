"""CKNNA (Huh et al. 2024): centred kernel alignment restricted to mutual nearest neighbours,
in the three definitions users meet in print.

All three start alike: rows are L2-normalised, K = A A^T and L = B B^T (cosine kernels),
NN_K(i) = the k items j != i with the largest K_ij (ties: lower j), and the neighbour mask of a
pair of kernels is alpha_ij(P, Q) = 1[j in NN_P(i) and j in NN_Q(i)]. They differ in how the
kernel is centred and how the masked kernels are compared:

``paper`` (the formula printed in the paper, Huh et al. 2024, sec. A / eq. for CKNNA):
    Align(P, Q) = sum_ij alpha_ij(P, Q) (P_ij - E_l[P_il]) (Q_ij - E_l[Q_il]),
    with E_l the mean over all N items of row i (row centring);
    CKNNA = Align(K, L) / sqrt(Align(K, K) Align(L, L)).

``double-centred`` (paperlab's default since the first release, the classic CKA centring
H K H restricted to the same pairs):
    the same sums with P_ij - E_l[P_il] - E_l[P_lj] + E_lm[P_lm].

``platonic-rep`` (the authors' reference code, minyoungg/platonic-rep ``metrics.py``, which
produced the published alignment figures): the masked kernels K' = alpha(K, L) * K and
L' = alpha(K, L) * L (not centred) go through Song et al.'s unbiased HSIC estimator, as that
code writes it:
    HSIC(K', L') = [sum_ij K'_ij L'_ji + 1^T K' 1 * 1^T L' 1 / ((N-1)(N-2))
                    - 2/(N-2) * 1^T K' L' 1] / (N (N - 3)),
    CKNNA = HSIC(K', L') / sqrt(HSIC(K'', K'') HSIC(L'', L'')),
    where K'' = alpha(K, K) * K. Note the transpose in the first term: the masks are not
    symmetric, so only pairs that are neighbours both ways contribute there. (The reference adds
    1e-6 to the denominator; we do not, and raise when it is zero.)

Every variant works from the (N, k) neighbour lists, never an N x N matrix: memory O(N k).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from paperlab.align.backend import Ops
from paperlab.errors import AlignError

#: CKNNA definitions, the first is the default.
CKNNA_VARIANTS = ("double-centred", "paper", "platonic-rep")


def pair_dots(x: Any, nn: np.ndarray, ops: Ops, chunk: int = 2048) -> np.ndarray:
    """<x_i, x_j> for j in nn[i]: (N, k) float64 numpy, computed in row chunks (never N x N)."""
    idx = ops.index(nn)
    parts = []
    for s in range(0, x.shape[0], chunk):
        rows = x[s : s + chunk]  # (C, D)
        parts.append(ops.sum(rows[:, None, :] * x[idx[s : s + chunk]], axis=2))  # (C, k)
    return ops.to_numpy(ops.concat(parts)).astype(np.float64)


def _centred_pairs(x: Any, nn: np.ndarray, ops: Ops, double: bool) -> np.ndarray:
    """K_ij - m_i (row-centred) or K_ij - m_i - m_j + g (double-centred) at (i, nn[i]).

    K = X X^T has row means m_i = <x_i, mean(X)> and grand mean g = |mean(X)|^2.
    """
    mu = ops.mean(x, axis=0)
    m = ops.to_numpy(x @ mu).astype(np.float64)
    out = pair_dots(x, nn, ops) - m[:, None]
    if double:
        out += -m[nn] + float(ops.item(mu @ mu))
    return out


def _matched(nn_a: np.ndarray, nn_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, position in nn_a, position in nn_b) of every j in both NN_A(i) and NN_B(i)."""
    ii, pa, pb = np.nonzero(nn_a[:, :, None] == nn_b[:, None, :])
    return ii, pa, pb


def _centred(x_a: Any, x_b: Any, nn_a: np.ndarray, nn_b: np.ndarray, ops: Ops, double: bool) -> float:
    ka = _centred_pairs(x_a, nn_a, ops, double)
    lb = _centred_pairs(x_b, nn_b, ops, double)
    ii, pa, pb = _matched(nn_a, nn_b)
    cross = float((ka[ii, pa] * lb[ii, pb]).sum())
    denom = float(np.sqrt((ka * ka).sum() * (lb * lb).sum()))
    if denom <= 0:
        raise AlignError("CKNNA is undefined: a centred kernel is zero on every neighbour pair")
    return cross / denom


def _hsic_song_sparse(
    rows: np.ndarray, cols: np.ndarray, kv: np.ndarray, lv: np.ndarray, n: int
) -> float:
    """The reference code's unbiased HSIC of two N x N matrices that are zero except at
    (rows, cols) (the same support, no diagonal), with values kv and lv there."""
    # sum_ij K'_ij L'_ji: find, for each listed pair (i, j), the listed pair (j, i)
    code = rows.astype(np.int64) * n + cols
    order = np.argsort(code)
    sorted_code = code[order]
    want = cols.astype(np.int64) * n + rows
    pos = np.minimum(np.searchsorted(sorted_code, want), max(len(code) - 1, 0))
    hit = sorted_code[pos] == want if len(code) else np.zeros(0, dtype=bool)
    term1 = float((kv[hit] * lv[order[pos[hit]]]).sum())
    term2 = float(kv.sum()) * float(lv.sum()) / ((n - 1) * (n - 2))
    col_k = np.bincount(cols, weights=kv, minlength=n)  # 1^T K'
    row_l = np.bincount(rows, weights=lv, minlength=n)  # L' 1
    term3 = 2.0 * float((col_k * row_l).sum()) / (n - 2)
    return (term1 + term2 - term3) / (n * (n - 3))


def _platonic(x_a: Any, x_b: Any, nn_a: np.ndarray, nn_b: np.ndarray, ops: Ops) -> float:
    n = int(x_a.shape[0])
    if n <= 3:
        raise AlignError(f"the platonic-rep CKNNA (unbiased HSIC) needs more than 3 items, got {n}")
    ka, lb = pair_dots(x_a, nn_a, ops), pair_dots(x_b, nn_b, ops)
    k = nn_a.shape[1]
    rows_all = np.repeat(np.arange(n), k)

    def self_hsic(vals: np.ndarray, nn: np.ndarray) -> float:
        return _hsic_song_sparse(rows_all, nn.ravel(), vals.ravel(), vals.ravel(), n)

    ii, pa, pb = _matched(nn_a, nn_b)
    cross = _hsic_song_sparse(ii, nn_a[ii, pa], ka[ii, pa], lb[ii, pb], n)
    kk, ll = self_hsic(ka, nn_a), self_hsic(lb, nn_b)
    if kk * ll <= 0:
        raise AlignError("CKNNA (platonic-rep) is undefined: a self-similarity term is not positive; "
                         "check for a constant representation")
    return cross / float(np.sqrt(kk * ll))


def cknna_from_normalized(
    xa: Any, xb: Any, nn_a: np.ndarray, nn_b: np.ndarray, ops: Ops, variant: str
) -> float:
    """CKNNA of L2-normalised features with precomputed neighbour lists (see module docs)."""
    if variant == "platonic-rep":
        return _platonic(xa, xb, nn_a, nn_b, ops)
    if variant in ("paper", "double-centred"):
        return _centred(xa, xb, nn_a, nn_b, ops, double=variant == "double-centred")
    raise AlignError(f"unknown CKNNA variant {variant!r}; choose one of: {', '.join(CKNNA_VARIANTS)}")
