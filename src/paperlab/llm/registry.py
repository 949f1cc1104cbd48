"""Backends in an explicit registry, chosen by a spec string.

    smollm2                          the packaged SmolLM2-135M-Instruct (no hub access)
    hf:<path>[#<file.gguf>]          a local transformers model directory or GGUF file
    openai:<base_url>#<model>        any OpenAI-compatible server

A spec never guesses: the part before the first colon names the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paperlab.errors import BackendSpecError
from paperlab.llm.base import LLM


@dataclass(frozen=True)
class Backend:
    name: str
    usage: str
    factory: Callable[[str, str, dict[str, Any]], LLM]  # (spec, rest after "name:", options)


BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, usage: str) -> Callable[[Callable[..., LLM]], Callable[..., LLM]]:
    """Register a backend factory under ``name``; ``usage`` is the spec form shown in errors."""

    def deco(factory: Callable[..., LLM]) -> Callable[..., LLM]:
        if name in BACKENDS:
            raise ValueError(f"backend {name!r} registered twice")
        BACKENDS[name] = Backend(name, usage, factory)
        return factory

    return deco


def valid_specs() -> str:
    return "; ".join(b.usage for b in BACKENDS.values())


def load_llm(spec: str, **options: Any) -> LLM:
    """Load the language model a spec string names.

    Args:
        spec: ``smollm2``, ``hf:<path>[#<file.gguf>]`` or ``openai:<base_url>#<model>``.
        **options: backend options (e.g. ``timeout``, ``max_retries``, ``batch_size``,
            ``max_concurrency``).

    Raises:
        BackendSpecError: the spec names no registered backend or is malformed.
    """
    name, _, rest = spec.partition(":")
    backend = BACKENDS.get(name.strip())
    if backend is None:
        raise BackendSpecError(f"unknown LLM spec {spec!r}; valid forms: {valid_specs()}")
    return backend.factory(spec, rest, options)


@register_backend("smollm2", "smollm2 (the packaged SmolLM2-135M-Instruct)")
def _smollm2(spec: str, rest: str, options: dict[str, Any]) -> LLM:
    from paperlab.llm.hf_backend import HFLocalLLM
    from paperlab.llm.packaged import smollm2_dir

    if rest:
        raise BackendSpecError(f"the smollm2 spec takes no argument, got {spec!r}; write just: smollm2")
    return HFLocalLLM(spec, smollm2_dir(), **options)


@register_backend("hf", "hf:<model dir or file.gguf>[#<file.gguf>]")
def _hf(spec: str, rest: str, options: dict[str, Any]) -> LLM:
    from paperlab.llm.hf_backend import HFLocalLLM

    path, _, gguf = rest.partition("#")
    if not path:
        raise BackendSpecError(f"the hf spec needs a path, got {spec!r}; write hf:<dir>[#<file.gguf>]")
    return HFLocalLLM(spec, path, gguf or None, **options)


@register_backend("openai", "openai:<base_url>#<model>")
def _openai(spec: str, rest: str, options: dict[str, Any]) -> LLM:
    from paperlab.llm.openai_backend import OpenAICompatibleLLM

    url, _, model = rest.partition("#")
    if not url.startswith(("http://", "https://")) or not model:
        raise BackendSpecError(
            f"malformed openai spec {spec!r}; write openai:<base_url>#<model>, "
            "e.g. openai:http://127.0.0.1:8000/v1#my-model"
        )
    return OpenAICompatibleLLM(spec, url, model, **options)
