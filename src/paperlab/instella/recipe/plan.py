"""What a recipe run will need, without running it: the model on the meta device and the memory
per rank of every training stage (``paperlab instella recipe --dry-run``)."""

from __future__ import annotations

import torch

from paperlab.errors import TrainError
from paperlab.instella.recipe.config import RecipeConfig, StageSettings
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
    for stage in cfg.stages:
        if stage == "soup":
            continue
        s: StageSettings = getattr(cfg, stage)
        if s.batch % world_size:
            raise TrainError(f"stage {stage}: the global batch of {s.batch} does not split evenly over "
                             f"{world_size} processes; use a multiple of {world_size}")
        rows = s.batch // world_size * (2 if stage == "dpo" else 1)  # a DPO sample is a pair
        seq = m.seq_len * (cfg.long_factor if stage == "long" else 1)
        act = decoder_activation_bytes(batch=rows, seq=seq, hidden=m.hidden_size, ffn=m.intermediate_size,
                                       layers=m.num_hidden_layers, heads=m.num_attention_heads,
                                       vocab=recipe_vocab(cfg), bf16=bf16)
        out[stage] = estimate_memory(model, world_size=world_size, parallel=parallel, activations=act, bf16=bf16)
    return out
