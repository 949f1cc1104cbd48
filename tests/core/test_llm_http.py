"""The openai backend against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from paperlab.errors import LLMResponseError
from paperlab.llm import load_llm

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_and_raw_completion_through_transformers_serve(served_smollm2, smollm2_llm):
    remote = load_llm(served_smollm2.spec, timeout=120)
    local = smollm2_llm
    g = remote.generate(CHAT, max_tokens=20)
    assert g.text == local.generate(CHAT, max_tokens=20).text  # same model, greedy: same text
    assert g.prompt_tokens > 10 and g.completion_tokens > 0
    raw = remote.generate("The capital of France is", max_tokens=8, stop=["."])
    assert "Paris" in raw.text and "." not in raw.text


def test_async_batch_keeps_order_under_concurrency(served_smollm2):
    remote = load_llm(served_smollm2.spec, timeout=120, max_concurrency=3)
    prompts = [f"{n}, {n + 1}, {n + 2}," for n in (1, 10, 20, 30)]
    out = asyncio.run(remote.agenerate_batch(prompts, max_tokens=3, stop=[","]))
    assert [g.text.strip() for g in out] == ["4", "13", "23", "33"]


def test_transformers_serve_gives_no_logprobs_and_we_say_so(served_smollm2):
    remote = load_llm(served_smollm2.spec, timeout=120)
    with pytest.raises(LLMResponseError, match="no prompt log-probabilities"):
        remote.score("The capital of France is", [" Paris"])


def test_score_agrees_between_http_and_local_backends(vllm_style_server, smollm2_llm):
    remote = load_llm(vllm_style_server, timeout=60)
    local = smollm2_llm
    prompt = "Question: what is the capital of France?\nAnswer:"
    conts = [" Paris", " Rome", " It is Paris, of course."]
    r, h = remote.score(prompt, conts), local.score(prompt, conts)
    for a, b in zip(r, h, strict=True):
        assert a.n_tokens == b.n_tokens
        assert a.logprob == pytest.approx(b.logprob, abs=2e-3)
    assert r[0].logprob > r[1].logprob


DIGITS = [str(d) for d in range(10)]
SCORE_CHAT: Any = [{"role": "system", "content": "You score passages 0-10."},
                   {"role": "user", "content": "Query: capital of France\n[1] Paris is the capital.\n"
                                               '[2] Bananas are yellow.\nAnswer {"[1]": s, "[2]": s}.'}]


def test_next_tokens_over_http_equal_the_in_process_ones(vllm_style_server, smollm2_llm):
    remote = load_llm(vllm_style_server, timeout=120)
    prompts = [SCORE_CHAT, "Count: 1, 2, 3,"]
    kw: dict[str, Any] = {"prefill": ['{"[1]": 7, "[2]": ', " "], "forced": ["1", ""]}
    got, want = remote.next_tokens(prompts, DIGITS, **kw), smollm2_llm.next_tokens(prompts, DIGITS, **kw)
    for g, w in zip(got, want, strict=True):
        assert len(g.dists) == len(w.dists) and g.prompt_tokens == w.prompt_tokens
        for dg, dw in zip(g.dists, w.dists, strict=True):
            seen = [i for i, v in enumerate(dg.logprobs) if v > -math.inf]
            assert len(seen) >= 5  # top 20 of the vocabulary hold most digits here
            assert [dg.logprobs[i] for i in seen] == pytest.approx([dw.logprobs[i] for i in seen], abs=1e-3)
            assert dg.top == dw.top


def test_a_vllm_style_server_refusing_top_logprobs_or_the_model_name(vllm_style_server):
    with pytest.raises(LLMResponseError, match="greater than max allowed: 20.*lower it"):
        load_llm(vllm_style_server, top_logprobs=30).next_tokens([SCORE_CHAT], DIGITS)
    wrong = vllm_style_server.replace("#smollm2", "#smollm3")
    with pytest.raises(LLMResponseError, match="does not serve model 'smollm3'; it serves: smollm2"):
        load_llm(wrong).next_tokens([SCORE_CHAT], DIGITS)
