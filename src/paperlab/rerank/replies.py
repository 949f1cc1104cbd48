"""A reply cache on disk and a JSONL log of raw replies, as a wrapper around any LLM.

:class:`RecordingLLM` sits between a method and the model. ``agenerate`` and
``agenerate_batch`` look each prompt up in the cache first (key: sha256 over the model spec,
the prompt and the generation parameters, so a different budget or temperature is a different
entry) and send only the misses, in one batch. Every reply, fresh or cached, is appended to
the log when one is given. It is itself an :class:`~paperlab.llm.LLM`: scores and next-token
distributions pass through to the wrapped model, so logit mode is neither cached nor logged.

The cache is one small JSON file per entry under ``paperlab.io.cache_dir("rerank-replies")``,
written atomically, so concurrent runs and a crash never leave a torn entry.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from paperlab.io import atomic_write_text, cache_dir
from paperlab.llm import LLM
from paperlab.llm.types import Generation, GenerationParams, NextTokens, Prompt, ScoredContinuation
from paperlab.rerank.errors import RerankDataError


def reply_key(model: str, prompt: Any, params: dict[str, Any]) -> str:
    """The cache key of one call: sha256 over (model, prompt, generation parameters)."""
    blob = json.dumps({"model": model, "prompt": prompt, "params": params}, sort_keys=True,
                      ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReplyCache:
    """One JSON file per reply under ``root`` (default: cache_dir("rerank-replies"))."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir("rerank-replies")

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Generation | None:
        """The cached reply, or None (an unreadable entry counts as a miss)."""
        try:
            row = json.loads(self._path(key).read_text(encoding="utf-8"))
            return Generation(str(row["text"]), int(row["prompt_tokens"]),
                                    int(row["completion_tokens"]), str(row.get("finish_reason", "stop")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, gen: Any) -> None:
        """Store a reply (atomic write)."""
        row = {"text": str(gen.text), "prompt_tokens": int(getattr(gen, "prompt_tokens", 0) or 0),
               "completion_tokens": int(getattr(gen, "completion_tokens", 0) or 0),
               "finish_reason": str(getattr(gen, "finish_reason", "stop"))}
        try:
            atomic_write_text(self._path(key), json.dumps(row, ensure_ascii=False))
        except OSError as e:
            raise RerankDataError(f"cannot write the reply cache under {self.root} ({e}); "
                                  "free disk space or set $PAPERLAB_CACHE") from None


class ReplyLog:
    """Appends one JSON object per reply to a file (flushed per line, so a crash keeps it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        except OSError as e:
            raise RerankDataError(f"cannot open the reply log {self.path} ({e}); pass a writable path") from None

    def write(self, model: str, prompt: Any, params: dict[str, Any], gen: Any, cached: bool) -> None:
        """Log one reply with its prompt, parameters and token counts."""
        row = {"time": round(time.time(), 3), "model": model, "cached": cached, "params": params,
               "prompt": prompt, "reply": str(gen.text),
               "prompt_tokens": getattr(gen, "prompt_tokens", None),
               "completion_tokens": getattr(gen, "completion_tokens", None),
               "finish_reason": getattr(gen, "finish_reason", None)}
        line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


class RecordingLLM(LLM):
    """An :class:`~paperlab.llm.LLM` in front of another: generations go through the reply
    cache and log; scores and next-token distributions pass straight through.

    Args:
        llm: the wrapped model.
        cache: a :class:`ReplyCache`, or None for no caching.
        log: a :class:`ReplyLog`, or None for no log.
    """

    def __init__(self, llm: LLM, cache: ReplyCache | None = None, log: ReplyLog | None = None) -> None:
        super().__init__(llm.spec, llm.max_concurrency)
        self.inner = llm
        self.cache = cache
        self.log = log
        self.hits = 0
        self.misses = 0
        self.supports_next_tokens = llm.supports_next_tokens
        self.supports_top_logprobs = llm.supports_top_logprobs
        # the wrapped model gathers concurrent single calls itself; gathering here as well
        # would only add a queue in front of its queue
        self.gathers_single_calls = False

    @property
    def model_name(self) -> str:
        """The wrapped model's spec (part of every cache key)."""
        return self.inner.spec

    async def _agenerate_batch(self, prompts: list[Prompt], params: GenerationParams) -> list[Generation]:
        # cached prompts are answered from disk, the rest sent to the model together
        key_params = asdict(params)
        keys = [reply_key(self.model_name, p, key_params) for p in prompts]
        out: list[Generation | None] = [self.cache.get(k) if self.cache else None for k in keys]
        todo = [i for i, g in enumerate(out) if g is None]
        self.hits += len(prompts) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = await self.inner.agenerate_batch(
                [prompts[i] for i in todo], max_tokens=params.max_tokens,
                temperature=params.temperature, stop=params.stop or None, seed=params.seed,
                schema=json.loads(params.schema) if params.schema else None)
            for i, g in zip(todo, fresh, strict=True):
                out[i] = g
                if self.cache is not None:
                    self.cache.put(keys[i], g)
        done = [g for g in out if g is not None]
        if self.log is not None:
            fresh_ids = set(todo)
            for i, (p, g) in enumerate(zip(prompts, done, strict=True)):
                self.log.write(self.model_name, p, key_params, g, cached=i not in fresh_ids)
        return done

    async def _ascore(self, prompt: Prompt, continuations: list[str]) -> list[ScoredContinuation]:
        return await self.inner.ascore(prompt, continuations)

    async def _anext_tokens(self, prompts: list[Prompt], candidates: list[str], prefills: list[str],
                            forced: list[str]) -> list[NextTokens]:
        return await self.inner.anext_tokens(prompts, candidates, prefill=prefills, forced=forced)

    def tokenize(self, text: str) -> list[int]:
        return self.inner.tokenize(text)

    @property
    def context_length(self) -> int | None:
        return self.inner.context_length

    async def aclose(self) -> None:
        await self.inner.aclose()
        if self.log is not None:
            self.log.close()

    def counts(self) -> dict[str, int]:
        """Cache hits and misses so far."""
        return {"hits": self.hits, "misses": self.misses}


def wrap_llm(llm: LLM, cache: bool | str | Path = False, log_replies: str | Path | None = None) -> LLM:
    """``llm`` wrapped in a :class:`RecordingLLM` when caching or logging is asked for.

    Args:
        cache: True for the default cache directory, a path for another one, False for none.
        log_replies: a JSONL file to append every reply to.
    """
    if not cache and log_replies is None:
        return llm
    store = ReplyCache(None if cache is True else cache) if cache else None
    return RecordingLLM(llm, store, ReplyLog(log_replies) if log_replies is not None else None)
