"""Benchmark: hf-backend generation throughput, batched vs one by one, and score throughput.

Runs on the packaged SmolLM2-135M-Instruct. Both sides of every ratio run in the same process
on the same prompts, so the ratio is meaningful even on a busy machine.

    python bench/llm/throughput.py [--prompts 16] [--max-tokens 32] [--batch-size 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from paperlab.llm import load_llm

TOPICS = ["the sea", "a mountain", "bread", "a clock", "the moon", "rain", "a violin", "a library",
          "winter", "a bicycle", "coffee", "a river", "the desert", "a lighthouse", "snow", "a garden"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--continuations", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "docs" / "llm" / "throughput.json")
    args = ap.parse_args()

    llm = load_llm("smollm2", batch_size=args.batch_size)
    prompts = [[{"role": "user", "content": f"Write one sentence about {TOPICS[i % len(TOPICS)]}."}]
               for i in range(args.prompts)]
    llm.generate(prompts[0], max_tokens=4)  # warm-up: first-call allocations are not throughput

    t = time.perf_counter()
    single = [llm.generate(p, max_tokens=args.max_tokens) for p in prompts]
    t_single = time.perf_counter() - t
    t = time.perf_counter()
    batched = llm.generate_batch(prompts, max_tokens=args.max_tokens)
    t_batched = time.perf_counter() - t
    tok_single = sum(g.completion_tokens for g in single)
    tok_batched = sum(g.completion_tokens for g in batched)

    prompt = "Question: which word best completes the sentence 'The cat sat on the ...'?\nAnswer:"
    conts = [f" {w}" for w in (TOPICS * (args.continuations // len(TOPICS) + 1))[: args.continuations]]
    t = time.perf_counter()
    for c in conts:
        llm.score(prompt, [c])
    t_score_single = time.perf_counter() - t
    t = time.perf_counter()
    llm.score(prompt, conts)
    t_score_batched = time.perf_counter() - t

    rows = {
        "generate one by one": {"seconds": t_single, "items": len(prompts), "tokens": tok_single},
        f"generate batched (batch {args.batch_size})": {"seconds": t_batched, "items": len(prompts),
                                                         "tokens": tok_batched},
        "score one by one": {"seconds": t_score_single, "items": len(conts), "tokens": None},
        f"score batched (batch {args.batch_size})": {"seconds": t_score_batched, "items": len(conts),
                                                      "tokens": None},
    }
    result = {
        "model": "smollm2 (SmolLM2-135M-Instruct, fp32, CPU)",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
        "ratios": {
            "generate tokens/s batched / one-by-one": (tok_batched / t_batched) / (tok_single / t_single),
            "score continuations/s batched / one-by-one": t_score_single / t_score_batched,
        },
    }
    table = Table(title="paperlab.llm hf backend throughput")
    for col in ("mode", "items", "seconds", "items/s", "tokens/s"):
        table.add_column(col, justify="right")
    for name, r in rows.items():
        tps = f"{r['tokens'] / r['seconds']:.1f}" if r["tokens"] else "-"
        table.add_row(name, str(r["items"]), f"{r['seconds']:.2f}", f"{r['items'] / r['seconds']:.2f}", tps)
    console = Console()
    console.print(table)
    for k, v in result["ratios"].items():
        console.print(f"{k}: [bold]{v:.2f}x[/bold]")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
