"""Benchmark: paperlab's Instella vs transformers' LlamaForCausalLM of the same shape.

Both models have the same width, depth, heads, MLP and (untied) vocabulary; Instella's only
extra work is the full-width QK-norm. Both run in this process on the same inputs, alternating
A/B/A/B, and each cell is the median of ``--repeats`` timings, so the ratio stays meaningful on
a busy machine. Forward tokens/s (one pass over B x T tokens) and greedy generation tokens/s
(prompt then ``--new`` tokens through the KV cache), for float32 and bfloat16, batch 1 and 8.

    python bench/instella/throughput.py [--preset small] [--seq 128] [--new 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from transformers import LlamaConfig, LlamaForCausalLM

from paperlab.instella.configuration import preset_config
from paperlab.instella.info import count_parameters
from paperlab.instella.modeling import InstellaForCausalLM


def llama_twin(preset: str) -> tuple[InstellaForCausalLM, LlamaForCausalLM]:
    cfg = preset_config(preset)
    torch.manual_seed(0)
    inst = InstellaForCausalLM(cfg).eval()
    lcfg = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=False, pad_token_id=1, bos_token_id=0,
        eos_token_id=0, attn_implementation="sdpa",
    )
    llama = LlamaForCausalLM(lcfg).eval()
    return inst, llama


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ab(fa: Callable[[], Any], fb: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median seconds of fa and fb, run alternately after one warm-up each."""
    fa(), fb()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(fa))
        tb.append(timed(fb))
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seq", type=int, default=128, help="forward: tokens per row")
    ap.add_argument("--prompt", type=int, default=32, help="generation: prompt tokens per row")
    ap.add_argument("--new", type=int, default=32, help="generation: new tokens per row")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared busy box two spinning threads thrash)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "throughput.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    inst, llama = llama_twin(args.preset)
    n_inst = count_parameters(inst.config)
    n_llama = sum(p.numel() for p in llama.parameters())
    rows: list[dict[str, Any]] = []
    gen_kw = dict(max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False, pad_token_id=1)
    with torch.inference_mode():
        for dname in args.dtypes.split(","):
            dtype = getattr(torch, dname)
            inst.to(dtype)
            llama.to(dtype)
            for b in map(int, args.batches.split(",")):
                ids = torch.randint(2, 50000, (b, args.seq))
                fa, fl = ab(lambda ids=ids: inst(ids, use_cache=False),
                            lambda ids=ids: llama(ids, use_cache=False), args.repeats)
                rows.append(dict(kind="forward", dtype=dname, batch=b, tokens=b * args.seq,
                                 instella_tok_s=b * args.seq / fa, llama_tok_s=b * args.seq / fl))
                p = ids[:, : args.prompt]
                ga, gl = ab(lambda p=p: inst.generate(p, **gen_kw),
                            lambda p=p: llama.generate(p, **gen_kw), args.repeats)
                rows.append(dict(kind="generate", dtype=dname, batch=b, tokens=b * args.new,
                                 instella_tok_s=b * args.new / ga, llama_tok_s=b * args.new / gl))
                r = rows[-2:]
                print(f"{dname} b={b}: forward {r[0]['instella_tok_s'] / r[0]['llama_tok_s']:.3f}x, "
                      f"generate {r[1]['instella_tok_s'] / r[1]['llama_tok_s']:.3f}x", flush=True)

    table = Table(title=f"Instella vs Llama, preset {args.preset} ({n_inst / 1e6:.1f}M vs "
                        f"{n_llama / 1e6:.1f}M params), CPU, {torch.get_num_threads()} threads")
    for h in ("kind", "dtype", "batch", "Instella tok/s", "Llama tok/s", "ratio"):
        table.add_column(h)
    for r in rows:
        r["ratio"] = r["instella_tok_s"] / r["llama_tok_s"]
        table.add_row(r["kind"], r["dtype"], str(r["batch"]), f"{r['instella_tok_s']:.0f}",
                      f"{r['llama_tok_s']:.0f}", f"{r['ratio']:.3f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "preset": args.preset, "instella_params": n_inst, "llama_params": n_llama,
        "seq": args.seq, "prompt": args.prompt, "new": args.new, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.machine(), "rows": rows,
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
