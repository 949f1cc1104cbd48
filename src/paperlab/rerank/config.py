"""Reranker configuration: one pydantic model shared by the library, YAML files and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paperlab.errors import config_error
from paperlab.rerank.errors import RerankConfigError

Profile = Literal["auto", "published", "cpu-small", "packaged"]

_CPU_SMALL: dict[str, object] = {"repeats": 1, "max_chars": 200, "max_tokens": 160, "max_retries": 0,
                                 "fallback": "first_stage"}
#: What each profile sets for the fields a user left unset. "published" is the field defaults
#: (GroupRank's inference settings); "cpu-small" is sized so that a small model on a 2-core CPU
#: finishes a top-100 query in about a minute instead of tens of minutes: one repeat, short
#: passages, a JSON-only prompt with a budget that fits 20 scores, no re-asks. "packaged" is
#: cpu-small with ``mode="first-stage"``: the packaged 135M model ranks below its own first
#: stage (TREC DL19 nDCG@10, 10 queries: logit mode 0.4866, fused with BM25 0.7354, BM25
#: 0.7843; on DBpedia logit mode 0.061 against BM25 0.483), so by default it runs no model and
#: keeps the first-stage order, with a warning; an explicit ``mode`` runs it.
PROFILES: dict[str, dict[str, object]] = {
    "published": {},
    "cpu-small": _CPU_SMALL,
    "packaged": {**_CPU_SMALL, "mode": "first-stage"},
}
#: Per-method prompt of the small profiles (listwise keeps its own).
PROFILE_TEMPLATES: dict[str, dict[str, str]] = {
    name: {"grouprank": "grouprank-json/v1", "pointwise": "grouprank-json/v1"}
    for name in ("cpu-small", "packaged")
}
#: What the CLI prints when the packaged profile kept the first-stage order.
PACKAGED_NOTE = ("the packaged SmolLM2-135M ranks below its first stage (TREC DL19 nDCG@10: 0.49 in "
                 "logit mode, 0.74 fused with BM25, BM25 0.78), so this ranking keeps the first-stage "
                 "order and ran no model; rerank with a real model (--llm openai:URL#MODEL or hf:DIR), "
                 "or pass --mode logit or --mode generate to run the packaged model anyway")


class RerankConfig(BaseModel):
    """Every knob of every method (each method reads the ones it needs).

    Field defaults are the published GroupRank inference settings where they exist (group
    size 20, stride 20, 6 repeats, ~3000 characters per passage, 512 completion tokens);
    RankGPT's window 20 / stride 10 for listwise. ``profile`` then sizes the fields a user left
    unset for where the model runs (see :func:`resolve_profile`).
    """

    model_config = ConfigDict(extra="forbid")

    profile: Profile = Field(
        "auto", description="auto: cpu-small for an in-process model without a GPU, else published")

    mode: Literal["generate", "logit", "first-stage"] = Field(
        "generate", description="generate: parse scores from text; logit: expected score from "
        "token probabilities (in process, or a server's top_logprobs); first-stage: run no model, "
        "keep the first-stage order")
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
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RerankConfigError(f"config file {p} is not UTF-8 YAML ({first}); fix the file") from None
        if not isinstance(loaded, dict):
            raise RerankConfigError(f"config file {p} must hold a mapping of field: value")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RerankConfig.model_validate(data)
    except ValidationError as e:
        raise config_error(e, "rerank config", RerankConfigError) from None


def model_location(llm: object) -> str:
    """Where an LLM runs: "server" (an openai: spec), "packaged" (the packaged smollm2),
    "cpu" or "accelerator" (in process), or "unknown" (an object without a paperlab spec,
    e.g. a test double). A spec string is read without loading the model."""
    spec = llm if isinstance(llm, str) else getattr(llm, "spec", None)
    if not isinstance(spec, str):
        return "unknown"
    if spec.startswith("openai:"):
        return "server"
    if spec == "smollm2":
        return "packaged"
    if not spec.startswith("hf:"):
        return "unknown"  # a spec no backend of paperlab.llm wrote (e.g. a test double)
    import sys

    torch = sys.modules.get("torch")  # a model in process has imported it already
    if torch is None and isinstance(llm, str):  # a spec about to be loaded: it will import torch
        import torch
    return "accelerator" if torch is not None and torch.cuda.is_available() else "cpu"


def resolve_profile(cfg: RerankConfig, method: str, location: str) -> RerankConfig:
    """``cfg`` with its profile applied to the fields the user did not set.

    Args:
        cfg: the config (its ``model_fields_set`` says what the user set).
        method: the method name (the cpu-small prompt depends on it).
        location: from :func:`model_location`; "auto" picks packaged for the packaged model,
            cpu-small for another model in process without a GPU, published otherwise.

    Returns:
        A config whose ``profile`` names the concrete profile applied.
    """
    name: str = cfg.profile
    if name == "auto":
        name = {"packaged": "packaged", "cpu": "cpu-small"}.get(location, "published")
    update: dict[str, object] = {k: v for k, v in PROFILES[name].items() if k not in cfg.model_fields_set}
    template = PROFILE_TEMPLATES.get(name, {}).get(method)
    if template and "template" not in cfg.model_fields_set:
        update["template"] = template
    return cfg.model_copy(update={**update, "profile": name})
