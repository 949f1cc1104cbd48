"""Encodings (per-prompt mappings) and k-shot prompt construction."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paperlab.errors import ICLError
from paperlab.icl.encodings import get_encoding
from paperlab.icl.prompts import (
    SYMBOLS_PER_SHOT,
    build_prompt_sets,
    fits,
    mode_answer,
    parse_shots,
    prompt_symbols,
)
from paperlab.icl.tasks import ALL_INPUTS, generate_functions, get_function, to_bits


def test_nucleotide_mapping_uses_three_distinct_bases() -> None:
    scheme = get_encoding("nucleotide")
    seen = set()
    for s in range(50):
        m = scheme.draw(random.Random(s))
        assert len({m.zero, m.one, m.field_sep}) == 3
        assert {m.zero, m.one, m.field_sep} <= set("ACGT")
        assert m.field_sep == m.example_sep
        seen.add((m.zero, m.one, m.field_sep))
    assert len(seen) > 10  # the mapping really varies per prompt


def test_digit_and_alphabet_mappings() -> None:
    m = get_encoding("digit").draw(random.Random(0))
    assert m.zero != m.one and m.zero.isdigit() and m.one.isdigit()
    assert (m.field_sep, m.example_sep) == (",", "\n")
    a = get_encoding("alphabet:xyz").draw(random.Random(1))
    assert {a.zero, a.one} <= set("xyz") and a.zero != a.one


@pytest.mark.parametrize("spec", ["dna", "alphabet:x", "alphabet:xx", "alphabet:a,b"])
def test_bad_encodings_raise(spec: str) -> None:
    with pytest.raises(ICLError):
        get_encoding(spec)


@given(st.sampled_from(ALL_INPUTS), st.integers(0, 1000), st.sampled_from(["nucleotide", "digit"]))
def test_encode_decode_roundtrip(x: tuple[int, ...], seed: int, enc: str) -> None:
    m = get_encoding(enc).draw(random.Random(seed))
    text = m.encode(x)
    assert len(text) == 8 and m.decode(text) == x


def test_decode_rejects_foreign_symbols() -> None:
    m = get_encoding("digit").draw(random.Random(0))
    with pytest.raises(ICLError):
        m.decode("x" * 8)


def test_prompt_layout_and_nesting() -> None:
    f = get_function("not")
    (ps,) = build_prompt_sets([f], get_encoding("nucleotide"), n_prompts=1, max_shots=8, n_queries=2)
    m = ps.mapping
    x0 = ps.examples[0]
    assert ps.prefix_text(1) == m.encode(x0) + m.field_sep + m.encode(f(x0)) + m.example_sep
    q = ps.queries[0]
    p4 = ps.prompt(4, q)
    assert p4.startswith(ps.prefix_text(2)) and p4.endswith(m.encode(q) + m.field_sep)
    assert len(p4) + 8 == prompt_symbols(4) == 4 * SYMBOLS_PER_SHOT + 17
    assert ps.answer(q) == m.encode(f(q))
    assert not set(ps.queries) & set(ps.examples)
    assert len(set(ps.examples)) == 8


def test_prompt_sets_are_seeded_per_function() -> None:
    fs = generate_functions(3)
    a = build_prompt_sets(fs, get_encoding("digit"), n_prompts=2, max_shots=4, seed=5)
    b = build_prompt_sets(fs[1:], get_encoding("digit"), n_prompts=2, max_shots=4, seed=5)
    assert a[2:] == b  # a set does not depend on the other functions in the sweep
    c = build_prompt_sets(fs, get_encoding("digit"), n_prompts=2, max_shots=4, seed=6)
    assert a != c


def test_fits_and_limits() -> None:
    assert fits(32, 640) and not fits(64, 640) and fits(128, None)
    with pytest.raises(ICLError, match="exceed"):
        build_prompt_sets(generate_functions(1), get_encoding("digit"), n_prompts=1, max_shots=250,
                          n_queries=10)


def test_parse_shots() -> None:
    assert parse_shots("8,1,2,2") == [1, 2, 8]
    for bad in ["", "a,b", "0,1", "-1"]:
        with pytest.raises(ICLError):
            parse_shots(bad)


def test_mode_baseline_counts_and_breaks_ties_by_first_seen() -> None:
    f = get_function("parity")
    (ps,) = build_prompt_sets([f], get_encoding("digit"), n_prompts=1, max_shots=16)
    outs = [f(x) for x in ps.examples[:16]]
    expected = max(set(outs), key=lambda y: (outs.count(y), -outs.index(y)))
    assert mode_answer(ps, 16) == expected
    assert mode_answer(ps, 1) == outs[0]
    assert f(to_bits("10000000")) == (1,) * 8
