"""The methods against a scripted far side: an LLM object that answers from a script.

The reranker (grouping, concurrency, re-asks, fallbacks, aggregation) is the real thing; only
the model's replies are scripted, which is what lets each failure mode be provoked on purpose.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paperlab.errors import LLMConnectionError
from paperlab.llm import LLM
from paperlab.rerank import Passage, RerankConfigError, Reranker, RerankLLMError, rank
from paperlab.rerank.methods.listwise import window_starts


@dataclass
class Gen:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"


class ScriptedLLM(LLM):
    """Answers each prompt with ``script(user_message)``; records concurrency and calls."""

    def __init__(self, script: Callable[[str], str], fail_first: int = 0, delay: float = 0.01) -> None:
        super().__init__("scripted", max_concurrency=1024)
        self.script = script
        self.fail_first = fail_first
        self.delay = delay
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompts: list[str] = []

    async def agenerate(self, prompt, **kw):  # type: ignore[no-untyped-def]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            self.calls += 1
            if self.calls <= self.fail_first:
                raise LLMConnectionError("scripted outage")
            user = prompt[-1]["content"]
            self.prompts.append(user)
            return Gen(self.script(user), len(user) // 4, 5)
        finally:
            self.in_flight -= 1

    async def _agenerate_batch(self, prompts, params):  # type: ignore[no-untyped-def]
        return list(await asyncio.gather(*(self.agenerate(p) for p in prompts)))

    async def _ascore(self, prompt, continuations):  # type: ignore[no-untyped-def]
        raise NotImplementedError("the scripted far side only generates")


def passages_in(user: str) -> list[str]:
    return re.findall(r"^\[(\d+)\] (.*)$", user, flags=re.M)


def score_by_number(user: str) -> str:
    """A well-behaved judge: the passage 'doc k' gets score k (so higher k ranks first)."""
    items = passages_in(user)
    return "thinking...\n{" + ", ".join(f'"[{i}]": {int(t.split()[1]) % 11}' for i, t in items) + "}"


def docs(n: int) -> list[Passage]:
    return [Passage(f"d{k}", f"doc {k}", float(n - k)) for k in range(n)]


def test_grouprank_all_groups_concurrent_and_exact_aggregate() -> None:
    llm = ScriptedLLM(score_by_number, delay=0.05)
    r = Reranker(llm, "grouprank", group_size=3, repeats=2).rank("q", docs(10))
    assert llm.calls == 8 and llm.max_in_flight == 8  # 4 groups x 2 repeats, all at once
    assert r.doc_ids() == [f"d{k}" for k in range(9, -1, -1)]
    assert {x.doc_id: x.score for x in r}["d7"] == pytest.approx(0.7)
    assert r.stats.calls == 8 and r.stats.n_fallbacks == 0 and r.stats.n_repairs == 0


def test_truncated_reply_reasks_missing_then_pointwise_fallback() -> None:
    def script(user: str) -> str:
        items = passages_in(user)
        if len(items) == 4:  # the full group: cut off after two entries
            return '{"[1]": 9, "[2]": 1, "[3'
        if len(items) == 2:  # the re-ask for the two missing: prose only
            return "These are hard to judge."
        return '{"[1]": 5}'  # pointwise fallback for each

    r = Reranker(ScriptedLLM(script), "grouprank", group_size=4, repeats=1, shuffle=False,
                 max_retries=1).rank("q", docs(4))
    assert sorted(r.doc_ids()) == ["d0", "d1", "d2", "d3"]
    s = {x.doc_id: x.score for x in r}
    assert s == pytest.approx({"d0": 0.9, "d1": 0.1, "d2": 0.5, "d3": 0.5})
    assert r.stats.repairs["truncated_json"] == 1 and r.stats.repairs["reask_missing"] == 1
    assert r.stats.fallbacks == {"pointwise": 2}
    assert r.stats.calls == 4


def test_first_stage_fallback_keeps_order() -> None:
    r = Reranker(ScriptedLLM(lambda u: "no idea"), "grouprank", group_size=2, repeats=2,
                 fallback="first_stage", max_retries=0).rank("q", docs(5))
    assert r.doc_ids() == ["d0", "d1", "d2", "d3", "d4"]  # first-stage scores 5,4,3,2,1
    assert r.stats.fallbacks["first_stage"] == 10


def test_failed_calls_are_retried_individually() -> None:
    llm = ScriptedLLM(score_by_number, fail_first=2)
    r = Reranker(llm, "grouprank", group_size=2, repeats=1, retry_backoff_s=0.0).rank("q", docs(6))
    assert r.stats.retries >= 1 and r.stats.calls == 3 and r.stats.n_fallbacks == 0
    assert r.doc_ids()[:2] == ["d5", "d4"]


def test_outage_raises_or_falls_back_without_losing_passages() -> None:
    down = ScriptedLLM(score_by_number, fail_first=10**6)
    with pytest.raises(RerankLLMError, match="server behind --llm"):
        Reranker(down, "grouprank", group_size=2, llm_retries=1, retry_backoff_s=0.0).rank("q", docs(4))
    r = Reranker(down, "grouprank", group_size=2, repeats=1, llm_retries=1, retry_backoff_s=0.0,
                 on_llm_error="fallback").rank("q", docs(4))
    assert r.doc_ids() == ["d0", "d1", "d2", "d3"]
    assert r.stats.failed_calls == 2 and r.stats.fallbacks == {"first_stage": 4}
    assert r.stats.all_fallback and r.stats.model_scored == 0 and r.stats.passages == 4


def test_pointwise_one_call_per_passage() -> None:
    llm = ScriptedLLM(score_by_number)
    r = Reranker(llm, "pointwise").rank("q", docs(5))
    assert llm.calls == 5 and r.doc_ids() == ["d4", "d3", "d2", "d1", "d0"]


def test_listwise_sliding_window() -> None:
    assert window_starts(100, 20, 10) == [80, 70, 60, 50, 40, 30, 20, 10, 0]
    assert window_starts(25, 20, 10) == [5, 0]
    assert window_starts(5, 20, 10) == [0]

    def reverse(user: str) -> str:  # prefers higher "doc k"; leaves one id out
        items = sorted(passages_in(user), key=lambda it: -int(it[1].split()[1]))
        return " > ".join(f"[{i}]" for i, _ in items[:-1])

    llm = ScriptedLLM(reverse)
    r = Reranker(llm, "listwise", window=4, window_stride=2).rank("q", docs(8))
    assert llm.calls == 3 and llm.max_in_flight == 1  # windows run one after another
    assert r.doc_ids()[:2] == ["d7", "d6"]
    assert r.stats.repairs["missing_id"] == 3
    assert [x.rank for x in r] == list(range(1, 9))


def test_registry_and_input_errors() -> None:
    with pytest.raises(RerankConfigError, match="valid: grouprank, listwise, pointwise"):
        Reranker(ScriptedLLM(score_by_number), "monot5")
    with pytest.raises(RerankConfigError, match="appears twice"):
        rank("q", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], llm=ScriptedLLM(score_by_number))
    with pytest.raises(RerankConfigError, match="group_size"):
        Reranker(ScriptedLLM(score_by_number), group_size=0)
    with pytest.raises(RerankConfigError, match="next-token log-probabilities.*--mode generate"):
        Reranker(ScriptedLLM(score_by_number), mode="logit").rank("q", docs(2))
    assert len(rank("q", [], llm=ScriptedLLM(score_by_number))) == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=60), min_size=1, max_size=6), st.integers(1, 12), st.integers(1, 5),
       st.integers(1, 3), st.sampled_from(["pointwise", "first_stage"]))
def test_any_replies_give_a_full_permutation(replies: list[str], n: int, size: int, repeats: int,
                                             fallback: str) -> None:
    it = iter(replies * 1000)
    r = Reranker(ScriptedLLM(lambda u: next(it), delay=0.0), "grouprank", group_size=size,
                 repeats=repeats, fallback=fallback).rank("q", docs(n))
    assert sorted(r.doc_ids()) == sorted(p.doc_id for p in docs(n))
    assert [x.rank for x in r] == list(range(1, n + 1))
    assert all(0.0 <= x.score <= 1.0 for x in r)


def test_fallbacks_counted_once_per_passage_per_repeat() -> None:
    # the case: 3 docs x 6 repeats; the group reply and the pointwise re-asks both fail
    r = Reranker(ScriptedLLM(lambda u: "no idea", delay=0.0), "grouprank", group_size=3,
                 repeats=6, max_retries=0, fallback="pointwise").rank("q", docs(3))
    assert r.stats.fallbacks == {"first_stage": 18}  # not 36
    assert r.stats.calls == 6 + 18 and r.stats.all_fallback
    assert r.doc_ids() == ["d0", "d1", "d2"]  # first-stage order, and the stats say so
    ok = Reranker(ScriptedLLM(score_by_number, delay=0.0), "grouprank", group_size=3,
                  repeats=2).rank("q", docs(3))
    assert ok.stats.model_scored == ok.stats.passages == 3 and not ok.stats.all_fallback
    assert ok.results[0].text == "doc 2"


def test_a_refused_request_is_not_sent_again() -> None:
    from paperlab.errors import LLMRefusedError

    class Refusing(ScriptedLLM):
        async def agenerate(self, prompt, **kw):  # type: ignore[no-untyped-def]
            self.calls += 1
            raise LLMRefusedError("http://h/v1 does not serve model 'x'; it serves: y", 404)

    llm = Refusing(score_by_number)
    with pytest.raises(RerankLLMError, match="^http://h/v1 does not serve model 'x'"):
        Reranker(llm, "grouprank", group_size=2, repeats=1, llm_retries=3, retry_backoff_s=0.0).rank("q", docs(2))
    assert llm.calls == 1
