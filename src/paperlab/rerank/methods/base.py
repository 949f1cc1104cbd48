"""What every reranking method shares: the LLM call runner (concurrency limit, bounded
individual retries, cost accounting) and the method registry.

The model is a :class:`paperlab.llm.LLM`. Concurrent calls of one rank go out together: the LLM
gathers them into batched forward passes (one local model) or keeps them in flight (HTTP).
Failures surface as :class:`paperlab.errors.LLMError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from paperlab.errors import LLMError, LLMRefusedError
from paperlab.llm import LLM, Generation, Prompt, run_sync
from paperlab.rerank.config import RerankConfig
from paperlab.rerank.errors import RerankConfigError, RerankLLMError
from paperlab.rerank.types import Passage, Ranking, RerankStats

log = logging.getLogger(__name__)


class CallRunner:
    """Sends prompts to the LLM and records their cost.

    At most ``concurrency`` calls are in flight; :meth:`paperlab.llm.LLM.agenerate` gathers
    concurrent calls into batches where the backend batches. A call that fails is retried on
    its own, ``llm_retries`` times with exponential backoff, so one bad request never costs
    the others; a request the server refused as invalid (4xx) is not sent again.
    """

    def __init__(self, llm: LLM, cfg: RerankConfig, stats: RerankStats) -> None:
        self.llm = llm
        self.cfg = cfg
        self.stats = stats
        self._sem = asyncio.Semaphore(cfg.concurrency)

    async def _send(self, prompt: Prompt, max_tokens: int, schema: Mapping[str, Any] | None) -> Generation:
        async with self._sem:
            return await self.llm.agenerate(prompt, max_tokens=max_tokens, temperature=self.cfg.temperature,
                                            seed=self.cfg.seed, schema=schema)

    async def generate(self, prompt: Prompt, max_tokens: int | None = None,
                       schema: Mapping[str, Any] | None = None) -> str | None:
        """The reply text, or None when the call failed for good and fallbacks are allowed.

        ``schema``: a JSON schema the reply must match (see :meth:`paperlab.llm.LLM.agenerate`).

        Raises:
            RerankLLMError: the call failed ``llm_retries + 1`` times and ``on_llm_error`` is
                "raise".
        """
        budget = max_tokens or self.cfg.max_tokens
        tries = self.cfg.llm_retries + 1
        last: Exception | None = None
        for attempt in range(tries):
            try:
                g = await self._send(prompt, budget, schema)
            except (LLMError, asyncio.TimeoutError) as e:
                last = e
                if isinstance(e, LLMRefusedError):  # refused as invalid: the same request would be too
                    break
                if attempt + 1 < tries:
                    self.stats.retries += 1
                    log.warning("LLM call failed (%s); retry %d/%d", e, attempt + 1, tries - 1)
                    await asyncio.sleep(self.cfg.retry_backoff_s * (2**attempt))
                continue
            self.stats.add_generation(g.prompt_tokens or 0, g.completion_tokens or 0)
            return str(g.text)
        if self.cfg.on_llm_error == "raise" and isinstance(last, LLMRefusedError):
            raise RerankLLMError(str(last))  # the refusal names its fix; the server is up
        if self.cfg.on_llm_error == "raise":
            raise RerankLLMError(
                f"LLM call failed {tries} times ({last}); check that the server behind --llm is up, "
                "or set on_llm_error=fallback to keep first-stage order for the affected passages"
            )
        self.stats.failed_calls += 1
        return None


class Unloaded(LLM):
    """The model of a method that runs none (``mode="first-stage"``): its spec, never loaded."""

    async def _agenerate_batch(self, prompts: list[Prompt], params: Any) -> list[Generation]:
        raise LLMError(f"{self.spec} was not loaded (mode first-stage runs no model)")

    async def _ascore(self, prompt: Prompt, continuations: list[str]) -> Any:
        raise LLMError(f"{self.spec} was not loaded (mode first-stage runs no model)")


class Method(ABC):
    """A reranking method: passages in, a full ranking with a score each out."""

    name: str = ""
    default_template: str = ""

    def __init__(self, llm: LLM, cfg: RerankConfig | None = None) -> None:
        self.llm = llm
        self.cfg = cfg or RerankConfig()

    @abstractmethod
    async def _arank(self, query: str, passages: Sequence[Passage], stats: RerankStats) -> list[float]:
        """Final scores in input order (higher is better)."""

    def _scores(self, passages: Sequence[Passage], observations: Sequence[tuple[int, float]],
                stats: RerankStats) -> list[float]:
        """Final scores from (passage index, 0-10 score) observations: mean, fusion, first-stage
        fallback (:func:`aggregate_scores`), with the ledger's counts and flat-score check."""
        from paperlab.rerank.aggregate import aggregate_scores, model_means

        scores, scored = aggregate_scores(len(passages), observations,
                                          [p.first_stage_score for p in passages], self.cfg.fusion_weight)
        stats.passages += len(passages)
        stats.model_scored += sum(scored)
        stats.note_spread(model_means(len(passages), observations))
        return scores

    async def arank(self, query: str, passages: Sequence[Passage]) -> Ranking:
        """Rank ``passages`` for ``query`` (async)."""
        from paperlab.rerank.aggregate import to_ranking

        ids = [p.doc_id for p in passages]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise RerankConfigError(f"doc id {dup!r} appears twice; give every passage a unique id")
        stats = RerankStats()
        t0 = time.perf_counter()
        if self.cfg.mode == "first-stage":  # no model run: the first stage's order, counted
            from paperlab.rerank.aggregate import first_stage_prior

            scores = first_stage_prior([p.first_stage_score for p in passages])
            stats.passages, stats.first_stage_only = len(passages), 1
        else:
            scores = await self._arank(query, list(passages), stats) if passages else []
        stats.wall_s = time.perf_counter() - t0
        results = to_ranking(ids, scores, [p.text for p in passages])
        assert sorted(r.doc_id for r in results) == sorted(ids)  # the never-drop invariant
        return Ranking(results=results, stats=stats, method=self.name)

    def rank(self, query: str, passages: Sequence[Passage]) -> Ranking:
        """Rank ``passages`` for ``query``."""
        return run_sync(self.arank(query, passages))


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
