"""Metrics on hand-computable cases, invariances, identity -> 1 and random -> chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperlab.align.layers import best_layer_pair
from paperlab.align.metrics import (
    METRICS,
    cka_linear,
    cka_rbf,
    cknna,
    cycle_knn,
    mutual_knn,
    score,
    svcca,
)
from paperlab.errors import AlignError


def _circle(deg: list[float]) -> np.ndarray:
    r = np.deg2rad(deg)
    return np.stack([np.cos(r), np.sin(r)], axis=1)


A4 = _circle([0, 10, 90, 100])  # two clusters: {0, 1} and {2, 3}


def test_mutual_knn_by_hand() -> None:
    # NN_A: 0->1, 1->0, 2->3, 3->2. B: 0->1, 1->0, 2->1 (cos 80 deg beats cos 90 deg), 3->2
    b = _circle([0, 10, 90, 200])
    assert mutual_knn(A4, b, k=1) == pytest.approx(0.75)
    swapped = _circle([0, 90, 10, 100])  # NN_B: 0<->2, 1<->3: no overlap
    assert mutual_knn(A4, swapped, k=1) == 0.0
    assert mutual_knn(A4, A4, k=1) == 1.0


def test_cycle_knn_by_hand() -> None:
    assert cycle_knn(A4, A4, k=1) == 1.0  # mutual pairs: every round trip returns
    # B: NN_B(0) = 2 and NN_A(2) = 3 != 0, and so on for every item
    assert cycle_knn(A4, _circle([0, 90, 10, 100]), k=1) == 0.0


@pytest.mark.filterwarnings("ignore::paperlab.align.metrics.DegenerateFeaturesWarning")  # hand-made, with repeats
def test_cka_linear_by_hand() -> None:
    x = np.array([[-1.0], [0.0], [1.0]])
    assert cka_linear(x, 3 * x + 5) == pytest.approx(1.0)
    # centred x and centred x^2 are orthogonal: HSIC = (B^T A)^2 = 0
    assert cka_linear(x, x**2) == pytest.approx(0.0, abs=1e-12)
    # two columns, one shared: ||B^T A||^2 = 2^2 ; ||A^T A|| = ||B^T B|| = 2 * sqrt(2)... computed
    a = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    b = np.array([[1.0, 0], [-1, 0], [0, 0], [0, 0]])
    # A^T A = diag(2, 2) -> ||.||_F = 2 sqrt 2; B^T B = diag(2, 0) -> 2; B^T A = diag(2, 0) -> 4
    assert cka_linear(a, b) == pytest.approx(4 / (2 * np.sqrt(2) * 2))


@pytest.mark.filterwarnings("ignore::paperlab.align.metrics.DegenerateFeaturesWarning")  # hand-made, with repeats
def test_svcca_by_hand() -> None:
    h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=float)
    c1, c2, c3 = np.kron(h[1:], np.ones(2))  # three centred, mutually orthogonal columns, N = 8
    a = np.stack([c1, c2], axis=1)
    b = np.stack([c1, c3], axis=1)
    # canonical correlations between span{c1, c2} and span{c1, c3}: 1 and 0
    assert svcca(a, b, keep=1.0) == pytest.approx(0.5)
    m = np.array([[2.0, 1.0], [0.5, -3.0]])  # any invertible map
    assert svcca(a, a @ m, keep=1.0) == pytest.approx(1.0)


def _cknna_bruteforce(a: np.ndarray, b: np.ndarray, k: int) -> float:
    def prep(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        kern = xn @ xn.T
        n = len(x)
        h = np.eye(n) - 1.0 / n
        masked = kern.copy()
        np.fill_diagonal(masked, -np.inf)
        nn = np.zeros((n, n), dtype=bool)
        order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
        nn[np.arange(n)[:, None], order] = True
        return h @ kern @ h, nn

    kc, nk = prep(a)
    lc, nl = prep(b)
    align = lambda p, q, mask: float((p * q * mask).sum())  # noqa: E731
    return align(kc, lc, nk & nl) / np.sqrt(align(kc, kc, nk) * align(lc, lc, nl))


def test_cknna_matches_its_definition_and_identity() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((80, 6))
    b = a + 0.7 * rng.standard_normal((80, 6))
    assert cknna(a, b, k=5) == pytest.approx(_cknna_bruteforce(a, b, 5), rel=1e-10)
    assert cknna(a, a, k=5) == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(METRICS))
def test_identical_inputs_score_one(name: str) -> None:
    a = np.random.default_rng(2).standard_normal((120, 8))
    if name == "cycle_knn":  # round trips fail where neighbourhoods are not mutual
        assert 0.9 < score(name, a, a, k=5) <= 1.0
    else:
        assert score(name, a, a, k=5) == pytest.approx(1.0)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_rotation_and_scale_invariance(unbiased: bool) -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((60, 5)), rng.standard_normal((60, 7))
    b = b + a @ rng.standard_normal((5, 7))  # related, so the score is not trivially small
    q, _ = np.linalg.qr(rng.standard_normal((7, 7)))
    base = cka_linear(a, b, unbiased=unbiased)
    assert cka_linear(a, 3.0 * b @ q, unbiased=unbiased) == pytest.approx(base, rel=1e-9)
    base_rbf = cka_rbf(a, b, unbiased=unbiased)
    assert cka_rbf(a, 2.0 * b @ q + 1.0, unbiased=unbiased) == pytest.approx(base_rbf, rel=1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), name=st.sampled_from(sorted(METRICS)))
def test_permuting_items_on_both_sides_changes_nothing(seed: int, name: str) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((50, 6))
    b = a[:, :4] + rng.standard_normal((50, 4))
    p = rng.permutation(50)
    assert score(name, a[p], b[p], k=4) == pytest.approx(
        score(name, a, b, k=4), rel=1e-9, abs=1e-12
    )


def test_independent_random_features_score_chance() -> None:
    # NN_B(i) is a uniform k-subset of the N-1 others: E[mutual kNN] = k / (N - 1)
    n, k = 1000, 10
    got = [
        mutual_knn(
            np.random.default_rng(s).standard_normal((n, 32)),
            np.random.default_rng(100 + s).standard_normal((n, 32)),
            k=k,
        )
        for s in range(4)
    ]
    assert np.mean(got) == pytest.approx(k / (n - 1), abs=0.003)
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((n, 32)), rng.standard_normal((n, 32))
    assert cycle_knn(a, b, k=k) == pytest.approx(1 - (1 - k / (n - 1)) ** k, abs=0.04)
    assert abs(cknna(a, b, k=k)) < 0.05


def test_numpy_and_torch_backends_agree() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((100, 6)), rng.standard_normal((100, 9))
    for name in METRICS:
        want = score(name, a, b, k=5, backend="numpy")
        assert score(name, torch.from_numpy(a), torch.from_numpy(b), k=5) == pytest.approx(
            want, rel=1e-9
        )


def test_best_layer_pair_finds_the_planted_pair() -> None:
    rng = np.random.default_rng(5)
    base = rng.standard_normal((200, 16))
    la = [rng.standard_normal((200, 16)), base, rng.standard_normal((200, 8))]
    lb = [
        rng.standard_normal((200, 12)),
        rng.standard_normal((200, 16)),
        base @ rng.standard_normal((16, 16)),
    ]
    for metric in ("mutual_knn", "cka_linear"):
        res = best_layer_pair(la, lb, metric, k=10)
        assert (res.best_a, res.best_b) == (1, 2)
        assert res.scores.shape == (3, 3)
    assert best_layer_pair(la, lb, "mutual_knn").scores[1, 2] == pytest.approx(
        mutual_knn(la[1], lb[2])
    )


def test_user_mistakes_raise_one_clear_error() -> None:
    with pytest.raises(AlignError, match="choose one of"):
        score("nope", A4, A4)
    with pytest.raises(AlignError, match="different item counts"):
        mutual_knn(A4, A4[:3], k=1)
    with pytest.raises(AlignError, match="backend"):
        mutual_knn(A4, A4, k=1, backend="jax")
