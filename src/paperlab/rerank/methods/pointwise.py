"""Pointwise baseline: one passage per call, the same 0-10 rubric and reply format as
GroupRank (a group of one), so the two differ only in what the model sees at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from paperlab.rerank.groups import Group
from paperlab.rerank.methods.base import CallRunner, Method, register
from paperlab.rerank.methods.grouprank import _logit_observations, score_passages
from paperlab.rerank.prompts import resolve_template, truncate_passage
from paperlab.rerank.types import Passage, RerankStats


@register
class Pointwise(Method):
    """Each passage scored alone; unparseable replies are re-asked, then keep first-stage place."""

    name = "pointwise"
    default_template = "grouprank/v1"

    async def _arank(self, query: str, passages: Sequence[Passage], stats: RerankStats) -> list[float]:
        c = self.cfg
        texts = [truncate_passage(p.text, c.max_chars) for p in passages]
        template = resolve_template(c.template or self.default_template)
        if c.mode == "logit":
            singles = [Group(0, (i,)) for i in range(len(passages))]
            obs = await _logit_observations(self.llm, template, query, texts, singles, stats)
        else:
            runner = CallRunner(self.llm, c, stats)
            per = await asyncio.gather(*(
                score_passages(runner, template, query, texts, [i], stats, c.max_retries, "first_stage")
                for i in range(len(passages))))
            obs = [o for got in per for o in got]
        return self._scores(passages, obs, stats)
