"""Value types of paperlab.llm: prompts, generation parameters and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypedDict


class Message(TypedDict):
    """One chat message, as in the OpenAI chat API."""

    role: Literal["system", "user", "assistant"]
    content: str


#: A raw text prompt (sent as is, no chat template) or a list of chat messages.
Prompt = str | list[Message]


@dataclass(frozen=True)
class GenerationParams:
    """Decoding parameters shared by every backend.

    Attributes:
        max_tokens: the most new tokens to generate.
        temperature: 0 means greedy decoding; above 0 samples.
        stop: strings that end generation; the returned text excludes them (OpenAI semantics).
        seed: seeds sampling where the backend supports it.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        from paperlab.errors import LLMError

        if self.max_tokens < 1:
            raise LLMError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise LLMError(f"temperature must be >= 0, got {self.temperature}")


@dataclass(frozen=True)
class Generation:
    """The result of one generation call."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"


@dataclass(frozen=True)
class ScoredContinuation:
    """log P(continuation | prompt) under the model.

    Attributes:
        continuation: the scored text.
        logprob: the sum of ``token_logprobs`` (natural log).
        token_logprobs: one log-probability per continuation token.
        n_tokens: the number of continuation tokens.
    """

    continuation: str
    logprob: float
    token_logprobs: list[float] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.token_logprobs)
