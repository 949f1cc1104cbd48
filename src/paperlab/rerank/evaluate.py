"""Evaluation on a BEIR-layout directory: first stage, rerank, metrics, run file, summary.

Metrics come from ir-measures: nDCG@10 (graded), R@100 and RR@10 (MRR@10 when averaged),
where the binary measures count any grade >= 1 as relevant (the BEIR convention). Note that
reranking the top-100 cannot change R@100: it is the first stage's recall.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperlab.io.atomic import atomic_directory
from paperlab.llm import LLM
from paperlab.rerank.beir import BeirData
from paperlab.rerank.config import RerankConfig
from paperlab.rerank.errors import RerankConfigError, RerankDataError
from paperlab.rerank.runlog import RunLog
from paperlab.rerank.types import Passage, RerankStats

if TYPE_CHECKING:
    from paperlab.rerank.methods.base import Method

MEASURE_NAMES = ("nDCG@10", "R@100", "RR@10")
FIRST_STAGE = "bm25"
#: Method names that mean "evaluate the first stage alone".
FIRST_STAGE_NAMES = frozenset({"bm25", "first-stage"})


def _measures() -> list[Any]:
    import ir_measures

    return [ir_measures.parse_measure(m) for m in MEASURE_NAMES]


def evaluate_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
                 ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query nDCG@10, R@100, RR@10 of ``run`` (qid -> {doc id: score}).

    Only queries present in both qrels and run are scored; a judged query missing from the
    run counts as all zeros (ir-measures leaves it out, so we add it back). Equal scores are
    ranked in the run's insertion order (``untie``), not by doc id as ir-measures would.
    """
    import ir_measures

    from paperlab.rerank.runlog import untie

    measures = _measures()
    judged = [q for q in qrels if q in run]
    per: dict[str, dict[str, float]] = {q: {m: 0.0 for m in MEASURE_NAMES} for q in judged}
    sub_qrels = {q: qrels[q] for q in judged}
    sub_run = {q: untie(run[q]) for q in judged}
    for m in ir_measures.iter_calc(measures, sub_qrels, sub_run):
        per[m.query_id][str(m.measure)] = float(m.value)
    agg = {m: (sum(p[m] for p in per.values()) / len(per) if per else 0.0) for m in MEASURE_NAMES}
    return agg, per


def trec_run_text(run: dict[str, dict[str, float]], tag: str | Mapping[str, str]) -> str:
    """A run in TREC format: ``qid Q0 docid rank score tag``, best first per query; ``tag`` is
    one string or one per query id."""
    from paperlab.rerank.runlog import trec_lines

    lines: list[str] = []
    for qid, docs in run.items():
        lines.extend(trec_lines(qid, docs, tag if isinstance(tag, str) else tag.get(qid, "paperlab")))
    return "\n".join(lines) + ("\n" if lines else "")


def is_first_stage(method: str) -> bool:
    """Whether ``method`` means "no reranking": the first stage's own ranking."""
    return method in FIRST_STAGE_NAMES


def ranking_tag(method: str, first_stage: str, stats: RerankStats | None) -> str:
    """The run-file tag of one query's ranking, saying what produced it:
    ``paperlab-grouprank`` (the model scored every passage), ``paperlab-grouprank+bm25``
    (some passages kept their first-stage place), ``paperlab-bm25-fallback-grouprank`` (no
    passage got a model score: the ranking is the first stage's), ``paperlab-bm25-flat-grouprank``
    (the model's scores were flat: the order is the first stage's tie-break),
    ``paperlab-bm25-unranked-grouprank`` (no model was run: the packaged model's default),
    ``paperlab-bm25`` (the first stage alone)."""
    if is_first_stage(method) or stats is None:
        return f"paperlab-{first_stage}"
    if stats.first_stage_only:
        return f"paperlab-{first_stage}-unranked-{method}"
    if stats.all_fallback:
        return f"paperlab-{first_stage}-fallback-{method}"
    if stats.flat_rankings:
        return f"paperlab-{first_stage}-flat-{method}"
    if stats.model_scored < stats.passages:
        return f"paperlab-{method}+{first_stage}"
    return f"paperlab-{method}"


@dataclass
class EvalResult:
    """What one method did on one dataset, beside its first stage on the same queries."""

    method: str
    config: dict[str, Any]
    metrics: dict[str, float]
    per_query: dict[str, dict[str, Any]]
    stats: RerankStats
    wall_s: float
    run: dict[str, dict[str, float]] = field(repr=False)
    llm: str = ""
    first_stage: str = FIRST_STAGE
    first_stage_metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def all_fallback(self) -> bool:
        """True for a reranker none of whose passages got a model score (first-stage order)."""
        return not is_first_stage(self.method) and self.stats.all_fallback

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (metrics beside the first stage's, cost, repairs, per-query rows)."""
        n = max(len(self.per_query), 1)
        st = self.stats
        return {
            "method": self.method,
            "llm": self.llm,
            "n_queries": len(self.per_query),
            "metrics": self.metrics,
            "first_stage": {"name": self.first_stage, "metrics": self.first_stage_metrics},
            "all_fallback": self.all_fallback,
            "flat_queries": st.flat_rankings,
            "unranked_queries": st.first_stage_only,
            "model_scored": {"passages": st.passages, "scored": st.model_scored,
                             "fraction": round(st.model_scored / st.passages, 4) if st.passages else None},
            "cost": {**st.to_dict(), "wall_s": round(self.wall_s, 3),
                     "calls_per_query": st.calls / n,
                     "tokens_per_query": (st.prompt_tokens + st.completion_tokens) / n},
            "config": self.config,
            **self.extra,
            "per_query": self.per_query,
        }

    def write(self, out_dir: str | Path, force: bool = True) -> Path:
        """Write ``run.trec`` and ``summary.json`` into ``out_dir`` atomically."""
        with atomic_directory(Path(out_dir), force=force, error=RerankDataError) as tmp:
            tags = self.tags or f"paperlab-{self.method}"
            (tmp / "run.trec").write_text(trec_run_text(self.run, tags))
            (tmp / "summary.json").write_text(json.dumps(self.summary(), indent=2))
        return Path(out_dir)


def first_stage_run(data: BeirData, index: Any, query_ids: Sequence[str], k: int
                    ) -> dict[str, list[tuple[str, float]]]:
    """Top-``k`` (doc id, score) per query from a BM25/dense index."""
    hits = index.search([data.queries[q] for q in query_ids], k=k)
    return dict(zip(query_ids, hits, strict=True))


def evaluate_method(data: BeirData, method: str, candidates: dict[str, list[tuple[str, float]]],
                    llm: LLM | Callable[[], LLM | Method] | None = None, config: RerankConfig | None = None,
                    llm_spec: str = "",
                    on_query: Callable[[str, dict[str, Any]], None] | None = None,
                    first_stage: str = FIRST_STAGE, log: RunLog | None = None) -> EvalResult:
    """Rerank each query's candidates with ``method`` (a first-stage name = no reranking) and
    score it beside the first stage on the same queries.

    Args:
        data: the loaded BEIR directory.
        method: "bm25"/"first-stage" or a registry name (grouprank, pointwise, listwise).
        candidates: first-stage hits per query id (the queries to evaluate), best first.
        llm: an LLM object (needed unless the method is the first stage); may be a callable
            returning one, or returning the built method, called only when some query is left to
            rerank. The method is built by :func:`paperlab.rerank.api.build_method`.
        config: the reranker config.
        on_query: called after each newly ranked query with its id and per-query row.
        first_stage: the first stage's name (run tags, the table).
        log: an output directory to append each query to; queries it already holds are kept
            and not ranked again (resume).
    """
    from paperlab.rerank.api import build_method
    from paperlab.rerank.methods.base import Method

    cfg = config or RerankConfig()
    run: dict[str, dict[str, float]] = {}
    rows: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    impl: Method | None = None
    for qid, hits in candidates.items():
        if log is not None and qid in log.done:
            row = log.done[qid]
            run[qid], rows[qid], tags[qid] = log.run.get(qid, {}), row.get("stats", {}), row["tag"]
            continue
        t0 = time.perf_counter()
        stats: RerankStats | None = None
        if is_first_stage(method):
            scores = dict(hits)
        else:
            if impl is None:
                got = llm if llm is None or isinstance(llm, LLM) else llm()
                if got is None:
                    raise RerankConfigError(f"method {method!r} needs an LLM; pass --llm")
                impl = got if isinstance(got, Method) else build_method(got, method, cfg)
            passages = [Passage(d, data.corpus[d], s) for d, s in hits]
            ranking = impl.rank(data.queries[qid], passages)
            scores = {r.doc_id: r.score for r in ranking.results}
            stats = ranking.stats
        tag = ranking_tag(method, first_stage, stats)
        row = stats.to_dict() if stats is not None else {"wall_s": round(time.perf_counter() - t0, 4)}
        run[qid], rows[qid], tags[qid] = scores, row, tag
        if log is not None:
            log.append(qid, scores, tag, {"stats": row})
        if on_query is not None:
            on_query(qid, {**row, "tag": tag})
    total = RerankStats()
    for row in rows.values():
        total.merge(RerankStats.from_dict(row))
    qrels = {q: data.qrels[q] for q in candidates if q in data.qrels}
    metrics, per = evaluate_run(qrels, run)
    fs_metrics, fs_per = evaluate_run(qrels, {q: dict(h) for q, h in candidates.items()})
    per_query = {q: {**per.get(q, {}), "first_stage": fs_per.get(q, {}), "tag": tags[q], **rows[q]}
                 for q in candidates}
    return EvalResult(method=method, config=cfg.model_dump(), metrics=metrics, per_query=per_query,
                      stats=total, wall_s=total.wall_s, run=run, llm=llm_spec,
                      first_stage=first_stage, first_stage_metrics=fs_metrics, tags=tags)
