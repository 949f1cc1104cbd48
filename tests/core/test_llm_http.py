"""The openai backend against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from paperlab.errors import LLMResponseError
from paperlab.llm import load_llm

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_and_raw_completion_through_transformers_serve(served_smollm2, smollm2_path):
    remote = load_llm(served_smollm2.spec, timeout=120)
    local = load_llm(f"hf:{smollm2_path}")
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


@pytest.fixture(scope="module")
def logprob_server(smollm2_path, tmp_path_factory, tscale):
    """The far side of the boundary: a vLLM-style echo+logprobs endpoint (see logprob_server.py)."""
    from paperlab.testing import free_port, start_python_server, stop_process

    port = free_port()
    log = tmp_path_factory.mktemp("lp") / "server.log"
    proc = start_python_server(Path(__file__).with_name("logprob_server.py"),
                               [str(smollm2_path), str(port)], port, log, 120 * tscale)
    yield f"openai:http://127.0.0.1:{port}/v1#smollm2"
    stop_process(proc)


def test_score_agrees_between_http_and_local_backends(logprob_server, smollm2_path):
    remote = load_llm(logprob_server, timeout=60)
    local = load_llm(f"hf:{smollm2_path}")
    prompt = "Question: what is the capital of France?\nAnswer:"
    conts = [" Paris", " Rome", " It is Paris, of course."]
    r, h = remote.score(prompt, conts), local.score(prompt, conts)
    for a, b in zip(r, h, strict=True):
        assert a.n_tokens == b.n_tokens
        assert a.logprob == pytest.approx(b.logprob, abs=2e-3)
    assert r[0].logprob > r[1].logprob
