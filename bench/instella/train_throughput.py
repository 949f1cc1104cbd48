"""Benchmark: training tokens/s of the recipe's loop (Instella) vs a plain loop over transformers'
LlamaForCausalLM of the same shape, in the same run.

The recipe side is the shared loop (``paperlab.train.run_training``) with a stage's
``stage_spec``, as the stages call it (AdamW 0.9/0.95 with decoupled weight decay, grad clip,
LR schedule, progress bar, resumable state). The reference side is the textbook loop: ``loss = model(ids, labels=ids).loss``,
backward, clip, AdamW step. Both see the same batches; blocks of ``--steps`` steps alternate
in ABBA order (so a load change hits both sides alike), and the reported ratio is the median of
the per-pair ratios (each recipe block against the reference block next to it), which a busy
machine disturbs far less than a ratio of two medians.

    python bench/instella/train_throughput.py [--hidden 256] [--layers 4] [--vocab 8192]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from paperlab.instella.configuration import InstellaConfig
from paperlab.instella.modeling import InstellaForCausalLM
from paperlab.instella.recipe.config import StageSettings, load_recipe_config
from paperlab.instella.recipe.losses import masked_lm_sum
from paperlab.instella.recipe.train import stage_spec
from paperlab.train import FnTask, LossParts, run_training, single_process


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed block")
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    shape = dict(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.7),
                 num_hidden_layers=args.layers, num_attention_heads=args.heads,
                 num_key_value_heads=args.heads, max_position_embeddings=args.seq)
    torch.manual_seed(0)
    inst = InstellaForCausalLM(InstellaConfig(**shape))
    llama = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False, attn_implementation="sdpa"))
    tokens = args.batch * args.seq

    def batch(step: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(step))
        return {"ids": ids, "mask": torch.ones_like(ids)}

    def lm_loss(m: torch.nn.Module, b: dict[str, torch.Tensor]) -> LossParts:
        total, count = masked_lm_sum(m(b["ids"], use_cache=False).logits, b["ids"], b["mask"])
        return LossParts(total, count, tokens=b["ids"].numel())

    opt = torch.optim.AdamW(llama.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def reference_block(start: int) -> float:
        llama.train()
        t = time.perf_counter()
        for s in range(start, start + args.steps):
            ids = batch(s)["ids"]
            loss = llama(ids, labels=ids, use_cache=False).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(llama.parameters(), 1.0)
            opt.step()
        return time.perf_counter() - t

    cfg = load_recipe_config(preset="tiny", overrides={"save_every": 10**9})
    ctx = single_process("cpu")

    def recipe_block(tmp: Path, i: int) -> float:
        settings = StageSettings(steps=args.steps, lr=1e-4, warmup=0, batch=args.batch)
        spec = stage_spec(cfg, settings, "stage2", label="recipe", bf16=False)
        _, stats = run_training(inst, FnTask(lambda step, rows: batch(step), lm_loss), spec, ctx,
                                state_dir=tmp / f"s{i}")
        return stats.seconds

    rec, ref = [], []
    with tempfile.TemporaryDirectory() as tmp:
        recipe_block(Path(tmp), -1)
        reference_block(0)  # warm-up both
        for i in range(args.blocks):
            if i % 2 == 0:
                rec.append(recipe_block(Path(tmp), i))
                ref.append(reference_block(i * args.steps))
            else:
                ref.append(reference_block(i * args.steps))
                rec.append(recipe_block(Path(tmp), i))
            print(f"block {i}: recipe {rec[-1]:.2f} s, reference {ref[-1]:.2f} s, ratio {ref[-1] / rec[-1]:.3f}",
                  flush=True)
    r_tps = args.steps * tokens / statistics.median(rec)
    l_tps = args.steps * tokens / statistics.median(ref)
    pair_ratio = statistics.median(b / a for a, b in zip(rec, ref, strict=True))
    n_inst = sum(p.numel() for p in inst.parameters())
    print(f"recipe loop (Instella {n_inst / 1e6:.1f}M): {r_tps:.0f} tok/s; plain loop (Llama): {l_tps:.0f} tok/s; "
          f"ratio of medians {r_tps / l_tps:.3f}; median per-pair ratio {pair_ratio:.3f} (goal >= 0.9)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**vars(args), "out": str(args.out), "instella_params": n_inst,
                                    "recipe_tok_s": r_tps, "reference_tok_s": l_tps,
                                    "ratio": r_tps / l_tps, "median_pair_ratio": pair_ratio,
                                    "loadavg": os.getloadavg(), "recipe_blocks_s": rec, "reference_blocks_s": ref},
                                   indent=2))


if __name__ == "__main__":
    main()
