"""``hf:<path>[#<file.gguf>]``: a local transformers model (safetensors directory or GGUF file).

Generation is batched: prompts are sorted by length, left-padded, generated together in chunks
of ``batch_size``, and returned in the caller's order. Scoring runs prompt + continuation
through the model once per continuation batch. Next-token distributions
(:meth:`LLM.next_tokens`) run over a cache of prompt prefixes (:mod:`paperlab.llm.kvcache`). The
model runs on CUDA when present, else CPU. One lock serialises access to the model; the async
forms run it in a worker thread so an event loop stays responsive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any

from paperlab.errors import LLMError
from paperlab.llm.base import LLM
from paperlab.llm.kvcache import PrefixCache, Row, forward_rows
from paperlab.llm.types import Generation, GenerationParams, NextTokens, Prompt, ScoredContinuation

log = logging.getLogger(__name__)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class HFLocalLLM(LLM):
    """A transformers causal LM in this process.

    Args:
        spec: the spec string, for messages.
        path: a model directory (config.json + weights) or a GGUF file / directory holding one.
        gguf_file: the GGUF file name inside ``path`` when ``path`` is a directory.
        batch_size: prompts per forward batch in generation and scoring.
        device: "cuda", "cpu", or None for CUDA when present.
        prefix_cache_mb: memory the key/value cache of earlier prompts may hold (next_tokens).
    """

    supports_next_tokens = True
    gathers_single_calls = True  # concurrent single calls become one batched forward

    def __init__(
        self,
        spec: str,
        path: str | os.PathLike[str],
        gguf_file: str | None = None,
        *,
        batch_size: int = 8,
        device: str | None = None,
        max_concurrency: int = 8,
        prefix_cache_mb: int = 1024,
    ) -> None:
        super().__init__(spec, max_concurrency=max_concurrency)
        p = Path(path).expanduser()
        if p.is_file() and p.suffix == ".gguf":
            p, gguf_file = p.parent, p.name
        if not p.exists():
            raise LLMError(f"model path {p} does not exist; give a model directory or a .gguf file")
        if gguf_file is None and not (p / "config.json").is_file():
            raise LLMError(
                f"{p} has no config.json; give a transformers model directory, or name the GGUF "
                "file as hf:<dir>#<file.gguf>"
            )
        if gguf_file is not None and not (p / gguf_file).is_file():
            raise LLMError(f"GGUF file {p / gguf_file} does not exist")
        self.path = p
        self.gguf_file = gguf_file
        self.device = device or _device()
        self._setup(batch_size, prefix_cache_mb)
        self.model, self.tokenizer = self._load()

    def _setup(self, batch_size: int, prefix_cache_mb: int) -> None:
        self.batch_size = max(1, int(batch_size))
        self._lock = threading.Lock()
        self.prefix_cache = PrefixCache(max(0, int(prefix_cache_mb)) * 2**20)
        #: forward batches run by generation so far (a statistic for benchmarks and tests)
        self.generate_batches = 0
        self._ll_tokenizer: Any = None  # built on the first schema-constrained call
        self._grammars: dict[str, str] = {}

    @classmethod
    def from_model(cls, spec: str, model: Any, tokenizer: Any, *, batch_size: int = 8,
                   max_concurrency: int = 8, prefix_cache_mb: int = 1024) -> HFLocalLLM:
        """Wrap a causal LM and tokenizer already in memory (a model just trained, say).

        The model stays on its device and is put in eval mode.
        """
        self = cls.__new__(cls)
        LLM.__init__(self, spec, max_concurrency=max_concurrency)
        self.path = Path(str(getattr(model, "name_or_path", "") or "."))
        self.gguf_file = None
        params = getattr(model, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        self.device = str(first.device) if first is not None else "cpu"
        self._setup(batch_size, prefix_cache_mb)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer = model.eval(), tokenizer
        return self

    def _load(self) -> tuple[Any, Any]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our CLI draws its own progress; keep stderr clean
        kw: dict[str, Any] = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        if not self.gguf_file and '"instella"' in (self.path / "config.json").read_text():
            import paperlab.instella  # noqa: F401 - registers model_type "instella" natively
        try:
            tok = AutoTokenizer.from_pretrained(self.path, **kw)
            model = AutoModelForCausalLM.from_pretrained(self.path, **kw)
        except (OSError, ValueError) as exc:
            raise LLMError(f"could not load a causal LM from {self.path}: {exc}") from None
        model.eval()
        model.to(self.device)  # type: ignore[arg-type]  # transformers types .to() oddly
        tok.padding_side = "left"  # generation continues from the right edge of every row
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return model, tok

    # -- prompt rendering ---------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """The text the model sees: raw prompts as is, chat messages through the chat template."""
        if isinstance(prompt, str):
            return prompt
        if not getattr(self.tokenizer, "chat_template", None):
            raise LLMError(f"{self.path} has no chat template; pass a raw text prompt instead")
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    # -- generation ---------------------------------------------------------------------
    def generate_batch_sync(self, prompts: list[Prompt], params: GenerationParams) -> list[Generation]:
        """Batched generation in this thread (the async forms call it in a worker thread)."""
        import torch

        texts = [self.render(p) for p in prompts]
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        out: list[Generation | None] = [None] * len(texts)
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                self.generate_batches += 1
                for i, g in zip(idx, self._generate_chunk([texts[i] for i in idx], params), strict=True):
                    out[i] = g
        return [g for g in out if g is not None]

    def _generate_chunk(self, texts: list[str], params: GenerationParams) -> list[Generation]:
        import torch

        tok = self.tokenizer
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kw: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "pad_token_id": tok.pad_token_id,
            "do_sample": params.temperature > 0,
        }
        if params.temperature > 0:
            kw["temperature"] = params.temperature
        else:  # greedy: silence sampling defaults from the model's generation_config
            kw.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            kw.update(stop_strings=list(params.stop), tokenizer=tok)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        if params.schema is not None:
            kw["logits_processor"] = self._schema_processor(params.schema, len(texts))
        seqs = self.model.generate(**enc, **kw)
        new = seqs[:, enc["input_ids"].shape[1] :]
        eos = set(_as_list(self.model.generation_config.eos_token_id) or [tok.eos_token_id])
        results = []
        for row, mask in zip(new.tolist(), enc["attention_mask"].tolist(), strict=True):
            n = len(row)
            for j, t in enumerate(row):
                if t in eos:
                    n = j
                    break
            text = tok.decode(row[:n], skip_special_tokens=True)
            stopped = n < len(row)
            cut = _cut_at_stop(text, params.stop)
            if cut is not None:
                text, stopped = cut, True
            results.append(Generation(text=text, prompt_tokens=int(sum(mask)), completion_tokens=n,
                                      finish_reason="stop" if stopped else "length"))
        return results

    async def _agenerate_batch(self, prompts: list[Prompt], params: GenerationParams) -> list[Generation]:
        return await asyncio.to_thread(self.generate_batch_sync, prompts, params)

    def _schema_processor(self, schema_json: str, rows: int) -> Any:
        """A logits processor holding ``rows`` replies to the JSON schema (llguidance)."""
        from transformers import LogitsProcessorList

        from paperlab.llm.structured import SchemaLogitsProcessor, compile_schema, ll_tokenizer

        if self._ll_tokenizer is None:
            eos = _as_list(self.model.generation_config.eos_token_id) or [self.tokenizer.eos_token_id]
            self._ll_tokenizer = ll_tokenizer(self.tokenizer, eos)
        grammar = self._grammars.get(schema_json)
        if grammar is None:
            grammar = self._grammars[schema_json] = compile_schema(schema_json)
        return LogitsProcessorList([SchemaLogitsProcessor(self._ll_tokenizer, grammar, rows)])

    # -- scoring ------------------------------------------------------------------------
    def score_sync(self, prompt: Prompt, continuations: list[str]) -> list[ScoredContinuation]:
        """Score continuations in this thread; see :meth:`LLM.score`.

        The prompt and each continuation are tokenised together; a token belongs to the
        continuation when it starts at or after the prompt's end, the rule the openai backend
        uses on echoed offsets.
        """
        import torch

        text = self.render(prompt)
        if not text:
            raise LLMError("score needs a non-empty prompt: the first token has nothing to condition on")
        results: list[ScoredContinuation] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(continuations), self.batch_size):
                chunk = continuations[start : start + self.batch_size]
                results.extend(self._score_chunk(text, chunk))
        return results

    def _score_chunk(self, text: str, conts: list[str]) -> list[ScoredContinuation]:
        import torch

        tok = self.tokenizer
        # Right padding here: positions must line up with the offsets of each row.
        enc = tok([text + c for c in conts], return_offsets_mapping=True, add_special_tokens=False,
                  padding=True, padding_side="right", return_tensors="pt")
        offsets = enc.pop("offset_mapping")
        enc = enc.to(self.device)
        logits = self.model(**enc).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = enc["input_ids"][:, 1:]
        token_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
        out = []
        for r, cont in enumerate(conts):
            mask = enc["attention_mask"][r].tolist()
            starts = offsets[r, :, 0].tolist()
            vals = [float(token_lp[r, i - 1]) for i in range(1, len(starts))
                    if mask[i] and starts[i] >= len(text)]
            if not vals:
                raise LLMError(f"continuation {cont!r} produced no tokens of its own after the prompt")
            out.append(ScoredContinuation(cont, sum(vals), vals))
        return out

    async def _ascore(self, prompt: Prompt, continuations: list[str]) -> list[ScoredContinuation]:
        return await asyncio.to_thread(self.score_sync, prompt, continuations)

    # -- next-token distributions -------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    @property
    def context_length(self) -> int | None:
        n = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return int(n) if isinstance(n, int) else None

    def _candidate_ids(self, candidates: list[str]) -> list[int]:
        ids = []
        for c in candidates:
            got = self.tokenize(c)
            if len(got) != 1:
                raise LLMError(f"candidate {c!r} is {len(got)} tokens for {self.spec}; next_tokens "
                               "reads one token per candidate: pass single-token strings")
            ids.append(got[0])
        return ids

    def next_tokens_sync(self, prompts: list[Prompt], candidates: list[str], prefills: list[str],
                         forced: list[str]) -> list[NextTokens]:
        """:meth:`LLM.next_tokens` in this thread (the async form runs it in a worker thread)."""
        import torch

        cand = self._candidate_ids(candidates)
        rows = []
        for p, pre, f in zip(prompts, prefills, forced, strict=True):
            ids = self.tokenize(self.render(p) + pre)
            if not ids:
                raise LLMError("next_tokens needs a non-empty prompt: the first token has nothing to condition on")
            rows.append(Row(ids, self.tokenize(f) if f else []))
        pad = self.tokenizer.pad_token_id
        out: list[NextTokens] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                out += forward_rows(self.model, rows[start : start + self.batch_size], cand,
                                    self.prefix_cache, 0 if pad is None else int(pad))
        return out

    async def _anext_tokens(self, prompts: list[Prompt], candidates: list[str], prefills: list[str],
                            forced: list[str]) -> list[NextTokens]:
        return await asyncio.to_thread(self.next_tokens_sync, prompts, candidates, prefills, forced)

    async def aclose(self) -> None:
        self.prefix_cache.clear()
        self.model = None  # let the weights go; the object is unusable afterwards


def _as_list(x: Any) -> list[int]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [int(x)]


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return text[: min(hits)] if hits else None
