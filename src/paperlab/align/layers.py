"""Best-layer-pair search: score every (layer of A, layer of B) pair and report the best.

The reference protocol reports alignment at the best pair of layers. For the k-NN metrics the
neighbour lists of each layer are computed once (L_A + L_B neighbour searches instead of
L_A * L_B); other metrics are evaluated pair by pair.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from paperlab.align.backend import get_ops
from paperlab.align.metrics import (
    check_degenerate,
    check_variant,
    get_metric,
    knn_overlap,
    neighbors,
    score,
)
from paperlab.errors import AlignError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerPairResult:
    """All pair scores (L_A, L_B), and the best pair (ties: the first in row-major order)."""

    metric: str
    scores: np.ndarray
    best_a: int
    best_b: int

    @property
    def best_score(self) -> float:
        return float(self.scores[self.best_a, self.best_b])


def best_layer_pair(
    layers_a: Sequence[Any],
    layers_b: Sequence[Any],
    metric: str = "mutual_knn",
    *,
    k: int = 10,
    backend: str = "auto",
    **options: Any,
) -> LayerPairResult:
    """Score each pair of layers and return the matrix and its arg-max.

    Args:
        layers_a: L_A feature arrays, each (N, D_l), rows aligned across all layers.
        layers_b: L_B feature arrays, each (N, D_l).
        metric: a name from :data:`paperlab.align.metrics.METRICS`.
        k: neighbours for the k-NN metrics.

    Raises:
        AlignError: empty stacks, mismatched item counts, or an unknown metric.
    """
    get_metric(metric)
    check_variant(metric, options.get("variant"))
    if not layers_a or not layers_b:
        raise AlignError("best_layer_pair needs at least one layer on each side")
    counts = {int(np.shape(x)[0]) for x in [*layers_a, *layers_b]}
    if len(counts) != 1:
        raise AlignError(
            f"all layers must describe the same items; got item counts {sorted(counts)}"
        )
    scores = np.empty((len(layers_a), len(layers_b)))
    if metric == "mutual_knn":
        ops = get_ops(backend, *layers_a, *layers_b)
        xs_a, xs_b = [ops.asarray(x) for x in layers_a], [ops.asarray(x) for x in layers_b]
        for side, xs in (("A", xs_a), ("B", xs_b)):
            for i, x in enumerate(xs):
                check_degenerate(x, ops, side if len(xs) == 1 else f"{side} (layer {i})")
        nn_a = [neighbors(x, k, ops) for x in xs_a]
        nn_b = [neighbors(x, k, ops) for x in xs_b]
        for i, na in enumerate(nn_a):
            for j, nb in enumerate(nn_b):
                scores[i, j] = knn_overlap(na, nb).mean() / k
    else:
        for i, xa in enumerate(layers_a):
            for j, xb in enumerate(layers_b):
                scores[i, j] = score(metric, xa, xb, k=k, backend=backend, **options)
    best = int(np.argmax(scores))  # first maximum in row-major order
    bi, bj = divmod(best, scores.shape[1])
    log.info("best layer pair for %s: (%d, %d) = %.4f", metric, bi, bj, scores[bi, bj])
    return LayerPairResult(metric=metric, scores=scores, best_a=bi, best_b=bj)
