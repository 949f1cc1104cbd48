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
    """Sends prompts to the LLM with at most ``concurrency`` in flight, retrying each failed
    call on its own (``llm_retries`` times, exponential backoff) and recording its cost."""

    def __init__(self, llm: Any, cfg: RerankConfig, stats: RerankStats) -> None:
        self.llm = llm
        self.cfg = cfg
        self.stats = stats
        self._sem = asyncio.Semaphore(cfg.concurrency)

    async def _send(self, prompt: Any, max_tokens: int) -> Any:
        kwargs = {"max_tokens": max_tokens, "temperature": self.cfg.temperature, "seed": self.cfg.seed}
        if hasattr(self.llm, "agenerate"):
            return await self.llm.agenerate(prompt, **kwargs)
        return await asyncio.to_thread(self.llm.generate, prompt, **kwargs)

    async def generate(self, prompt: Any, max_tokens: int | None = None) -> str | None:
        """The reply text, or None when the call failed for good and fallbacks are allowed.

        Raises:
            RerankLLMError: the call failed ``llm_retries + 1`` times and ``on_llm_error`` is
                "raise".
        """
        tries = self.cfg.llm_retries + 1
        last: Exception | None = None
        for attempt in range(tries):
            try:
                async with self._sem:
                    g = await self._send(prompt, max_tokens or self.cfg.max_tokens)
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
        self.stats.fallbacks["llm_error"] += 1
        return None


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop
    (a notebook): then it runs on a private loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
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
        results = to_ranking(ids, scores)
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
