"""From per-group scores to one global ranking with a score for every passage.

GroupRank's rule: a passage's reranker score is the mean of its scores / 10 over all the
groups it appeared in. Optional fusion with the first stage:
``final = (1 - w) * reranker + w * first_stage`` where the first-stage scores are min-max
normalised over the candidates (the paper uses w = 0.4).

A passage that got no model score at all (every try and fallback failed) keeps its place from
the first stage: its reranker score is its min-max normalised first-stage score, or
``1 - i/n`` by input position when no first-stage scores were given. Ties are broken by input
order, so the output is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

from paperlab.rerank.types import RankedResult


def minmax(values: Sequence[float]) -> list[float]:
    """Min-max normalise to [0, 1]; a constant list maps to all 1.0."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi == lo:
        return [1.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def first_stage_prior(first_stage: Sequence[float | None]) -> list[float]:
    """A [0, 1] score per passage from the first stage (scores if all given, else position)."""
    n = len(first_stage)
    if n and all(s is not None for s in first_stage):
        return minmax([float(s) for s in first_stage])  # type: ignore[arg-type]
    return [1.0 - i / n for i in range(n)]


def aggregate_scores(n: int, observations: Sequence[tuple[int, float]],
                     first_stage: Sequence[float | None] | None = None,
                     fusion_weight: float = 0.0, scale: float = 10.0) -> tuple[list[float], list[bool]]:
    """Mean normalised score per passage, with fusion and the first-stage fallback.

    Args:
        n: number of passages.
        observations: (passage index, raw score on 0..scale) pairs from all groups/repeats.
        first_stage: first-stage scores in input order (None entries allowed).
        fusion_weight: w in ``(1 - w) * reranker + w * first_stage``.
        scale: the raw score scale (10 for the 0-10 rubric).

    Returns:
        (final scores in input order, whether each passage had at least one model score).
    """
    sums = [0.0] * n
    counts = [0] * n
    for idx, raw in observations:
        sums[idx] += raw / scale
        counts[idx] += 1
    prior = first_stage_prior(list(first_stage) if first_stage is not None else [None] * n)
    scored = [c > 0 for c in counts]
    rerank = [sums[i] / counts[i] if counts[i] else prior[i] for i in range(n)]
    if fusion_weight:
        rerank = [(1 - fusion_weight) * r + fusion_weight * p for r, p in zip(rerank, prior, strict=True)]
    return rerank, scored


def model_means(n: int, observations: Sequence[tuple[int, float]], scale: float = 10.0) -> list[float]:
    """The mean model score (0-1) of every passage that got at least one, in input order."""
    sums = [0.0] * n
    counts = [0] * n
    for idx, raw in observations:
        sums[idx] += raw / scale
        counts[idx] += 1
    return [sums[i] / counts[i] for i in range(n) if counts[i]]


def to_ranking(doc_ids: Sequence[str], scores: Sequence[float],
               texts: Sequence[str] | None = None) -> list[RankedResult]:
    """Sort by score (desc), ties by input position; ranks start at 1."""
    order = sorted(range(len(doc_ids)), key=lambda i: (-scores[i], i))
    return [RankedResult(doc_ids[i], float(scores[i]), r, texts[i] if texts is not None else "")
            for r, i in enumerate(order, start=1)]
