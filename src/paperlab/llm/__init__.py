"""Shared model access: one interface to language models, several backends.

    >>> from paperlab.llm import load_llm
    >>> llm = load_llm("smollm2")                       # packaged, offline
    >>> llm.generate([{"role": "user", "content": "Hi"}], max_tokens=16).text
    >>> llm.score("The capital of France is", [" Paris", " Rome"])
    >>> llm.next_tokens(["The capital of France is"], [" Paris", " Rome"])[0].dists[0].logprobs

Backends (see :mod:`paperlab.llm.registry`): ``smollm2``, ``hf:<path>[#<file.gguf>]``,
``openai:<base_url>#<model>``. Importing this package does not import torch or httpx; a
backend pulls what it needs when loaded.
"""

from paperlab.llm.base import LLM, run_sync
from paperlab.llm.registry import BACKENDS, load_llm, register_backend, valid_specs
from paperlab.llm.types import (
    Generation,
    GenerationParams,
    Message,
    NextTokens,
    Prompt,
    ScoredContinuation,
    TokenDist,
)

__all__ = [
    "BACKENDS",
    "LLM",
    "Generation",
    "GenerationParams",
    "Message",
    "NextTokens",
    "Prompt",
    "ScoredContinuation",
    "TokenDist",
    "load_llm",
    "register_backend",
    "run_sync",
    "valid_specs",
]
