"""The recipe's settings as a run of the shared training loop (paperlab.train).

Every stage trains with AdamW (0.9, 0.95), eps 1e-8, gradient clipping at 1 and a linear
warm-up, then decays as AMD's released configs do (``SCHEDULES``). Weight decay 0.1 applies to
every parameter, norm weights and embeddings included: AMD's configs set ``decay_norm_and_bias``
and ``decay_embeddings`` to true in every OLMo-trainer stage. The DPO stages (open-instruct in
AMD's release) use weight decay 0.0 and a warm-up of 10% of their steps.
"""

from __future__ import annotations

from torch import nn

from paperlab.instella.recipe.config import RecipeConfig, StageSettings
from paperlab.train import OptimSpec, Schedule, TrainSpec

# AMD's released schedules per stage: (kind, final rate as a share of the peak). OLMo's
# ``cosine_with_warmup`` / ``linear_with_warmup`` end at ``alpha_f`` x the peak; open-instruct's
# DPO uses transformers' linear schedule, which ends at 0. AMD released no RL config: GRPO runs
# at a constant rate.
SCHEDULES: dict[str, tuple[str, float]] = {
    "pretrain": ("cosine", 0.1),     # instella-3b-pretrain-stage1.yaml: alpha_f 0.1
    "stage2": ("linear", 0.0),       # ...-stage2-seed-*.yaml: alpha_f 0
    "sft": ("linear", 0.001),        # instella-3b-sft.yaml: alpha_f 0.001
    "dpo": ("linear", 0.0),          # instella-3b-dpo.yaml: lr_scheduler_type linear
    "long": ("linear", 0.001),       # instella-3b-long-pretrain-phase{1,2}.yaml
    "long_sft": ("linear", 0.001),   # instella-3b-long-sft.yaml
    "long_dpo": ("linear", 0.0),     # instella-3b-long-dpo.yaml
    "math_sft1": ("linear", 0.001),  # instella-3b-sft-math-stage1.yaml
    "math_sft2": ("linear", 0.001),
    "grpo": ("constant", 1.0),
}
DPO_STAGES = ("dpo", "long_dpo")


def exempt_from_decay(name: str, p: nn.Parameter) -> bool:
    """The common rule AMD did not use: no decay on vectors (norm weights) or the embedding table."""
    return p.ndim < 2 or "embed" in name


def stage_weight_decay(cfg: RecipeConfig, stage: str) -> float:
    """The weight decay of ``stage``: 0 for the DPO stages and GRPO, else ``cfg.weight_decay``."""
    if stage in DPO_STAGES:
        return cfg.dpo_weight_decay
    return 0.0 if stage == "grpo" else cfg.weight_decay


def stage_spec(cfg: RecipeConfig, s: StageSettings, stage: str, *, label: str, bf16: bool,
               micro_batch: int | None = None) -> TrainSpec:
    """The :class:`TrainSpec` of one stage (``stage`` names its schedule and weight decay)."""
    kind, final = SCHEDULES[stage]
    return TrainSpec(
        steps=s.steps, global_batch=s.batch,
        optim=OptimSpec(lr=s.lr, kind="adamw", betas=(0.9, 0.95), eps=1e-8,
                        weight_decay=stage_weight_decay(cfg, stage),
                        no_decay=None if cfg.decay_norms_and_embeddings else exempt_from_decay),
        schedule=Schedule(kind, warmup=s.warmup_steps, final_ratio=final),  # type: ignore[arg-type]
        grad_clip=cfg.grad_clip, bf16=bf16, save_every=cfg.save_every, label=label, micro_batch=micro_batch,
    )
