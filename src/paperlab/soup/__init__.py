"""SoCE, Soup of Category Experts: per-category scores -> experts -> weight search -> merge.

Public API (imported lazily so that ``import paperlab.soup`` stays light):

- :func:`merge_checkpoints` (= ``paperlab.soup.merge.merge``), :class:`MergeSpec`, :func:`load_merge_config`: the streaming merge engine.
- :class:`ExpertBank`: in-memory soups rebuilt into a live model.
- :data:`METHODS`, :func:`register_method`: the merge-method registry.
- :func:`load_scores`, :func:`select_experts`, :func:`plot_heatmap`: SoCE steps 1-2.
- :func:`grid`, :func:`grid_search`, :func:`coarse_to_fine`, :class:`Journal`: the weight search.
- :func:`make_evaluator`, :func:`run_soce`, :class:`SoceConfig`: evaluators and the whole method.
- :class:`ZooConfig`, :func:`build_zoo`: the offline category-expert zoo.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "merge_checkpoints": "paperlab.soup.merge",
    "prepare": "paperlab.soup.preparation",
    "MergeResult": "paperlab.soup.merge",
    "MergeSpec": "paperlab.soup.config",
    "ModelEntry": "paperlab.soup.config",
    "load_merge_config": "paperlab.soup.config",
    "ExpertBank": "paperlab.soup.memory",
    "METHODS": "paperlab.soup.methods",
    "register_method": "paperlab.soup.methods",
    "get_method": "paperlab.soup.methods",
    "open_checkpoint": "paperlab.soup.checkpoint",
    "load_scores": "paperlab.soup.scores",
    "ScoreTable": "paperlab.soup.scores",
    "select_experts": "paperlab.soup.select",
    "plot_heatmap": "paperlab.soup.select",
    "grid": "paperlab.soup.search",
    "grid_search": "paperlab.soup.search",
    "coarse_to_fine": "paperlab.soup.search",
    "Journal": "paperlab.soup.search",
    "make_evaluator": "paperlab.soup.evaluators",
    "SoceConfig": "paperlab.soup.soce",
    "run_soce": "paperlab.soup.soce",
    "ZooConfig": "paperlab.soup.zoo.build",
    "build_zoo": "paperlab.soup.zoo.build",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'paperlab.soup' has no attribute {name!r}")
