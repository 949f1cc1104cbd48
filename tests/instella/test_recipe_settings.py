"""The recipe's optimiser settings as AMD released them (configs/*.yaml of AMD-AIG-AIMA/Instella)."""

from __future__ import annotations

import pytest

from paperlab.instella.recipe.config import RecipeConfig, StageSettings, load_recipe_config
from paperlab.instella.recipe.train import stage_spec
from paperlab.train import make_optimizer

from .conftest import tiny_config


def _settings(cfg: RecipeConfig, stage: str) -> StageSettings:
    return cfg.long_phases[0] if stage == "long" else getattr(cfg, stage)


def _groups(stage: str, **overrides: object) -> list[dict]:  # type: ignore[type-arg]
    from paperlab.instella.modeling import InstellaForCausalLM

    cfg = load_recipe_config(preset="tiny", overrides=overrides)
    settings = _settings(cfg, stage)
    model = InstellaForCausalLM(tiny_config())
    opt = make_optimizer(model, stage_spec(cfg, settings, stage, label=stage, bf16=False).optim)
    names = {id(p): n for n, p in model.named_parameters()}
    return [{"wd": g["weight_decay"], "names": {names[id(p)] for p in g["params"]}} for g in opt.param_groups]


@pytest.mark.parametrize("stage, wd, betas", [
    *[(s, 0.1, (0.9, 0.95)) for s in ("pretrain", "stage2", "sft", "long", "long_sft", "math_sft1")],
    ("math_sft2", 0.0001, (0.9, 0.999)),  # Instella-Math's open-instruct config: weight_decay 0.0001
    ("grpo", 0.01, (0.9, 0.999)),  # VERL's actor optimiser, as AMD's GRPO script leaves it
])
def test_weight_decay_covers_norms_and_embeddings(stage: str, wd: float, betas: tuple[float, float]) -> None:
    # AMD: weight_decay 0.1 with decay_norm_and_bias: true and decay_embeddings: true (OLMo's
    # trainer); open-instruct and VERL decay every parameter with torch's default betas
    groups = _groups(stage)
    assert len(groups) == 1 and groups[0]["wd"] == wd
    cfg = load_recipe_config(preset="tiny")
    assert stage_spec(cfg, _settings(cfg, stage), stage, label=stage, bf16=False).optim.betas == betas
    names = groups[0]["names"]
    assert "model.embed_tokens.weight" in names and "model.norm.weight" in names
    assert "model.layers.0.self_attn.q_norm.weight" in names and "lm_head.weight" in names


@pytest.mark.parametrize("stage", ["dpo", "long_dpo"])
def test_dpo_has_no_weight_decay_and_warms_up_over_a_tenth(stage: str) -> None:
    # instella-3b-dpo.yaml / -long-dpo.yaml: weight_decay 0.0, warmup_ratio 0.1, linear schedule
    cfg = load_recipe_config(preset="tiny", overrides={stage: {"steps": 30, "lr": 1e-4, "batch": 8,
                                                               "warmup_ratio": 0.1}})
    spec = stage_spec(cfg, getattr(cfg, stage), stage, label=stage, bf16=False)
    assert spec.optim.weight_decay == 0.0 and all(g["wd"] == 0.0 for g in _groups(stage))
    assert spec.optim.betas == (0.9, 0.999)  # open-instruct's torch AdamW defaults
    assert spec.schedule.warmup == 3
    assert [round(spec.schedule.factor(s, 30), 4) for s in (0, 1, 2)] == [0.3333, 0.6667, 1.0]
    assert spec.schedule.factor(29, 30) < 0.04  # linear towards 0
    assert load_recipe_config(preset="tiny").dpo.warmup_steps == 2  # 10% of the preset's 20 steps


def test_schedules_end_where_amds_configs_end() -> None:
    cfg = load_recipe_config(preset="tiny")
    end = {stage: stage_spec(cfg, cfg.long_phases[0] if stage == "long" else getattr(cfg, stage), stage,
                             label=stage, bf16=False).schedule for stage in
           ("pretrain", "stage2", "sft", "long", "long_sft", "math_sft1")}
    assert (end["pretrain"].kind, end["pretrain"].final_ratio) == ("cosine", 0.1)  # alpha_f 0.1
    assert (end["stage2"].kind, end["stage2"].final_ratio) == ("linear", 0.0)  # alpha_f 0
    for stage in ("sft", "long", "long_sft", "math_sft1"):
        assert (end[stage].kind, end[stage].final_ratio) == ("linear", 0.001)  # alpha_f 0.001
    # Instella-Math: math SFT 2 linear to 0 over a 10% warm-up (open-instruct), GRPO constant (VERL)
    m2 = stage_spec(cfg, cfg.math_sft2, "math_sft2", label="m2", bf16=False).schedule
    assert (m2.kind, m2.final_ratio, m2.warmup) == ("linear", 0.0, 10)
    g = stage_spec(cfg, cfg.grpo, "grpo", label="g", bf16=False).schedule
    assert (g.kind, g.warmup) == ("constant", 0) and cfg.grpo.kl_beta == 0.001
    # the long phases warm up over 10% of their steps, as AMD's 500 of 5,000 and 250 of 2,500
    assert [p.warmup_steps for p in cfg.long_phases] == [2, 1]


def test_the_common_exemption_is_still_available() -> None:
    groups = _groups("pretrain", decay_norms_and_embeddings=False)
    by_wd = {g["wd"]: g["names"] for g in groups}
    assert "model.embed_tokens.weight" in by_wd[0.0] and "model.norm.weight" in by_wd[0.0]
    assert "lm_head.weight" in by_wd[0.1]


def test_the_long_phases_scale_amds_two_phases() -> None:
    cfg = load_recipe_config(preset="tiny")
    a, b = cfg.long_phases
    assert b.factor == 4 * a.factor  # AMD: 64K then 256K
    T = cfg.model.seq_len
    # the same tokens in each phase, twice as many per step in the second (AMD: 4M then 8M)
    assert a.steps * a.batch * a.factor * T == b.steps * b.batch * b.factor * T
    assert b.batch * b.factor == 2 * a.batch * a.factor
