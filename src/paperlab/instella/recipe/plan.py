"""What a recipe run will need, without running it: the model on the meta device and the memory
per rank of every training stage (``paperlab instella recipe --dry-run``)."""

from __future__ import annotations

import torch

from paperlab.instella.recipe.config import RecipeConfig, StageSettings
from paperlab.train.dist import per_rank
from paperlab.train.estimate import MemoryEstimate, decoder_activation_bytes, estimate_memory

RELEASED_VOCAB = 50304  # the released tokenizer's 50,280 tokens padded to a multiple of 64


def recipe_vocab(cfg: RecipeConfig) -> int:
    """The embedding rows the recipe's model gets (padded to a multiple of 64)."""
    return RELEASED_VOCAB if cfg.tokenizer == "instella" else -(-cfg.bpe_vocab // 64) * 64


def meta_model(cfg: RecipeConfig) -> torch.nn.Module:
    """The recipe's model built on the meta device (shapes only: no memory, no init)."""
    from paperlab.instella.configuration import InstellaConfig
    from paperlab.instella.modeling import InstellaForCausalLM

    m = cfg.model
    config = InstellaConfig(vocab_size=recipe_vocab(cfg), hidden_size=m.hidden_size,
                            intermediate_size=m.intermediate_size, num_hidden_layers=m.num_hidden_layers,
                            num_attention_heads=m.num_attention_heads,
                            num_key_value_heads=m.num_key_value_heads or m.num_attention_heads)
    with torch.device("meta"):
        return InstellaForCausalLM(config)


def recipe_memory(cfg: RecipeConfig, *, world_size: int, parallel: str) -> dict[str, MemoryEstimate]:
    """Memory per rank of each training stage in ``cfg.stages`` (soup trains nothing).

    Raises:
        TrainError: a stage's global batch does not split over ``world_size`` processes.
    """
    model = meta_model(cfg)
    m, bf16 = cfg.model, cfg.bf16_autocast
    out: dict[str, MemoryEstimate] = {}
    for stage, s, rows_per_sample, seq in _trained(cfg):
        rows = per_rank(s.batch, world_size, f"stage {stage}: the global batch") * rows_per_sample
        if stage.startswith("long") and stage != "long_dpo":
            rows = 1  # one packed row per forward (micro-batches of 1)
        elif stage == "grpo":
            rows = cfg.grpo.group  # one prompt's group of replies per forward
        act = decoder_activation_bytes(batch=rows, seq=seq, hidden=m.hidden_size, ffn=m.intermediate_size,
                                       layers=m.num_hidden_layers, heads=m.num_attention_heads,
                                       vocab=recipe_vocab(cfg), bf16=bf16)
        out[stage] = estimate_memory(model, world_size=world_size, parallel=parallel, activations=act, bf16=bf16)
    return out


def _trained(cfg: RecipeConfig) -> list[tuple[str, StageSettings, int, int]]:
    """(name, settings, model rows per sample, sequence length) of each training step kind."""
    T = cfg.model.seq_len
    out: list[tuple[str, StageSettings, int, int]] = []
    for stage in cfg.stages:
        if stage == "soup":
            continue
        if stage == "long":
            out += [(f"long/phase-{i}", p, 1, T * p.factor) for i, p in enumerate(cfg.long_phases, 1)]
        elif stage == "long_sft":
            out.append((stage, cfg.long_sft, 1, T * cfg.long_phases[-1].factor))
        elif stage in ("dpo", "long_dpo"):
            out.append((stage, getattr(cfg, stage), 2, T))  # a DPO sample is a pair
        elif stage == "math_sft2":
            out.append((stage, cfg.math_sft2, 1, T * cfg.math_sft2_factor))
        elif stage == "grpo":  # a sample is a prompt and its group of replies
            out.append((stage, cfg.grpo, cfg.grpo.group, T + cfg.grpo.max_new_tokens))
        else:
            out.append((stage, getattr(cfg, stage), 1, T))
    return out
