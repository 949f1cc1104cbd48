"""The training reward for groupwise scoring (our own design: the paper's formula is not public).

For one group with graded labels ``l_i`` (0..max_label) and predicted scores ``s_i`` (0..10,
None where the reply gave none):

    reward = w_rank * NDCG(order by s; gains 2^l - 1)          ranking utility in the group
           + w_align * (1 - mean_i |s_i/10 - l_i/max_label|)   group alignment (calibration)
           + w_format * fraction of ids that got a valid score   format validity

- Ranking utility: NDCG over the whole group, ties broken against the model (a tie between a
  relevant and an irrelevant passage ranks the irrelevant one first), so constant scores earn
  no utility. A group with no relevant passage has utility 1 (every order is ideal).
- Group alignment: the L1 distance between the normalised predicted scores and normalised
  graded labels. NDCG alone is invariant to shifting all scores of a group, so it cannot make
  a "7" in one group mean what a "7" means in another; this term does, which is what the
  global ranking (mean of score/10 over groups) needs.
- Format validity: the fraction of ids with a usable score; :func:`reward_from_reply` zeroes
  it when the reply needed repairs. A missing id ranks below every scored one and counts as
  the largest distance (1) in the alignment term; a reply with no usable score at all gets a
  total of 0, so it never beats a valid but wrong answer.

Default weights (0.6, 0.3, 0.1) keep the reward in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from paperlab.rerank.errors import RerankConfigError
from paperlab.rerank.parse import parse_group_scores


@dataclass(frozen=True)
class Reward:
    """The reward and its three terms (each in [0, 1])."""

    total: float
    ranking: float
    alignment: float
    format: float


def group_ndcg(scores: Sequence[float], labels: Sequence[float]) -> float:
    """NDCG of the order induced by ``scores`` (desc), ties broken pessimistically."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], labels[i]))
    dcg = sum((2 ** labels[i] - 1) / math.log2(r + 2) for r, i in enumerate(order))
    ideal = sorted(labels, reverse=True)
    idcg = sum((2**g - 1) / math.log2(r + 2) for r, g in enumerate(ideal))
    return 1.0 if idcg == 0 else dcg / idcg


def reward(scores_for_group: Sequence[float | None], labels: Sequence[float], *,
           max_label: float = 3.0, weights: tuple[float, float, float] = (0.6, 0.3, 0.1),
           format_ok: bool = True) -> Reward:
    """Reward one group's predicted scores against its graded labels (pure function).

    Args:
        scores_for_group: predicted 0-10 scores in group order; None = not given.
        labels: graded relevance labels (0..max_label), same order and length.
        max_label: the top grade (3 for TREC DL).
        weights: (ranking, alignment, format) weights.
        format_ok: False zeroes the format term (e.g. the reply needed repairs).

    Raises:
        RerankConfigError: lengths differ, the group is empty, or max_label <= 0.
    """
    if len(scores_for_group) != len(labels) or not labels:
        raise RerankConfigError(
            f"reward needs one score per label and a non-empty group; got {len(scores_for_group)} "
            f"scores for {len(labels)} labels")
    if max_label <= 0:
        raise RerankConfigError(f"max_label must be > 0, got {max_label}")
    given = [s is not None and math.isfinite(s) for s in scores_for_group]
    if not any(given):
        return Reward(0.0, 0.0, 0.0, 0.0)
    s = [min(max(float(x), 0.0), 10.0) if ok else -1.0 for x, ok in zip(scores_for_group, given, strict=True)]  # type: ignore[arg-type]
    lab = [min(max(float(x), 0.0), max_label) for x in labels]
    ranking = group_ndcg(s, lab)
    dist = [abs(a / 10.0 - b / max_label) if ok else 1.0 for a, b, ok in zip(s, lab, given, strict=True)]
    alignment = 1.0 - sum(dist) / len(dist)
    fmt = (sum(given) / len(given)) if format_ok else 0.0
    w_r, w_a, w_f = weights
    return Reward(w_r * ranking + w_a * alignment + w_f * fmt, ranking, alignment, fmt)


def reward_from_reply(reply: str, labels: Sequence[float], **kwargs: object) -> Reward:
    """Parse a group reply and reward it; a reply that needed any repair gets format 0."""
    parsed = parse_group_scores(reply, len(labels))
    scores = [parsed.scores.get(i) for i in range(1, len(labels) + 1)]
    ok = parsed.found_json and not parsed.repairs and parsed.complete
    return reward(scores, labels, format_ok=ok, **kwargs)  # type: ignore[arg-type]
