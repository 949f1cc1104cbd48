"""The hf backend on the packaged model: real generation and scoring."""

from __future__ import annotations

import asyncio
import math

import pytest

from paperlab.errors import BackendSpecError, LLMError
from paperlab.llm import load_llm

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def llm(smollm2_path):
    return load_llm(f"hf:{smollm2_path}", batch_size=4)


def test_chat_generation_answers(llm):
    g = llm.generate(CHAT, max_tokens=20)
    assert "Paris" in g.text
    assert g.finish_reason == "stop"
    assert g.prompt_tokens > 10 and 0 < g.completion_tokens <= 20


def test_batched_greedy_equals_one_by_one(llm):
    # Prompts of different lengths: left padding must not change any greedy continuation.
    prompts = ["The capital of France is", "1, 2, 3, 4,", "def add(a, b):\n    return a"]
    batched = llm.generate_batch(prompts, max_tokens=5)
    single = [llm.generate(p, max_tokens=5) for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in single]


def test_stop_string_is_excluded_and_ends_generation(llm):
    g = llm.generate("1, 2, 3, 4,", max_tokens=20, stop=[","])
    assert "," not in g.text
    assert g.finish_reason == "stop"
    assert g.text.strip() == "5"


def test_max_tokens_gives_length_finish(llm):
    g = llm.generate("Once upon a time", max_tokens=3)
    assert g.finish_reason == "length" and g.completion_tokens == 3


def test_score_prefers_the_right_answer_and_matches_a_direct_forward_pass(llm):
    import torch

    scores = llm.score("The capital of France is", [" Paris", " Rome", " a big city"])
    assert [s.continuation for s in scores] == [" Paris", " Rome", " a big city"]
    assert scores[0].logprob > scores[1].logprob
    assert scores[2].n_tokens == len(llm.tokenizer(" a big city", add_special_tokens=False)["input_ids"])
    assert math.isclose(scores[2].logprob, sum(scores[2].token_logprobs))
    # Independent computation: log P(" Paris" | prompt) from one forward pass.
    ids = llm.tokenizer("The capital of France is", return_tensors="pt", add_special_tokens=False)["input_ids"]
    paris = llm.tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    assert len(paris) == 1
    with torch.inference_mode():
        logits = llm.model(input_ids=ids).logits[0, -1].float()
    direct = float(torch.log_softmax(logits, -1)[paris[0]])
    assert scores[0].logprob == pytest.approx(direct, abs=1e-4)


def test_score_is_independent_of_batching(llm):
    conts = [" Paris", " Rome", " a big city", " Berlin", " Lyon"]
    together = llm.score("The capital of France is", conts)
    alone = [llm.score("The capital of France is", [c])[0] for c in conts]
    for a, b in zip(together, alone, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_async_batch_and_concurrent_calls(llm):
    async def main():
        one = llm.agenerate("1, 2, 3,", max_tokens=3)
        many = llm.agenerate_batch(["a b c", "x y z"], max_tokens=3)
        sc = llm.ascore("1, 2, 3,", [" 4"])
        return await asyncio.gather(one, many, sc)

    one, many, sc = asyncio.run(main())
    assert one.completion_tokens <= 3 and len(many) == 2 and sc[0].logprob < 0


def test_concurrent_single_calls_are_gathered_into_batches(llm):
    prompts = ["The capital of France is", "1, 2, 3, 4,", "Once upon a", "Red, green,"]
    alone = [llm.generate(p, max_tokens=4).text for p in prompts]
    before = llm.generate_batches

    async def main():
        return await asyncio.gather(*(llm.agenerate(p, max_tokens=4) for p in prompts))

    together = asyncio.run(main())
    assert [g.text for g in together] == alone
    assert llm.generate_batches - before == 1  # four calls, one forward batch (batch_size=4)


def test_bad_inputs_raise_clear_errors(llm, tmp_path):
    with pytest.raises(LLMError, match="non-empty continuations"):
        llm.score("x", ["", "a"])
    with pytest.raises(LLMError, match="max_tokens"):
        llm.generate("x", max_tokens=0)
    with pytest.raises(LLMError, match="does not exist"):
        load_llm(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(LLMError, match="no config.json"):
        load_llm(f"hf:{tmp_path}")
    with pytest.raises(BackendSpecError, match="valid forms"):
        load_llm("gpt5")
    with pytest.raises(BackendSpecError, match="openai:<base_url>#<model>"):
        load_llm("openai:localhost:8000")


def test_packaged_default_loads_through_its_spec(smollm2_path):
    llm = load_llm("smollm2")
    assert llm.path == smollm2_path
    assert "Paris" in llm.generate(CHAT, max_tokens=12).text
