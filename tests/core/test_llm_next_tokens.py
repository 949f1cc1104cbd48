"""LLM.next_tokens on the packaged model, against plain full forward passes (no cache)."""

from __future__ import annotations

import pytest

from paperlab.errors import LLMError
from paperlab.llm import load_llm

pytestmark = pytest.mark.slow

DIGITS = [str(d) for d in range(10)]
CHATS = [
    [{"role": "user", "content": "Rate from 0 to 9 how much a cat is a pet."}],
    [{"role": "user", "content": "Rate from 0 to 9 how much a rock is a pet. Think of granite."}],
    [{"role": "user", "content": "Rate from 0 to 9 how much a dog is a pet."}],
]


@pytest.fixture(scope="module")
def llm(smollm2_path):
    # batch_size 2: three prompts run as two forward batches
    return load_llm(f"hf:{smollm2_path}", batch_size=2)


def full_forward(llm, text: str, forced: str, cands: list[str]) -> list[list[float]]:
    """log P(candidate) after ``text`` and after each forced token, from one uncached pass."""
    import torch

    tok, model = llm.tokenizer, llm.model
    ids = tok(text, add_special_tokens=False)["input_ids"]
    f = tok(forced, add_special_tokens=False)["input_ids"] if forced else []
    cid = [tok(c, add_special_tokens=False)["input_ids"][0] for c in cands]
    with torch.inference_mode():
        logp = model(input_ids=torch.tensor([ids + f])).logits[0].float().log_softmax(-1)
    return [[float(logp[len(ids) - 1 + j, c]) for c in cid] for j in range(len(f) + 1)]


def assert_matches(llm, got, prompts, prefills, forced, cands) -> None:
    for nt, p, pre, f in zip(got, prompts, prefills, forced, strict=True):
        ref = full_forward(llm, llm.render(p) + pre, f, cands)
        assert len(nt.dists) == len(ref)
        for d, r in zip(nt.dists, ref, strict=True):
            assert d.logprobs == pytest.approx(r, abs=2e-4)


def test_next_tokens_match_full_forward_through_a_growing_cache(llm) -> None:
    llm.prefix_cache.clear()
    steps = [('{"score": ', "1"), ('{"score": 7, "why": "', ""), ('{"score": 7, "why": "it', "123")]
    for k, (pre, forced) in enumerate(steps):
        prefills = [pre, pre + "x", pre]
        got = llm.next_tokens(CHATS, DIGITS, prefill=prefills, forced=forced)
        assert_matches(llm, got, CHATS, prefills, [forced] * 3, DIGITS)
        for nt, p, pre_ in zip(got, CHATS, prefills, strict=True):
            assert nt.prompt_tokens == len(llm.tokenize(llm.render(p) + pre_))
            if k:  # later steps extend earlier prompts: only the new tokens run
                assert nt.new_tokens < 12 < nt.prompt_tokens
    assert llm.prefix_cache.hit_tokens > llm.prefix_cache.run_tokens


def test_greedy_top_and_probabilities(llm) -> None:
    import torch

    prompt, cands = "The capital of France is", [" Paris", " Rome", " a", " the"]
    ids = llm.tokenize(prompt)
    with torch.inference_mode():
        logp = llm.model(input_ids=torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
    best = int(logp.argmax())
    cand_ids = [llm.tokenize(c)[0] for c in cands]
    (nt,) = llm.next_tokens([prompt], cands)
    d = nt.dists[0]
    assert d.top == (cand_ids.index(best) if best in cand_ids else None)
    assert d.top_logprob == pytest.approx(float(logp[best]), abs=2e-4)
    assert d.logprobs[0] > d.logprobs[1] and all(x <= 0 for x in d.logprobs)
    others = [c for c, i in zip(cands, cand_ids, strict=True) if i != best]
    (nt,) = llm.next_tokens([prompt], others)
    assert nt.dists[0].top is None  # the greedy token is not among them


def test_rows_sharing_a_prefix_run_it_once(llm) -> None:
    llm.prefix_cache.clear()
    shared = "The following list names animals that people keep at home as pets: " * 3
    prompts = [shared + tail for tail in ("cats,", "dogs and", "fish or")]
    before = llm.prefix_cache.run_tokens
    got = llm.next_tokens(prompts, [" dogs", " birds"], forced=" birds")
    ran = llm.prefix_cache.run_tokens - before
    total = sum(len(llm.tokenize(p)) + 1 for p in prompts)
    assert ran < total - len(llm.tokenize(shared))  # the shared part was not run three times
    assert_matches(llm, got, prompts, ["", "", ""], [" birds"] * 3, [" dogs", " birds"])


def test_next_tokens_errors(llm) -> None:
    with pytest.raises(LLMError, match="one token per candidate"):
        llm.next_tokens(["x"], ["10 apples"])
    with pytest.raises(LLMError, match="at least one candidate"):
        llm.next_tokens(["x"], [])
    with pytest.raises(LLMError, match="non-empty prompt"):
        llm.next_tokens([""], ["a"])
    with pytest.raises(LLMError, match="one per prompt"):
        llm.next_tokens(["x", "y"], ["a"], prefill=["a"])
    remote = load_llm("openai:http://127.0.0.1:9/v1#m")  # nothing is sent: it fails before
    assert not remote.supports_next_tokens and remote.supports_top_logprobs
    with pytest.raises(LLMError, match="forced text must be one token"):
        remote.next_tokens(["x"], ["a"], forced="bc")
