"""End to end through real processes: `transformers serve` on 127.0.0.1, a server that dies
mid-run, and the logit mode on the packaged model in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from paperlab.rerank import Passage, Reranker, RerankLLMError
from paperlab.testing import free_port, start_python_server, stop_process

HERE = Path(__file__).resolve().parent
DOCS = [
    Passage("paris", "Paris is the capital of France.", 3.0),
    Passage("banana", "Bananas are yellow fruit.", 2.0),
    Passage("wall", "The Great Wall is in China.", 1.5),
    Passage("eiffel", "The Eiffel Tower stands in Paris.", 1.0),
]


@pytest.mark.slow
def test_grouprank_and_listwise_through_transformers_serve(served_smollm2, tscale: float) -> None:
    from paperlab.llm import load_llm

    # generous timeout: on a loaded 2-core box one short call can take minutes
    llm = load_llm(served_smollm2.spec, max_concurrency=4, timeout=600 * tscale)
    r = Reranker(llm, "grouprank", group_size=2, repeats=1, max_tokens=16, max_retries=0,
                 fallback="first_stage", template="grouprank-json/v1").rank("capital of France", DOCS)
    assert sorted(r.doc_ids()) == sorted(p.doc_id for p in DOCS)
    assert [x.rank for x in r] == [1, 2, 3, 4]
    assert r.stats.calls == 2 and r.stats.prompt_tokens > 0 and r.stats.completion_tokens > 0
    # every passage either got a model score or a counted fallback
    assert r.stats.fallbacks.get("first_stage", 0) <= 4
    lw = Reranker(llm, "listwise", window=4, max_tokens=16).rank("capital of France", DOCS)
    assert sorted(lw.doc_ids()) == sorted(p.doc_id for p in DOCS) and lw.stats.calls == 1


def _docs(n: int) -> list[Passage]:
    return [Passage(f"d{k}", f"doc {k}", float(n - k)) for k in range(n)]


def test_server_dying_mid_run(tmp_path: Path, tscale: float) -> None:
    from paperlab.llm import load_llm

    port = free_port()
    # the 4th request kills the server: 3 of 6 groups get answers, the rest meet a dead port
    proc = start_python_server(HERE / "scripted_openai_server.py", [str(port), "4"], port,
                               tmp_path / "server.log", 30 * tscale, "/health")
    try:
        llm = load_llm(f"openai:http://127.0.0.1:{port}/v1#scripted", max_concurrency=1,
                       max_retries=1, backoff=0.05, timeout=10 * tscale)
        cfg = dict(group_size=2, repeats=1, shuffle=False, concurrency=1, llm_retries=1,
                   retry_backoff_s=0.05)
        r = Reranker(llm, "grouprank", on_llm_error="fallback", **cfg).rank("q", _docs(12))
        assert sorted(r.doc_ids()) == sorted(p.doc_id for p in _docs(12))  # nothing lost
        assert r.stats.calls == 3
        assert r.stats.failed_calls == 3 and r.stats.fallbacks == {"first_stage": 6}
        assert r.stats.model_scored == 6 and not r.stats.all_fallback
        scored = {x.doc_id: x.score for x in r}
        assert scored["d5"] == pytest.approx(0.5)  # answered by the server before it died
        proc.wait(timeout=10 * tscale)
        with pytest.raises(RerankLLMError, match="failed 2 times.*server behind --llm is up"):
            Reranker(llm, "grouprank", **cfg).rank("q", _docs(4))
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def smollm2_hf(smollm2_llm):  # type: ignore[no-untyped-def]
    return smollm2_llm  # the packaged model, loaded once per test run (tests/conftest.py)


@pytest.mark.slow
def test_logit_mode_matches_full_forward(smollm2_hf) -> None:  # type: ignore[no-untyped-def]
    import torch

    from paperlab.rerank.logit import LogitScorer
    from paperlab.rerank.prompts import GROUPWISE_JSON_V1

    messages = GROUPWISE_JSON_V1.render("capital of France", [p.text for p in DOCS[:3]])
    scorer = LogitScorer(smollm2_hf)
    got = scorer.score(messages, 3)
    model, tok = smollm2_hf.model, smollm2_hf.tokenizer
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def expected(prefix: str) -> tuple[float, int]:
        """Expected score at the end of ``prefix`` by plain forward passes (no cache)."""
        with torch.inference_mode():
            def probs(text: str) -> torch.Tensor:
                ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
                return model(input_ids=ids).logits[0, -1].float().softmax(-1)

            p = probs(prefix)[scorer.digits]
            p = (p / p.sum()).tolist()
            q = float(probs(prefix + "1")[scorer.digits[0]])
        dist = p + [p[1] * q]
        dist[1] = p[1] * (1 - q)
        return sum(s * w for s, w in enumerate(dist)), max(range(11), key=lambda s: dist[s])

    e1, b1 = expected(prompt + '{"[1]": ')
    e2, _ = expected(prompt + '{"[1]": ' + f'{b1}, "[2]": ')
    assert got[0] == pytest.approx(e1, abs=1e-3)
    assert got[1] == pytest.approx(e2, abs=1e-3)
    assert all(0.0 <= s <= 10.0 for s in got)
    r = Reranker(smollm2_hf, "grouprank", mode="logit", group_size=2, repeats=1).rank("capital of France", DOCS)
    assert sorted(r.doc_ids()) == sorted(p.doc_id for p in DOCS)
    assert r.stats.calls == 2 and r.stats.n_fallbacks == 0


PASSAGES = ["Paris is the capital and largest city of France.", "Bananas are yellow fruit.",
            "The Great Wall is in China.", "The Eiffel Tower stands in Paris, France.",
            "France's capital has been Paris since the 10th century.", "Cats sleep a lot.",
            "Berlin is the capital of Germany.", "Lyon is a city in France."]


def _logit_scores(llm, n: int = 8) -> list[float]:  # type: ignore[no-untyped-def]
    from paperlab.rerank.logit import LogitScorer
    from paperlab.rerank.prompts import GROUPWISE_JSON_V1

    return LogitScorer(llm).score(GROUPWISE_JSON_V1.render("capital of France", PASSAGES[:n]), n)


def _spearman(a: list[float], b: list[float]) -> float:
    def ranks(x: list[float]) -> list[float]:
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        for pos, i in enumerate(order):
            r[i] = float(pos)
        return r

    ra, rb = ranks(a), ranks(b)
    n = len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb, strict=True)) / (n * (n * n - 1))


@pytest.mark.slow
def test_logit_mode_over_http_equals_in_process(vllm_style_server, smollm2_hf) -> None:  # type: ignore[no-untyped-def]
    from paperlab.llm import load_llm

    remote = load_llm(vllm_style_server, timeout=300)
    over_http, here = _logit_scores(remote, 3), _logit_scores(smollm2_hf, 3)
    assert over_http == pytest.approx(here, abs=1e-3)
    assert remote.stream_logprobs is True  # read from the streamed chunks
    r = Reranker(remote, "grouprank", mode="logit", group_size=1, repeats=1).rank("capital of France", DOCS[:2])
    assert sorted(r.doc_ids()) == ["banana", "paris"] and r.stats.model_scored == 2 and r.stats.calls == 2


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a real quantized server on a shared 2-core box
def test_llama_cpp_server_logit_mode_and_json_schema(llama_server, smollm2_hf) -> None:  # type: ignore[no-untyped-def]
    from paperlab.llm import load_llm
    from paperlab.rerank.prompts import GROUPWISE_JSON_V1

    # its chat endpoint closes a prefilled assistant turn, so the packaged chat template is
    # rendered here and /completions gives the quantized model's scores
    remote = load_llm(llama_server.spec, timeout=600, max_concurrency=1, chat_template="smollm2")
    q4, fp32 = _logit_scores(remote, 6), _logit_scores(smollm2_hf, 6)
    rho = _spearman(q4, fp32)
    print(f"llama.cpp Q4_1 vs in-process float32 expected scores: Spearman {rho:.3f}; "
          f"max |diff| {max(abs(a - b) for a, b in zip(q4, fp32, strict=True)):.3f}")
    assert rho >= 0.8  # a quantized runtime: close, not bit-equal
    assert remote.stream_logprobs is True  # it streams top_logprobs (0.14 s a request, not 0.4-0.56)
    # JSON-schema output: OpenAI's form answers HTTP 500 there, llama.cpp's json_object + schema works
    g = remote.generate(GROUPWISE_JSON_V1.render("capital of France", PASSAGES[:2]), max_tokens=24,
                        schema=GROUPWISE_JSON_V1.score_schema(2))
    import json

    assert remote.schema_form == "llama.cpp" and list(json.loads(g.text)) == ["[1]", "[2]"]
