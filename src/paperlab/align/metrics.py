"""Representation-alignment metrics between two feature sets over the same N items.

Every metric takes ``a`` (N, D_a) and ``b`` (N, D_b): row i of both describes item i. Arrays
may be numpy arrays or torch tensors; ``backend`` picks numpy, torch (CUDA when present) or
``auto`` (torch when an input is a tensor). Scores are Python floats.

The neighbour metrics (mutual k-NN, CKNNA, cycle k-NN) use :mod:`paperlab.align.knn`: exact,
blockwise, never an N x N matrix for large N, ties broken towards the lower index. The kernel
metrics (CKA with an RBF kernel, unbiased CKA) hold N x N kernels: use them for N up to a few
thousand. Linear CKA and SVCCA work in feature space (O(N D + D^2) memory).

:data:`METRICS` is the registry (name -> function); :func:`score` looks a name up and raises
listing the valid names for an unknown one.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from paperlab.align.backend import Ops, get_ops
from paperlab.align.cknna_variants import CKNNA_VARIANTS, cknna_from_normalized
from paperlab.errors import AlignError

log = logging.getLogger(__name__)


class DegenerateFeaturesWarning(UserWarning):
    """Features on which a metric runs but means little: constant, duplicate or zero rows."""


def check_degenerate(x: Any, ops: Ops, side: str = "") -> str | None:
    """Warn (and return the message) when ``x`` is constant or has duplicate or all-zero rows.

    Such rows make neighbour ranks ties broken by item index, so mutual k-NN of a constant
    representation is not 0 but an artefact of the index order.
    """
    n = int(x.shape[0])
    if n == 0:
        raise AlignError(f"feature set {side or ''} has no items (0 rows)".replace("  ", " "))
    who = f"features {side}" if side else "features"
    unique = ops.n_unique_rows(x)
    zero = int(ops.item(ops.sum(ops.sum(x * x, axis=1) == 0)))
    msg = None
    if unique == 1:
        msg = (f"{who} are constant (all {n} rows identical): neighbour ranks are index ties and "
               "kernel metrics are undefined; check the feature extraction")
    elif unique < n:
        msg = (f"{who} have {n - unique} duplicate rows ({(n - unique) / n:.1%} of items): k-NN "
               "ranks among them are index ties and kernels count them twice; de-duplicate the items")
    elif zero:
        msg = f"{who} have {zero} all-zero rows: their cosine neighbours are index ties"
    if msg:
        warnings.warn(msg, DegenerateFeaturesWarning, stacklevel=3)
    return msg


def _pair(a: Any, b: Any, backend: str, device: str | None = None) -> tuple[Ops, Any, Any]:
    ops = get_ops(backend, a, b, device=device)
    xa, xb = ops.asarray(a), ops.asarray(b)
    if xa.shape[0] != xb.shape[0]:
        raise AlignError(
            f"the two feature sets describe different item counts ({xa.shape[0]} vs {xb.shape[0]}); "
            "row i of both must be the same item"
        )
    check_degenerate(xa, ops, "A")
    check_degenerate(xb, ops, "B")
    return ops, xa, xb


def neighbors(x: Any, k: int, ops: Ops, block_size: int | None = None) -> np.ndarray:
    """(N, k) int64 indices of each item's k nearest neighbours by cosine (self excluded).

    Features are L2-normalised, then ranked by inner product; ties go to the lower index.
    """
    return ops.knn(ops.l2_normalize(x), k, block_size=block_size)


def knn_overlap(nn_a: np.ndarray, nn_b: np.ndarray) -> np.ndarray:
    """Per item: |NN_A(i) ∩ NN_B(i)|, from two (N, k) index arrays with distinct entries per row."""
    both = np.sort(np.concatenate([nn_a, nn_b], axis=1), axis=1)
    return (both[:, 1:] == both[:, :-1]).sum(axis=1)


def mutual_knn_from_neighbors(nn_a: np.ndarray, nn_b: np.ndarray) -> float:
    """Mutual k-NN from precomputed neighbour lists: mean_i |NN_A(i) ∩ NN_B(i)| / k."""
    if nn_a.shape != nn_b.shape:
        raise AlignError(f"neighbour lists differ in shape: {nn_a.shape} vs {nn_b.shape}")
    return float(knn_overlap(nn_a, nn_b).mean() / nn_a.shape[1])


def mutual_knn(
    a: Any, b: Any, k: int = 10, *, backend: str = "auto", block_size: int | None = None
) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024).

    Formula: L2-normalise the rows of A and B; NN_A(i) = the k items j != i with the largest
    <a_i, a_j> (ties: lower j first), likewise NN_B(i);
        m_kNN(A, B) = (1/N) * sum_i |NN_A(i) ∩ NN_B(i)| / k.
    Identical inputs give 1. Independent random features give k / (N - 1) in expectation
    (NN_B(i) is then a uniform k-subset of the N-1 others: E|∩| = k * k / (N-1)).
    """
    ops, xa, xb = _pair(a, b, backend)
    return mutual_knn_from_neighbors(
        neighbors(xa, k, ops, block_size), neighbors(xb, k, ops, block_size)
    )


def cycle_knn(
    a: Any, b: Any, k: int = 10, *, backend: str = "auto", block_size: int | None = None
) -> float:
    """Cycle k-NN: how often a round trip B -> A leads back to the start.

    Formula: with NN_A, NN_B as in :func:`mutual_knn`,
        cycle_kNN(A, B) = (1/N) * sum_i 1[ i ∈ ∪_{j ∈ NN_B(i)} NN_A(j) ].
    Not symmetric in A and B and below 1 even for A == B when neighbourhoods are asymmetric.
    For independent random features the expectation is about 1 - (1 - k/(N-1))^k.
    """
    ops, xa, xb = _pair(a, b, backend)
    nn_a, nn_b = neighbors(xa, k, ops, block_size), neighbors(xb, k, ops, block_size)
    back = nn_a[nn_b]  # (N, k, k): neighbours in A of each neighbour in B
    hit = (back == np.arange(len(nn_a))[:, None, None]).any(axis=(1, 2))
    return float(hit.mean())


def cknna(
    a: Any,
    b: Any,
    k: int = 10,
    *,
    variant: str = "double-centred",
    backend: str = "auto",
    block_size: int | None = None,
) -> float:
    """CKNNA: centred kernel alignment restricted to mutual nearest neighbours.

    ``variant`` picks the definition (:data:`paperlab.align.cknna_variants.CKNNA_VARIANTS`):
    ``double-centred`` (default: Kc = H K H at the neighbour pairs), ``paper`` (the paper's
    printed formula: row-centred K_ij - E_l[K_il]) or ``platonic-rep`` (the authors' reference
    code: masked, uncentred kernels through the unbiased HSIC estimator). The formulas are in
    :mod:`paperlab.align.cknna_variants`. All work on L2-normalised rows, with memory O(N k); identical
    inputs give 1.
    """
    if variant not in CKNNA_VARIANTS:
        raise AlignError(f"unknown CKNNA variant {variant!r}; choose one of: {', '.join(CKNNA_VARIANTS)}")
    ops, xa, xb = _pair(a, b, backend)
    xa, xb = ops.l2_normalize(xa), ops.l2_normalize(xb)
    nn_a, nn_b = neighbors(xa, k, ops, block_size), neighbors(xb, k, ops, block_size)
    return cknna_from_normalized(xa, xb, nn_a, nn_b, ops, variant)


def _center_gram(k: Any, ops: Ops) -> Any:
    return k - ops.mean(k, axis=0, keepdims=True) - ops.mean(k, axis=1, keepdims=True) + ops.mean(k)


def _hsic_biased(kc: Any, lc: Any, ops: Ops) -> float:
    """tr(K H L H) (the (N-1)^-2 factor cancels in CKA), from centred grams."""
    return ops.item(ops.sum(kc * lc))


def _hsic_unbiased(k: Any, lg: Any, ops: Ops) -> float:
    """Unbiased HSIC (Song et al. 2012) on grams with their diagonals zeroed; needs N > 3."""
    n = k.shape[0]
    if n <= 3:
        raise AlignError(f"unbiased HSIC needs more than 3 items, got {n}")
    kt, lt = ops.fill_diagonal(k, 0.0), ops.fill_diagonal(lg, 0.0)
    term1 = ops.sum(kt * lt)
    term2 = ops.sum(kt) * ops.sum(lt) / ((n - 1) * (n - 2))
    term3 = 2.0 * ops.sum(ops.sum(kt, axis=0) * ops.sum(lt, axis=0)) / (n - 2)
    return ops.item((term1 + term2 - term3) / (n * (n - 3)))


def _cka_from_grams(k: Any, lg: Any, ops: Ops, unbiased: bool) -> float:
    if unbiased:
        kl, kk, ll = (
            _hsic_unbiased(k, lg, ops),
            _hsic_unbiased(k, k, ops),
            _hsic_unbiased(lg, lg, ops),
        )
    else:
        kc, lc = _center_gram(k, ops), _center_gram(lg, ops)
        kl, kk, ll = _hsic_biased(kc, lc, ops), _hsic_biased(kc, kc, ops), _hsic_biased(lc, lc, ops)
    if kk <= 0 or ll <= 0:
        raise AlignError("CKA is undefined for a constant representation (zero self-HSIC)")
    return kl / float(np.sqrt(kk * ll))


def cka_linear(a: Any, b: Any, *, unbiased: bool = False, backend: str = "auto") -> float:
    """Linear CKA (Kornblith et al. 2019).

    Formula (biased): with column-centred A, B,
        CKA = ||B^T A||_F^2 / (||A^T A||_F * ||B^T B||_F),
    which equals HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for K = A A^T, L = B B^T; computed in
    feature space. ``unbiased=True`` uses the unbiased HSIC estimator of Song et al. (2012) on
    the N x N grams (K~ = K with zero diagonal):
        HSIC_u = [tr(K~L~) + 1^T K~ 1 * 1^T L~ 1 / ((N-1)(N-2)) - 2/(N-2) 1^T K~ L~ 1] / (N(N-3)).
    Invariant to orthogonal transforms and isotropic scaling of either side.
    """
    ops, xa, xb = _pair(a, b, backend)
    if unbiased:
        return _cka_from_grams(xa @ xa.T, xb @ xb.T, ops, unbiased=True)
    xa = xa - ops.mean(xa, axis=0, keepdims=True)
    xb = xb - ops.mean(xb, axis=0, keepdims=True)
    cross = ops.item(ops.sum((xb.T @ xa) ** 2))
    norm_a = float(np.sqrt(ops.item(ops.sum((xa.T @ xa) ** 2))))
    norm_b = float(np.sqrt(ops.item(ops.sum((xb.T @ xb) ** 2))))
    if norm_a == 0 or norm_b == 0:
        raise AlignError("CKA is undefined for a constant representation (zero variance)")
    return cross / (norm_a * norm_b)


def _rbf_gram(x: Any, ops: Ops, sigma_scale: float) -> Any:
    sq = ops.sum(x * x, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    d2 = d2 * (d2 > 0)  # round-off can make tiny negatives
    iu = np.triu_indices(x.shape[0], 1)
    med = ops.median(d2[ops.index(iu[0]), ops.index(iu[1])])
    if med <= 0:
        raise AlignError("RBF CKA is undefined: the median pairwise distance is zero")
    sigma2 = (sigma_scale**2) * med
    return ops.xp.exp(-d2 / (2.0 * sigma2))


def cka_rbf(
    a: Any, b: Any, *, sigma_scale: float = 1.0, unbiased: bool = False, backend: str = "auto"
) -> float:
    """RBF-kernel CKA.

    Formula: K_ij = exp(-||a_i - a_j||^2 / (2 sigma_A^2)) with sigma_A^2 = sigma_scale^2 *
    median_{i<j} ||a_i - a_j||^2 (likewise L for B);
        CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),
    HSIC biased (tr(KHLH)) or, with ``unbiased=True``, Song et al.'s estimator (see
    :func:`cka_linear`). Holds N x N kernels. Invariant to rotations, translations and
    isotropic scaling (the bandwidth follows the median distance).
    """
    if sigma_scale <= 0:
        raise AlignError(f"sigma_scale={sigma_scale} must be > 0")
    ops, xa, xb = _pair(a, b, backend)
    return _cka_from_grams(
        _rbf_gram(xa, ops, sigma_scale), _rbf_gram(xb, ops, sigma_scale), ops, unbiased
    )


#: SVCCA definitions, the first is the default.
SVCCA_VARIANTS = ("variance", "platonic-rep")


def _svd_reduce(x: Any, ops: Ops, keep: float) -> Any:
    """Centre, then keep the top singular directions explaining ``keep`` of the variance."""
    x = x - ops.mean(x, axis=0, keepdims=True)
    u, s, _ = ops.svd(x)
    var = s * s
    total = ops.item(ops.sum(var))
    if total <= 0:
        raise AlignError("SVCCA is undefined for a constant representation (zero variance)")
    frac = np.cumsum(ops.to_numpy(var)) / total
    r = int(np.searchsorted(frac, keep - 1e-12) + 1)
    return u[:, :r] * s[:r]


def _zscore_top_dirs(x: Any, ops: Ops, dims: int, side: str = "") -> Any:
    """The reference code's reduction: L2-normalised rows, each column z-scored (sample std,
    + 1e-8), then the top ``dims`` left singular vectors (unscaled).

    Warns (DegenerateFeaturesWarning) when the features' numerical rank is below ``dims``: the
    directions past the rank are arbitrary (singular values at rounding level) and each adds a
    canonical correlation that says nothing about the representation.
    """
    x = ops.l2_normalize(x)
    x = x - ops.mean(x, axis=0, keepdims=True)
    x = x / (ops.std(x, axis=0) + 1e-8)
    if ops.item(ops.sum(x * x)) <= 0:
        raise AlignError("SVCCA is undefined for a constant representation (zero variance)")
    if dims > min(x.shape):
        raise AlignError(f"--dims {dims} exceeds the features' rank bound min(N, D) = {min(x.shape)}; "
                         "lower --dims")
    u, sv, _ = ops.svd(x)
    s = ops.to_numpy(sv).astype(np.float64)
    eps = float(np.finfo(ops.to_numpy(x[:1]).dtype).eps)
    rank = int((s > s[0] * max(x.shape) * eps).sum()) if s.size and s[0] > 0 else 0
    if rank < dims:
        who = f"features {side}" if side else "features"
        warnings.warn(f"{who} have numerical rank {rank} < --dims {dims}: the other {dims - rank} kept "
                      f"directions are rounding noise and skew SVCCA; use --dims {rank} or fewer",
                      DegenerateFeaturesWarning, stacklevel=3)
    return u[:, :dims]


def svcca(
    a: Any,
    b: Any,
    *,
    variant: str = "variance",
    keep: float = 0.99,
    dims: int = 10,
    backend: str = "auto",
) -> float:
    """SVCCA (Raghu et al. 2017): SVD reduction, then mean canonical correlation.

    ``variant="variance"`` (default, Raghu et al.): centre A and B; keep the top r_A (r_B)
    singular directions that explain a fraction ``keep`` of the variance: A' = U_r S_r.
    ``variant="platonic-rep"`` (Huh et al.'s reference code, ``cca_dim=10``): L2-normalise rows,
    z-score each column, keep the top ``dims`` left singular vectors. Then, for both, CCA between
    A' and B' via orthonormal bases Q_A = qr(A'), Q_B = qr(B'): the canonical correlations
    rho_1..rho_m (m = min(r_A, r_B)) are the singular values of Q_A^T Q_B;
        SVCCA = (1/m) * sum_i rho_i.
    The reference code takes a randomized SVD (``torch.svd_lowrank``, 2 power iterations) and
    fits sklearn's iterative CCA; we compute both exactly. Where the spectrum is flat the
    randomized directions are not the top ones and the scores differ by several hundredths
    (up to 0.077 in ``bench/align/svcca_lowrank.py``). Invariant to any invertible linear map of either side
    (after the reduction). Needs N > max(r_A, r_B) items, or the correlations are trivially 1.
    """
    if variant not in SVCCA_VARIANTS:
        raise AlignError(f"unknown SVCCA variant {variant!r}; choose one of: {', '.join(SVCCA_VARIANTS)}")
    if not 0 < keep <= 1:
        raise AlignError(f"keep={keep} must be in (0, 1]")
    if dims < 1:
        raise AlignError(f"dims={dims} must be at least 1")
    ops, xa, xb = _pair(a, b, backend)
    if variant == "variance":
        ra, rb = _svd_reduce(xa, ops, keep), _svd_reduce(xb, ops, keep)
    else:
        ra, rb = _zscore_top_dirs(xa, ops, dims, "A"), _zscore_top_dirs(xb, ops, dims, "B")
    if max(ra.shape[1], rb.shape[1]) >= xa.shape[0]:
        raise AlignError(
            f"SVCCA needs more items ({xa.shape[0]}) than kept directions "
            f"({ra.shape[1]}, {rb.shape[1]}); add items or lower --keep / --dims"
        )
    rho = ops.svd(ops.qr(ra).T @ ops.qr(rb))[1]
    return ops.item(ops.mean(ops.xp.clip(rho, 0.0, 1.0)))


MetricFn = Callable[..., float]

#: Registry: metric name -> function(a, b, **options). Neighbour metrics take ``k``.
METRICS: dict[str, MetricFn] = {
    "mutual_knn": mutual_knn,
    "cknna": cknna,
    "cycle_knn": cycle_knn,
    "cka_linear": cka_linear,
    "cka_rbf": cka_rbf,
    "svcca": svcca,
}
#: Metrics that take the neighbour count ``k``.
KNN_METRICS = frozenset({"mutual_knn", "cknna", "cycle_knn"})
#: Metrics with several published definitions: name -> variants (the first is the default).
VARIANTS: dict[str, tuple[str, ...]] = {"cknna": CKNNA_VARIANTS, "svcca": SVCCA_VARIANTS}


def get_metric(name: str) -> MetricFn:
    """Look a metric up by name; an unknown name raises listing the valid ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise AlignError(f"unknown metric {name!r}; choose one of: {', '.join(METRICS)}") from None


def check_variant(name: str, variant: str | None) -> None:
    """Raise unless ``variant`` is None or one of metric ``name``'s variants."""
    if variant is None:
        return
    if name not in VARIANTS:
        with_variants = ", ".join(VARIANTS)
        raise AlignError(f"metric {name!r} has one definition; --variant applies to: {with_variants}")
    if variant not in VARIANTS[name]:
        raise AlignError(f"unknown {name} variant {variant!r}; choose one of: {', '.join(VARIANTS[name])}")


def score(
    name: str, a: Any, b: Any, *, k: int = 10, variant: str | None = None, **options: Any
) -> float:
    """Score ``a`` against ``b`` with the metric called ``name`` (``k`` only for k-NN metrics;
    ``variant`` only for metrics listed in :data:`VARIANTS`, default: their first)."""
    fn = get_metric(name)
    check_variant(name, variant)
    if name in KNN_METRICS:
        options["k"] = k
    if variant is not None:
        options["variant"] = variant
    return fn(a, b, **options)
