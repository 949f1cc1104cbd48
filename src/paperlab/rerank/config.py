"""Reranker configuration: one pydantic model shared by the library, YAML files and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paperlab.errors import config_error
from paperlab.rerank.errors import RerankConfigError


class RerankConfig(BaseModel):
    """Every knob of every method (each method reads the ones it needs).

    Defaults are the published GroupRank inference settings where they exist (group size 20,
    stride 20, 6 repeats, ~3000 characters per passage); RankGPT's window 20 / stride 10 for
    listwise.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["generate", "logit"] = Field(
        "generate", description="generate: parse scores from text; logit: expected score from token probabilities (needs an hf backend)")
    template: str | None = Field(None, description="prompt template key or YAML/JSON file; None = the method's default")
    group_size: int = Field(20, ge=1)
    stride: int | None = Field(None, ge=1, description="None = group_size (no overlap)")
    repeats: int = Field(6, ge=1)
    seed: int = 0
    shuffle: bool = True
    max_chars: int = Field(3000, ge=0, description="passage truncation after whitespace collapse (0 = none)")
    max_tokens: int = Field(512, ge=1, description="completion budget per call")
    temperature: float = Field(0.0, ge=0.0)
    fusion_weight: float = Field(0.0, ge=0.0, le=1.0, description="w in (1-w)*reranker + w*first_stage")
    concurrency: int = Field(32, ge=1, description="LLM calls in flight at once")
    max_retries: int = Field(1, ge=0, description="re-asks for ids a reply left unscored")
    llm_retries: int = Field(2, ge=0, description="re-sends of a call that failed with an LLM error")
    retry_backoff_s: float = Field(0.5, ge=0.0)
    fallback: Literal["pointwise", "first_stage"] = Field(
        "pointwise", description="for passages still unscored after retries")
    on_llm_error: Literal["raise", "fallback"] = Field(
        "raise", description="raise: stop with RerankLLMError; fallback: keep first-stage order for the affected passages")
    window: int = Field(20, ge=2, description="listwise window size")
    window_stride: int = Field(10, ge=1, description="listwise window stride")


def load_config(path: str | Path | None = None, **overrides: object) -> RerankConfig:
    """A config from an optional YAML file plus keyword overrides (None values are ignored).

    Raises:
        RerankConfigError: the file is missing or a field is invalid (message names the field).
    """
    data: dict[str, object] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise RerankConfigError(f"config file {p} does not exist; pass an existing YAML file")
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise RerankConfigError(f"config file {p} must hold a mapping of field: value")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RerankConfig.model_validate(data)
    except ValidationError as e:
        raise config_error(e, "rerank config", RerankConfigError) from None
