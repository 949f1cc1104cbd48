"""Value types of the reranker: input passages, ranked results and the cost/repair ledger."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

#: Model scores (0-1 scale: the 0-10 rubric / 10) whose spread within one ranking is below
#: this are flat. A tenth of one rubric point: an integer reply can never make a smaller nonzero
#: spread (the mean of s/10 over R repeats moves in steps of 1/(10 R), 0.017 at the published 6
#: repeats), so in generate mode "flat" means every passage got the same score in every group;
#: in logit mode it means expected scores that differ by less than a tenth of a point across the
#: whole list, an order no reader of the scores could tell from ties.
FLAT_SPREAD = 0.01


@dataclass(frozen=True)
class Passage:
    """One candidate passage.

    Attributes:
        doc_id: the id the caller knows the passage by (unique within one ranking call).
        text: the passage text (title already joined in, if any).
        first_stage_score: the retriever's score (BM25, dense, ...) or None when unknown.
    """

    doc_id: str
    text: str
    first_stage_score: float | None = None


@dataclass(frozen=True)
class RankedResult:
    """One passage in the output ranking: ``rank`` is 1-based, higher ``score`` ranks first;
    ``text`` is the passage as given (empty when the caller passed none)."""

    doc_id: str
    score: float
    rank: int
    text: str = ""


@dataclass
class RerankStats:
    """What one ranking call cost and how often the reply had to be repaired.

    ``repairs`` counts replies fixed in place (truncated JSON closed, an out-of-range score
    clipped, a missing id filled by a retry ...), keyed by kind. ``fallbacks`` counts, keyed by
    kind, the passages whose score in one group came from the documented fallback instead of
    the model: once per passage per group it sat in (so once per repeat without overlap;
    listwise counts kept windows, ``window_kept``). ``failed_calls`` counts LLM calls that
    failed for good (after retries). ``passages`` and ``model_scored`` say how many passages
    were ranked and how many of them got at least one score from the model: a ranking with
    ``model_scored == 0`` is the first stage's order. ``score_spread`` is the spread
    (max - min, on the 0-1 scale) of the model's scores within one ranking, and
    ``flat_rankings`` counts rankings whose spread is below :data:`FLAT_SPREAD`: the model gave
    every passage (nearly) the same score, so the order is the first stage's tie-break, not the
    model's judgement. ``first_stage_only`` counts rankings where no model was run (the packaged
    model's default, see ``config.PROFILES``). Nothing is ever dropped: the ledger is how a
    user sees that something went wrong.
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failed_calls: int = 0
    passages: int = 0
    model_scored: int = 0
    wall_s: float = 0.0
    score_spread: float | None = None
    flat_rankings: int = 0
    first_stage_only: int = 0
    repairs: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)

    def add_generation(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Account for one LLM call."""
        self.calls += 1
        self.prompt_tokens += int(prompt_tokens)
        self.completion_tokens += int(completion_tokens)

    def note_spread(self, model_scores: list[float]) -> None:
        """Record the spread of one ranking's model scores (0-1 scale) and whether it is flat."""
        if len(model_scores) < 2:
            return
        self.score_spread = max(model_scores) - min(model_scores)
        self.flat_rankings += int(self.score_spread < FLAT_SPREAD)

    def merge(self, other: RerankStats) -> None:
        """Add another ledger into this one (wall times add up too)."""
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.retries += other.retries
        self.failed_calls += other.failed_calls
        self.passages += other.passages
        self.model_scored += other.model_scored
        self.wall_s += other.wall_s
        self.flat_rankings += other.flat_rankings
        self.first_stage_only += other.first_stage_only
        self.repairs.update(other.repairs)
        self.fallbacks.update(other.fallbacks)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> RerankStats:
        """The inverse of :meth:`to_dict` (missing keys are zero)."""
        def num(k: str) -> int:
            v = d.get(k, 0)
            return int(v) if isinstance(v, int | float) else 0

        wall = d.get("wall_s", 0.0)
        spread = d.get("score_spread")
        repairs, fallbacks = d.get("repairs") or {}, d.get("fallbacks") or {}
        return cls(calls=num("calls"), prompt_tokens=num("prompt_tokens"),
                   completion_tokens=num("completion_tokens"), retries=num("retries"),
                   failed_calls=num("failed_calls"), passages=num("passages"),
                   model_scored=num("model_scored"),
                   wall_s=float(wall) if isinstance(wall, int | float) else 0.0,
                   score_spread=float(spread) if isinstance(spread, int | float) else None,
                   flat_rankings=num("flat_rankings"), first_stage_only=num("first_stage_only"),
                   repairs=Counter(repairs if isinstance(repairs, dict) else {}),
                   fallbacks=Counter(fallbacks if isinstance(fallbacks, dict) else {}))

    @property
    def n_repairs(self) -> int:
        """Total repairs of all kinds."""
        return sum(self.repairs.values())

    @property
    def n_fallbacks(self) -> int:
        """Total fallbacks of all kinds."""
        return sum(self.fallbacks.values())

    @property
    def all_fallback(self) -> bool:
        """True when passages were ranked but none got a model score (first-stage order)."""
        return self.passages > 0 and self.model_scored == 0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "retries": self.retries,
            "failed_calls": self.failed_calls,
            "passages": self.passages,
            "model_scored": self.model_scored,
            "wall_s": round(self.wall_s, 4),
            "score_spread": None if self.score_spread is None else round(self.score_spread, 6),
            "flat_rankings": self.flat_rankings,
            "first_stage_only": self.first_stage_only,
            "repairs": dict(self.repairs),
            "fallbacks": dict(self.fallbacks),
        }


@dataclass
class Ranking:
    """The output of one ranking call: every input passage exactly once, best first."""

    results: list[RankedResult]
    stats: RerankStats
    method: str

    def doc_ids(self) -> list[str]:
        """The doc ids in rank order."""
        return [r.doc_id for r in self.results]

    def top(self, k: int) -> list[RankedResult]:
        """The best ``k`` results."""
        return self.results[:k]

    def __iter__(self) -> Iterator[RankedResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)
