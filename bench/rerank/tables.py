"""Print the markdown tables of docs/rerank.md from bench_methods.py JSON files.

    python bench/rerank/tables.py docs/rerank/bench-hf.json docs/rerank/bench-serve.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BACKENDS = {"serve": "SmolLM2-135M served by one `transformers serve` process (HTTP, continuous batching)",
            "hf": "SmolLM2-135M in this process (`paperlab.llm` hf backend, batched)"}


def _f(x: float | None, nd: int = 4) -> str:
    return "-" if x is None or x != x else f"{x:.{nd}f}"


def table(path: Path) -> str:
    d = json.loads(path.read_text())
    st = d["settings"]
    backend = BACKENDS.get(st["backend"], st["backend"])
    lines = [f"`{path.name}`: {backend}; passages cut to {st['max_chars']} characters", "",
             "| method | queries | nDCG@10 | BM25 nDCG@10 (same queries) | RR@10 | wall s/query | x listwise "
             "| calls/query | prompt tok/query | completion tok/query | repairs | fallbacks |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in d["rows"]:
        lines.append(
            f"| {r['method']} | {r['n_queries']} | {_f(r['nDCG@10'])} | {_f(r['bm25_nDCG@10_same_queries'])} "
            f"| {_f(r['RR@10'])} | {_f(r['wall_s_per_query'], 1)} | {_f(r['ratio_to_listwise'], 2)} "
            f"| {r['calls_per_query']:.1f} | {r['prompt_tokens_per_query']:.0f} | {r['completion_tokens_per_query']:.0f} "
            f"| {sum(r['repairs'].values())} | {sum(r['fallbacks'].values())} |")
    bm = d.get("bm25_all_queries")
    if bm:
        lines += ["", f"BM25 on all {bm['n_queries']} judged queries: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in bm["metrics"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(table(Path(arg)), end="\n\n")
