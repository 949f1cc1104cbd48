"""The one entry point: ``rank(query, docs)`` and the reusable :class:`Reranker`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperlab.rerank.config import RerankConfig, load_config
from paperlab.rerank.errors import RerankConfigError, RerankDataError
from paperlab.rerank.methods import get_method
from paperlab.rerank.methods.base import Method
from paperlab.rerank.types import Passage, Ranking

if TYPE_CHECKING:
    from paperlab.llm import LLM

DocLike = str | Passage | tuple[Any, ...] | Mapping[str, Any]


def _score(value: object, i: int) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RerankDataError(f"doc #{i} has a first-stage score {value!r} that is no number; "
                              "pass a number or leave it out") from None


def to_passages(docs: Iterable[DocLike]) -> list[Passage]:
    """Normalise docs: strings (ids "0", "1", ...), ``(id, text)`` or ``(id, text, score)``
    tuples, Passages, or mappings with an id (``id``/``_id``/``doc_id``/``docid``), ``text``
    (plus optional ``title``) and optional ``score``.

    Raises:
        RerankDataError: a doc lacks a text or an id, or has a score that is no number.
    """
    if isinstance(docs, str | bytes):
        raise RerankDataError("docs must be a list of docs, not one string; wrap it: [text]")
    out: list[Passage] = []
    for i, d in enumerate(docs):
        if isinstance(d, Passage):
            out.append(d)
        elif isinstance(d, str):
            out.append(Passage(str(i), d))
        elif isinstance(d, tuple):
            if len(d) not in (2, 3) or not isinstance(d[1], str):
                raise RerankDataError(f"doc #{i} is a tuple of {len(d)}; pass (id, text) or (id, text, score)")
            out.append(Passage(str(d[0]), d[1], _score(d[2], i) if len(d) == 3 else None))
        elif isinstance(d, Mapping):
            doc_id = next((d[k] for k in ("id", "_id", "doc_id", "docid") if k in d), None)
            if doc_id is None or "text" not in d:
                raise RerankDataError(
                    f"doc #{i} needs an 'id' (or _id/doc_id) and a 'text' field; got keys {sorted(d)}")
            text = str(d["text"])
            if d.get("title"):
                text = f"{d['title']}. {text}"
            out.append(Passage(str(doc_id), text, _score(d.get("score"), i)))
        else:
            raise RerankDataError(
                f"doc #{i} is a {type(d).__name__}; pass str, (id, text), Passage or a mapping")
    return out


def resolve_config(cfg: RerankConfig, method: str, llm: LLM | str) -> RerankConfig:
    """``cfg`` with its profile applied for where ``llm`` (an object or a spec string) runs."""
    from paperlab.rerank.config import model_location, resolve_profile

    get_method(method)  # a bad name fails before anything is loaded
    return resolve_profile(cfg, method, model_location(llm))


def build_method(llm: LLM | str, method: str, cfg: RerankConfig, *, cache: bool | str | Path = False,
                 log_replies: str | Path | None = None, chat_template: str | None = None) -> Method:
    """The one way a method is built (``Reranker``, ``rerank run``, ``rerank eval``): the model
    loaded from its spec (or taken as given), wrapped in the reply cache and log when asked,
    the config's profile applied for where it runs.

    Args:
        llm: an LLM object or a spec string for :func:`paperlab.llm.load_llm`.
        method: a registry name.
        cfg: the config (fields the user left unset are sized by its profile).
        cache: cache replies on disk: True for the default directory, or a directory.
        log_replies: append every raw reply to this JSONL file.
        chat_template: for an ``openai:`` spec, the local model whose chat template renders
            logit-mode prompts (see :class:`paperlab.llm.openai_backend.OpenAICompatibleLLM`).
    """
    from paperlab.rerank.replies import wrap_llm

    cfg = resolve_config(cfg, method, llm)
    if isinstance(llm, str) and cfg.mode == "first-stage":  # runs no model: load none
        from paperlab.rerank.methods.base import Unloaded

        llm = Unloaded(llm)
    if isinstance(llm, str):
        from paperlab.llm import load_llm

        options: dict[str, Any] = {"max_concurrency": cfg.concurrency}
        if chat_template is not None:
            if not llm.startswith("openai:"):
                raise RerankConfigError("--chat-template is for openai: servers; a model in this "
                                        "process renders its own template")
            options["chat_template"] = chat_template
        llm = load_llm(llm, **options)
    return get_method(method)(wrap_llm(llm, cache, log_replies), cfg)


def _check_query(query: str) -> None:
    if not isinstance(query, str) or not query.strip():
        raise RerankDataError("the query is empty; pass the text to rank the docs for")


class Reranker:
    """A configured reranker: build once, call :meth:`rank` per query.

    Args:
        llm: an LLM object from ``paperlab.llm`` or a spec string for ``load_llm``
            ("smollm2", "hf:/dir", "openai:http://host:port/v1#model").
        method: a registry name: grouprank, pointwise, listwise.
        config: a :class:`RerankConfig`; keyword overrides are applied on top. Fields left
            unset are sized by the config's ``profile`` for where the model runs (see
            ``config.resolve_profile``): the packaged model keeps the first-stage order unless
            ``mode`` is set; another model in process without a GPU gets "cpu-small".
        cache: cache replies on disk, keyed by (model, prompt, parameters): True for
            ``cache_dir("rerank-replies")``, or a directory.
        log_replies: append every raw reply, with its prompt, to this JSONL file.
        chat_template: see :func:`build_method`.
    """

    def __init__(self, llm: LLM | str = "smollm2", method: str = "grouprank",
                 config: RerankConfig | None = None, *, cache: bool | str | Path = False,
                 log_replies: str | Path | None = None, chat_template: str | None = None,
                 **overrides: Any) -> None:
        cfg = config or RerankConfig()
        if overrides:  # keep what was set apart from what was defaulted (profiles fill the latter)
            cfg = load_config(None, **{**cfg.model_dump(exclude_unset=True), **overrides})
        self.method: Method = build_method(llm, method, cfg, cache=cache, log_replies=log_replies,
                                           chat_template=chat_template)
        self.method_cls = type(self.method)
        self.llm = self.method.llm
        self.config = self.method.cfg

    def rank(self, query: str, docs: Iterable[DocLike]) -> Ranking:
        """Rank ``docs`` for ``query``: every doc once, best first, each with a score.

        Raises:
            RerankDataError: the query is empty or a doc is malformed.
        """
        _check_query(query)
        return self.method.rank(query, to_passages(docs))

    async def arank(self, query: str, docs: Iterable[DocLike]) -> Ranking:
        """Async :meth:`rank` (for pipelines that already run an event loop)."""
        _check_query(query)
        return await self.method.arank(query, to_passages(docs))


def rank(query: str, docs: Iterable[DocLike], llm: LLM | str = "smollm2", method: str = "grouprank",
         **config: Any) -> Ranking:
    """Rerank ``docs`` for ``query`` with one call.

        >>> for r in rank("capital of France", [("a", "Paris is ..."), ("b", "Bananas ...")]):
        ...     print(r.rank, r.doc_id, round(r.score, 2), r.text)

    ``docs`` are strings, (id, text[, score]) tuples, mappings or :class:`Passage` objects;
    ``config`` holds :class:`RerankConfig` fields plus ``cache`` and ``log_replies``.

    Returns:
        A :class:`Ranking`: ``results`` (doc_id, score, rank) for every input doc, best first,
        and ``stats`` (LLM calls, tokens, wall time, repairs, fallbacks).
    """
    return Reranker(llm, method, **config).rank(query, docs)
