"""Scorers: the KV-cache scorer against full forwards, naive generation and paperlab.llm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from paperlab.errors import ICLError
from paperlab.icl.encodings import get_encoding
from paperlab.icl.prompts import build_prompt_sets
from paperlab.icl.scoring import LLMScorer, NaiveScorer, PrefixCacheScorer, single_token_id
from paperlab.icl.tasks import get_function

SHOTS = [1, 2, 4]


def _sets(n_prompts: int = 3) -> list[Any]:
    fs = [get_function("identity"), get_function("not"), get_function("reverse")]
    return build_prompt_sets(fs, get_encoding("nucleotide"), n_prompts=n_prompts, max_shots=4,
                             n_queries=3, seed=123)


def _reference(model: Any, tok: Any, ps: Any, k: int, q: Any) -> tuple[bool, bool, float]:
    """Teacher-forced scores from one uncached forward over the whole prompt + answer."""
    m = ps.mapping
    ids = tok(ps.prompt(k, q) + ps.answer(q), add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    pred = logits[-9:-1]  # positions predicting the 8 answer symbols
    ans = torch.tensor(ids[-8:])
    zero, one = tok.convert_tokens_to_ids(m.zero), tok.convert_tokens_to_ids(m.one)
    other = torch.where(ans == zero, one, zero)
    won = pred.gather(-1, ans[:, None]) > pred.gather(-1, other[:, None])
    return bool((pred.argmax(-1) == ans).all()), bool(won.all()), float(won.float().mean())


def test_cached_scorer_matches_uncached_forward(copy_model: Any) -> None:
    model, tok, _ = copy_model
    scorer = PrefixCacheScorer(model, tok)
    for ps in _sets():
        for s in scorer.score_set(ps, SHOTS):
            g, c, b = _reference(model, tok, ps, s.shots, ps.queries[s.query])
            assert (s.greedy, s.constrained) == (g, c)
            assert s.bit_accuracy == pytest.approx(b)


def test_cached_greedy_equals_real_greedy_generation(copy_model: Any) -> None:
    model, tok, _ = copy_model
    fast, naive = PrefixCacheScorer(model, tok), NaiveScorer(model, tok)
    hits = []
    for ps in _sets():
        a, b = fast.score_set(ps, SHOTS), naive.score_set(ps, SHOTS)
        assert [s.greedy for s in a] == [s.greedy for s in b]
        hits += [s.greedy for s in a]
    assert any(hits) and not all(hits)  # the comparison covered both outcomes


def test_llm_api_scorer_agrees_through_paperlab_llm(copy_model: Any) -> None:
    from paperlab.llm import load_llm

    model, tok, path = copy_model
    llm = load_llm(f"hf:{path}")
    fast, api = PrefixCacheScorer(model, tok), LLMScorer(llm)
    for ps in _sets(n_prompts=1):
        a, b = fast.score_set(ps, SHOTS), api.score_set(ps, SHOTS)
        assert [(s.greedy, s.constrained) for s in a] == [(s.greedy, s.constrained) for s in b]


@dataclass
class _Scored:
    continuation: str
    logprob: float


@dataclass
class _Gen:
    text: str


class _ScriptedLLM:
    """The far side of the llm boundary: prefers the symbol of a fixed target string."""

    def __init__(self, target: str, generated: str) -> None:
        self.target, self.generated, self.calls = target, generated, 0

    def generate(self, prompt: str, **kw: Any) -> _Gen:
        return _Gen(self.generated)

    def score(self, prompt: str, conts: list[str]) -> list[_Scored]:
        self.calls += 1
        done = len(prompt) - prompt.rindex(",") - 1  # symbols chosen so far after the query
        want = self.target[done]
        return [_Scored(c, 0.0 if c == want else -5.0) for c in conts]


def test_llm_scorer_constrained_loop_with_scripted_far_side() -> None:
    f = get_function("not")
    (ps,) = build_prompt_sets([f], get_encoding("digit"), n_prompts=1, max_shots=2, seed=1)
    q = ps.queries[0]
    ans = ps.answer(q)
    wrong = ans[:7] + (ps.mapping.zero if ans[7] == ps.mapping.one else ps.mapping.one)
    llm = _ScriptedLLM(target=ans, generated=wrong + "\n")
    (s,) = LLMScorer(llm).score_set(ps, [2])
    assert s.constrained and not s.greedy and s.bit_accuracy == 1.0 and llm.calls == 8
    llm = _ScriptedLLM(target=wrong, generated=ans)
    (s,) = LLMScorer(llm).score_set(ps, [2])
    assert s.greedy and not s.constrained and s.bit_accuracy == pytest.approx(7 / 8)


@pytest.mark.slow
def test_merging_tokenizer_is_refused(smollm2_path: Any) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    for d in "0123456789,\n":
        single_token_id(tok, d)  # the digit encoding is one token per symbol for SmolLM2
    (ps,) = build_prompt_sets([get_function("identity")], get_encoding("nucleotide"), n_prompts=1,
                              max_shots=2, seed=0)

    class _M(torch.nn.Module):
        config = type("C", (), {"max_position_embeddings": 100})()

    with pytest.raises(ICLError, match="encoding"):
        PrefixCacheScorer(_M(), tok).score_set(ps, [1])
