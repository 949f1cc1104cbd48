"""The GRPO reward: a pure function checked by hand computations."""

from __future__ import annotations

import math

import pytest

from paperlab.rerank.errors import RerankConfigError
from paperlab.rerank.reward import group_ndcg, reward, reward_from_reply


def test_perfect_group_scores_one() -> None:
    r = reward([10, 0, 10 / 3 * 2], [3, 0, 2])
    assert r.ranking == pytest.approx(1.0)
    assert r.alignment == pytest.approx(1.0)
    assert r.total == pytest.approx(1.0)


def test_hand_computed_terms() -> None:
    # order by score: doc1 (label 0), doc0 (label 1) -> DCG = 0 + 1/log2(3); IDCG = 1
    r = reward([2, 8], [1, 0], max_label=1.0)
    assert r.ranking == pytest.approx(1 / math.log2(3))
    # |0.2 - 1| + |0.8 - 0| = 1.6 -> alignment 1 - 0.8 = 0.2
    assert r.alignment == pytest.approx(0.2)
    assert r.total == pytest.approx(0.6 / math.log2(3) + 0.3 * 0.2 + 0.1)


def test_missing_scores_and_format() -> None:
    r = reward([None, 5], [0, 3], format_ok=True)
    assert r.format == pytest.approx(0.5)
    # the missing id ranks last (ideal here) and counts distance 1; the other is 5/10 vs 3/3
    assert r.ranking == pytest.approx(1.0)
    assert r.alignment == pytest.approx(1 - (1.0 + 0.5) / 2)
    assert reward([None, None], [0, 3]).total == 0.0
    assert reward([0, 5], [0, 3], format_ok=False).format == 0.0


def test_constant_scores_earn_no_ranking_credit() -> None:
    assert group_ndcg([5, 5], [0, 3]) == pytest.approx(7 / math.log2(3) / 7)
    assert group_ndcg([1, 1], [0, 0]) == 1.0


def test_alignment_separates_shifted_scores() -> None:
    # same order, different calibration: NDCG equal, alignment prefers the calibrated one
    good, shifted = reward([10, 0], [3, 0]), reward([10, 9], [3, 0])
    assert good.ranking == shifted.ranking
    assert good.alignment > shifted.alignment


def test_reward_from_reply() -> None:
    ok = reward_from_reply('reason\n{"[1]": 10, "[2]": 0}', [3, 0])
    assert ok.format == 1.0 and ok.total == pytest.approx(1.0)
    cut = reward_from_reply('{"[1]": 10, "[2]', [3, 0])
    assert cut.format == 0.0 and cut.total < ok.total


def test_bad_input() -> None:
    with pytest.raises(RerankConfigError, match="one score per label"):
        reward([1.0], [1, 2])
