"""The rerank part of ``paperlab demo``: BM25 over a small built-in sample, then GroupRank
with the packaged SmolLM2-135M in logit mode, rankings shown before and after."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from paperlab.report import Section, Table

if TYPE_CHECKING:
    from paperlab.demokit import DemoContext


def run(ctx: DemoContext) -> Section:
    """Rerank the built-in sample and report both rankings with nDCG@10."""
    from paperlab.llm import load_llm
    from paperlab.rerank.api import Reranker
    from paperlab.rerank.evaluate import evaluate_run
    from paperlab.rerank.retrieve import BM25Index
    from paperlab.rerank.sample import CANDIDATES, PASSAGES, QRELS, QUERIES
    from paperlab.rerank.types import Passage

    t0 = time.perf_counter()
    docs = {d: PASSAGES[d] for ids in CANDIDATES.values() for d in ids}
    idx = BM25Index.build(docs)
    llm = load_llm("smollm2")
    # Logit mode: the expected 0-10 score from token probabilities. A 135M model rarely writes a
    # valid 8-entry JSON object, and reading probabilities costs a fraction of generating.
    reranker = Reranker(llm, "grouprank", mode="logit", group_size=4, repeats=2, max_chars=300,
                        profile="published")
    from paperlab.rerank.aggregate import minmax

    before_run, after_run, fused_run, tables = {}, {}, {}, []
    calls = 0
    for qid, query in QUERIES.items():
        hits = [h for h in idx.search([query], k=len(docs))[0] if h[0] in CANDIDATES[qid]]
        before_run[qid] = {d: s for d, s in hits}
        ctx.console.print(f"rerank: {query!r}: {len(hits)} candidates, grouprank (logit) ...")
        ranking = reranker.rank(query, [Passage(d, PASSAGES[d], s) for d, s in hits])
        after_run[qid] = {r.doc_id: r.score for r in ranking}
        # the published fusion, 0.6 * reranker + 0.4 * min-max(BM25), from the same scores
        prior = dict(zip([d for d, _ in hits], minmax([s for _, s in hits]), strict=True))
        fused_run[qid] = {d: 0.6 * s + 0.4 * prior[d] for d, s in after_run[qid].items()}
        calls += ranking.stats.calls
        rows = []
        for pos, ((bd, bs), r) in enumerate(zip(hits, ranking.results, strict=True), start=1):
            rows.append([pos, f"{bd} ({QRELS[qid].get(bd, 0)})", f"{bs:.2f}",
                         f"{r.doc_id} ({QRELS[qid].get(r.doc_id, 0)})", f"{r.score:.3f}",
                         PASSAGES[r.doc_id][:60] + "..."])
        tables.append(Table(f"Query {qid}: {query!r} - BM25 order vs GroupRank order (label in brackets)",
                            ["rank", "BM25 doc", "BM25 score", "GroupRank doc", "score", "GroupRank doc text"], rows))
    m_before, _ = evaluate_run(QRELS, before_run)
    m_after, _ = evaluate_run(QRELS, after_run)
    m_fused, _ = evaluate_run(QRELS, fused_run)
    summary = Table("nDCG@10 / RR@10 on the sample (graded labels written by hand)",
                    ["ranking", "nDCG@10", "RR@10"],
                    [["BM25", round(m_before["nDCG@10"], 4), round(m_before["RR@10"], 4)],
                     ["GroupRank (SmolLM2-135M, logit mode)", round(m_after["nDCG@10"], 4), round(m_after["RR@10"], 4)],
                     ["GroupRank + BM25 fusion (0.6 / 0.4)", round(m_fused["nDCG@10"], 4), round(m_fused["RR@10"], 4)]])
    took = time.perf_counter() - t0
    return Section(
        system="rerank",
        title="GroupRank: groupwise LLM reranking",
        paragraphs=[
            "Two queries with eight hand-written candidate passages each (a sample written for "
            "paperlab). BM25 (bm25s) ranks them first; GroupRank then scores shuffled groups of 4 "
            "passages in one prompt each, 2 repeats, with the packaged SmolLM2-135M-Instruct, "
            "reading every passage's 0-10 score as an expected value from the score-token "
            "probabilities. A passage's final score is the mean of score/10 over its groups.",
            f"{calls} model passes (one per group), {took:.1f} s in total. A 135M model is a weak "
            "judge: see docs/rerank.md for what it achieves on TREC DL19 and what it costs.",
        ],
        tables=[summary, *tables],
    )
