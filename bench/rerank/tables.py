"""Print the markdown tables for docs/rerank.md from results/*.json."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent / "results"


def _f(x: float) -> str:
    return f"{x:.4f}"


def dl19() -> None:
    rows, seen = [], set()
    for p in sorted(HERE.glob("dl19_*.json")):
        for r in json.loads(p.read_text())["rows"]:
            if r["label"] not in seen:
                seen.add(r["label"])
                rows.append(r)
    print("| method | backend | queries | nDCG@10 | BM25 nDCG@10 (same queries) | RR@10 | R@100 | calls/q | prompt tok/q | compl tok/q | wall s/q | repairs | fallbacks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        n = r["n_queries"]
        m = r["metrics"]
        b = r.get("bm25_same_queries", m)
        print(f"| {r['label']} | {r['backend']} | {n} | {_f(m['nDCG@10'])} | {_f(b['nDCG@10'])} | {_f(m['RR@10'])} | "
              f"{_f(m['R@100'])} | {r['calls'] / n:.1f} | {r['prompt_tokens'] / n:.0f} | {r['completion_tokens'] / n:.0f} | "
              f"{r['wall_s'] / n:.1f} | {r['repairs'] or '-'} | {r['fallbacks'] or '-'} |")


def bench() -> None:
    p = HERE / "bench_methods.json"
    if not p.is_file():
        p = HERE / "bench_methods_partial.json"  # a run stopped before its end, see its "note"
    if not p.is_file():
        return
    d = json.loads(p.read_text())
    print("| method | queries | wall s/query | x listwise | calls/query | prompt tok/query | completion tok/query | nDCG@10 | BM25 nDCG@10 (same q) | repairs | fallbacks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    def g(x: object, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    for r in d["rows"]:
        print(f"| {r['method']} | {r['n_queries']} | {g(r['wall_s_per_query'], '.1f')} | "
              f"{g(r['ratio_to_listwise'], '.3f')} | {g(r['calls_per_query'], '.1f')} | "
              f"{g(r['prompt_tokens_per_query'], '.0f')} | {g(r['completion_tokens_per_query'], '.0f')} | "
              f"{g(r['nDCG@10'], '.4f')} | {g(r['bm25_nDCG@10_same_queries'], '.4f')} | "
              f"{r['repairs'] or '-'} | {r['fallbacks'] or '-'} |")
    if d.get("note"):
        print(f"\n{d['note']}")

if __name__ == "__main__":
    dl19()
    print()
    bench()
