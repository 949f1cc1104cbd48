"""The test-time scaling law of alignment and its least-squares fit.

    score(n_f, n_c) = S_inf - (C_f * n_f^-alpha + C_c * n_c^-beta)

S_inf is the alignment with infinitely many frames and captions; C_f, alpha (C_c, beta) say how
much is lost with few frames (captions) and how fast it comes back. The paper reports, for
mutual k-NN (k = 10):

    VideoMAEv2: S_inf = 0.41, C_f = 0.15, alpha = 0.75, C_c = 0.13, beta = 1.30
    DINOv2:     S_inf = 0.37, C_f = 0.05, alpha = 1.76, C_c = 0.13, beta = 1.40   (R^2 > 0.97)

The fit is scipy's ``curve_fit`` (trust-region reflective, bounds C >= 0, 0 < exponent <= 10),
restarted from a small grid of exponent guesses, keeping the lowest residual. A parameter that
ends at a bound (S_inf at ``s_inf_max``, a C at 0, an exponent at 1e-3 or 10) is flagged in
``ScalingFit.at_bounds``: the optimum there is the bound's, not the data's, and its standard
error (computed as if the bound were not there) is no confidence interval. Uncertainties are
the square roots of the covariance diagonal (scaled by the residual variance, as curve_fit does
without ``sigma``; with per-point ``sigma`` they are absolute).
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from paperlab.errors import AlignError

log = logging.getLogger(__name__)

PARAM_NAMES = ("S_inf", "C_f", "alpha", "C_c", "beta")

#: The published fits (PAPERS.md section 5), as parameter dicts.
PUBLISHED_FITS: dict[str, dict[str, float]] = {
    "VideoMAEv2": {"S_inf": 0.41, "C_f": 0.15, "alpha": 0.75, "C_c": 0.13, "beta": 1.30},
    "DINOv2": {"S_inf": 0.37, "C_f": 0.05, "alpha": 1.76, "C_c": 0.13, "beta": 1.40},
}


def scaling_law(
    n_f: np.ndarray | float,
    n_c: np.ndarray | float,
    s_inf: float,
    c_f: float,
    alpha: float,
    c_c: float,
    beta: float,
) -> np.ndarray:
    """S_inf - (C_f n_f^-alpha + C_c n_c^-beta), element-wise."""
    nf = np.asarray(n_f, dtype=float)
    nc = np.asarray(n_c, dtype=float)
    return s_inf - (c_f * nf ** (-alpha) + c_c * nc ** (-beta))


@dataclass(frozen=True)
class ScalingFit:
    """A fitted scaling law: parameters, 1-sigma uncertainties, R^2 and the residual RMS."""

    params: dict[str, float]
    stderr: dict[str, float]
    r2: float
    rmse: float
    n_points: int
    #: parameter name -> "lower" or "upper" for each parameter that ended at a bound of the fit
    at_bounds: dict[str, str] = field(default_factory=dict)

    @property
    def identifiable(self) -> bool:
        """False when a parameter sits at a bound: the optimum is the bound, not the data's."""
        return not self.at_bounds

    def notes(self) -> list[str]:
        """One line per parameter at a bound, saying why its value and error mean little."""
        return [
            f"{name} = {self.params[name]:.4g} is at its {side} bound: the fit is not identifiable "
            f"there (the data do not pin {name} down; its ± {self.stderr[name]:.3g} is not a "
            "confidence interval). Add grid points further out, or fix the bound knowingly."
            for name, side in self.at_bounds.items()
        ]

    def predict(self, n_f: np.ndarray | float, n_c: np.ndarray | float) -> np.ndarray:
        p = self.params
        return scaling_law(n_f, n_c, p["S_inf"], p["C_f"], p["alpha"], p["C_c"], p["beta"])

    def formula(self) -> str:
        p = self.params
        return (
            f"{p['S_inf']:.3f} - ({p['C_f']:.3f} n_f^-{p['alpha']:.2f} + "
            f"{p['C_c']:.3f} n_c^-{p['beta']:.2f})"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "params": self.params,
            "stderr": self.stderr,
            "r2": self.r2,
            "rmse": self.rmse,
            "n_points": self.n_points,
            "formula": self.formula(),
            "at_bounds": self.at_bounds,
            "identifiable": self.identifiable,
        }


def _check_points(nf: np.ndarray, nc: np.ndarray, y: np.ndarray) -> None:
    if not (nf.shape == nc.shape == y.shape) or nf.ndim != 1:
        raise AlignError("n_f, n_c and scores must be 1-D arrays of the same length")
    if len(y) < 6:
        raise AlignError(
            f"the scaling law has 5 parameters: give at least 6 grid points, got {len(y)}"
        )
    if (nf <= 0).any() or (nc <= 0).any():
        raise AlignError("n_f and n_c must be positive counts")
    if len(np.unique(nf)) < 3 or len(np.unique(nc)) < 3:
        raise AlignError(
            "each axis needs at least 3 distinct values (n_f and n_c) to identify C and its exponent"
        )
    if not np.isfinite(y).all():
        raise AlignError("scores contain NaN or inf")


def fit_scaling(
    n_f: np.ndarray,
    n_c: np.ndarray,
    scores: np.ndarray,
    sigma: np.ndarray | None = None,
    s_inf_max: float | None = None,
) -> ScalingFit:
    """Fit S_inf - (C_f n_f^-alpha + C_c n_c^-beta) to (n_f, n_c, score) points.

    Args:
        n_f, n_c, scores: 1-D arrays, one entry per grid point.
        sigma: optional per-point standard deviations (e.g. the spread over repeats); points
            are then weighted by 1/sigma^2 and uncertainties are absolute.
        s_inf_max: an upper bound on S_inf (1.0 for metrics bounded by 1); without it a curve
            that has not bent yet can trade a huge S_inf against a huge C with a tiny exponent.

    Returns:
        The best fit over a few restarts.

    Raises:
        AlignError: too few or degenerate points, or no restart converged.
    """
    from scipy.optimize import curve_fit

    nf = np.asarray(n_f, dtype=float).ravel()
    nc = np.asarray(n_c, dtype=float).ravel()
    y = np.asarray(scores, dtype=float).ravel()
    _check_points(nf, nc, y)
    sig = None
    if sigma is not None:
        sig = np.asarray(sigma, dtype=float).ravel()
        # a zero spread (e.g. one repeat) would mean infinite weight: floor it
        sig = np.maximum(
            sig, max(1e-6, float(np.median(sig[sig > 0])) if (sig > 0).any() else 1e-6)
        )

    def model(
        x: np.ndarray, s_inf: float, c_f: float, alpha: float, c_c: float, beta: float
    ) -> np.ndarray:
        return scaling_law(x[0], x[1], s_inf, c_f, alpha, c_c, beta)

    lo = [-np.inf, 0.0, 1e-3, 0.0, 1e-3]
    hi = [np.inf if s_inf_max is None else s_inf_max, np.inf, 10.0, np.inf, 10.0]
    spread = float(y.max() - y.min()) or 1e-3
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for a0, b0 in itertools.product((0.5, 1.0, 2.0), repeat=2):
        p0 = [float(y.max()) + 0.1 * spread, spread / 2, a0, spread / 2, b0]
        if s_inf_max is not None:
            p0[0] = min(p0[0], s_inf_max - 1e-9)
        try:
            popt, pcov = curve_fit(
                model,
                np.vstack([nf, nc]),
                y,
                p0=p0,
                sigma=sig,
                absolute_sigma=sig is not None,
                bounds=(lo, hi),
                method="trf",
                max_nfev=20000,
                xtol=1e-14,
                ftol=1e-14,
                gtol=1e-14,
            )
        except (RuntimeError, ValueError) as exc:  # one restart failing is fine; all failing is not
            log.debug("restart from %s failed: %s", p0, exc)
            continue
        sse = float(np.sum((model(np.vstack([nf, nc]), *popt) - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, popt, pcov)
    if best is None:
        raise AlignError("the scaling-law fit did not converge from any start; check the scores")
    sse, popt, pcov = best
    sst = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0)
    diag = np.diag(pcov) if np.all(np.isfinite(pcov)) else np.full(5, np.inf)
    stderr = {
        n: float(math.sqrt(v)) if v >= 0 else float("nan")
        for n, v in zip(PARAM_NAMES, diag, strict=True)
    }
    params = {n: float(v) for n, v in zip(PARAM_NAMES, popt, strict=True)}
    fit = ScalingFit(
        params, stderr, float(r2), math.sqrt(sse / len(y)), len(y), _at_bounds(popt, lo, hi)
    )
    log.info("scaling fit: %s (R^2 = %.4f)", fit.formula(), fit.r2)
    for note in fit.notes():  # returned in fit.notes() for the caller to show: logged at INFO only
        log.info(note)
    return fit


def _at_bounds(popt: np.ndarray, lo: list[float], hi: list[float]) -> dict[str, str]:
    """Parameters within a relative 1e-6 of a finite bound (trust-region fits stop just inside)."""
    out = {}
    for name, v, a, b in zip(PARAM_NAMES, popt, lo, hi, strict=True):
        for bound, side in ((a, "lower"), (b, "upper")):
            if math.isfinite(bound) and abs(v - bound) <= 1e-6 * max(1.0, abs(bound)):
                out[name] = side
    return out
