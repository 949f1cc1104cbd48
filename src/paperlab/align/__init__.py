"""paperlab.align: representation-alignment probes ("Dynamic Reflections", arXiv 2511.02767).

Exact, memory-bounded alignment metrics (mutual k-NN, CKNNA, cycle k-NN, CKA, SVCCA) in numpy
and torch; multi-view aggregation over frames and captions; the test-time scaling-law fit;
packaged offline encoders; a procedural video-text benchmark. Heavy modules (torch, encoders)
load lazily: importing this package pulls numpy only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Loaded on first use, so `import paperlab.align` pulls no numpy.
_EXPORTS = {
    "AGGREGATORS": "paperlab.align.multiview",
    "ScalingGrid": "paperlab.align.multiview",
    "aggregate": "paperlab.align.multiview",
    "scaling_grid": "paperlab.align.multiview",
    "knn_blockwise": "paperlab.align.knn",
    "knn_full": "paperlab.align.knn",
    "knn_torch": "paperlab.align.knn",
    "LayerPairResult": "paperlab.align.layers",
    "best_layer_pair": "paperlab.align.layers",
    "METRICS": "paperlab.align.metrics",
    "cka_linear": "paperlab.align.metrics",
    "cka_rbf": "paperlab.align.metrics",
    "cknna": "paperlab.align.metrics",
    "cycle_knn": "paperlab.align.metrics",
    "get_metric": "paperlab.align.metrics",
    "mutual_knn": "paperlab.align.metrics",
    "score": "paperlab.align.metrics",
    "svcca": "paperlab.align.metrics",
    "PUBLISHED_FITS": "paperlab.align.scaling",
    "ScalingFit": "paperlab.align.scaling",
    "fit_scaling": "paperlab.align.scaling",
    "scaling_law": "paperlab.align.scaling",
}

__all__ = [
    "AGGREGATORS",
    "LayerPairResult",
    "METRICS",
    "PUBLISHED_FITS",
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

if TYPE_CHECKING:
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
    from paperlab.align.multiview import AGGREGATORS, ScalingGrid, aggregate, scaling_grid
    from paperlab.align.scaling import PUBLISHED_FITS, ScalingFit, fit_scaling, scaling_law


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'paperlab.align' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
