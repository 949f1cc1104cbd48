"""The benchmark's statistics: bootstrap intervals over prompts (and seeds) and McNemar's exact test.

Scores are per prompt, 0/1, NaN where an axis does not apply. Intervals are 95% percentile
bootstraps; paired comparisons resample the same prompts (and seeds) on both sides.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bootstrap_ci", "mcnemar_exact", "nanmean", "two_level_ci"]


def nanmean(v: np.ndarray) -> float | None:
    """Mean of the applicable (non-NaN) values, rounded; None when none applies."""
    ok = ~np.isnan(v)
    return round(float(v[ok].mean()), 4) if ok.any() else None


def bootstrap_ci(values: np.ndarray, idx: np.ndarray) -> list[float]:
    """95% interval of the mean of the non-NaN values over resampled prompt indices ``idx`` (B, P)."""
    ok = ~np.isnan(values)
    if not ok.any():
        return [float("nan"), float("nan")]
    v = np.where(ok, values, 0.0)[idx]
    means = v.sum(1) / np.maximum(ok[idx].sum(1), 1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def two_level_ci(scores: np.ndarray, seed_idx: np.ndarray, prompt_idx: np.ndarray) -> list[float]:
    """95% interval of the mean of (S, P) scores, resampling seeds (``seed_idx`` (B, S)) and
    prompts (``prompt_idx`` (B, P)) together, so that both sources of variation count."""
    ok = ~np.isnan(scores)
    v = np.where(ok, scores, 0.0)
    cells = (seed_idx[:, :, None], prompt_idx[:, None, :])
    means = v[cells].sum((1, 2)) / np.maximum(ok[cells].sum((1, 2)), 1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> dict[str, float | int]:
    """McNemar's exact test of paired 0/1 outcomes: the discordant pairs (``a`` right and ``b``
    wrong, and the reverse) against Binomial(n, 1/2), two-sided (scipy's ``binomtest``)."""
    from scipy.stats import binomtest

    ok = ~(np.isnan(a) | np.isnan(b))
    a_only = int(((a == 1) & (b == 0) & ok).sum())
    b_only = int(((a == 0) & (b == 1) & ok).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(a_only, n, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p": float(f"{p:.6g}")}  # 6 significant digits
