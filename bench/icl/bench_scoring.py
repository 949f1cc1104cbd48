"""Benchmark: prompts/s of the KV-cache scorer vs naive one-prompt-at-a-time generation.

Both score the same prompt sets (functions x prompt sets x shot counts x queries) in the same
run; the table shows prompts/s, the speed-up ratio, and how often the two agree on the greedy
exact-match outcome (they must agree: see paperlab.icl.scoring).

    PYTHONPATH=src nice python bench/icl/bench_scoring.py --model smollm2 --json bench/icl/results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from paperlab.icl.encodings import get_encoding
from paperlab.icl.models import load_model
from paperlab.icl.prompts import build_prompt_sets, parse_shots
from paperlab.icl.scoring import fitting_shots
from paperlab.icl.tasks import generate_functions
from paperlab.io.atomic import atomic_write_text
from paperlab.threads import set_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--encoding", default=None)
    ap.add_argument("--functions", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=1)
    ap.add_argument("--queries", type=int, default=2)
    ap.add_argument("--shots", default="1,2,4,8,16")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    threads = set_threads()
    enc = get_encoding(args.encoding or ("nucleotide" if args.model.startswith("dna") else "digit"))
    lm = load_model(args.model)
    sets = build_prompt_sets(generate_functions(args.functions), enc, n_prompts=args.prompts,
                             max_shots=max(parse_shots(args.shots)), n_queries=args.queries)
    results = {}
    outcomes = {}
    for kind in ("cached", "naive"):
        sc = lm.scorer(kind)
        shots = fitting_shots(parse_shots(args.shots), sc.context)
        t0 = time.perf_counter()
        scores = [s for ps in sets for s in sc.score_set(ps, shots)]
        secs = time.perf_counter() - t0
        outcomes[kind] = [s.greedy for s in scores]
        results[kind] = {"prompts": len(scores), "seconds": round(secs, 3),
                         "prompts_per_s": round(len(scores) / secs, 3)}
    ratio = results["cached"]["prompts_per_s"] / results["naive"]["prompts_per_s"]
    agree = sum(a == b for a, b in zip(outcomes["cached"], outcomes["naive"], strict=True)) / len(outcomes["naive"])
    table = Table(title=f"icl scoring throughput: {args.model}, {enc.name}, shots {shots}")
    for col in ("scorer", "prompts", "seconds", "prompts/s", "ratio vs naive"):
        table.add_column(col)
    for kind, r in results.items():
        rr = r["prompts_per_s"] / results["naive"]["prompts_per_s"]
        table.add_row(kind, str(r["prompts"]), f"{r['seconds']:.1f}", f"{r['prompts_per_s']:.2f}", f"{rr:.1f}x")
    Console().print(table)
    Console().print(f"greedy outcomes agree on {agree:.1%} of prompts; torch threads: {threads}")
    record = {"model": args.model, "encoding": enc.name, "shots": shots, "functions": args.functions,
              "prompt_sets": len(sets), "queries": args.queries, "results": results,
              "speedup": round(ratio, 2), "greedy_agreement": agree, "torch_threads": threads,
              "machine": platform.platform()}
    if args.json:
        atomic_write_text(args.json, json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
