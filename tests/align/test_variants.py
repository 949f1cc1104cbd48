"""Each published definition of CKNNA and SVCCA against a plain, dense re-derivation of it
written here from the formula (N x N matrices, no neighbour lists, no shared helpers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paperlab.align.metrics import VARIANTS, cknna, score, svcca
from paperlab.errors import AlignError


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _nn_mask(kern: np.ndarray, k: int) -> np.ndarray:
    """mask[i, j] = j is among the k largest kern[i, :] (j != i; ties to the lower j)."""
    n = len(kern)
    masked = kern.copy()
    np.fill_diagonal(masked, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    mask = np.zeros((n, n), dtype=bool)
    mask[np.arange(n)[:, None], order] = True
    return mask


def _dense_centred(a: np.ndarray, b: np.ndarray, k: int, double: bool) -> float:
    def prep(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kern = _unit(x) @ _unit(x).T
        n = len(kern)
        if double:
            h = np.eye(n) - np.ones((n, n)) / n
            centred = h @ kern @ h
        else:  # the paper: K_ij - E_l[K_il], the mean over row i
            centred = kern - kern.mean(axis=1, keepdims=True)
        return centred, _nn_mask(kern, k)

    kc, mk = prep(a)
    lc, ml = prep(b)
    align = lambda p, q, m: float((p * q * m).sum())  # noqa: E731
    return align(kc, lc, mk & ml) / np.sqrt(align(kc, kc, mk) * align(lc, lc, ml))


def _song_hsic_as_in_reference(kt: np.ndarray, lt: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC as the platonic-rep code writes it (note L^T in term 1)."""
    m = len(kt)
    kt, lt = kt.copy(), lt.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    val = (
        (kt * lt.T).sum()
        + kt.sum() * lt.sum() / ((m - 1) * (m - 2))
        - 2.0 * (kt @ lt).sum() / (m - 2)
    )
    return float(val / (m * (m - 3)))


def _dense_platonic(a: np.ndarray, b: np.ndarray, k: int) -> float:
    kern, lern = _unit(a) @ _unit(a).T, _unit(b) @ _unit(b).T

    def sim(p: np.ndarray, q: np.ndarray) -> float:
        mask = (_nn_mask(p, k) & _nn_mask(q, k)).astype(float)
        return _song_hsic_as_in_reference(mask * p, mask * q)

    return sim(kern, lern) / np.sqrt(sim(kern, kern) * sim(lern, lern))


def _dense_svcca_platonic(a: np.ndarray, b: np.ndarray, dims: int) -> float:
    def reduce(x: np.ndarray) -> np.ndarray:
        x = _unit(x)
        x = x - x.mean(axis=0)
        x = x / (x.std(axis=0, ddof=1) + 1e-8)
        return np.linalg.svd(x, full_matrices=False)[0][:, :dims]

    ua, ub = reduce(a), reduce(b)
    # canonical correlations the textbook way: eigenvalues of Saa^-1 Sab Sbb^-1 Sba
    saa, sbb, sab = ua.T @ ua, ub.T @ ub, ua.T @ ub
    m = np.linalg.solve(saa, sab) @ np.linalg.solve(sbb, sab.T)
    rho2 = np.sort(np.clip(np.linalg.eigvals(m).real, 0.0, 1.0))[::-1]
    return float(np.sqrt(rho2).mean())


@pytest.fixture(scope="module")
def related() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    a = rng.standard_normal((90, 12)) + 0.3  # an offset, so centring matters
    b = a @ rng.standard_normal((12, 14)) + 1.5 * rng.standard_normal((90, 14))
    return a, b


@pytest.mark.parametrize("k", [3, 10])
def test_cknna_variants_match_their_dense_definitions(
    related: tuple[np.ndarray, np.ndarray], k: int
) -> None:
    a, b = related
    want = {
        "double-centred": _dense_centred(a, b, k, double=True),
        "paper": _dense_centred(a, b, k, double=False),
        "platonic-rep": _dense_platonic(a, b, k),
    }
    assert set(want) == set(VARIANTS["cknna"])
    for variant, value in want.items():
        assert cknna(a, b, k=k, variant=variant) == pytest.approx(value, rel=1e-9, abs=1e-12)
        assert cknna(a, a, k=k, variant=variant) == pytest.approx(1.0)
    # the definitions really differ on the same features, so choosing one matters
    assert len({round(v, 6) for v in want.values()}) == 3
    assert cknna(a, b, k=k) == pytest.approx(want["double-centred"])  # the default is unchanged


def test_svcca_platonic_rep_matches_its_dense_definition(
    related: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = related
    for dims in (4, 8):
        got = svcca(a, b, variant="platonic-rep", dims=dims)
        assert got == pytest.approx(_dense_svcca_platonic(a, b, dims), rel=1e-7)
    assert svcca(a, a, variant="platonic-rep") == pytest.approx(1.0)  # 10 of a's 12 dims
    # a few fixed directions vs 99% of the variance: different numbers on the same features
    assert abs(svcca(a, b, variant="platonic-rep", dims=4) - svcca(a, b)) > 0.01


def test_variants_agree_across_backends(related: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = related
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for name, variants in VARIANTS.items():
        for variant in variants:
            want = score(name, a, b, k=5, variant=variant, backend="numpy")
            got = score(name, ta, tb, k=5, variant=variant)
            assert got == pytest.approx(want, rel=1e-8), (name, variant)


def test_unknown_or_misplaced_variants_raise() -> None:
    x = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(AlignError, match="double-centred, paper, platonic-rep"):
        score("cknna", x, x, variant="rowwise")
    with pytest.raises(AlignError, match="--variant applies to: cknna, svcca"):
        score("mutual_knn", x, x, variant="paper")
    with pytest.raises(AlignError, match="lower --dims"):
        svcca(x, x, variant="platonic-rep", dims=10)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_svcca_warns_when_dims_exceed_the_numerical_rank(backend: str) -> None:
    """Features of rank 5 in 64 columns: --dims 10 keeps 5 directions of rounding noise."""
    import warnings

    from paperlab.align.metrics import DegenerateFeaturesWarning, svcca

    rng = np.random.default_rng(0)
    z = rng.standard_normal((400, 5))
    a, b = z @ rng.standard_normal((5, 64)), z @ rng.standard_normal((5, 48))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateFeaturesWarning)
        svcca(a, b, variant="platonic-rep", dims=10, backend=backend)
    msgs = [str(w.message) for w in caught if issubclass(w.category, DegenerateFeaturesWarning)]
    assert any("numerical rank" in m and "--dims 10" in m for m in msgs), msgs
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFeaturesWarning)
        svcca(a, b, variant="platonic-rep", dims=4, backend=backend)
