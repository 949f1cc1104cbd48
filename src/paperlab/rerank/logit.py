"""Logit mode: read each passage's score from the probabilities of the score tokens.

Instead of letting a (small) model write text and parsing it, we force the answer's JSON
skeleton ``{"[1]": `` ... and, at each score slot, read the next-token distribution over the
digit tokens. A slot's score is the expected value sum_s s * P(s) over s = 0..10. "10" is two
digit tokens in tokenizers that split digits (SmolLM2, Llama 3, Qwen): P(10) = P("1") *
P("0" | "1") and P(1) = P("1") * (1 - P("0" | "1")). The argmax score is then written into the
skeleton so later slots see a well-formed object, like they would when generating.

Everything goes through :meth:`paperlab.llm.LLM.next_tokens`. With a model in this process
the backend renders the chat template, holds the model's lock, and keeps the key/value cache of
the prompt, so each slot costs the few tokens the skeleton grew by; all groups of a query walk
their slots in lockstep: slot k of every group is one batched call, and the prompt prefix the
groups share is computed once. Over HTTP the distributions come from the server's
``top_logprobs`` (two one-token requests per slot: after the skeleton, and after the forced
"1"); each group walks its slots on its own, at most ``max_concurrency`` groups at once, so a
server that keeps one sequence (llama-cpp-python) extends the same prefix request after request
and a batching server (vLLM, SGLang) serves the groups together from its prefix cache. A digit
outside the server's top log-probabilities counts as probability 0. Nothing can fail to parse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from paperlab.errors import LLMError
from paperlab.llm import LLM, Prompt
from paperlab.rerank.errors import RerankConfigError

if TYPE_CHECKING:
    from paperlab.rerank.groups import Group
    from paperlab.rerank.prompts import PromptTemplate
    from paperlab.rerank.types import RerankStats

DIGITS = [str(d) for d in range(10)]
#: Over HTTP, the first score slot must put at least this much probability on the digits.
MIN_DIGIT_MASS = 0.5
_NEEDS = ("logit mode needs next-token log-probabilities (a model in this process, or a server "
          "that returns top_logprobs); use --llm smollm2, hf:DIR or an openai: server, or --mode generate")


def require_next_tokens(llm: LLM) -> LLM:
    """``llm`` as an LLM that serves next-token distributions, or a clear error naming the fix."""
    if not isinstance(llm, LLM) or not (llm.supports_next_tokens or llm.supports_top_logprobs):
        raise RerankConfigError(_NEEDS)
    return llm


def _digit_ids(llm: LLM) -> list[int]:
    ids = []
    for d in DIGITS:
        enc = llm.tokenize(d)
        if len(enc) != 1:
            raise RerankConfigError(
                f"logit mode needs single-token digits; this tokenizer splits {d!r} into {enc}; use --mode generate")
        ids.append(enc[0])
    return ids


@dataclass
class GroupScores:
    """The expected scores of one group's passages and what reading them cost."""

    scores: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    forced_tokens: int = 0


class LogitScorer:
    """Expected 0-10 scores for the numbered passages of chat prompts, from next-token
    distributions of an LLM (see the module docstring)."""

    def __init__(self, llm: LLM) -> None:
        self.llm = require_next_tokens(llm)
        # a server reports token texts, so only a local tokenizer can be checked for single digits
        self.digits = _digit_ids(self.llm) if self.llm.supports_next_tokens else []
        self.n_prompt_tokens = 0
        self.n_forced_tokens = 0

    async def ascore_groups(self, prompts: Sequence[Prompt],
                            sizes: Sequence[int]) -> list[GroupScores]:
        """Expected scores for passages 1..sizes[g] of each chat prompt ``prompts[g]``."""
        if self.llm.supports_next_tokens:  # one model here: slot k of every group is one batch
            out = await self._walk(prompts, sizes)
        else:  # a server: each group on its own, at most max_concurrency groups at once
            sem = asyncio.Semaphore(self.llm.max_concurrency)

            async def one(g: int) -> GroupScores:
                async with sem:
                    return (await self._walk([prompts[g]], [sizes[g]]))[0]

            out = list(await asyncio.gather(*(one(g) for g in range(len(prompts)))))
        for res in out:
            self.n_prompt_tokens += res.prompt_tokens
            self.n_forced_tokens += res.forced_tokens
        return out

    async def _walk(self, prompts: Sequence[Prompt], sizes: Sequence[int]) -> list[GroupScores]:
        """The groups' slots in lockstep: slot k of every group that has one is one
        :meth:`LLM.anext_tokens` call."""
        out = [GroupScores() for _ in prompts]
        skeleton = ['{"[1]": '] * len(prompts)
        last_len = [0] * len(prompts)
        for k in range(1, max(sizes, default=0) + 1):
            live = [g for g, n in enumerate(sizes) if n >= k]
            try:
                got = await self.llm.anext_tokens([prompts[g] for g in live], DIGITS,
                                                  prefill=[skeleton[g] for g in live], forced="1")
            except LLMError as e:
                raise RerankConfigError(f"logit mode could not read score tokens: {e}; "
                                        "or use --mode generate") from None
            for g, nt in zip(live, got, strict=True):
                res = out[g]
                if k == 1:
                    self._check_slot(nt.dists[0].logprobs)
                    res.prompt_tokens = nt.prompt_tokens
                else:  # the tokens the skeleton grew by, plus the forced "1"
                    res.forced_tokens += max(0, nt.prompt_tokens - last_len[g])
                res.forced_tokens += 1
                last_len[g] = nt.prompt_tokens
                dist = _slot_distribution(nt.dists[0].logprobs, nt.dists[1].logprobs[0])
                res.scores.append(sum(s * w for s, w in enumerate(dist)))
                best = max(range(11), key=lambda s: dist[s])
                skeleton[g] += f'{best}, "[{k + 1}]": '
        return out

    def _check_slot(self, digit_logprobs: list[float]) -> None:
        """A server that does not continue the prefilled reply reads the wrong position: the
        digits then hold little of the mass (0.12 on llama-cpp-python's chat endpoint, which
        closes the assistant turn; nearly 1 where the prefill is continued)."""
        import math

        mass = sum(math.exp(x) for x in digit_logprobs)
        if not self.llm.supports_next_tokens and mass < MIN_DIGIT_MASS:
            raise RerankConfigError(
                f"the server put {mass:.2f} of the probability after '{{\"[1]\": ' on the digits "
                f"(below {MIN_DIGIT_MASS}): it does not continue the prefilled reply; pass "
                "--chat-template with the served model (smollm2, a model dir or .gguf) so paperlab "
                "renders the prompt, or use --mode generate")

    def score(self, messages: Prompt, n: int) -> list[float]:
        """Expected scores for passages 1..n of the chat ``messages`` (one group, sync)."""
        from paperlab.llm import run_sync

        return run_sync(self.ascore_groups([messages], [n]))[0].scores


def _slot_distribution(digit_logprobs: list[float], logprob_0_after_1: float) -> list[float]:
    """P(score = s) for s = 0..10 from the digit log-probs and log P("0" | "1")."""
    import math

    p = [math.exp(x) for x in digit_logprobs]  # a digit a server did not report: exp(-inf) = 0
    mass = sum(p) or 1.0
    p = [x / mass for x in p]
    q = math.exp(logprob_0_after_1)
    dist = p + [p[1] * q]
    dist[1] = p[1] * (1 - q)
    return dist


async def logit_observations(llm: LLM, template: PromptTemplate, query: str, texts: Sequence[str],
                             groups: Sequence[Group], stats: RerankStats) -> list[tuple[int, float]]:
    """(passage index, expected score) for every member of every group, all groups batched."""
    scorer = LogitScorer(llm)
    prompts = [template.render(query, [texts[i] for i in g.members]) for g in groups]
    got = await scorer.ascore_groups(prompts, [len(g.members) for g in groups])
    obs: list[tuple[int, float]] = []
    for g, res in zip(groups, got, strict=True):
        stats.add_generation(res.prompt_tokens, res.forced_tokens)
        obs.extend(zip(g.members, res.scores, strict=True))
    return obs
