"""TREC DL19 (../shared/data/ir/msmarco-dl19): BM25 top-100, then every method with the
packaged SmolLM2-135M in this process (hf backend).

SmolLM2-135M on a shared 2-core CPU takes seconds per LLM call, so the LLM methods run on the
first few judged queries (``--queries``, per config below) while BM25 runs on all 43; BM25 is
also reported on each subset so rows compare like with like. Results are written after every
config (atomically) to results/dl19_hf.json, so a cut-off run keeps what it finished.

    OMP_NUM_THREADS=1 nice python bench/rerank/dl19_eval.py
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from paperlab.io.atomic import atomic_write_text
from paperlab.rerank.beir import load_beir
from paperlab.rerank.config import RerankConfig
from paperlab.rerank.evaluate import evaluate_method, evaluate_run, first_stage_run
from paperlab.rerank.retrieve import BM25Index

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "ir" / "msmarco-dl19"

COMMON = dict(max_chars=120, repeats=1, group_size=20, max_retries=0, fallback="first_stage")
# (label, method, queries, config overrides)
CONFIGS = [
    ("grouprank logit", "grouprank", 1, dict(mode="logit", template="grouprank-json/v1")),
    ("grouprank generate", "grouprank", 1, dict(template="grouprank-json/v1", max_tokens=140)),
    ("listwise", "listwise", 1, dict(max_tokens=100)),
    ("pointwise logit", "pointwise", 1, dict(mode="logit", template="grouprank-json/v1")),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "dl19_hf.json")
    ap.add_argument("--llm", default="smollm2")
    ap.add_argument("--only", default=None, help="comma-separated labels to run")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every config's query count")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skipped: needs {args.data}", file=sys.stderr)
        return 0
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)  # on a shared 2-core box, 2 threads spin-wait and run 5x slower
    data = load_beir(args.data)
    qids = data.judged_queries()
    t = time.perf_counter()
    index = BM25Index.build(data.corpus)
    cands = first_stage_run(data, index, qids, 100)
    bm25_s = time.perf_counter() - t
    rows: list[dict] = []
    bm25_all, _ = evaluate_run(data.qrels, {q: dict(h) for q, h in cands.items()})
    rows.append({"label": "BM25 (bm25s, stemmed)", "backend": "-", "n_queries": len(qids),
                 "metrics": bm25_all, "calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                 "wall_s": round(bm25_s, 2), "repairs": {}, "fallbacks": {}})
    from paperlab.llm import load_llm

    llm = load_llm(args.llm, max_concurrency=32)
    wanted = set(args.only.split(",")) if args.only else None
    for label, method, nq, over in CONFIGS:
        if wanted and label not in wanted:
            continue
        nq = max(1, round(nq * args.scale))
        sub = {q: cands[q] for q in qids[:nq]}
        cfg = RerankConfig(**{**COMMON, **over})
        print(f"{label}: {nq} queries ...", flush=True)
        res = evaluate_method(data, method, sub, llm, cfg, llm_spec=args.llm)
        bm25_sub, _ = evaluate_run(data.qrels, {q: dict(h) for q, h in sub.items()})
        st = res.stats
        rows.append({"label": label, "backend": f"hf ({args.llm})", "method": method, "n_queries": nq,
                     "metrics": res.metrics, "bm25_same_queries": bm25_sub, "calls": st.calls,
                     "prompt_tokens": st.prompt_tokens, "completion_tokens": st.completion_tokens,
                     "wall_s": round(res.wall_s, 1), "repairs": dict(st.repairs),
                     "fallbacks": dict(st.fallbacks), "config": cfg.model_dump(),
                     "query_ids": list(sub)})
        print(json.dumps(rows[-1], default=str)[:400], flush=True)
        atomic_write_text(args.out, json.dumps({"data": str(args.data), "rows": rows}, indent=2))
    atomic_write_text(args.out, json.dumps({"data": str(args.data), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
