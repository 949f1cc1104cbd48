"""The one interface every backend implements, with sync and async forms.

Backends implement ``_agenerate_batch`` and ``_ascore``, and, when they can read the model's
logits, ``_anext_tokens``. Everything else lives here once: single calls, sync wrappers
(:func:`run_sync`), parameter checking, and the gathering of concurrent single calls into
batches for backends that batch (``gathers_single_calls``).
"""

from __future__ import annotations

import abc
import asyncio
import json
import threading
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from paperlab.llm.types import Generation, GenerationParams, NextTokens, Prompt, ScoredContinuation

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code.

    When called inside a running event loop (a notebook, an async app) the coroutine runs on a
    fresh loop in a worker thread, because the caller's loop cannot be re-entered. Errors are
    re-raised in the caller's thread, unchained.
    """
    try:
        asyncio.get_running_loop()
        running = True
    except RuntimeError:
        running = False
    if not running:  # outside the except block, so errors do not chain onto the RuntimeError
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _params(
    max_tokens: int, temperature: float, stop: str | Sequence[str] | None, seed: int | None,
    schema: Mapping[str, Any] | None = None,
) -> GenerationParams:
    from paperlab.errors import LLMError

    stops: tuple[str, ...] = (stop,) if isinstance(stop, str) else tuple(stop or ())
    schema_json = None
    if schema is not None:
        if not isinstance(schema, Mapping):
            raise LLMError(f"schema must be a JSON schema object (a dict), got {type(schema).__name__}")
        # key order kept: a schema's properties order is the order the reply writes its keys in
        schema_json = json.dumps(schema)
    return GenerationParams(max_tokens=max_tokens, temperature=temperature, stop=stops, seed=seed,
                            schema=schema_json)


def _per_prompt(value: str | Sequence[str], n: int, what: str) -> list[str]:
    from paperlab.errors import LLMError

    if isinstance(value, str):
        return [value] * n
    out = list(value)
    if len(out) != n:
        raise LLMError(f"{what} has {len(out)} entries for {n} prompts; give one string or one per prompt")
    return out


@dataclass
class _Waiting:
    prompt: Prompt
    params: GenerationParams
    future: asyncio.Future[Generation]


class LLM(abc.ABC):
    """A language model behind one of the registered backends (see :func:`load_llm`).

    Attributes:
        spec: the spec string it was loaded from.
        max_concurrency: how many requests the async batch forms keep in flight at once.
        supports_next_tokens: whether :meth:`next_tokens` reads full distributions (the
            model's logits: local backends), with any forced text and the tokenizer.
        supports_top_logprobs: whether :meth:`next_tokens` works from a server's top log-
            probabilities (HTTP): candidates outside the top ones read as -inf, and a forced
            text must be one of the candidates.
        gathers_single_calls: concurrent :meth:`agenerate` calls on one event loop are
            gathered into :meth:`_agenerate_batch` calls of up to ``max_concurrency`` prompts
            (for backends where batching is where throughput comes from: one local model).
    """

    spec: str
    max_concurrency: int
    supports_next_tokens: bool = False
    supports_top_logprobs: bool = False
    gathers_single_calls: bool = False

    def __init__(self, spec: str, max_concurrency: int = 8) -> None:
        self.spec = spec
        self.max_concurrency = max(1, int(max_concurrency))
        self._waiting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Waiting]] = (
            weakref.WeakKeyDictionary()
        )
        self._drainers: set[asyncio.Task[None]] = set()

    # -- what a backend implements ------------------------------------------------------
    @abc.abstractmethod
    async def _agenerate_batch(
        self, prompts: list[Prompt], params: GenerationParams
    ) -> list[Generation]:
        """Generate for every prompt, in order, respecting ``self.max_concurrency``."""

    @abc.abstractmethod
    async def _ascore(self, prompt: Prompt, continuations: list[str]) -> list[ScoredContinuation]:
        """Score each continuation after ``prompt``."""

    async def _anext_tokens(self, prompts: list[Prompt], candidates: list[str], prefills: list[str],
                            forced: list[str]) -> list[NextTokens]:
        """Next-token distributions (see :meth:`anext_tokens`); local backends override it."""
        from paperlab.errors import LLMError

        raise LLMError(
            f"{self.spec} returns no next-token distributions (they need the model's logits or a "
            "server's top_logprobs); use an hf: backend, smollm2 or an openai: server"
        )

    def tokenize(self, text: str) -> list[int]:
        """The token ids of ``text`` (no special tokens added); local backends override it."""
        from paperlab.errors import LLMError

        raise LLMError(f"{self.spec} does not expose its tokenizer; use an hf: backend or smollm2")

    @property
    def context_length(self) -> int | None:
        """The model's context window in tokens, when the backend knows it."""
        return None

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
        schema: Mapping[str, Any] | None = None,
    ) -> Generation:
        """Generate a completion for one prompt (raw text or chat messages).

        ``schema`` (a JSON schema) asks for a reply that is one JSON value matching it: local
        backends constrain decoding to it; HTTP backends send it as ``response_format`` and
        fall back to plain generation when the server refuses it (the caller parses).
        """
        params = _params(max_tokens, temperature, stop, seed, schema)
        if not self.gathers_single_calls:
            return (await self._agenerate_batch([prompt], params))[0]
        return await self._gathered(prompt, params)

    async def agenerate_batch(
        self,
        prompts: Sequence[Prompt],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> list[Generation]:
        """Generate for many prompts, at most ``max_concurrency`` at a time; results in order."""
        params = _params(max_tokens, temperature, stop, seed, schema)
        return await self._agenerate_batch(list(prompts), params)

    async def ascore(self, prompt: Prompt, continuations: Sequence[str]) -> list[ScoredContinuation]:
        """log P(continuation | prompt) for each continuation, in order."""
        from paperlab.errors import LLMError

        if not continuations:
            return []
        if any(not c for c in continuations):
            raise LLMError("score needs non-empty continuations; remove the empty strings")
        return await self._ascore(prompt, list(continuations))

    async def anext_tokens(
        self,
        prompts: Sequence[Prompt],
        candidates: Sequence[str],
        *,
        prefill: str | Sequence[str] = "",
        forced: str | Sequence[str] = "",
    ) -> list[NextTokens]:
        """Next-token distributions along each prompt, read at ``candidates``; batched.

        Each prompt is rendered as :meth:`generate` would (chat messages through the model's
        chat template, ready for the assistant's reply), then ``prefill`` is appended: text the
        reply is made to begin with. The distribution after that is the first entry; each token
        of ``forced`` is then fed in (teacher forcing) and the distribution after it follows.
        ``prefill`` and ``forced`` are one string for all prompts or one per prompt.

        Every candidate must be exactly one token for this model. Local backends keep the key/
        value cache of prompts seen before and run only what is new (a prompt that extends an
        earlier one, or prompts of one batch sharing a prefix, pay for their shared part once).

        Raises:
            paperlab.errors.LLMError: the backend has no logits (HTTP), a candidate is not one
                token, or a prompt is empty.
        """
        from paperlab.errors import LLMError

        if not candidates:
            raise LLMError("next_tokens needs at least one candidate token")
        if not prompts:
            return []
        n = len(prompts)
        return await self._anext_tokens(list(prompts), list(candidates),
                                        _per_prompt(prefill, n, "prefill"), _per_prompt(forced, n, "forced"))

    # -- gathering concurrent single calls into batches ---------------------------------
    async def _gathered(self, prompt: Prompt, params: GenerationParams) -> Generation:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Generation] = loop.create_future()
        queue = self._waiting.get(loop)
        if queue is None:  # no drain task on this loop: start one
            queue = self._waiting[loop] = []
            task = loop.create_task(self._drain(loop, queue))
            self._drainers.add(task)  # hold a reference until it finishes
            task.add_done_callback(self._drainers.discard)
        queue.append(_Waiting(prompt, params, fut))
        return await fut

    async def _drain(self, loop: asyncio.AbstractEventLoop, queue: list[_Waiting]) -> None:
        """Run queued single requests in batches of equal parameters until the queue is empty."""
        await asyncio.sleep(0)  # let every coroutine scheduled in this tick enqueue first
        while queue:
            params = queue[0].params
            group = [w for w in queue if w.params == params][: self.max_concurrency]
            for w in group:
                queue.remove(w)
            try:
                results = await self._agenerate_batch([w.prompt for w in group], params)
            except Exception as exc:  # every waiter of the failed batch gets the error
                for w in group:
                    if not w.future.done():
                        w.future.set_exception(exc)
                continue
            for w, res in zip(group, results, strict=True):
                if not w.future.done():
                    w.future.set_result(res)
            await asyncio.sleep(0)  # requests that arrived meanwhile join the next batch
        del self._waiting[loop]

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

    def next_tokens(self, prompts: Sequence[Prompt], candidates: Sequence[str], *,
                    prefill: str | Sequence[str] = "", forced: str | Sequence[str] = "") -> list[NextTokens]:
        """Synchronous :meth:`anext_tokens`."""
        return run_sync(self._closing(self.anext_tokens(prompts, candidates, prefill=prefill, forced=forced)))

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
