"""The one entry point: ``rank(query, docs)`` and the reusable :class:`Reranker`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from paperlab.rerank.config import RerankConfig, load_config
from paperlab.rerank.errors import RerankDataError
from paperlab.rerank.methods import get_method
from paperlab.rerank.methods.base import Method
from paperlab.rerank.types import Passage, Ranking

if TYPE_CHECKING:
    from paperlab.llm import LLM

DocLike = str | Passage | Mapping[str, Any]


def to_passages(docs: Iterable[DocLike]) -> list[Passage]:
    """Normalise docs: strings (ids "0", "1", ...), Passages, or mappings with an id
    (``id``/``_id``/``doc_id``/``docid``), ``text`` (plus optional ``title``) and optional
    ``score``.

    Raises:
        RerankDataError: a mapping lacks a text or an id.
    """
    out: list[Passage] = []
    for i, d in enumerate(docs):
        if isinstance(d, Passage):
            out.append(d)
        elif isinstance(d, str):
            out.append(Passage(str(i), d))
        elif isinstance(d, Mapping):
            doc_id = next((d[k] for k in ("id", "_id", "doc_id", "docid") if k in d), None)
            if doc_id is None or "text" not in d:
                raise RerankDataError(
                    f"doc #{i} needs an 'id' (or _id/doc_id) and a 'text' field; got keys {sorted(d)}")
            text = str(d["text"])
            if d.get("title"):
                text = f"{d['title']}. {text}"
            score = d.get("score")
            out.append(Passage(str(doc_id), text, None if score is None else float(score)))
        else:
            raise RerankDataError(f"doc #{i} is a {type(d).__name__}; pass str, Passage or a mapping")
    return out


def _load_llm(llm: LLM | str, concurrency: int) -> LLM:
    if isinstance(llm, str):
        from paperlab.llm import load_llm

        return load_llm(llm, max_concurrency=concurrency)
    return llm


class Reranker:
    """A configured reranker: build once, call :meth:`rank` per query.

    Args:
        llm: an LLM object from ``paperlab.llm`` or a spec string for ``load_llm``
            ("smollm2", "hf:/dir", "openai:http://host:port/v1#model").
        method: a registry name: grouprank, pointwise, listwise.
        config: a :class:`RerankConfig`; keyword overrides are applied on top.
    """

    def __init__(self, llm: LLM | str = "smollm2", method: str = "grouprank",
                 config: RerankConfig | None = None, **overrides: Any) -> None:
        cfg = config or RerankConfig()
        if overrides:
            cfg = load_config(None, **{**cfg.model_dump(), **overrides})
        self.config = cfg
        self.method_cls = get_method(method)
        self.llm = _load_llm(llm, cfg.concurrency)
        self.method: Method = self.method_cls(self.llm, cfg)

    def rank(self, query: str, docs: Iterable[DocLike]) -> Ranking:
        """Rank ``docs`` for ``query``: every doc once, best first, each with a score."""
        return self.method.rank(query, to_passages(docs))

    async def arank(self, query: str, docs: Iterable[DocLike]) -> Ranking:
        """Async :meth:`rank` (for pipelines that already run an event loop)."""
        return await self.method.arank(query, to_passages(docs))


def rank(query: str, docs: Iterable[DocLike], llm: LLM | str = "smollm2", method: str = "grouprank",
         **config: Any) -> Ranking:
    """Rerank ``docs`` for ``query`` with one call.

    Returns:
        A :class:`Ranking`: ``results`` (doc_id, score, rank) for every input doc, best first,
        and ``stats`` (LLM calls, tokens, wall time, repairs, fallbacks).
    """
    return Reranker(llm, method, **config).rank(query, docs)
