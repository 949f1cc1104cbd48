"""Benchmark: wall time to rerank BM25 top-100 on one local `transformers serve` server,
GroupRank (all groups concurrent) vs listwise sliding window vs pointwise, in the same run.

Queries are interleaved (for each query: grouprank, listwise, pointwise) so that load changes on
a shared machine hit all methods alike. Prints a table with ratios to listwise and writes JSON
to results/bench_methods.json. The target: grouprank wall <= 0.35x listwise.

    OMP_NUM_THREADS=1 nice python bench/rerank/bench_methods.py --queries 10

Settings that keep it short on a CPU (recorded in the JSON): passages cut to --max-chars,
completion budgets per method just above what a full answer needs for 20 passages, one repeat,
no re-asks (a failed parse falls back to the first stage, counted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from paperlab.io.atomic import atomic_write_text
from paperlab.rerank.beir import load_beir
from paperlab.rerank.config import RerankConfig
from paperlab.rerank.evaluate import evaluate_run, first_stage_run
from paperlab.rerank.methods import get_method
from paperlab.rerank.retrieve import BM25Index
from paperlab.rerank.types import Passage, RerankStats

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "ir" / "msmarco-dl19"


def start_server(model_dir: Path, log_path: Path, continuous_batching: bool) -> tuple[subprocess.Popen, str]:
    from paperlab.testing import free_port, wait_http

    port = free_port()
    exe = str(Path(sys.executable).with_name("transformers"))
    cmd = [exe, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    if continuous_batching:
        # Without a bound the CPU server sizes its paged KV cache from free RAM (13 GB seen);
        # 1024 blocks of 32 tokens (~1.5 GB for SmolLM2-135M) hold 100 pointwise prompts at once.
        cmd += ["--continuous-batching", "--cb-num-blocks", "1024", "--cb-block-size", "32"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    wait_http(f"http://127.0.0.1:{port}/health", proc, 600)
    return proc, f"openai:http://127.0.0.1:{port}/v1#{model_dir}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--pointwise-queries", type=int, default=None, help="default: --queries")
    ap.add_argument("--max-chars", type=int, default=120)
    ap.add_argument("--tokens-group", type=int, default=140)
    ap.add_argument("--tokens-list", type=int, default=100)
    ap.add_argument("--tokens-point", type=int, default=10)
    ap.add_argument("--no-continuous-batching", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_methods.json")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skipped: needs {args.data}", file=sys.stderr)
        return 0
    from paperlab.llm import load_llm
    from paperlab.llm.packaged import smollm2_dir

    data = load_beir(args.data)
    qids = data.judged_queries()[: args.queries]
    cands = first_stage_run(data, BM25Index.build(data.corpus), qids, 100)
    n_point = args.queries if args.pointwise_queries is None else args.pointwise_queries
    common = dict(max_chars=args.max_chars, repeats=1, group_size=20, max_retries=0,
                  fallback="first_stage", concurrency=128, template=None)
    cfgs = {
        "grouprank": RerankConfig(**{**common, "template": "grouprank-json/v1", "max_tokens": args.tokens_group}),
        "listwise": RerankConfig(**{**common, "max_tokens": args.tokens_list}),
        "pointwise": RerankConfig(**{**common, "template": "grouprank-json/v1", "max_tokens": args.tokens_point}),
    }
    proc, spec = start_server(smollm2_dir(), Path("/tmp") / f"rerank-bench-serve-{os.getpid()}.log",
                              not args.no_continuous_batching)
    try:
        llm = load_llm(spec, max_concurrency=128, timeout=1800, max_retries=1)
        llm.generate([{"role": "user", "content": "Say hi."}], max_tokens=4)  # warm the server
        per: dict[str, dict] = {m: {"wall": [], "stats": RerankStats(), "run": {}, "queries": []} for m in cfgs}
        for i, q in enumerate(qids):
            passages = [Passage(d, data.corpus[d], s) for d, s in cands[q]]
            for m, cfg in cfgs.items():
                if m == "pointwise" and i >= n_point:
                    continue
                t = time.perf_counter()
                ranking = get_method(m)(llm, cfg).rank(data.queries[q], passages)
                per[m]["wall"].append(time.perf_counter() - t)
                per[m]["stats"].merge(ranking.stats)
                per[m]["run"][q] = {r.doc_id: r.score for r in ranking}
                per[m]["queries"].append(q)
                print(f"q{i} {m}: {per[m]['wall'][-1]:.1f} s, {ranking.stats.calls} calls, "
                      f"{ranking.stats.prompt_tokens}+{ranking.stats.completion_tokens} tokens, "
                      f"repairs {dict(ranking.stats.repairs)}, fallbacks {dict(ranking.stats.fallbacks)}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rows = []
    # the ratio uses per-query walls over the queries every method ran
    list_wall = {q: w for q, w in zip(per["listwise"]["queries"], per["listwise"]["wall"], strict=True)}
    for m, r in per.items():
        n = len(r["wall"])
        st: RerankStats = r["stats"]
        metrics, _ = evaluate_run(data.qrels, r["run"])
        bm25, _ = evaluate_run(data.qrels, {q: dict(cands[q]) for q in r["queries"]})
        ratio = sum(r["wall"]) / sum(list_wall[q] for q in r["queries"]) if n else float("nan")
        rows.append({"method": m, "n_queries": n, "wall_s_per_query": sum(r["wall"]) / max(n, 1),
                     "ratio_to_listwise": ratio, "calls_per_query": st.calls / max(n, 1),
                     "prompt_tokens_per_query": st.prompt_tokens / max(n, 1),
                     "completion_tokens_per_query": st.completion_tokens / max(n, 1),
                     "nDCG@10": metrics["nDCG@10"], "bm25_nDCG@10_same_queries": bm25["nDCG@10"],
                     "RR@10": metrics["RR@10"], "repairs": dict(st.repairs), "fallbacks": dict(st.fallbacks),
                     "per_query_wall_s": [round(w, 2) for w in r["wall"]], "query_ids": r["queries"]})
    print(f"\n{'method':<10} {'n':>2} {'wall/q s':>9} {'x listwise':>10} {'calls/q':>8} "
          f"{'prompt tok/q':>12} {'compl tok/q':>11} {'nDCG@10':>8}")
    for r in rows:
        print(f"{r['method']:<10} {r['n_queries']:>2} {r['wall_s_per_query']:>9.1f} {r['ratio_to_listwise']:>10.3f} "
              f"{r['calls_per_query']:>8.1f} {r['prompt_tokens_per_query']:>12.0f} "
              f"{r['completion_tokens_per_query']:>11.0f} {r['nDCG@10']:>8.4f}")
    settings = {**vars(args), "data": str(args.data), "out": str(args.out), "server": "transformers serve (CPU)",
                "continuous_batching": not args.no_continuous_batching,
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "configs": {m: c.model_dump() for m, c in cfgs.items()}}
    atomic_write_text(args.out, json.dumps({"settings": settings, "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
