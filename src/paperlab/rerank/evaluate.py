"""Evaluation on a BEIR-layout directory: first stage, rerank, metrics, run file, summary.

Metrics come from ir-measures: nDCG@10 (graded), R@100 and RR@10 (MRR@10 when averaged),
where the binary measures count any grade >= 1 as relevant (the BEIR convention). Note that
reranking the top-100 cannot change R@100: it is the first stage's recall.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperlab.io.atomic import atomic_directory
from paperlab.rerank.beir import BeirData
from paperlab.rerank.config import RerankConfig
from paperlab.rerank.errors import RerankConfigError, RerankDataError
from paperlab.rerank.types import Passage, RerankStats

if TYPE_CHECKING:
    from paperlab.llm import LLM

MEASURE_NAMES = ("nDCG@10", "R@100", "RR@10")
FIRST_STAGE = "bm25"


def _measures() -> list[Any]:
    import ir_measures

    return [ir_measures.parse_measure(m) for m in MEASURE_NAMES]


def evaluate_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
                 ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query nDCG@10, R@100, RR@10 of ``run`` (qid -> {doc id: score}).

    Only queries present in both qrels and run are scored; a judged query missing from the
    run counts as all zeros (ir-measures leaves it out, so we add it back).
    """
    import ir_measures

    measures = _measures()
    judged = [q for q in qrels if q in run]
    per: dict[str, dict[str, float]] = {q: {m: 0.0 for m in MEASURE_NAMES} for q in judged}
    sub_qrels = {q: qrels[q] for q in judged}
    sub_run = {q: run[q] for q in judged}
    for m in ir_measures.iter_calc(measures, sub_qrels, sub_run):
        per[m.query_id][str(m.measure)] = float(m.value)
    agg = {m: (sum(p[m] for p in per.values()) / len(per) if per else 0.0) for m in MEASURE_NAMES}
    return agg, per


def trec_run_text(run: dict[str, dict[str, float]], tag: str) -> str:
    """A run in TREC format: ``qid Q0 docid rank score tag``, best first per query."""
    lines = []
    for qid, docs in run.items():
        ranked = sorted(docs.items(), key=lambda kv: -kv[1])
        lines.extend(f"{qid} Q0 {d} {r} {s:.6f} {tag}" for r, (d, s) in enumerate(ranked, start=1))
    return "\n".join(lines) + ("\n" if lines else "")


@dataclass
class EvalResult:
    """What one method did on one dataset."""

    method: str
    config: dict[str, Any]
    metrics: dict[str, float]
    per_query: dict[str, dict[str, Any]]
    stats: RerankStats
    wall_s: float
    run: dict[str, dict[str, float]] = field(repr=False)
    llm: str = ""

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (metrics, cost, repairs, per-query rows)."""
        n = max(len(self.per_query), 1)
        return {
            "method": self.method,
            "llm": self.llm,
            "n_queries": len(self.per_query),
            "metrics": self.metrics,
            "cost": {**self.stats.to_dict(), "wall_s": round(self.wall_s, 3),
                     "calls_per_query": self.stats.calls / n,
                     "tokens_per_query": (self.stats.prompt_tokens + self.stats.completion_tokens) / n},
            "config": self.config,
            "per_query": self.per_query,
        }

    def write(self, out_dir: str | Path, force: bool = True) -> Path:
        """Write ``run.trec`` and ``summary.json`` into ``out_dir`` atomically."""
        with atomic_directory(Path(out_dir), force=force, error=RerankDataError) as tmp:
            (tmp / "run.trec").write_text(trec_run_text(self.run, f"paperlab-{self.method}"))
            (tmp / "summary.json").write_text(json.dumps(self.summary(), indent=2))
        return Path(out_dir)


def first_stage_run(data: BeirData, index: Any, query_ids: Sequence[str], k: int
                    ) -> dict[str, list[tuple[str, float]]]:
    """Top-``k`` (doc id, score) per query from a BM25/dense index."""
    hits = index.search([data.queries[q] for q in query_ids], k=k)
    return dict(zip(query_ids, hits, strict=True))


def evaluate_method(data: BeirData, method: str, candidates: dict[str, list[tuple[str, float]]],
                    llm: LLM | None = None, config: RerankConfig | None = None, llm_spec: str = "",
                    on_query: Callable[[str, dict[str, Any]], None] | None = None) -> EvalResult:
    """Rerank each query's candidates with ``method`` ("bm25" = first stage only) and score it.

    Args:
        data: the loaded BEIR directory.
        method: "bm25" or a registry name (grouprank, pointwise, listwise).
        candidates: first-stage hits per query id (the queries to evaluate).
        llm: an LLM object (needed unless method is "bm25").
        config: the reranker config.
        on_query: called after each query with its id and per-query row (progress bars).
    """
    from paperlab.rerank.methods import get_method

    cfg = config or RerankConfig()
    total = RerankStats()
    run: dict[str, dict[str, float]] = {}
    rows: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    impl = None
    if method != FIRST_STAGE:
        if llm is None:
            raise RerankConfigError(f"method {method!r} needs an LLM; pass --llm")
        impl = get_method(method)(llm, cfg)
    for qid, hits in candidates.items():
        if impl is None:
            run[qid] = {d: s for d, s in hits}
            rows[qid] = {}
        else:
            passages = [Passage(d, data.corpus[d], s) for d, s in hits]
            ranking = impl.rank(data.queries[qid], passages)
            run[qid] = {r.doc_id: r.score for r in ranking.results}
            total.merge(ranking.stats)
            rows[qid] = ranking.stats.to_dict()
        if on_query is not None:
            on_query(qid, rows[qid])
    wall = time.perf_counter() - t0
    metrics, per = evaluate_run(data.qrels, run)
    for qid in rows:
        rows[qid] = {**per.get(qid, {}), **rows[qid]}
    return EvalResult(method=method, config=cfg.model_dump(), metrics=metrics, per_query=rows,
                      stats=total, wall_s=wall, run=run, llm=llm_spec)
