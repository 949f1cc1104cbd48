"""Listwise baseline (RankGPT-style sliding window): the model outputs a permutation of a
window of passages; windows slide from the bottom of the list to the top (window 20, stride
10 by default), so good passages bubble up. Windows depend on each other, so they run one
after another — the cost GroupRank's independent groups avoid.

A listwise reply carries no scores: a passage's score is ``1 - (rank - 1) / n`` from its final
position. Missing ids are appended in window order (repair ``missing_id``); a reply without any
id, or an LLM failure with ``on_llm_error="fallback"``, keeps the window as it was (fallback
``window_kept``).
"""

from __future__ import annotations

from collections.abc import Sequence

from paperlab.rerank.errors import RerankConfigError
from paperlab.rerank.methods.base import CallRunner, Method, register
from paperlab.rerank.parse import parse_permutation
from paperlab.rerank.prompts import resolve_template, truncate_passage
from paperlab.rerank.types import Passage, RerankStats


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows, last (bottom) window first, the top window last."""
    if n <= window:
        return [0]
    starts = list(range(n - window, -1, -stride))
    if starts[-1] != 0:
        starts.append(0)
    return starts


@register
class Listwise(Method):
    """Sliding-window permutation reranking."""

    name = "listwise"
    default_template = "listwise/v1"

    async def _arank(self, query: str, passages: Sequence[Passage], stats: RerankStats) -> list[float]:
        c = self.cfg
        if c.mode == "logit":
            raise RerankConfigError("listwise has no logit mode (it outputs a permutation); use --mode generate")
        texts = [truncate_passage(p.text, c.max_chars) for p in passages]
        template = resolve_template(c.template or self.default_template)
        runner = CallRunner(self.llm, c, stats)
        order = list(range(len(passages)))  # first-stage order to start with
        ordered: set[int] = set()  # passages some usable reply placed
        for start in window_starts(len(order), c.window, c.window_stride):
            win = order[start : start + c.window]
            reply = await runner.generate(template.render(query, [texts[i] for i in win]))
            if reply is None:
                stats.fallbacks["window_kept"] += 1
                continue
            parsed = parse_permutation(reply, len(win))
            stats.repairs.update(parsed.repairs)
            if parsed.n_found == 0:
                stats.fallbacks["window_kept"] += 1
                continue
            order[start : start + c.window] = [win[j] for j in parsed.order]
            ordered.update(win)
        n = len(order)
        stats.passages += n
        stats.model_scored += len(ordered)
        scores = [0.0] * n
        for pos, i in enumerate(order):
            scores[i] = 1.0 - pos / n
        return scores
