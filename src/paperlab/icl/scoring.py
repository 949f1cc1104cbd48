"""Scoring k-shot prompts: exact match by greedy decoding or by constrained choice.

Two exact-match criteria are scored for every (prompt set, k, query):

- ``greedy``: the model's greedy continuation, 8 symbols long, equals the answer;
- ``constrained``: choosing, at each of the 8 positions, the more likely of the prompt's two bit
  symbols reproduces the answer.

Both decodings are deterministic, so a decoding reproduces the answer exactly when, with the
answer fed in (teacher forcing), the answer's symbol wins at every position: before the first
wrong choice the decoded prefix *is* the answer's prefix. :class:`PrefixCacheScorer` uses that to
score both criteria from one forward pass over ``query field_sep answer`` (17 tokens), on top of a
key/value cache of the shared k-shot prefix: the longest prefix of a prompt set is encoded once
and sliced for every shorter k, and all queries of a set run as one batch. (It needs one token
per symbol, which it checks.) :class:`LLMScorer` does the same through the public
``paperlab.llm`` API (``generate`` and ``score``) for backends without local weights, and
:class:`NaiveScorer` is the one-prompt-at-a-time ``generate`` peer the benchmark compares with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from paperlab.errors import ICLError
from paperlab.icl.prompts import SYMBOLS_PER_SHOT, PromptSet, fits
from paperlab.icl.tasks import N_BITS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryScore:
    """The scores of one (k, query) prompt."""

    shots: int
    query: int
    greedy: bool
    constrained: bool
    bit_accuracy: float  # fraction of the 8 positions won under teacher forcing (constrained)


class Scorer(Protocol):
    """Anything that scores the (k, query) prompts of a prompt set."""

    context: int | None

    def score_set(self, ps: PromptSet, shots: Sequence[int]) -> list[QueryScore]:
        """Score every query for every k in ``shots`` (callers pass only k that fit)."""
        ...


def single_token_id(tokenizer: Any, symbol: str) -> int:
    """The one token id of ``symbol``.

    Raises:
        ICLError: the tokenizer splits or merges the symbol (not exactly one token).
    """
    ids = tokenizer(symbol, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ICLError(
            f"symbol {symbol!r} is {len(ids)} tokens for this tokenizer; the scorer needs one token "
            "per symbol: pick another --encoding (digit for text models, nucleotide for DNA models)"
        )
    return int(ids[0])


class PrefixCacheScorer:
    """Scores a prompt set with one cached pass over its longest prefix (local HF model).

    Args:
        model: a causal LM (``transformers`` ``PreTrainedModel``).
        tokenizer: its tokenizer; every symbol of the encoding must be one token.
        context: the model's context length in tokens (default: ``max_position_embeddings``).
    """

    def __init__(self, model: Any, tokenizer: Any, context: int | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.context = context or getattr(model.config, "max_position_embeddings", None)
        self._ids: dict[str, int] = {}

    def _id(self, symbol: str) -> int:
        if symbol not in self._ids:
            self._ids[symbol] = single_token_id(self.tokenizer, symbol)
        return self._ids[symbol]

    def _ids_of(self, text: str) -> list[int]:
        return [self._id(ch) for ch in text]

    def _check_joined(self, ps: PromptSet) -> None:
        # Per-symbol ids must equal what the tokenizer makes of the whole text; a BPE merge
        # across symbols (e.g. "AC" in a text model) would make the scored tokens meaningless.
        text = ps.prompt(1, ps.queries[0]) + ps.answer(ps.queries[0])
        joined = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if list(joined) != self._ids_of(text):
            raise ICLError(
                f"this tokenizer merges symbols of the {ps.mapping.describe()} encoding; pick "
                "another --encoding (digit for text models, nucleotide for DNA models)"
            )

    def score_set(self, ps: PromptSet, shots: Sequence[int]) -> list[QueryScore]:
        import torch
        from transformers import DynamicCache

        if not shots:
            return []
        self._check_joined(ps)
        m = ps.mapping
        kmax = max(shots)
        dev = self.model.device
        prefix = torch.tensor([self._ids_of(ps.prefix_text(kmax))], device=dev)  # (1, kmax*18)
        seqs = torch.tensor(
            [self._ids_of(ps.query_text(q) + ps.answer(q)) for q in ps.queries], device=dev
        )  # (Q, 17)
        answers = seqs[:, N_BITS + 1 :]  # (Q, 8)
        zero, one = self._id(m.zero), self._id(m.one)
        others = torch.where(answers == zero, one, zero)
        with torch.inference_mode():
            # Only the cache is needed from the prefix: skipping the vocabulary projection of its
            # 18k positions saves a fifth of SmolLM2's prefix cost (its 49k-row tied head).
            out = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1)
            kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
            results = []
            for k in shots:
                length = k * SYMBOLS_PER_SHOT
                cache = DynamicCache(config=self.model.config)
                for i, (keys, values) in enumerate(kv):
                    n = seqs.shape[0]
                    cache.update(keys[:, :, :length].expand(n, -1, -1, -1),
                                 values[:, :, :length].expand(n, -1, -1, -1), i)
                pos = torch.arange(length, length + seqs.shape[1], device=dev).unsqueeze(0).expand(seqs.shape[0], -1)
                # positions 8..15 of `query sep answer` predict the 8 answer symbols
                logits = self.model(input_ids=seqs, past_key_values=cache, position_ids=pos,
                                    use_cache=True, logits_to_keep=N_BITS + 1).logits
                pred = logits[:, :N_BITS].float()  # (Q, 8, V)
                greedy = (pred.argmax(-1) == answers).all(-1)
                won = pred.gather(-1, answers.unsqueeze(-1)) > pred.gather(-1, others.unsqueeze(-1))
                won = won.squeeze(-1)  # (Q, 8)
                for qi in range(seqs.shape[0]):
                    results.append(QueryScore(k, qi, bool(greedy[qi]), bool(won[qi].all()),
                                              float(won[qi].float().mean())))
        return results


class NaiveScorer:
    """One prompt at a time through ``model.generate`` (greedy, 8 new tokens): the slow peer.

    It scores only the greedy criterion; ``constrained`` repeats it and ``bit_accuracy`` is the
    fraction of generated symbols that match.
    """

    def __init__(self, model: Any, tokenizer: Any, context: int | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.context = context or getattr(model.config, "max_position_embeddings", None)

    def score_set(self, ps: PromptSet, shots: Sequence[int]) -> list[QueryScore]:
        import torch

        results = []
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        for k in shots:
            for qi, q in enumerate(ps.queries):
                ids = self.tokenizer(ps.prompt(k, q), add_special_tokens=False, return_tensors="pt")
                ids = ids.to(self.model.device)
                with torch.inference_mode():
                    out = self.model.generate(**ids, max_new_tokens=N_BITS, do_sample=False,
                                              pad_token_id=pad)
                # token by token: some tokenizers' decode() joins tokens with spaces
                new = out[0, ids["input_ids"].shape[1] :].tolist()
                text = "".join(self.tokenizer.decode([t]) for t in new)
                ans = ps.answer(q)
                hits = sum(a == b for a, b in zip(text[:N_BITS], ans, strict=False))
                ok = text[:N_BITS] == ans
                results.append(QueryScore(k, qi, ok, ok, hits / N_BITS))
        return results


class LLMScorer:
    """Scores through the public ``paperlab.llm`` API: any backend, one prompt at a time.

    Greedy: ``llm.generate(prompt, max_tokens=8, temperature=0)`` and compare the first 8
    characters. Constrained: at each position ``llm.score(prompt + chosen, [zero, one])`` and keep
    the more likely symbol.
    """

    def __init__(self, llm: Any, context: int | None = None, constrained: bool = True) -> None:
        self.llm = llm
        self.context = context
        self.constrained = constrained

    def score_set(self, ps: PromptSet, shots: Sequence[int]) -> list[QueryScore]:
        m = ps.mapping
        results = []
        for k in shots:
            for qi, q in enumerate(ps.queries):
                prompt, ans = ps.prompt(k, q), ps.answer(q)
                text = self.llm.generate(prompt, max_tokens=N_BITS, temperature=0.0).text
                greedy = text[:N_BITS] == ans
                chosen = ""
                if self.constrained:
                    for _ in range(N_BITS):
                        sc = self.llm.score(prompt + chosen, [m.zero, m.one])
                        chosen += m.zero if sc[0].logprob >= sc[1].logprob else m.one
                else:
                    chosen = text[:N_BITS]
                hits = sum(a == b for a, b in zip(chosen, ans, strict=False))
                results.append(QueryScore(k, qi, greedy, chosen == ans, hits / N_BITS))
        return results


def fitting_shots(shots: Sequence[int], context: int | None) -> list[int]:
    """The shot counts whose prompts fit ``context``."""
    return [k for k in shots if fits(k, context)]
