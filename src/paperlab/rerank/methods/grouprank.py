"""GroupRank: score shuffled groups of passages in one prompt each, all groups concurrently.

Per group (generate mode): ask, parse, re-ask only for the ids the reply left unscored (up to
``max_retries`` times, as a smaller group), then fall back for what is still missing:
``fallback="pointwise"`` scores each such passage alone with the same rubric;
``"first_stage"`` (or a pointwise call that fails too) leaves it unscored in this group, and a
passage unscored in every group keeps its first-stage place (see
:mod:`paperlab.rerank.aggregate`). Every re-ask and fallback is counted in the stats.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from paperlab.llm import LLM
from paperlab.rerank.groups import Group, make_groups
from paperlab.rerank.methods.base import CallRunner, Method, register
from paperlab.rerank.parse import parse_group_scores
from paperlab.rerank.prompts import PromptTemplate, resolve_template, truncate_passage
from paperlab.rerank.types import Passage, RerankStats


async def _ask(runner: CallRunner, template: PromptTemplate, query: str, texts: Sequence[str],
               members: Sequence[int], stats: RerankStats, max_retries: int
               ) -> tuple[dict[int, float], list[int], bool]:
    """One group prompt plus re-asks for what it left unscored: (scores, still missing,
    whether the LLM answered at all). Counts repairs, never fallbacks."""
    scores: dict[int, float] = {}
    todo = list(members)
    for attempt in range(max_retries + 1):
        reply = await runner.generate(template.render(query, [texts[i] for i in todo]),
                                      schema=template.score_schema(len(todo)))
        if reply is None:
            return scores, todo, False
        parsed = parse_group_scores(reply, len(todo))
        stats.repairs.update(parsed.repairs)
        for local, s in parsed.scores.items():
            scores[todo[local - 1]] = s
        todo = [todo[j - 1] for j in parsed.missing]
        if not todo:
            break
        if attempt < max_retries:
            stats.repairs["reask_missing"] += 1
    return scores, todo, True


async def score_passages(runner: CallRunner, template: PromptTemplate, query: str,
                         texts: Sequence[str], members: Sequence[int], stats: RerankStats,
                         max_retries: int, fallback: str) -> list[tuple[int, float]]:
    """Scores for ``members`` (indices into ``texts``) from one group prompt plus re-asks and
    fallbacks; members that could not be scored are simply absent from the result.

    Each member left without a model score is counted once as a fallback: ``pointwise`` when
    the pointwise re-ask scored it, ``first_stage`` otherwise (also when that re-ask failed).
    """
    scores, todo, alive = await _ask(runner, template, query, texts, members, stats, max_retries)
    if todo and fallback == "pointwise" and alive and len(members) > 1:
        singles = await asyncio.gather(*(
            _ask(runner, template, query, texts, [i], stats, 0) for i in todo))
        for i, (got, _, _) in zip(todo, singles, strict=True):
            if i in got:
                scores[i] = got[i]
                stats.fallbacks["pointwise"] += 1
            else:
                stats.fallbacks["first_stage"] += 1
    elif todo:
        stats.fallbacks["first_stage"] += len(todo)
    return list(scores.items())


@register
class GroupRank(Method):
    """Groupwise scoring over shuffled groups and repeats, mean of score/10 per passage."""

    name = "grouprank"
    default_template = "grouprank/v1"

    def groups(self, n: int) -> list[Group]:
        """The groups this config builds for ``n`` candidates."""
        return make_groups(n, self.cfg)

    async def _arank(self, query: str, passages: Sequence[Passage], stats: RerankStats) -> list[float]:
        c = self.cfg
        texts = [truncate_passage(p.text, c.max_chars) for p in passages]
        template = resolve_template(c.template or self.default_template)
        groups = self.groups(len(passages))
        if c.mode == "logit":
            obs = await _logit_observations(self.llm, template, query, texts, groups, stats)
        else:
            runner = CallRunner(self.llm, c, stats)
            per_group = await asyncio.gather(*(
                score_passages(runner, template, query, texts, g.members, stats, c.max_retries, c.fallback)
                for g in groups))
            obs = [o for got in per_group for o in got]
        return self._scores(passages, obs, stats)


async def _logit_observations(llm: LLM, template: PromptTemplate, query: str,
                              texts: Sequence[str], groups: Sequence[Group],
                              stats: RerankStats) -> list[tuple[int, float]]:
    """Expected scores of every group from token probabilities (see :mod:`paperlab.rerank.logit`)."""
    from paperlab.rerank.logit import logit_observations

    return await logit_observations(llm, template, query, texts, groups, stats)
