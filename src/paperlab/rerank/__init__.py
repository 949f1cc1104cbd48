"""GroupRank: groupwise LLM reranking with parallel groups, baselines, BM25 first stage and
BEIR-layout evaluation (paperlab PAPERS.md section 2).

    >>> from paperlab.rerank import rank
    >>> ranking = rank("what is bm25", ["BM25 is a ranking function ...", "Paris is ..."])
    >>> [(r.doc_id, r.rank, round(r.score, 2)) for r in ranking]

Heavy modules (torch, bm25s, ir-measures) are imported inside the functions that need them.
"""

from paperlab.rerank.api import Reranker, rank, to_passages
from paperlab.rerank.config import RerankConfig, load_config
from paperlab.rerank.errors import RerankConfigError, RerankDataError, RerankLLMError
from paperlab.rerank.methods import METHODS, get_method
from paperlab.rerank.types import Passage, RankedResult, Ranking, RerankStats

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
