"""The recipe's settings as a run of the shared training loop (paperlab.train).

Every stage trains with AdamW (0.9, 0.95), eps 1e-8, gradient clipping and a linear warm-up,
then cosine decay to 0.1x (stage 1, as released) or linear decay to 0 (the later stages).
Weight decay applies to matrices other than the embeddings; norm weights, biases and the
embedding table are exempt.
"""

from __future__ import annotations

from torch import nn

from paperlab.instella.recipe.config import RecipeConfig, StageSettings
from paperlab.train import OptimSpec, Schedule, TrainSpec


def exempt_from_decay(name: str, p: nn.Parameter) -> bool:
    """Vectors (norm weights) and the embedding table get no weight decay."""
    return p.ndim < 2 or "embed" in name


def stage_spec(cfg: RecipeConfig, s: StageSettings, schedule: str, *, label: str, bf16: bool) -> TrainSpec:
    """The :class:`TrainSpec` of one stage: its steps, global batch, rate and schedule."""
    final = 0.1 if schedule == "cosine" else 0.0
    return TrainSpec(
        steps=s.steps, global_batch=s.batch,
        optim=OptimSpec(lr=s.lr, kind="adamw", betas=(0.9, 0.95), eps=1e-8, weight_decay=cfg.weight_decay,
                        no_decay=exempt_from_decay),
        schedule=Schedule("cosine" if schedule == "cosine" else "linear", warmup=s.warmup, final_ratio=final),
        grad_clip=cfg.grad_clip, bf16=bf16, save_every=cfg.save_every, label=label,
    )
