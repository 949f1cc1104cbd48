"""``hf:<path>[#<file.gguf>]``: a local transformers model (safetensors directory or GGUF file).

Generation is batched: prompts are sorted by length, left-padded, generated together in chunks
of ``batch_size``, and returned in the caller's order. Scoring runs prompt + continuation
through the model once per continuation batch. The model runs on CUDA when present, else CPU.
One lock serialises access to the model; the async forms run it in a worker thread so an event
loop stays responsive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from paperlab.errors import LLMError
from paperlab.llm.base import LLM
from paperlab.llm.types import Generation, GenerationParams, Prompt, ScoredContinuation

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
    """

    def __init__(
        self,
        spec: str,
        path: str | os.PathLike[str],
        gguf_file: str | None = None,
        *,
        batch_size: int = 8,
        device: str | None = None,
        max_concurrency: int = 8,
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
        self.batch_size = max(1, int(batch_size))
        self.device = device or _device()
        self._lock = threading.Lock()
        self._pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._drainers: set[asyncio.Task[None]] = set()
        #: forward batches run by generation so far (a statistic for benchmarks and tests)
        self.generate_batches = 0
        self.model, self.tokenizer = self._load()

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
        model.to(self.device).eval()
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
        if len(prompts) != 1:
            return await asyncio.to_thread(self.generate_batch_sync, prompts, params)
        # Single calls made concurrently (e.g. one per rerank group) are gathered into one
        # batched forward pass: on one model, batching is where the throughput comes from.
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Generation] = loop.create_future()
        queue = self._pending.get(loop)
        if queue is None:  # no drain task on this loop: start one
            queue = self._pending[loop] = []
            task = loop.create_task(self._drain(loop, queue))
            self._drainers.add(task)  # hold a reference until it finishes
            task.add_done_callback(self._drainers.discard)
        queue.append((prompts[0], params, fut))
        return [await fut]

    async def _drain(self, loop: asyncio.AbstractEventLoop, queue: list[Any]) -> None:
        """Run queued single requests in batches of equal parameters until the queue is empty."""
        await asyncio.sleep(0)  # let every coroutine scheduled in this tick enqueue first
        while queue:
            params = queue[0][1]
            group = [item for item in queue if item[1] == params][: self.batch_size]
            for item in group:
                queue.remove(item)
            try:
                results = await asyncio.to_thread(self.generate_batch_sync, [g[0] for g in group], params)
            except Exception as exc:  # every waiter of the failed batch gets the error
                for _, _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, _, fut), res in zip(group, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
            await asyncio.sleep(0)  # requests that arrived meanwhile join the next batch
        del self._pending[loop]

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

    async def aclose(self) -> None:
        self.model = None  # let the weights go; the object is unusable afterwards


def _as_list(x: Any) -> list[int]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [int(x)]


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return text[: min(hits)] if hits else None
