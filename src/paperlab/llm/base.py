"""The one interface every backend implements, with sync and async forms.

Backends implement two coroutines, ``_agenerate_batch`` and ``_ascore``. Everything else
(single calls, sync wrappers, concurrency limits, parameter checking) lives here once.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from paperlab.llm.types import Generation, GenerationParams, Prompt, ScoredContinuation

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code.

    When called inside a running event loop (a notebook, an async app) the coroutine runs on a
    fresh loop in a worker thread, because the caller's loop cannot be re-entered.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _params(
    max_tokens: int, temperature: float, stop: str | Sequence[str] | None, seed: int | None
) -> GenerationParams:
    stops: tuple[str, ...] = (stop,) if isinstance(stop, str) else tuple(stop or ())
    return GenerationParams(max_tokens=max_tokens, temperature=temperature, stop=stops, seed=seed)


class LLM(abc.ABC):
    """A language model behind one of the registered backends (see :func:`load_llm`).

    Attributes:
        spec: the spec string it was loaded from.
        max_concurrency: how many requests the async batch forms keep in flight at once.
    """

    spec: str
    max_concurrency: int

    def __init__(self, spec: str, max_concurrency: int = 8) -> None:
        self.spec = spec
        self.max_concurrency = max(1, int(max_concurrency))

    # -- what a backend implements ------------------------------------------------------
    @abc.abstractmethod
    async def _agenerate_batch(
        self, prompts: list[Prompt], params: GenerationParams
    ) -> list[Generation]:
        """Generate for every prompt, in order, respecting ``self.max_concurrency``."""

    @abc.abstractmethod
    async def _ascore(self, prompt: Prompt, continuations: list[str]) -> list[ScoredContinuation]:
        """Score each continuation after ``prompt``."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections or memory held by the backend."""

    # -- async API ----------------------------------------------------------------------
    async def agenerate(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Generation:
        """Generate a completion for one prompt (raw text or chat messages)."""
        params = _params(max_tokens, temperature, stop, seed)
        return (await self._agenerate_batch([prompt], params))[0]

    async def agenerate_batch(
        self,
        prompts: Sequence[Prompt],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[Generation]:
        """Generate for many prompts, at most ``max_concurrency`` at a time; results in order."""
        params = _params(max_tokens, temperature, stop, seed)
        return await self._agenerate_batch(list(prompts), params)

    async def ascore(self, prompt: Prompt, continuations: Sequence[str]) -> list[ScoredContinuation]:
        """log P(continuation | prompt) for each continuation, in order."""
        from paperlab.errors import LLMError

        if not continuations:
            return []
        if any(not c for c in continuations):
            raise LLMError("score needs non-empty continuations; remove the empty strings")
        return await self._ascore(prompt, list(continuations))

    # -- sync API -----------------------------------------------------------------------
    def generate(self, prompt: Prompt, **kwargs: Any) -> Generation:
        """Synchronous :meth:`agenerate`."""
        return run_sync(self._closing(self.agenerate(prompt, **kwargs)))

    def generate_batch(self, prompts: Sequence[Prompt], **kwargs: Any) -> list[Generation]:
        """Synchronous :meth:`agenerate_batch`."""
        return run_sync(self._closing(self.agenerate_batch(prompts, **kwargs)))

    def score(self, prompt: Prompt, continuations: Sequence[str]) -> list[ScoredContinuation]:
        """Synchronous :meth:`ascore`."""
        return run_sync(self._closing(self.ascore(prompt, continuations)))

    async def _closing(self, coro: Coroutine[Any, Any, T]) -> T:
        # A sync call owns its event loop: release per-loop resources (HTTP clients) before
        # the loop goes away, so no connection outlives it.
        try:
            return await coro
        finally:
            await self._release_loop_resources()

    async def _release_loop_resources(self) -> None:  # noqa: B027 - optional hook
        """Drop resources bound to the running event loop (overridden by HTTP backends)."""

    def close(self) -> None:
        """Synchronous :meth:`aclose`."""
        run_sync(self.aclose())

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"
