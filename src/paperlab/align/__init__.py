"""paperlab.align: representation-alignment probes ("Dynamic Reflections", arXiv 2511.02767).

Exact, memory-bounded alignment metrics (mutual k-NN, CKNNA, cycle k-NN, CKA, SVCCA) in numpy
and torch; multi-view aggregation over frames and captions; the test-time scaling-law fit;
packaged offline encoders; a procedural video-text benchmark. Heavy modules (torch, encoders)
load lazily: importing this package pulls numpy only.
"""

from __future__ import annotations

from paperlab.align.aggregate import AGGREGATORS, ScalingGrid, aggregate, scaling_grid
from paperlab.align.knn import knn_blockwise, knn_full, knn_torch
from paperlab.align.layers import LayerPairResult, best_layer_pair
from paperlab.align.metrics import (
    METRICS,
    cka_linear,
    cka_rbf,
    cknna,
    cycle_knn,
    get_metric,
    mutual_knn,
    score,
    svcca,
)
from paperlab.align.scaling import PUBLISHED_FITS, ScalingFit, fit_scaling, scaling_law

__all__ = [
    "AGGREGATORS",
    "METRICS",
    "PUBLISHED_FITS",
    "LayerPairResult",
    "ScalingFit",
    "ScalingGrid",
    "aggregate",
    "best_layer_pair",
    "cka_linear",
    "cka_rbf",
    "cknna",
    "cycle_knn",
    "fit_scaling",
    "get_metric",
    "knn_blockwise",
    "knn_full",
    "knn_torch",
    "mutual_knn",
    "scaling_grid",
    "scaling_law",
    "score",
    "svcca",
]
