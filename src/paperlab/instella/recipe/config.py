"""The recipe's configuration: one pydantic model, from YAML or from a preset plus flags.

Stages run in this order; each needs the checkpoint of an earlier one (or ``--from DIR``):

    pretrain -> stage2 (x3 seeds) -> soup -> sft -> dpo -> long
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from paperlab.errors import config_error
from paperlab.instella.errors import InstellaConfigError

StageName = Literal["pretrain", "stage2", "soup", "sft", "dpo", "long"]
STAGE_ORDER: tuple[str, ...] = ("pretrain", "stage2", "soup", "sft", "dpo", "long")
# The stage whose checkpoint feeds each stage (soup reads stage2's three seeds).
NEEDS: dict[str, tuple[str, ...]] = {
    "pretrain": (),
    "stage2": ("pretrain",),
    "soup": ("stage2",),
    "sft": ("soup", "stage2", "pretrain"),
    "dpo": ("sft",),
    "long": ("dpo", "sft", "soup", "stage2", "pretrain"),
}


def _all_stages() -> list[StageName]:
    return ["pretrain", "stage2", "soup", "sft", "dpo", "long"]


class ModelShape(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden_size: int = Field(64, ge=8)
    num_hidden_layers: int = Field(2, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int | None = None
    intermediate_size: int = Field(176, ge=8)
    seq_len: int = Field(64, ge=8, description="training context of stages 1-2, SFT and DPO")


class StageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(ge=1)
    lr: float = Field(gt=0.0, le=1.0)
    warmup: int = Field(0, ge=0)
    batch: int = Field(8, ge=1)


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    heldout_windows: int = Field(16, ge=1)
    gsm8k_problems: int = Field(16, ge=0)
    max_new_tokens: int = Field(48, ge=1)
    pairs: int = Field(32, ge=1)


class RecipeConfig(BaseModel):
    """Everything a recipe run needs; ``paperlab instella recipe`` flags map onto these fields."""

    model_config = ConfigDict(extra="forbid")
    preset: Literal["tiny", "small", "gpu", "custom"] = "tiny"
    model: ModelShape = ModelShape()
    tokenizer: Literal["bpe", "instella"] = "bpe"
    bpe_vocab: int = Field(1024, ge=300, le=65536)
    corpus: str = Field("pydoc", description="'pydoc' (English shipped with Python) or a text file")
    gsm8k: str = Field("auto", description="a dir with train/test.jsonl, 'auto' or 'synthetic'")
    general_fraction: float = Field(0.3, ge=0.0, le=1.0, description="stage-1 text in stage 2")
    seeds: list[int] = Field(default_factory=lambda: [5796, 6198, 8915], min_length=1)
    stages: list[StageName] = Field(default_factory=lambda: _all_stages(), min_length=1)
    pretrain: StageSettings = StageSettings(steps=150, lr=4e-3, warmup=15, batch=16)
    stage2: StageSettings = StageSettings(steps=40, lr=1e-3, batch=16)
    sft: StageSettings = StageSettings(steps=40, lr=1e-3, warmup=4, batch=16)
    dpo: StageSettings = StageSettings(steps=20, lr=1e-4, batch=8)
    long: StageSettings = StageSettings(steps=20, lr=5e-4, batch=4)
    dpo_beta: float = Field(5.0, gt=0.0, le=100.0)
    long_factor: int = Field(4, ge=2, le=64, description="context multiplier of the long stage")
    long_rope_theta: float | None = Field(None, gt=0.0, description="default: NTK-style raise")
    weight_decay: float = Field(0.1, ge=0.0, le=1.0)
    grad_clip: float = Field(1.0, gt=0.0)
    save_every: int = Field(25, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="CPU threads; default: 1 on a busy box, else up to 2")
    bf16_autocast: bool = False
    eval: EvalSettings = EvalSettings()
    seed: int = 0

    @model_validator(mode="after")
    def _stage_order(self) -> RecipeConfig:
        order = [STAGE_ORDER.index(s) for s in self.stages]
        if order != sorted(order) or len(set(order)) != len(order):
            raise ValueError(f"stages must follow the order {' -> '.join(STAGE_ORDER)} without repeats")
        return self


def check_stage_inputs(cfg: RecipeConfig, from_dir: Path | None) -> None:
    """Refuse a stage list that cannot work (e.g. sft with no checkpoint before it).

    Raises:
        InstellaConfigError: the first stage needs a checkpoint and none is given, or soup runs
            without stage2 in the same run.
    """
    first = cfg.stages[0]
    if NEEDS[first] and from_dir is None and first != "soup":
        raise InstellaConfigError(
            f"stage {first!r} needs a checkpoint from {' or '.join(NEEDS[first])}; add those stages "
            "before it or pass --from DIR"
        )
    if "soup" in cfg.stages and "stage2" not in cfg.stages:
        raise InstellaConfigError("stage 'soup' averages the three stage2 seeds; run stage2 in the same recipe")
    if cfg.stages[0] == "pretrain" and from_dir is not None:
        raise InstellaConfigError("--from is for starting at a later stage; pretrain starts from random weights")


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    # ~31M parameters (the released 50,304-token vocabulary is 26M of them, untied): about
    # 360k training tokens in all, sized to finish in tens of minutes on 2 CPU cores.
    "small": dict(
        model=dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=768,
                   seq_len=128),
        tokenizer="instella",
        pretrain=dict(steps=200, lr=2e-3, warmup=20, batch=8),
        stage2=dict(steps=30, lr=5e-4, batch=8),
        sft=dict(steps=30, lr=3e-4, warmup=3, batch=8),
        dpo=dict(steps=15, lr=5e-5, batch=4),
        long=dict(steps=15, lr=2e-4, batch=2),
        save_every=25,
        eval=dict(heldout_windows=32, gsm8k_problems=32, max_new_tokens=96, pairs=64),
    ),
    "gpu": dict(
        model=dict(hidden_size=1024, num_hidden_layers=16, num_attention_heads=16, intermediate_size=2816,
                   seq_len=1024),
        tokenizer="instella", device="cuda", bf16_autocast=True,
        pretrain=dict(steps=5000, lr=4e-4, warmup=500, batch=32),
        stage2=dict(steps=1000, lr=4e-5, batch=32),
        sft=dict(steps=1000, lr=1e-5, warmup=100, batch=32),
        dpo=dict(steps=300, lr=5e-7, batch=16),
        long=dict(steps=300, lr=1e-5, batch=8),
        save_every=250,
        eval=dict(heldout_windows=128, gsm8k_problems=256, max_new_tokens=256, pairs=256),
    ),
}


def load_recipe_config(
    path: str | Path | None = None, *, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> RecipeConfig:
    """A config from a YAML file or a preset, with ``overrides`` (CLI flags) on top.

    Raises:
        InstellaConfigError: unreadable file, unknown preset, or an invalid field (named).
    """
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text())
        except OSError as exc:
            raise InstellaConfigError(f"cannot read recipe config {p}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise InstellaConfigError(f"recipe config {p} is not valid YAML: {exc}".splitlines()[0]) from None
        if not isinstance(loaded, dict):
            raise InstellaConfigError(f"recipe config {p} must be a mapping of fields")
        data = loaded
    name = preset or data.get("preset", "tiny")
    if name not in PRESETS and name != "custom":
        raise InstellaConfigError(f"unknown recipe preset {name!r}; choose one of: {', '.join(PRESETS)}")
    merged = {**PRESETS.get(name, {}), **data, "preset": name, **(overrides or {})}
    try:
        return RecipeConfig(**merged)
    except ValidationError as exc:
        raise config_error(exc, f"recipe config{f' {path}' if path else ''}", InstellaConfigError) from None
