"""The scaling-law fitter recovers the published fits; the grid protocol behaves."""

from __future__ import annotations

import numpy as np
import pytest

from paperlab.align.multiview import aggregate, sample_views, scaling_grid
from paperlab.align.scaling import PUBLISHED_FITS, fit_scaling, scaling_law
from paperlab.errors import AlignError

NF = [1, 2, 4, 8, 16, 32]
NC = [1, 2, 3, 5, 8, 10]


def _sample(params: dict[str, float], noise: float, seed: int) -> tuple[np.ndarray, ...]:
    nf, nc = (g.ravel().astype(float) for g in np.meshgrid(NF, NC, indexing="ij"))
    y = scaling_law(
        nf, nc, params["S_inf"], params["C_f"], params["alpha"], params["C_c"], params["beta"]
    )
    return nf, nc, y + np.random.default_rng(seed).normal(0.0, noise, y.shape)


@pytest.mark.parametrize("name", sorted(PUBLISHED_FITS))
def test_recovers_published_fit_exactly_without_noise(name: str) -> None:
    truth = PUBLISHED_FITS[name]
    fit = fit_scaling(*_sample(truth, 0.0, 0))
    for key, want in truth.items():
        assert fit.params[key] == pytest.approx(want, abs=1e-5), key
    assert fit.r2 > 0.999999


@pytest.mark.parametrize("name", sorted(PUBLISHED_FITS))
def test_recovers_published_fit_under_small_noise(name: str) -> None:
    truth = PUBLISHED_FITS[name]
    fit = fit_scaling(*_sample(truth, 0.001, 1))
    assert fit.params["S_inf"] == pytest.approx(truth["S_inf"], abs=0.005)
    assert fit.params["C_c"] == pytest.approx(truth["C_c"], abs=0.01)
    assert fit.params["beta"] == pytest.approx(truth["beta"], abs=0.1)
    assert fit.params["C_f"] == pytest.approx(truth["C_f"], abs=0.01)
    assert fit.params["alpha"] == pytest.approx(truth["alpha"], rel=0.15)
    assert fit.r2 > 0.97
    # the reported uncertainties cover the truth (3 sigma) and are not absurdly loose
    for key, want in truth.items():
        assert abs(fit.params[key] - want) <= 3 * fit.stderr[key] + 1e-9, key
        assert fit.stderr[key] < 0.5, key


def test_fit_rejects_unidentifiable_grids() -> None:
    with pytest.raises(AlignError, match="at least 6"):
        fit_scaling(np.ones(3), np.ones(3), np.ones(3))
    with pytest.raises(AlignError, match="3 distinct"):
        fit_scaling(np.array([1.0, 2.0] * 4), np.arange(1, 9.0), np.linspace(0, 1, 8))


def test_aggregators_and_view_sampling() -> None:
    views = np.arange(24, dtype=float).reshape(2, 3, 4)
    assert np.allclose(aggregate(views, "mean"), views.mean(axis=1))
    assert np.allclose(aggregate(views, "max"), views[:, 2])
    assert np.allclose(np.linalg.norm(aggregate(views[:, :1], "mean_l2"), axis=1), 1.0)
    with pytest.raises(AlignError, match="choose one of"):
        aggregate(views, "median")
    picked = sample_views(views, 2, np.random.default_rng(0))
    assert picked.shape == (2, 2, 4)
    for i in range(2):  # distinct views of the same item
        rows = {tuple(r) for r in picked[i]}
        assert len(rows) == 2 and rows <= {tuple(r) for r in views[i]}


def test_grid_grows_with_views_and_shuffle_is_chance() -> None:
    # latent item vectors seen through noisy views: pooling more views recovers the latent
    rng = np.random.default_rng(0)
    n, dim = 300, 16
    z = rng.standard_normal((n, dim))
    frames = z[:, None, :] + 1.5 * rng.standard_normal((n, 8, dim))
    caps = z[:, None, :] @ rng.standard_normal((dim, 12)) + 4.0 * rng.standard_normal((n, 6, 12))
    grid = scaling_grid(frames, caps, [1, 4, 8], [1, 3, 6], repeats=2, k=10, seed=1)
    m = grid.mean
    assert m[-1, -1] > m[0, 0] + 0.1
    assert (np.diff(m, axis=0) > 0).all() and (np.diff(m, axis=1) > 0).all()
    ctrl = scaling_grid(frames, caps, [8], [6], repeats=3, k=10, seed=2, shuffle=True)
    assert ctrl.mean[0, 0] == pytest.approx(10 / (n - 1), abs=0.015)
