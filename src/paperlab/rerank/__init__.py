"""GroupRank: groupwise LLM reranking with parallel groups, baselines, BM25 first stage and
BEIR-layout evaluation (paperlab PAPERS.md section 2).

    >>> from paperlab.rerank import rank
    >>> ranking = rank("what is bm25", ["BM25 is a ranking function ...", "Paris is ..."])
    >>> [(r.doc_id, r.rank, round(r.score, 2)) for r in ranking]

Heavy modules (torch, bm25s, ir-measures) are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Loaded on first use, so `import paperlab.rerank` pulls neither pydantic nor yaml.
_EXPORTS = {
    "Reranker": "paperlab.rerank.api",
    "rank": "paperlab.rerank.api",
    "to_passages": "paperlab.rerank.api",
    "RerankConfig": "paperlab.rerank.config",
    "load_config": "paperlab.rerank.config",
    "RerankConfigError": "paperlab.rerank.errors",
    "RerankDataError": "paperlab.rerank.errors",
    "RerankLLMError": "paperlab.rerank.errors",
    "METHODS": "paperlab.rerank.methods",
    "get_method": "paperlab.rerank.methods",
    "Passage": "paperlab.rerank.types",
    "RankedResult": "paperlab.rerank.types",
    "Ranking": "paperlab.rerank.types",
    "RerankStats": "paperlab.rerank.types",
}

__all__ = [
    "METHODS",
    "Passage",
    "RankedResult",
    "Ranking",
    "RerankConfig",
    "RerankConfigError",
    "RerankDataError",
    "RerankLLMError",
    "RerankStats",
    "Reranker",
    "get_method",
    "load_config",
    "rank",
    "to_passages",
]

if TYPE_CHECKING:
    from paperlab.rerank.api import Reranker, rank, to_passages
    from paperlab.rerank.config import RerankConfig, load_config
    from paperlab.rerank.errors import RerankConfigError, RerankDataError, RerankLLMError
    from paperlab.rerank.methods import METHODS, get_method
    from paperlab.rerank.types import Passage, RankedResult, Ranking, RerankStats


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'paperlab.rerank' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
