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
        schema: a JSON schema (as canonical JSON text) the reply must match, or None.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    schema: str | None = None

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


@dataclass(frozen=True)
class TokenDist:
    """The next-token distribution at one position, read at the caller's candidate tokens.

    Attributes:
        logprobs: log P(candidate) for each candidate, in the caller's order (natural log,
            normalised over the whole vocabulary).
        top: the index of the candidate that is the most likely token of the whole vocabulary
            (what greedy decoding would pick), or None when no candidate is.
        top_logprob: log P of the most likely token of the vocabulary.
    """

    logprobs: list[float]
    top: int | None
    top_logprob: float


@dataclass(frozen=True)
class NextTokens:
    """What :meth:`paperlab.llm.LLM.next_tokens` read along one prompt.

    Attributes:
        dists: one distribution after the prompt (and prefill), then one after each forced
            token: ``len(forced tokens) + 1`` entries.
        prompt_tokens: tokens of the rendered prompt plus prefill.
        new_tokens: tokens the model had to run for this row (the rest came from the prefix
            cache): a cost figure.
    """

    dists: list[TokenDist]
    prompt_tokens: int
    new_tokens: int
