"""The recipe's settings as a run of the shared training loop (paperlab.train).

Every stage trains with AdamW, eps 1e-8, gradient clipping at 1 and a linear warm-up, then
decays as AMD's released configs do (``SCHEDULES``). The stages AMD trains with OLMo's trainer
(pretraining, SFT, the long phases, math SFT 1) use betas (0.9, 0.95) and weight decay 0.1 on
every parameter, norm weights and embeddings included (``decay_norm_and_bias`` and
``decay_embeddings`` true in every such config). The stages AMD trains with open-instruct (DPO,
long DPO, math SFT 2) or VERL (GRPO) use torch's AdamW betas (0.9, 0.999) and their own weight
decay: 0.0 for DPO, 0.0001 for math SFT 2 (``instella-3b-sft-math-stage2.yaml``), 0.01 for GRPO
(VERL's actor default, which AMD's ``run_grpo_multi_nodes.sh`` keeps); every parameter decays
there too.
"""

from __future__ import annotations

from torch import nn

from paperlab.instella.recipe.config import RecipeConfig, StageSettings
from paperlab.train import OptimSpec, Schedule, TrainSpec

# AMD's released schedules per stage: (kind, final rate as a share of the peak). OLMo's
# ``cosine_with_warmup`` / ``linear_with_warmup`` end at ``alpha_f`` x the peak; open-instruct's
# DPO and math SFT 2 use transformers' linear schedule, which ends at 0.
SCHEDULES: dict[str, tuple[str, float]] = {
    "pretrain": ("cosine", 0.1),     # instella-3b-pretrain-stage1.yaml: alpha_f 0.1
    "stage2": ("linear", 0.0),       # ...-stage2-seed-*.yaml: alpha_f 0
    "sft": ("linear", 0.001),        # instella-3b-sft.yaml: alpha_f 0.001
    "dpo": ("linear", 0.0),          # instella-3b-dpo.yaml: lr_scheduler_type linear
    "long": ("linear", 0.001),       # instella-3b-long-pretrain-phase{1,2}.yaml
    "long_sft": ("linear", 0.001),   # instella-3b-long-sft.yaml
    "long_dpo": ("linear", 0.0),     # instella-3b-long-dpo.yaml
    "math_sft1": ("linear", 0.001),  # instella-3b-sft-math-stage1.yaml
    "math_sft2": ("linear", 0.0),    # Instella-Math's instella-3b-sft-math-stage2.yaml: linear (to 0)
    "grpo": ("constant", 1.0),       # run_grpo_multi_nodes.sh: VERL's constant rate, no warm-up
}
DPO_STAGES = ("dpo", "long_dpo")
# open-instruct and VERL build torch's AdamW without betas: its defaults
TORCH_BETAS_STAGES = ("dpo", "long_dpo", "math_sft2", "grpo")


def exempt_from_decay(name: str, p: nn.Parameter) -> bool:
    """The common rule AMD did not use: no decay on vectors (norm weights) or the embedding table."""
    return p.ndim < 2 or "embed" in name


def stage_weight_decay(cfg: RecipeConfig, stage: str) -> float:
    """The weight decay of ``stage`` (AMD: 0.1, DPO 0.0, math SFT 2 0.0001, GRPO 0.01)."""
    if stage in DPO_STAGES:
        return cfg.dpo_weight_decay
    if stage == "math_sft2":
        return cfg.math_sft2_weight_decay
    return cfg.grpo_weight_decay if stage == "grpo" else cfg.weight_decay


def stage_betas(stage: str) -> tuple[float, float]:
    """AdamW's betas: OLMo's (0.9, 0.95), or torch's (0.9, 0.999) where AMD used open-instruct or VERL."""
    return (0.9, 0.999) if stage in TORCH_BETAS_STAGES else (0.9, 0.95)


def stage_spec(cfg: RecipeConfig, s: StageSettings, stage: str, *, label: str, bf16: bool,
               micro_batch: int | None = None) -> TrainSpec:
    """The :class:`TrainSpec` of one stage (``stage`` names its schedule and weight decay)."""
    kind, final = SCHEDULES[stage]
    return TrainSpec(
        steps=s.steps, global_batch=s.batch,
        optim=OptimSpec(lr=s.lr, kind="adamw", betas=stage_betas(stage), eps=1e-8,
                        weight_decay=stage_weight_decay(cfg, stage),
                        no_decay=None if cfg.decay_norms_and_embeddings else exempt_from_decay),
        schedule=Schedule(kind, warmup=s.warmup_steps, final_ratio=final),  # type: ignore[arg-type]
        grad_clip=cfg.grad_clip, bf16=bf16, save_every=cfg.save_every, label=label, micro_batch=micro_batch,
    )
