"""Benchmark: wall time to rerank BM25 top-100 of TREC DL19 queries with one local model,
GroupRank (all groups concurrent) vs listwise sliding window vs pointwise, in the same run.

Three backends, one at a time:

- ``--backend serve``: one local ``transformers serve`` process (OpenAI-compatible HTTP,
  continuous batching on by default); the LLM methods that generate text.
- ``--backend llama``: llama-cpp-python's server (``make llama-server``) on the packaged GGUF,
  one sequence at a time; logit mode reads its ``top_logprobs`` over HTTP (prompts rendered here
  with the packaged model's chat template, one group walked at a time so the server extends the
  same prefix), the other methods generate over HTTP. ``--threads`` and ``--llama-batch`` set
  the server's threads and prompt tokens per evaluation, for every method alike.
- ``--backend hf``: the packaged model in this process (``paperlab.llm`` hf backend, which
  gathers concurrent calls into batched forward passes); adds the logit modes, which need raw
  logits.

BM25 (bm25s) top-100 is evaluated on all judged queries first (the BM25 row of the DL19
table). Queries are interleaved (for each query every method in turn) so that load changes hit all
methods alike. The ratio to listwise is taken over the queries both ran. Prints a table and
writes JSON (per-query walls, calls, tokens, repairs, fallbacks, nDCG@10 against BM25 on the same
queries). The target: grouprank wall <= 0.35x listwise.

    PYTHONPATH=src python bench/rerank/bench_methods.py --backend serve \
        --methods grouprank:10,listwise:10,pointwise:1 --pointwise-concurrency 16

(100 concurrent pointwise requests stall `transformers serve`'s CPU continuous batching: keep
them to 16 in flight there.)

Settings that keep it short on a CPU (recorded in the JSON): passages cut to --max-chars,
completion budgets per method just above what a full answer needs for 20 passages, one repeat,
no re-asks (a failed parse falls back to the first stage, counted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from paperlab.io.atomic import atomic_write_text
from paperlab.rerank.beir import load_beir
from paperlab.rerank.config import RerankConfig
from paperlab.rerank.evaluate import evaluate_run, first_stage_run
from paperlab.rerank.methods import get_method
from paperlab.rerank.retrieve import BM25Index
from paperlab.rerank.types import Passage, RerankStats

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "ir" / "msmarco-dl19"
LABELS = ("grouprank", "grouprank-free", "grouprank-logit", "listwise", "pointwise", "pointwise-logit")


def start_server(model_dir: Path, log_path: Path, continuous_batching: bool,
                 max_batch_tokens: int | None) -> tuple[subprocess.Popen, str]:
    from paperlab.testing import free_port, wait_http

    port = free_port()
    exe = str(Path(sys.executable).with_name("transformers"))
    cmd = [exe, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    if continuous_batching:
        # Without a bound the CPU server sizes its paged KV cache from free RAM (13 GB seen);
        # 1024 blocks of 32 tokens (~1.5 GB for SmolLM2-135M) hold 100 pointwise prompts at once.
        cmd += ["--continuous-batching", "--cb-num-blocks", "1024", "--cb-block-size", "32"]
        if max_batch_tokens:
            cmd += ["--cb-max-batch-tokens", str(max_batch_tokens)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    wait_http(f"http://127.0.0.1:{port}/health", proc, 600)
    return proc, f"openai:http://127.0.0.1:{port}/v1#{model_dir}"


def free_template() -> str:
    """grouprank-json/v1 without structured decoding, as a template file (same wording)."""
    from dataclasses import asdict

    from paperlab.rerank.prompts import GROUPWISE_JSON_V1

    path = Path(tempfile.gettempdir()) / "paperlab-bench-grouprank-json-free.json"
    atomic_write_text(path, json.dumps({**asdict(GROUPWISE_JSON_V1), "json_only": False}))
    return str(path)


def parse_methods(text: str, default_queries: int) -> dict[str, int]:
    """``grouprank:10,listwise:10,pointwise:2`` -> {label: queries}."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        label, _, n = part.partition(":")
        if label not in LABELS:
            raise SystemExit(f"error: unknown method {label!r}; choose from {', '.join(LABELS)}")
        out[label] = int(n) if n else default_queries
    return out


def configs(args: argparse.Namespace) -> dict[str, tuple[str, RerankConfig]]:
    common: dict[str, Any] = dict(max_chars=args.max_chars, repeats=1, group_size=20, max_retries=0,
                                  fallback="first_stage", concurrency=args.concurrency, template=None)
    group = {**common, "template": "grouprank-json/v1"}
    return {
        # the score object alone, decoding held to its JSON schema (structured decoding)
        "grouprank": ("grouprank", RerankConfig(**group, max_tokens=args.tokens_group)),
        # the same prompt, decoding free (the template file says json_only: false): the peer
        "grouprank-free": ("grouprank", RerankConfig(**{**group, "template": free_template()},
                                                     max_tokens=args.tokens_group)),
        "grouprank-logit": ("grouprank", RerankConfig(**group, mode="logit")),
        "listwise": ("listwise", RerankConfig(**common, max_tokens=args.tokens_list)),
        "pointwise": ("pointwise", RerankConfig(**{**group, "concurrency": args.pointwise_concurrency},
                                                max_tokens=args.tokens_point)),
        "pointwise-logit": ("pointwise", RerankConfig(**group, mode="logit")),
    }


def fuse(run: dict[str, dict[str, float]], cands: dict[str, list[tuple[str, float]]], w: float
         ) -> dict[str, dict[str, float]]:
    """Each query's reranker scores fused with its min-max normalised BM25 scores."""
    from paperlab.rerank.aggregate import first_stage_prior

    out = {}
    for q, scores in run.items():
        prior = dict(zip((d for d, _ in cands[q]), first_stage_prior([s for _, s in cands[q]]), strict=True))
        out[q] = {d: (1 - w) * s + w * prior[d] for d, s in scores.items()}
    return out


def summarize(args: argparse.Namespace, cfgs: dict[str, tuple[str, RerankConfig]], per: dict[str, dict],
              data: Any, cands: dict, spec: str, all_qids: list[str], bm25_all: dict, bm25_s: float,
              t_run: float, final: bool) -> list[dict[str, Any]]:
    """Rows of the results table; writes the JSON (after every query, so a stopped run keeps
    what it measured) and, when ``final``, prints the table."""
    rows = []
    list_wall = per.get("listwise", {"wall": {}})["wall"]
    for m, r in per.items():
        n = len(r["wall"])
        st: RerankStats = r["stats"]
        metrics, _ = evaluate_run(data.qrels, r["run"]) if n else ({}, None)
        # the published fusion with the first stage, from the same scores (no second LLM run):
        # (1 - w) * reranker + w * min-max(BM25), as aggregate_scores(fusion_weight=w) computes
        fused, _ = (evaluate_run(data.qrels, fuse(r["run"], cands, args.fusion_weight))
                    if n and cfgs[m][0] == "grouprank" else ({}, None))
        bm25, _ = evaluate_run(data.qrels, {q: dict(cands[q]) for q in r["wall"]}) if n else ({}, None)
        shared = [q for q in r["wall"] if q in list_wall]
        ratio = (sum(r["wall"][q] for q in shared) / sum(list_wall[q] for q in shared)) if shared else float("nan")
        # passages the model scored (no first-stage fallback) per 100 passage slots
        slots = 100 * n * cfgs[m][1].repeats
        scored = 100 * (1 - st.fallbacks.get("first_stage", 0) / slots) if n else float("nan")
        rows.append({"method": m, "n_queries": n, "wall_s_per_query": sum(r["wall"].values()) / max(n, 1),
                     "scored_per_100": scored,
                     "ratio_to_listwise": ratio, "ratio_queries": len(shared),
                     "calls_per_query": st.calls / max(n, 1),
                     "prompt_tokens_per_query": st.prompt_tokens / max(n, 1),
                     "completion_tokens_per_query": st.completion_tokens / max(n, 1),
                     "nDCG@10": metrics.get("nDCG@10"), "bm25_nDCG@10_same_queries": bm25.get("nDCG@10"),
                     "fusion_nDCG@10": fused.get("nDCG@10"), "fusion_weight": args.fusion_weight,
                     "RR@10": metrics.get("RR@10"), "repairs": dict(st.repairs), "fallbacks": dict(st.fallbacks),
                     "per_query_wall_s": [round(w, 2) for w in r["wall"].values()], "query_ids": list(r["wall"])})
    if not final:
        return write(args, cfgs, spec, all_qids, bm25_all, bm25_s, rows)
    print(f"\nbackend {args.backend} ({spec}), total {time.perf_counter() - t_run:.0f} s")
    print(f"{'method':<16} {'n':>2} {'wall/q s':>9} {'x listwise':>10} {'calls/q':>8} "
          f"{'prompt tok/q':>12} {'compl tok/q':>11} {'nDCG@10':>8} {'+fusion':>8} {'BM25 same q':>11} "
          f"{'scored/100':>10}")
    for r in rows:
        print(f"{r['method']:<16} {r['n_queries']:>2} {r['wall_s_per_query']:>9.1f} {r['ratio_to_listwise']:>10.3f} "
              f"{r['calls_per_query']:>8.1f} {r['prompt_tokens_per_query']:>12.0f} "
              f"{r['completion_tokens_per_query']:>11.0f} {r['nDCG@10'] or 0:>8.4f} "
              f"{'-' if r['fusion_nDCG@10'] is None else format(r['fusion_nDCG@10'], '.4f'):>8} "
              f"{r['bm25_nDCG@10_same_queries'] or 0:>11.4f} {r['scored_per_100']:>10.1f}")
    return write(args, cfgs, spec, all_qids, bm25_all, bm25_s, rows)


def write(args: argparse.Namespace, cfgs: dict[str, tuple[str, RerankConfig]], spec: str,
          all_qids: list[str], bm25_all: dict, bm25_s: float, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    settings = {**vars(args), "data": str(args.data), "out": str(args.out), "llm": spec,
                "continuous_batching": args.backend == "serve" and not args.no_continuous_batching,
                "machine": platform.platform(), "cpus": os.cpu_count(), "loadavg_at_write": os.getloadavg(),
                "configs": {m: c.model_dump() for m, (_, c) in cfgs.items()}}
    bm25_row = {"n_queries": len(all_qids), "metrics": bm25_all, "wall_s": round(bm25_s, 2)}
    atomic_write_text(args.out, json.dumps({"settings": settings, "bm25_all_queries": bm25_row, "rows": rows},
                                           indent=2, default=str))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--backend", choices=("serve", "hf", "llama"), default="serve")
    ap.add_argument("--queries", type=int, default=10, help="default query count per method")
    ap.add_argument("--methods", default="grouprank,listwise,pointwise",
                    help="comma-separated LABEL[:QUERIES]; labels: " + ", ".join(LABELS))
    ap.add_argument("--max-chars", type=int, default=120)
    # 20 entries of `"[k]": s, ` are about 7 SmolLM2 tokens each: 160 closes the object
    ap.add_argument("--tokens-group", type=int, default=160)
    ap.add_argument("--fusion-weight", type=float, default=0.4, help="w of the BM25 fusion column (paper: 0.4)")
    ap.add_argument("--tokens-list", type=int, default=100)
    ap.add_argument("--tokens-point", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--pointwise-concurrency", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for --backend hf")
    ap.add_argument("--llama-batch", type=int, default=None,
                    help="--backend llama: prompt tokens per evaluation (server default 512); on the "
                         "2-core test box 1 evaluates the few tokens a logit-mode slot adds 2.5-10x "
                         "faster, at the same per-token cost on long prompts")
    ap.add_argument("--no-continuous-batching", action="store_true")
    ap.add_argument("--cb-max-batch-tokens", type=int, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_methods.json")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skipped: needs {args.data}", file=sys.stderr)
        return 0
    from paperlab.llm import load_llm
    from paperlab.llm.packaged import smollm2_dir

    wanted = parse_methods(args.methods, args.queries)
    every = configs(args)
    cfgs = {m: every[m] for m in wanted}  # run in the order given
    data = load_beir(args.data)
    all_qids = data.judged_queries()
    qids = all_qids[: max(wanted.values())]
    t = time.perf_counter()
    cands = first_stage_run(data, BM25Index.build(data.corpus), all_qids, 100)
    bm25_s = time.perf_counter() - t
    bm25_all, _ = evaluate_run(data.qrels, {q: dict(h) for q, h in cands.items()})
    print(f"BM25 top-100 on all {len(all_qids)} judged queries ({bm25_s:.1f} s incl. indexing): "
          + ", ".join(f"{k} {v:.4f}" for k, v in bm25_all.items()), flush=True)
    proc = None
    if args.backend == "serve":
        if any(m.endswith("-logit") for m in cfgs):
            raise SystemExit("error: logit modes need --backend hf (transformers serve returns no logprobs)")
        log_path = Path(tempfile.gettempdir()) / f"rerank-bench-serve-{os.getpid()}.log"
        print(f"server log: {log_path}", flush=True)
        proc, spec = start_server(smollm2_dir(), log_path, not args.no_continuous_batching,
                                  args.cb_max_batch_tokens)
        llm = load_llm(spec, max_concurrency=args.concurrency, timeout=3600, max_retries=1)
    elif args.backend == "llama":
        from paperlab.llm.packaged import smollm2_gguf
        from paperlab.testing import start_llama_cpp_server

        log_path = Path(tempfile.gettempdir()) / f"rerank-bench-llama-{os.getpid()}.log"
        print(f"server log: {log_path}", flush=True)
        served = start_llama_cpp_server(smollm2_gguf(), log_path, 120, threads=args.threads or 2,
                                        n_batch=args.llama_batch)
        proc, spec = served.proc, served.spec
        # one sequence at a time: one request (one logit-mode group) in flight
        llm = load_llm(spec, max_concurrency=1, timeout=3600, max_retries=1, chat_template="smollm2")
    else:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        spec = "smollm2"
        llm = load_llm(spec, max_concurrency=args.concurrency)
    # per method: wall seconds by query id (in run order), merged stats, and the run for ir-measures
    per: dict[str, dict] = {m: {"wall": {}, "stats": RerankStats(), "run": {}} for m in cfgs}
    t_run = time.perf_counter()
    try:
        llm.generate([{"role": "user", "content": "Say hi."}], max_tokens=4)  # warm up
        for i, q in enumerate(qids):
            passages = [Passage(d, data.corpus[d], s) for d, s in cands[q]]
            for m, (method, cfg) in cfgs.items():
                if i >= wanted[m]:
                    continue
                t = time.perf_counter()
                ranking = get_method(method)(llm, cfg).rank(data.queries[q], passages)
                per[m]["wall"][q] = time.perf_counter() - t
                per[m]["stats"].merge(ranking.stats)
                per[m]["run"][q] = {r.doc_id: r.score for r in ranking}
                print(f"q{i} {m}: {per[m]['wall'][q]:.1f} s, {ranking.stats.calls} calls, "
                      f"{ranking.stats.prompt_tokens}+{ranking.stats.completion_tokens} tokens, "
                      f"repairs {dict(ranking.stats.repairs)}, fallbacks {dict(ranking.stats.fallbacks)}",
                      flush=True)
            summarize(args, cfgs, per, data, cands, spec, all_qids, bm25_all, bm25_s, t_run, final=False)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    summarize(args, cfgs, per, data, cands, spec, all_qids, bm25_all, bm25_s, t_run, final=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
