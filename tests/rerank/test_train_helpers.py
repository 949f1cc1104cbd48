"""The pure parts of the GRPO script: example building and the TRL reward wrapper."""

from __future__ import annotations

import pytest

from paperlab.rerank.train_grpo import build_examples, grpo_reward


def test_build_examples_groups_and_labels() -> None:
    ex = build_examples({"q": "query"}, {"q": ["a", "b", "c"]}, {"a": "A", "b": "B", "c": "C"},
                        {"q": {"b": 2}}, group_size=2)
    assert len(ex) == 2
    assert sorted(sum((e["labels"] for e in ex), [])) == [0, 0, 2]
    assert ex[0]["prompt"][-1]["role"] == "user" and "[1]" in ex[0]["prompt"][-1]["content"]


def test_grpo_reward_prefers_the_right_order() -> None:
    good = [{"role": "assistant", "content": '{"[1]": 10, "[2]": 0}'}]
    bad = [{"role": "assistant", "content": '{"[1]": 0, "[2]": 10}'}]
    broken = "I think [1"
    r = grpo_reward([good, bad, broken], [[3, 0]] * 3)
    assert r[0] == pytest.approx(1.0)
    assert r[0] > r[1] > r[2] == 0.0
