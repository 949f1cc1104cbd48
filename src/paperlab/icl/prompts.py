"""k-shot prompts: prompt sets, their text, and whether they fit a model's context.

A :class:`PromptSet` is one Monte Carlo draw for one hidden function: a mapping (drawn from the
encoding scheme), ``max_shots`` distinct example inputs and ``n_queries`` query inputs that never
appear among the examples. The k-shot prompt for a query uses the *first k* examples, so the
prompts for k = 1, 2, 4, ... are nested: a model can encode the longest prefix once and reuse its
key/value cache for every shorter k and every query (see :mod:`paperlab.icl.scoring`).

Layout of one example: ``INPUT field_sep OUTPUT example_sep``; a prompt ends with
``QUERY field_sep`` and the model must continue with the 8 output symbols.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from paperlab.errors import ICLError
from paperlab.icl.encodings import EncodingScheme, Mapping
from paperlab.icl.tasks import ALL_INPUTS, N_BITS, Bits, TaskFunction

DEFAULT_SHOTS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
SYMBOLS_PER_SHOT = 2 * N_BITS + 2


@dataclass(frozen=True)
class PromptSet:
    """One draw of examples, queries and mapping for one function."""

    function: TaskFunction
    replicate: int
    mapping: Mapping
    examples: tuple[Bits, ...]
    queries: tuple[Bits, ...]

    def example_text(self, x: Bits) -> str:
        """One complete example: input, field separator, output, example separator."""
        m = self.mapping
        return m.encode(x) + m.field_sep + m.encode(self.function(x)) + m.example_sep

    def prefix_text(self, k: int) -> str:
        """The first ``k`` examples."""
        return "".join(self.example_text(x) for x in self.examples[:k])

    def query_text(self, q: Bits) -> str:
        """What follows the examples: the query input and the field separator."""
        return self.mapping.encode(q) + self.mapping.field_sep

    def prompt(self, k: int, q: Bits) -> str:
        """The full k-shot prompt for query ``q`` (without its answer)."""
        return self.prefix_text(k) + self.query_text(q)

    def answer(self, q: Bits) -> str:
        """The expected 8 output symbols for query ``q``."""
        return self.mapping.encode(self.function(q))


def parse_shots(text: str) -> list[int]:
    """Parse ``"1,2,4,8"`` into sorted distinct positive shot counts.

    Raises:
        ICLError: not a comma-separated list of positive integers.
    """
    try:
        shots = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise ICLError(f"--shots must be comma-separated integers like 1,2,4,8; got {text!r}") from None
    if not shots or shots[0] < 1:
        raise ICLError(f"--shots needs positive integers like 1,2,4,8; got {text!r}")
    return shots


def prompt_symbols(k: int) -> int:
    """Symbols in a k-shot prompt including the 8 answer symbols it is scored on."""
    return k * SYMBOLS_PER_SHOT + N_BITS + 1 + N_BITS


def fits(k: int, context: int | None) -> bool:
    """Whether a k-shot prompt plus its answer fits ``context`` tokens (one token per symbol)."""
    return context is None or prompt_symbols(k) <= context


def build_prompt_sets(
    functions: Sequence[TaskFunction],
    scheme: EncodingScheme,
    *,
    n_prompts: int,
    max_shots: int,
    n_queries: int = 1,
    seed: int = 0,
) -> list[PromptSet]:
    """Draw ``n_prompts`` prompt sets per function.

    Each set's RNG is seeded from ``(seed, function name, replicate)``, so a set does not change
    when other functions or shot counts are added to a sweep.

    Raises:
        ICLError: more examples plus queries requested than there are distinct 8-bit inputs.
    """
    if max_shots + n_queries > len(ALL_INPUTS):
        raise ICLError(
            f"max shots ({max_shots}) + queries ({n_queries}) exceed the {len(ALL_INPUTS)} distinct "
            "8-bit inputs; lower --shots or --queries"
        )
    if n_prompts < 1 or n_queries < 1:
        raise ICLError("--prompts and --queries must be at least 1")
    sets = []
    for f in functions:
        for r in range(n_prompts):
            rng = random.Random(f"{seed}:{f.name}:{r}")
            mapping = scheme.draw(rng)
            drawn = rng.sample(ALL_INPUTS, max_shots + n_queries)
            sets.append(
                PromptSet(f, r, mapping, tuple(drawn[:max_shots]), tuple(drawn[max_shots:]))
            )
    return sets


def mode_answer(ps: PromptSet, k: int) -> Bits:
    """The mode baseline: the most frequent output among the first k examples.

    Ties go to the output seen first, so the baseline is deterministic.
    """
    counts: dict[Bits, int] = {}
    for x in ps.examples[:k]:
        y = ps.function(x)
        counts[y] = counts.get(y, 0) + 1
    best = max(counts.values())
    return next(y for y, c in counts.items() if c == best)
