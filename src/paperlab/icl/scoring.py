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
and reused for every shorter k, and all queries of a set run as one batch, through
``paperlab.llm``'s ``next_tokens`` (whose backend keeps the prefix cache). (It needs one token
per symbol, which it checks.) :class:`LLMScorer` does the same with ``generate`` and ``score``
for backends without next-token distributions (HTTP), and :class:`NaiveScorer` is the
one-prompt-at-a-time ``generate`` peer the benchmark compares with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from paperlab.errors import ICLError
from paperlab.icl.prompts import PromptSet, fits
from paperlab.icl.tasks import N_BITS
from paperlab.llm import LLM

if TYPE_CHECKING:
    from transformers import PreTrainedModel

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
    """The one token id of ``symbol`` (``tokenizer``: a transformers tokenizer or an LLM).

    Raises:
        ICLError: the tokenizer splits or merges the symbol (not exactly one token).
    """
    ids = tokenizer.tokenize(symbol) if isinstance(tokenizer, LLM) else (
        tokenizer(symbol, add_special_tokens=False)["input_ids"])
    if len(ids) != 1:
        raise ICLError(
            f"symbol {symbol!r} is {len(ids)} tokens for this tokenizer; the scorer needs one token "
            "per symbol: pick another --encoding (digit for text models, nucleotide for DNA models)"
        )
    return int(ids[0])


def as_llm(model: LLM | PreTrainedModel, tokenizer: Any = None, name: str = "model") -> LLM:
    """``model`` itself when it is an LLM, else the in-memory ``model`` and ``tokenizer`` behind
    the :class:`paperlab.llm.LLM` door (``hf`` backend)."""
    if isinstance(model, LLM):
        return model
    from paperlab.llm.hf_backend import HFLocalLLM

    if tokenizer is None:
        raise ICLError("a model object needs its tokenizer; pass both, or an LLM from paperlab.llm")
    return HFLocalLLM.from_model(name, model, tokenizer)


class PrefixCacheScorer:
    """Scores a prompt set with one cached pass over its longest prefix.

    Everything runs through :meth:`paperlab.llm.LLM.next_tokens`: for each k, the set's queries
    are one batch whose answers are teacher-forced, read at the two bit symbols. The longest k
    runs first; its k-shot prefix goes through the model once and sits in the backend's prefix
    cache, and every shorter k reuses the first ``k * 18`` tokens of it.

    Args:
        model: an LLM with next-token distributions (an hf backend), or a transformers causal LM
            (wrapped with ``tokenizer``); every symbol of the encoding must be one token.
        tokenizer: the model's tokenizer when ``model`` is a bare transformers model.
        context: the model's context length in tokens (default: the model's own).
    """

    def __init__(self, model: LLM | PreTrainedModel, tokenizer: Any = None, context: int | None = None) -> None:
        self.llm = as_llm(model, tokenizer)
        if not self.llm.supports_next_tokens:
            raise ICLError(f"--scorer cached needs next-token distributions, which {self.llm.spec} does "
                           "not give (HTTP backends); use --scorer api")
        self.context = context or self.llm.context_length
        self._ids: dict[str, int] = {}

    def _id(self, symbol: str) -> int:
        if symbol not in self._ids:
            self._ids[symbol] = single_token_id(self.llm, symbol)
        return self._ids[symbol]

    def _ids_of(self, text: str) -> list[int]:
        return [self._id(ch) for ch in text]

    def _check_joined(self, ps: PromptSet) -> None:
        # Per-symbol ids must equal what the tokenizer makes of the whole text; a BPE merge
        # across symbols (e.g. "AC" in a text model) would make the scored tokens meaningless.
        text = ps.prompt(1, ps.queries[0]) + ps.answer(ps.queries[0])
        if self.llm.tokenize(text) != self._ids_of(text):
            raise ICLError(
                f"this tokenizer merges symbols of the {ps.mapping.describe()} encoding; pick "
                "another --encoding (digit for text models, nucleotide for DNA models)"
            )

    def score_set(self, ps: PromptSet, shots: Sequence[int]) -> list[QueryScore]:
        if not shots:
            return []
        self._check_joined(ps)
        m = ps.mapping
        answers = [ps.answer(q) for q in ps.queries]
        want = [[0 if ch == m.zero else 1 for ch in a] for a in answers]
        got = {}
        for k in sorted(set(shots), reverse=True):  # longest prefix first: shorter k reuse it
            got[k] = self.llm.next_tokens([ps.prompt(k, q) for q in ps.queries], [m.zero, m.one],
                                          forced=answers)
        results = []
        for k in shots:
            for qi, nt in enumerate(got[k]):
                dists = nt.dists[:N_BITS]  # the distributions before each of the 8 answer symbols
                greedy = all(d.top == w for d, w in zip(dists, want[qi], strict=True))
                won = [d.logprobs[w] > d.logprobs[1 - w] for d, w in zip(dists, want[qi], strict=True)]
                results.append(QueryScore(k, qi, greedy, all(won), sum(won) / N_BITS))
        return results


class NaiveScorer:
    """One prompt at a time through ``llm.generate`` (greedy, 8 new tokens): the slow peer.

    It scores only the greedy criterion; ``constrained`` repeats it and ``bit_accuracy`` is the
    fraction of generated symbols that match.
    """

    def __init__(self, model: LLM | PreTrainedModel, tokenizer: Any = None, context: int | None = None) -> None:
        self.llm = as_llm(model, tokenizer)
        self.context = context or self.llm.context_length

    def score_set(self, ps: PromptSet, shots: Sequence[int]) -> list[QueryScore]:
        results = []
        for k in shots:
            for qi, q in enumerate(ps.queries):
                text = self.llm.generate(ps.prompt(k, q), max_tokens=N_BITS, temperature=0.0).text
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

    def __init__(self, llm: LLM, context: int | None = None, constrained: bool = True) -> None:
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
