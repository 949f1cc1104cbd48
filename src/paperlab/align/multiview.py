"""Multi-view aggregation and the (n_frames, n_captions) grid of alignment scores.

An item (a video) has up to F frame features and up to C caption features. Test-time scaling
asks how alignment grows when n_f <= F frames and n_c <= C captions are pooled into one vector
per item. The paper averages frame features and averages caption features; :data:`AGGREGATORS`
also offers two documented alternatives.

Grid protocol (our choice where the paper is silent): for each (n_f, n_c) and each repeat r,
every item independently draws n_f distinct frames and n_c distinct captions uniformly at
random (seeded, so runs repeat exactly); the pooled features are scored with the chosen metric;
the grid reports the mean and the standard deviation over repeats.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from paperlab.align.metrics import score
from paperlab.errors import AlignError

log = logging.getLogger(__name__)


def _mean(views: np.ndarray) -> np.ndarray:
    return views.mean(axis=1)


def _mean_l2(views: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(views, axis=2, keepdims=True)
    return (views / np.where(norms > 0, norms, 1.0)).mean(axis=1)


def _max(views: np.ndarray) -> np.ndarray:
    return views.max(axis=1)


#: name -> function (N, V, D) -> (N, D).
#: ``mean``: the paper's choice, the plain average of the views;
#: ``mean_l2``: L2-normalise every view first, so no single view dominates by its norm;
#: ``max``: element-wise max pooling over views.
AGGREGATORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": _mean,
    "mean_l2": _mean_l2,
    "max": _max,
}


def aggregate(views: np.ndarray, how: str = "mean") -> np.ndarray:
    """Pool (N, V, D) per-view features into (N, D) with the aggregator ``how``."""
    if how not in AGGREGATORS:
        raise AlignError(f"unknown aggregator {how!r}; choose one of: {', '.join(AGGREGATORS)}")
    v = np.asarray(views, dtype=np.float64)
    if v.ndim != 3 or v.shape[1] < 1:
        raise AlignError(f"views must be (items, views, dims) with >= 1 view, got shape {v.shape}")
    return AGGREGATORS[how](v)


def sample_views(views: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """For every item independently, n distinct views drawn uniformly: (N, V, D) -> (N, n, D)."""
    total = views.shape[1]
    if not 1 <= n <= total:
        raise AlignError(f"cannot draw {n} views from {total}; use 1 <= n <= {total}")
    # argsort of uniform noise per row = an independent random permutation per item
    pick = np.argsort(rng.random((views.shape[0], total)), axis=1)[:, :n]
    return np.take_along_axis(views, pick[:, :, None], axis=1)


@dataclass
class ScalingGrid:
    """Scores over an (n_f, n_c) grid: ``scores[i, j, r]`` for n_frames[i], n_captions[j], repeat r."""

    n_frames: list[int]
    n_captions: list[int]
    scores: np.ndarray
    metric: str
    k: int
    how: str
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        return self.scores.mean(axis=2)

    @property
    def std(self) -> np.ndarray:
        return (
            self.scores.std(axis=2, ddof=1)
            if self.scores.shape[2] > 1
            else np.zeros(self.mean.shape)
        )

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flattened (n_f, n_c, mean score) triples for the scaling-law fit."""
        nf, nc = np.meshgrid(self.n_frames, self.n_captions, indexing="ij")
        return nf.ravel().astype(float), nc.ravel().astype(float), self.mean.ravel()

    def to_dict(self) -> dict[str, object]:
        return {
            "n_frames": self.n_frames,
            "n_captions": self.n_captions,
            "metric": self.metric,
            "k": self.k,
            "aggregator": self.how,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "scores": self.scores.tolist(),
            **self.meta,
        }


def scaling_grid(
    frames: np.ndarray,
    captions: np.ndarray,
    n_frames: Sequence[int],
    n_captions: Sequence[int],
    *,
    repeats: int = 3,
    metric: str = "mutual_knn",
    k: int = 10,
    how: str = "mean",
    seed: int = 0,
    shuffle: bool = False,
) -> ScalingGrid:
    """Alignment between pooled frame features and pooled caption features over a grid.

    Args:
        frames: (N, F, D_v) per-frame features.
        captions: (N, C, D_t) per-caption features (row i describes the same item as frames[i]).
        n_frames, n_captions: the grid axes (each value within 1..F, 1..C).
        repeats: random subsets per grid cell (>= 1).
        shuffle: the control: pair item i's frames with a random other item's captions
            (one fixed permutation per repeat); scores should then sit at chance.

    Raises:
        AlignError: mismatched item counts, or grid values outside the available views.
    """
    if frames.shape[0] != captions.shape[0]:
        raise AlignError(
            f"frames describe {frames.shape[0]} items but captions {captions.shape[0]}; "
            "row i must be the same item on both sides"
        )
    if repeats < 1:
        raise AlignError(f"repeats={repeats} must be >= 1")
    rng = np.random.default_rng(seed)
    out = np.empty((len(n_frames), len(n_captions), repeats))
    for r in range(repeats):
        perm = rng.permutation(captions.shape[0]) if shuffle else None
        for i, nf in enumerate(n_frames):
            for j, nc in enumerate(n_captions):
                v = aggregate(sample_views(frames, nf, rng), how)
                t = aggregate(sample_views(captions, nc, rng), how)
                if perm is not None:
                    t = t[perm]
                out[i, j, r] = score(metric, v, t, k=k)
        log.info("grid repeat %d/%d done", r + 1, repeats)
    return ScalingGrid(list(map(int, n_frames)), list(map(int, n_captions)), out, metric, k, how)
