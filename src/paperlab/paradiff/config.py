"""Validated configs and the presets (test, tiny, small, gpu).

One :class:`ParadiffConfig` holds everything a run depends on; its :func:`config_hash` keys the
cache, so a cached VQ or model is reused exactly when the parts of the config it was trained
with are unchanged.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paperlab.errors import config_error
from paperlab.paradiff.errors import ParadiffConfigError

__all__ = ["PRESETS", "SCHEDULES", "BenchConfig", "ModelConfig", "ParadiffConfig", "SampleConfig", "TrainConfig",
           "VQConfig", "config_hash", "get_preset"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VQConfig(_Strict):
    """The patch VQ-VAE: 4x4-pixel patches -> one of ``codebook`` codes (32x32 -> 8x8 = 64 tokens)."""

    patch: Literal[4, 8] = 4
    codebook: int = Field(256, ge=64, le=1024)
    dim: int = Field(16, ge=4)
    hidden: int = Field(64, ge=8)
    steps: int = Field(600, ge=1)
    batch: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    beta: float = Field(0.25, ge=0, description="commitment loss weight")
    seed: int = 0


class ModelConfig(_Strict):
    """The bidirectional transformer."""

    d_model: int = Field(128, ge=8)
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1)
    d_ff: int = Field(512, ge=8)
    dropout: float = Field(0.0, ge=0, lt=1)
    attention: Literal["full", "prefix"] = Field(
        "full", description="full: every token sees every token, as released; prefix: the condition sees only "
                            "itself, so a sampler computes it once per decode (the fast option; "
                            "paperlab.paradiff.model)")


class TrainConfig(_Strict):
    """Masked-diffusion training: outputs only masked, one cosine ratio per modality."""

    steps: int = Field(1500, ge=1)
    batch: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup: int = Field(100, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    cond_dropout: float = Field(0.1, ge=0, le=1, description="share of samples trained without the condition")
    seed: int = 0
    save_every: int = Field(250, ge=1, description="steps between resumable saves of the training state")
    threads: int | None = Field(1, ge=1, description="torch threads per process while training (1: the same "
                                "weights on every machine; None: the machine's default)")


SCHEDULES = ("cosine", "linear", "pow2")  # image mask schedules: share of codes still masked at progress t


class SampleConfig(_Strict):
    """Sampler settings, defaults as in the released MMaDA-Parallel code (see paperlab.paradiff.sampler
    and the settings table in docs/paradiff.md)."""

    steps: int = Field(16, ge=1, description="joint steps of the parallel sampler (release: text_steps)")
    text_steps: int = Field(16, ge=1, description="text steps of the sequential sampler")
    image_steps: int = Field(12, ge=1, description="image updates: the parallel sampler spreads them evenly from "
                             "image_start to its last step (release: timesteps); the sequential and image-only "
                             "samplers run them one a step")
    image_start: float = Field(0.25, ge=0, lt=1, description="share of the parallel steps before the first image "
                               "update (release: text_steps // 4)")
    schedule: Literal["cosine", "linear", "pow2"] = Field(
        "cosine", description="image mask schedule: share of codes left masked at progress t (release: cosine)")
    schedule_origin: Literal["text", "image"] = Field(
        "text", description="parallel sampler's image progress: (step + 1) / steps, counted from the first text "
                            "step as released, or counted over the image updates only")
    last_code: Literal["draw", "random"] = Field(
        "draw", description="a code still masked after the last image update (the release keeps at least one "
                            "masked every update): its last draw (MMaDA-Parallel-M, MaskGIT) or a uniform random "
                            "code (MMaDA-Parallel-A)")
    guidance: float = Field(4.0, ge=0, allow_inf_nan=False, description="image term of classifier-free guidance: "
                            "cond + g (cond - uncond) on image logits (release: 4.0)")
    text_guidance: float = Field(0.0, ge=0, allow_inf_nan=False, description="text term: the same on text logits "
                                 "(release: 0, off)")
    temperature: float = Field(1.0, ge=0, allow_inf_nan=False, description="image sampling temperature (0: argmax)")
    noise: float = Field(1.0, ge=0, allow_inf_nan=False, description="annealed Gumbel noise on image confidences")
    text_temperature: float = Field(0.0, ge=0, allow_inf_nan=False,
                                    description="0: greedy text, the release's default; >0 samples words")
    chunk: int = Field(32, ge=0, description="rows per model call on a CPU (0: the whole batch at once)")


class BenchConfig(_Strict):
    n_prompts: int = Field(300, ge=3)
    batch: int = Field(64, ge=1)
    seed: int = 20251112
    bootstrap: int = Field(2000, ge=100)


class ParadiffConfig(_Strict):
    """Everything one run depends on."""

    name: str = "custom"
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16"] = "float32"
    vq: VQConfig = VQConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    bench: BenchConfig = BenchConfig()

    def with_overrides(self, **fields: Any) -> ParadiffConfig:
        """A copy with dotted fields replaced (``{"train.steps": 10}``), validated."""
        data = self.model_dump()
        for dotted, value in fields.items():
            node = data
            *parents, leaf = dotted.split(".")
            for p in parents:
                if p not in node or not isinstance(node[p], dict):
                    raise ParadiffConfigError(f"unknown config field {dotted!r}")
                node = node[p]
            if leaf not in node:
                raise ParadiffConfigError(f"unknown config field {dotted!r}")
            node[leaf] = value
        return validate_config(data)


def validate_config(data: dict[str, Any], what: str = "paradiff config") -> ParadiffConfig:
    """Validate a dict (from YAML or flags) into a config; one-line error on failure."""
    try:
        return ParadiffConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, what, ParadiffConfigError) from None


def config_hash(part: BaseModel | dict[str, Any]) -> str:
    """A short stable hash of a config (or part of one), used as the cache key."""
    data = part.model_dump() if isinstance(part, BaseModel) else part
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


PRESETS: dict[str, ParadiffConfig] = {
    # Plumbing only (tests, trying a command): the tiny preset's tokenizer and layout under a
    # one-layer model trained for seconds. Its samples are noise.
    "test": ParadiffConfig(
        name="test",
        vq=VQConfig(patch=8, steps=300),
        model=ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64),
        train=TrainConfig(steps=40, batch=16, lr=3e-3, warmup=5),
        sample=SampleConfig(steps=8, text_steps=8, image_steps=6),
        bench=BenchConfig(n_prompts=12),
    ),
    # Trains VQ + model in a few minutes on 2 CPU cores: tests and the demo. One code per 8x8
    # cell (16 image tokens) keeps the sequence short enough for that budget. Wide and shallow:
    # at equal wall time d 128 x 2 layers learnt the task far better than d 64 x 3 (per-op
    # overhead, not FLOPs, bounds a step this small).
    "tiny": ParadiffConfig(
        name="tiny",
        vq=VQConfig(patch=8, steps=300),
        model=ModelConfig(d_model=128, n_layers=2, n_heads=4, d_ff=512),
        train=TrainConfig(steps=2000, batch=32, lr=3e-3, warmup=50),
        bench=BenchConfig(n_prompts=300),
    ),
    # Tens of minutes on one CPU core (about 0.4 s a step): the tiny preset's tokenizer (one code
    # per 8x8 cell, round trip 1.000, shared cache entry) under a wider, deeper model trained
    # 2.5x longer, to see whether the text-to-image binding the tiny model lacks comes with size.
    "small": ParadiffConfig(
        name="small",
        vq=VQConfig(patch=8, steps=300),
        model=ModelConfig(d_model=192, n_layers=3, n_heads=6, d_ff=768),
        train=TrainConfig(steps=5000, batch=32, lr=2e-3, warmup=100),
    ),
    # For a CUDA machine (bf16 autocast); not run in this repository's CPU-only sessions.
    "gpu": ParadiffConfig(
        name="gpu",
        device="cuda",
        dtype="bfloat16",
        vq=VQConfig(codebook=512, steps=2000, batch=256),
        model=ModelConfig(d_model=512, n_layers=12, n_heads=8, d_ff=2048),
        train=TrainConfig(steps=20000, batch=256, lr=5e-4, warmup=1000),
        sample=SampleConfig(steps=32, text_steps=16, image_steps=24, chunk=0),
        bench=BenchConfig(batch=256),
    ),
}


def get_preset(name: str) -> ParadiffConfig:
    """A preset by name.

    Raises:
        ParadiffConfigError: unknown name (the valid ones are listed).
    """
    if name not in PRESETS:
        raise ParadiffConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]
