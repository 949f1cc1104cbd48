"""SoCE step 3: search the experts' weights, with a resumable journal.

- :func:`grid` enumerates the paper's grid exactly: each weight in {0.1, ..., 0.9}, summing to
  1 (9 / 36 / 84 / 126 points for k = 2 / 3 / 4 / 5). Points are integer tenths, so no float
  drift decides membership.
- :func:`coarse_to_fine` is the cheaper search: the coarse grid of even tenths (steps of 0.2),
  then hill-climbing on the full grid from the best coarse point (move 0.1 from one expert to
  another while that improves). It visits a fraction of the grid; the evaluation counts are
  reported beside the grid's.
- Every evaluated point goes to a JSONL :class:`Journal` as soon as it is scored; a rerun with the
  same journal skips points already done, so an interrupted search resumes where it stopped.
- The objective is the mean of the per-category scores (macro average); ties keep the point
  evaluated first.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paperlab.soup.errors import SearchError

log = logging.getLogger(__name__)

Point = tuple[int, ...]  # weights in tenths, summing to 10
Scores = dict[str, float]
EvalFn = Callable[[tuple[float, ...]], Scores]


def compositions(total: int, k: int, lo: int, hi: int, step: int = 1) -> list[Point]:
    """All k-tuples of multiples of ``step`` in [lo, hi] summing to ``total``, in lexicographic order."""
    values = range(lo, hi + 1, step)
    return [p for p in itertools.product(values, repeat=k) if sum(p) == total]


def grid(k: int) -> list[tuple[float, ...]]:
    """The paper's grid for k experts: weights in {0.1, ..., 0.9}, step 0.1, summing to 1.

    Raises:
        SearchError: k < 1 or k > 10 (no such point exists).
    """
    if k == 1:
        return [(1.0,)]
    if not 2 <= k <= 9:
        raise SearchError(f"the 0.1-step grid needs 2 to 9 experts, got {k}")
    return [to_weights(p) for p in compositions(10, k, 1, 9)]


def to_weights(p: Point) -> tuple[float, ...]:
    return tuple(round(x / 10, 1) for x in p)


def to_point(w: Iterable[float]) -> Point:
    return tuple(int(round(x * 10)) for x in w)


def aggregate(scores: Scores) -> float:
    """The search objective: the macro average of the category scores."""
    return sum(scores.values()) / len(scores) if scores else math.nan


class Journal:
    """An append-only JSONL record of evaluated points, keyed by the search's context.

    The first line holds the context (experts, evaluator, categories); a journal written for
    another context is refused rather than silently mixed in.
    """

    def __init__(self, path: str | Path | None, context: dict[str, Any]) -> None:
        self.path = Path(path) if path else None
        self.context = context
        self.key = hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest()[:16]
        self.done: dict[Point, Scores] = {}
        self.order: list[Point] = []
        if self.path is None:
            return
        if self.path.exists():
            text = self.path.read_text()
            lines = [ln for ln in text.splitlines() if ln.strip()]
            if lines:
                self._load(lines)
            if text and not text.endswith("\n"):
                with open(self.path, "a") as fh:  # end a line cut by a crash before appending
                    fh.write("\n")
        if not self.path.exists() or not self.path.read_text().strip():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w") as fh:
                fh.write(json.dumps({"journal": self.key, "context": context}) + "\n")

    def _load(self, lines: list[str]) -> None:
        try:
            head = json.loads(lines[0])
        except ValueError:
            raise SearchError(f"{self.path}: not a search journal; delete it or choose another path") from None
        if head.get("journal") != self.key:
            raise SearchError(
                f"{self.path} belongs to another search (other experts, evaluator or categories); "
                "delete it or choose another journal path"
            )
        for i, line in enumerate(lines[1:], start=2):
            try:
                rec = json.loads(line)
            except ValueError:
                # A line cut by a crash mid-write: everything before it is good; it is redone.
                log.warning("%s: ignoring unreadable line %d (an interrupted write)", self.path, i)
                continue
            p = to_point(rec["weights"])
            if p not in self.done:
                self.order.append(p)
            self.done[p] = {k: float(v) for k, v in rec["scores"].items()}

    def record(self, p: Point, scores: Scores, tag: str) -> None:
        if p not in self.done:
            self.order.append(p)
        self.done[p] = scores
        if self.path is not None:
            rec = {"weights": list(to_weights(p)), "scores": scores, "aggregate": aggregate(scores), "search": tag}
            with open(self.path, "a") as fh:  # one line per point, flushed at once
                fh.write(json.dumps(rec) + "\n")
                fh.flush()


@dataclass
class SearchResult:
    """Best weights and every point the search looked at."""

    method: str
    best: tuple[float, ...]
    best_scores: Scores
    evaluated: list[tuple[tuple[float, ...], Scores]]  # in evaluation order
    new_evaluations: int  # points scored in this run (the rest came from the journal)

    @property
    def evaluations(self) -> int:
        return len(self.evaluated)

    @property
    def best_aggregate(self) -> float:
        return aggregate(self.best_scores)


class _Runner:
    def __init__(self, fn: EvalFn, journal: Journal, tag: str, on_point: Callable[[], None] | None) -> None:
        self.fn, self.journal, self.tag, self.on_point = fn, journal, tag, on_point
        self.seen: list[Point] = []
        self.new = 0

    def score(self, p: Point) -> float:
        if p not in self.journal.done:
            self.journal.record(p, self.fn(to_weights(p)), self.tag)
            self.new += 1
        if p not in self.seen:
            self.seen.append(p)
            if self.on_point is not None:
                self.on_point()
        return aggregate(self.journal.done[p])

    def result(self, method: str) -> SearchResult:
        best = max(self.seen, key=lambda p: (aggregate(self.journal.done[p]), -self.seen.index(p)))
        evaluated = [(to_weights(p), self.journal.done[p]) for p in self.seen]
        return SearchResult(method, to_weights(best), self.journal.done[best], evaluated, self.new)


def grid_search(fn: EvalFn, k: int, journal: Journal, on_point: Callable[[], None] | None = None) -> SearchResult:
    """Evaluate every grid point (skipping those in the journal) and return the best."""
    run = _Runner(fn, journal, "grid", on_point)
    for w in grid(k):
        run.score(to_point(w))
    return run.result("grid")


def coarse_to_fine(fn: EvalFn, k: int, journal: Journal, on_point: Callable[[], None] | None = None) -> SearchResult:
    """Coarse grid (even tenths), then hill-climbing on the 0.1 grid from the best point."""
    if k == 1:
        return grid_search(fn, k, journal, on_point)
    run = _Runner(fn, journal, "coarse_to_fine", on_point)
    coarse = compositions(10, k, 2, 8, 2) or [_nearest_uniform(k)]
    best = max(coarse, key=lambda p: (run.score(p), -coarse.index(p)))
    best_score = run.score(best)
    while True:
        moves = [_move(best, i, j) for i, j in itertools.permutations(range(k), 2)]
        neighbours = [q for q in moves if all(1 <= x <= 9 for x in q)]
        scored = [(run.score(q), -n, q) for n, q in enumerate(neighbours)]
        top = max(scored, default=None)
        if top is None or top[0] <= best_score:
            break
        best_score, best = top[0], top[2]
    return run.result("coarse_to_fine")


def _move(p: Point, i: int, j: int) -> Point:
    q = list(p)
    q[i] -= 1
    q[j] += 1
    return tuple(q)


def _nearest_uniform(k: int) -> Point:
    base = [10 // k] * k
    for i in range(10 - sum(base)):
        base[i] += 1
    return tuple(base)


SEARCHES: dict[str, Callable[..., SearchResult]] = {"grid": grid_search, "coarse_to_fine": coarse_to_fine}


def get_search(name: str) -> Callable[..., SearchResult]:
    """The weight search called ``name`` (``grid`` or ``coarse_to_fine``)."""
    try:
        return SEARCHES[name]
    except KeyError:
        raise SearchError(f"unknown search {name!r}; valid searches: {', '.join(SEARCHES)}") from None
