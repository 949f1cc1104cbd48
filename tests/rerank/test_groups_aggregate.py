"""Group construction and aggregation."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paperlab.rerank.aggregate import aggregate_scores, to_ranking
from paperlab.rerank.config import RerankConfig, load_config
from paperlab.rerank.errors import RerankConfigError
from paperlab.rerank.groups import make_groups


def groups_of(n: int, size: int, stride: int | None = None, repeats: int = 6, seed: int = 0):  # type: ignore[no-untyped-def]
    return make_groups(n, RerankConfig(group_size=size, stride=stride, repeats=repeats, seed=seed))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 130), st.integers(1, 25), st.integers(1, 7), st.integers(0, 10**6))
def test_no_overlap_covers_each_passage_exactly_repeats_times(n: int, size: int, repeats: int,
                                                               seed: int) -> None:
    groups = groups_of(n, size, None, repeats, seed)
    counts = Counter(i for g in groups for i in g.members)
    assert all(counts[i] == repeats for i in range(n)) and set(counts) == set(range(n))
    for r in range(repeats):
        members = [i for g in groups if g.repeat == r for i in g.members]
        assert sorted(members) == list(range(n))
    assert all(1 <= len(g.members) <= size for g in groups)
    if n:  # balanced: group sizes differ by at most one within a repeat
        sizes = [len(g.members) for g in groups if g.repeat == 0]
        assert max(sizes) - min(sizes) <= 1


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 80), st.integers(2, 20), st.integers(1, 19), st.integers(1, 3))
def test_overlap_covers_each_passage_at_least_repeats_times(n: int, size: int, stride: int,
                                                             repeats: int) -> None:
    groups = groups_of(n, size, min(stride, size - 1), repeats, 0)
    counts = Counter(i for g in groups for i in g.members)
    assert all(counts[i] >= repeats for i in range(n))
    assert all(len(g.members) == min(size, n) for g in groups)


def test_paper_setting_and_seeding() -> None:
    groups = make_groups(100, RerankConfig(seed=7))  # the published defaults: 20 per group, 6 repeats
    assert len(groups) == 30 and {len(g.members) for g in groups} == {20}
    assert groups_of(100, 20, 20, 6, seed=7) == groups
    assert groups_of(100, 20, 20, 6, seed=8) != groups
    assert groups_of(100, 20, 20, 2, seed=7) == groups[:10]  # more repeats keep earlier ones
    assert [len(g.members) for g in groups_of(101, 20, 20, 1)] == [17, 17, 17, 17, 17, 16]


def test_bad_parameters_raise() -> None:
    # checked once, where the config is made (library, YAML and CLI alike)
    with pytest.raises(RerankConfigError, match="group_size"):
        load_config(group_size=0)
    with pytest.raises(RerankConfigError, match="repeats"):
        load_config(repeats=0)
    with pytest.raises(RerankConfigError, match="stride"):
        load_config(stride=0)


def test_aggregation_matches_hand_computation() -> None:
    # passage 0 scored 8 and 6 -> (0.8 + 0.6) / 2 = 0.7; passage 1 scored 2 -> 0.2;
    # passage 2 never scored -> min-max first stage: (5 - 1) / (9 - 1) = 0.5
    obs = [(0, 8.0), (1, 2.0), (0, 6.0)]
    scores, scored = aggregate_scores(3, obs, [9.0, 1.0, 5.0])
    assert scores == pytest.approx([0.7, 0.2, 0.5])
    assert scored == [True, True, False]
    # fusion 0.6 * reranker + 0.4 * first stage (normalised 1.0, 0.0, 0.5)
    fused, _ = aggregate_scores(3, obs, [9.0, 1.0, 5.0], fusion_weight=0.4)
    assert fused == pytest.approx([0.6 * 0.7 + 0.4 * 1.0, 0.6 * 0.2, 0.6 * 0.5 + 0.4 * 0.5])
    # no first-stage scores: position prior 1 - i/n
    bare, _ = aggregate_scores(3, [(0, 5.0)], None)
    assert bare == pytest.approx([0.5, 1 - 1 / 3, 1 - 2 / 3])


def test_to_ranking_breaks_ties_by_input_order() -> None:
    ranking = to_ranking(["a", "b", "c"], [0.5, 0.9, 0.5])
    assert [(r.doc_id, r.rank) for r in ranking] == [("b", 1), ("a", 2), ("c", 3)]
