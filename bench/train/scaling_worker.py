"""One side of bench/train/scaling.py: the Instella small preset's pretraining step on the shared
loop, in one process or under torchrun; rank 0 writes tokens/s and every rank's peak memory.

    python scaling_worker.py OUT.json --steps N --warmup K [--parallel ddp|fsdp]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--parallel", default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--micro-batch", type=int, default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)  # 1 thread per process on both sides of the comparison

    from paperlab.instella.configuration import InstellaConfig
    from paperlab.instella.modeling import InstellaForCausalLM
    from paperlab.instella.recipe.config import load_recipe_config
    from paperlab.instella.recipe.losses import masked_lm_sum
    from paperlab.instella.recipe.plan import recipe_vocab
    from paperlab.instella.recipe.train import stage_spec
    from paperlab.train import FnTask, LossParts, distributed, run_training, sample_generator

    cfg = load_recipe_config(preset="small")
    m, s = cfg.model, cfg.pretrain
    vocab = recipe_vocab(cfg)
    T = m.seq_len
    # a fixed random token stream stands in for the tokenized corpus: the step's cost is the same
    stream = torch.randint(2, vocab, (200_000,), generator=torch.Generator().manual_seed(0))

    def batch(step: int, rows: range) -> torch.Tensor:
        starts = [int(torch.randint(0, stream.numel() - T, (1,), generator=sample_generator(0, step, i)))
                  for i in rows]
        return torch.stack([stream[x : x + T] for x in starts])

    def loss(model: torch.nn.Module, ids: torch.Tensor) -> LossParts:
        total, count = masked_lm_sum(model(ids, use_cache=False).logits, ids, torch.ones_like(ids))
        return LossParts(total, count, tokens=int(ids.numel()))

    with distributed(a.parallel, "cpu") as ctx:
        torch.manual_seed(0)
        config = InstellaConfig(vocab_size=vocab, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
                                num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
                                max_position_embeddings=T)
        if a.batch:
            s = s.model_copy(update={"batch": a.batch})
        spec = stage_spec(cfg, s.model_copy(update={"steps": a.steps}), "pretrain", label="bench", bf16=False,
                          micro_batch=a.micro_batch)
        marks: list[float] = []
        _, res = run_training(InstellaForCausalLM(config), FnTask(batch, loss), spec, ctx,
                              on_step=lambda step, *_: marks.append(time.perf_counter()))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes (Linux reports KiB)
        peaks = [peak]
        if ctx.grouped and ctx.world_size > 1:
            peaks = [0] * ctx.world_size
            torch.distributed.all_gather_object(peaks, peak)
        if ctx.is_main:
            timed = a.steps - a.warmup
            secs = marks[-1] - marks[a.warmup - 1]  # steps after the warm-up ones
            a.out.write_text(json.dumps({
                "world_size": ctx.world_size, "parallel": res.parallel, "steps_timed": timed,
                "tokens_per_s": timed * s.batch * T / secs, "peak_rss_per_rank": peaks,
                "parameters": sum(p.numel() for p in InstellaForCausalLM(config).parameters()),
                "losses": res.losses,
            }))


if __name__ == "__main__":
    main()
