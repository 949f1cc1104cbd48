"""The weight grid, the cheaper search, and resuming from the journal."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import pytest

from paperlab.soup.errors import SearchError
from paperlab.soup.search import Journal, coarse_to_fine, grid, grid_search


@pytest.mark.parametrize("k,size", [(2, 9), (3, 36), (4, 84), (5, 126)])
def test_grid_size_and_content(k: int, size: int) -> None:
    g = grid(k)
    assert len(g) == size == comb(9, k - 1)  # compositions of 10 into k positive parts
    assert len(set(g)) == size
    for w in g:
        assert len(w) == k and all(x in {round(i / 10, 1) for i in range(1, 10)} for x in w)
        assert round(sum(w), 6) == 1.0
    if k == 2:
        assert g == [(0.1, 0.9), (0.2, 0.8), (0.3, 0.7), (0.4, 0.6), (0.5, 0.5), (0.6, 0.4), (0.7, 0.3), (0.8, 0.2), (0.9, 0.1)]
    with pytest.raises(SearchError):
        grid(11)


def peaked(target: tuple[float, ...]):  # type: ignore[no-untyped-def]
    def fn(w: tuple[float, ...]) -> dict[str, float]:
        return {"x": -sum((a - b) ** 2 for a, b in zip(w, target, strict=False)), "y": 1.0}
    return fn


@pytest.mark.parametrize("target", [(0.3, 0.7), (0.1, 0.2, 0.7), (0.4, 0.3, 0.2, 0.1), (0.2, 0.2, 0.2, 0.3, 0.1)])
def test_coarse_to_fine_finds_grid_best_with_fewer_evaluations(target: tuple[float, ...]) -> None:
    k = len(target)
    full = grid_search(peaked(target), k, Journal(None, {}))
    cheap = coarse_to_fine(peaked(target), k, Journal(None, {}))
    assert full.best == target
    assert cheap.best == target and cheap.best_aggregate == full.best_aggregate
    assert cheap.evaluations < full.evaluations


def test_search_resumes_after_interruption(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    calls: list[tuple[float, ...]] = []

    def fn(w: tuple[float, ...]) -> dict[str, float]:
        calls.append(w)
        if len(calls) == 20:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-search
        return peaked((0.2, 0.3, 0.5))(w)

    with pytest.raises(KeyboardInterrupt):
        grid_search(fn, 3, Journal(path, {"experts": ["a", "b", "c"]}))
    assert len(path.read_text().splitlines()) == 1 + 19  # header + the 19 points scored
    with open(path, "a") as fh:
        fh.write('{"weights": [0.1, 0.')  # a line cut by the crash is ignored, then redone
    calls.clear()
    res = grid_search(fn, 3, Journal(path, {"experts": ["a", "b", "c"]}))
    assert len(calls) == 36 - 19 and res.new_evaluations == 17 and res.evaluations == 36
    assert res.best == (0.2, 0.3, 0.5)
    calls.clear()
    grid_search(fn, 3, Journal(path, {"experts": ["a", "b", "c"]}))
    assert calls == []  # everything is in the journal now
    with pytest.raises(SearchError, match="belongs to another search"):
        Journal(path, {"experts": ["a", "b", "d"]})
    recs = [json.loads(x) for x in path.read_text().splitlines()[1:] if x.endswith("}")]
    assert all("aggregate" in r and r["search"] == "grid" for r in recs)
