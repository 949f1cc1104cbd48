"""The reply parsers: known replies, and hypothesis on arbitrary strings."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from paperlab.rerank.parse import parse_group_scores, parse_permutation


def test_reasoning_then_json() -> None:
    reply = 'Passage [2] is best; [1] mentions {braces}.\n{"[1]": 3, "[2]": 9, "[3]": 0}'
    p = parse_group_scores(reply, 3)
    assert p.scores == {1: 3.0, 2: 9.0, 3: 0.0}
    assert p.complete and p.found_json and not p.repairs


def test_truncated_json_is_repaired_and_counted() -> None:
    p = parse_group_scores('{"[1]": 7, "[2]": 3, "[3', 3)
    assert p.scores == {1: 7.0, 2: 3.0}
    assert p.missing == [3]
    assert p.repairs == {"truncated_json": 1}


def test_bad_values_extra_and_duplicate_ids() -> None:
    p = parse_group_scores('{"[1]": 12, "[2]": "4", "[3]": 6.5, "[4]": 1, "[1]": -2, "[2]": "x"}', 3)
    # JSON keeps the last duplicate key: [1] -> -2 (clipped to 0), [2] -> "x" (unusable)
    assert p.scores == {1: 0.0, 3: 6.5}
    assert p.missing == [2]
    assert p.repairs["extra_id"] == 1 and p.repairs["out_of_range"] == 1
    assert p.repairs["non_integer"] == 1 and p.repairs["bad_value"] == 1


def test_plain_keys_nested_object_and_prose() -> None:
    assert parse_group_scores('{"scores": {"1": 5, "2": 8}}', 2).scores == {1: 5.0, 2: 8.0}
    p = parse_group_scores("I would give [1]: 4 and [2] = 10.", 2)
    assert p.scores == {1: 4.0, 2: 10.0} and p.repairs["prose_scores"] == 1
    none = parse_group_scores("I cannot rank these passages.", 2)
    assert none.scores == {} and none.missing == [1, 2]


def test_permutation_repairs() -> None:
    p = parse_permutation("[3] > [1] > [3] > [7]", 4)
    assert p.order == [2, 0, 1, 3]
    assert p.n_found == 2
    assert p.repairs == {"duplicate_id": 1, "extra_id": 1, "missing_id": 2}
    assert parse_permutation("2, 1", 2).order == [1, 0]
    assert parse_permutation("no idea", 3).order == [0, 1, 2]


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=1, max_value=30))
def test_group_parser_total_on_any_string(text: str, n: int) -> None:
    p = parse_group_scores(text, n)
    assert set(p.scores) | set(p.missing) == set(range(1, n + 1))
    assert not set(p.scores) & set(p.missing)
    assert all(0.0 <= s <= 10.0 for s in p.scores.values())


scores_st = st.dictionaries(st.integers(1, 25), st.integers(-5, 20), max_size=25)


@settings(max_examples=200, deadline=None)
@given(scores_st, st.integers(1, 25), st.text(max_size=40), st.integers(0, 200))
def test_group_parser_recovers_json_and_truncations(scores: dict[int, int], n: int, prose: str,
                                                     cut: int) -> None:
    obj = json.dumps({f"[{k}]": v for k, v in scores.items()})
    full = parse_group_scores(prose.replace("{", "(") + "\n" + obj, n)
    want = {k: float(min(max(v, 0), 10)) for k, v in scores.items() if 1 <= k <= n}
    assert full.scores == want
    # any prefix of the object still yields a subset of the right scores
    part = parse_group_scores(obj[: cut % (len(obj) + 1)], n)
    assert all(want.get(k) == v or str(int(v)) in obj for k, v in part.scores.items())
    assert set(part.scores) | set(part.missing) == set(range(1, n + 1))


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=1, max_value=40))
def test_permutation_parser_always_a_permutation(text: str, n: int) -> None:
    p = parse_permutation(text, n)
    assert sorted(p.order) == list(range(n))
    assert 0 <= p.n_found <= n
