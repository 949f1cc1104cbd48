"""What every reranking method shares: the LLM call runner (concurrency limit, bounded
individual retries, cost accounting) and the method registry.

The LLM is anything with paperlab.llm's interface: ``agenerate(prompt, max_tokens=,
temperature=, seed=)`` returning an object with ``text``, ``prompt_tokens`` and
``completion_tokens`` (a plain ``generate`` is run in a worker thread when ``agenerate`` is
absent). Failures surface as :class:`paperlab.errors.LLMError`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from paperlab.errors import LLMError
from paperlab.rerank.config import RerankConfig
from paperlab.rerank.errors import RerankConfigError, RerankLLMError
from paperlab.rerank.types import Passage, Ranking, RerankStats

log = logging.getLogger(__name__)
T = TypeVar("T")


class CallRunner:
    """Sends prompts to the LLM and records their cost.

    Prompts submitted in the same event-loop turn are sent together through
    ``agenerate_batch`` (at most ``concurrency`` per batch), so a local hf model batches the
    groups of all repeats and an HTTP backend keeps them all in flight. A batch that fails is
    split: each of its prompts is retried on its own, ``llm_retries`` times with exponential
    backoff, so one bad request never costs the others.
    """

    def __init__(self, llm: Any, cfg: RerankConfig, stats: RerankStats) -> None:
        self.llm = llm
        self.cfg = cfg
        self.stats = stats
        self._sem = asyncio.Semaphore(cfg.concurrency)
        self._pending: list[tuple[Any, int, asyncio.Future[Any]]] = []
        self._flush_scheduled = False

    def _kwargs(self, max_tokens: int) -> dict[str, Any]:
        return {"max_tokens": max_tokens, "temperature": self.cfg.temperature, "seed": self.cfg.seed}

    async def _send_one(self, prompt: Any, max_tokens: int) -> Any:
        async with self._sem:
            if hasattr(self.llm, "agenerate"):
                return await self.llm.agenerate(prompt, **self._kwargs(max_tokens))
            return await asyncio.to_thread(self.llm.generate, prompt, **self._kwargs(max_tokens))

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        by_budget: dict[int, list[tuple[Any, asyncio.Future[Any]]]] = {}
        for prompt, budget, fut in pending:
            by_budget.setdefault(budget, []).append((prompt, fut))
        for budget, items in by_budget.items():
            for start in range(0, len(items), self.cfg.concurrency):
                asyncio.ensure_future(self._send_batch(items[start : start + self.cfg.concurrency], budget))

    async def _send_batch(self, items: list[tuple[Any, asyncio.Future[Any]]], max_tokens: int) -> None:
        try:
            if len(items) == 1:
                outs = [await self._send_one(items[0][0], max_tokens)]
            elif hasattr(self.llm, "agenerate_batch"):
                async with self._sem:
                    outs = await self.llm.agenerate_batch([p for p, _ in items], **self._kwargs(max_tokens))
            else:
                outs = await asyncio.gather(*(self._send_one(p, max_tokens) for p, _ in items))
        except (LLMError, asyncio.TimeoutError) as e:
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(e)
            return
        except BaseException as e:  # a bug or cancellation: never leave a caller waiting
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(e)
            raise
        for (_, fut), g in zip(items, outs, strict=True):
            if not fut.done():
                fut.set_result(g)

    async def generate(self, prompt: Any, max_tokens: int | None = None) -> str | None:
        """The reply text, or None when the call failed for good and fallbacks are allowed.

        Raises:
            RerankLLMError: the call failed ``llm_retries + 1`` times and ``on_llm_error`` is
                "raise".
        """
        budget = max_tokens or self.cfg.max_tokens
        tries = self.cfg.llm_retries + 1
        last: Exception | None = None
        for attempt in range(tries):
            try:
                if attempt == 0:
                    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                    self._pending.append((prompt, budget, fut))
                    self._schedule_flush()
                    g = await fut
                else:
                    g = await self._send_one(prompt, budget)
            except (LLMError, asyncio.TimeoutError) as e:
                last = e
                if attempt + 1 < tries:
                    self.stats.retries += 1
                    log.warning("LLM call failed (%s); retry %d/%d", e, attempt + 1, tries - 1)
                    await asyncio.sleep(self.cfg.retry_backoff_s * (2**attempt))
                continue
            self.stats.add_generation(getattr(g, "prompt_tokens", 0) or 0,
                                      getattr(g, "completion_tokens", 0) or 0)
            return str(getattr(g, "text", g))
        if self.cfg.on_llm_error == "raise":
            raise RerankLLMError(
                f"LLM call failed {tries} times ({last}); check that the server behind --llm is up, "
                "or set on_llm_error=fallback to keep first-stage order for the affected passages"
            )
        self.stats.failed_calls += 1
        return None


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop
    (a notebook): then it runs on a private loop in a worker thread."""
    try:
        asyncio.get_running_loop()
        running = True
    except RuntimeError:
        running = False
    if not running:  # outside the except block, so errors do not chain onto the RuntimeError
        return asyncio.run(make())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class Method(ABC):
    """A reranking method: passages in, a full ranking with a score each out."""

    name: str = ""
    default_template: str = ""

    def __init__(self, llm: Any, cfg: RerankConfig | None = None) -> None:
        self.llm = llm
        self.cfg = cfg or RerankConfig()

    @abstractmethod
    async def _arank(self, query: str, passages: Sequence[Passage], stats: RerankStats) -> list[float]:
        """Final scores in input order (higher is better)."""

    async def arank(self, query: str, passages: Sequence[Passage]) -> Ranking:
        """Rank ``passages`` for ``query`` (async)."""
        from paperlab.rerank.aggregate import to_ranking

        ids = [p.doc_id for p in passages]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise RerankConfigError(f"doc id {dup!r} appears twice; give every passage a unique id")
        stats = RerankStats()
        t0 = time.perf_counter()
        scores = await self._arank(query, list(passages), stats) if passages else []
        stats.wall_s = time.perf_counter() - t0
        results = to_ranking(ids, scores, [p.text for p in passages])
        assert sorted(r.doc_id for r in results) == sorted(ids)  # the never-drop invariant
        return Ranking(results=results, stats=stats, method=self.name)

    def rank(self, query: str, passages: Sequence[Passage]) -> Ranking:
        """Rank ``passages`` for ``query``."""
        return run_sync(lambda: self.arank(query, passages))


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to the registry under ``cls.name``."""
    if not cls.name or cls.name in METHODS:
        raise RuntimeError(f"method name {cls.name!r} is empty or registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The method class for ``name``; unknown names raise listing the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise RerankConfigError(
            f"unknown rerank method {name!r}; valid: {', '.join(sorted(METHODS))}") from None
