"""Synthetic function-calling tasks with exact answers, in four BFCL-like categories.

- ``simple``: one request, one call.        ``Q:weather in oslo`` -> ``get_weather(city=oslo)``
- ``multiple``: pick from listed functions whose names are aliases.
                                            ``F:a=time,b=weather Q:weather in oslo`` -> ``b(city=oslo)``
- ``parallel``: two requests, two calls.    ``Q:time in rome and lima`` -> ``get_time(city=rome);get_time(city=lima)``
- ``irrelevance``: no listed function fits. ``F:a=time,b=taxi Q:weather in oslo`` -> ``none``

Everything is generated from a seed, so a split is reproducible; validation and test prompts are
drawn from disjoint seeds and deduplicated against each other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from paperlab.soup.errors import MergeConfigError

CATEGORIES = ("simple", "multiple", "parallel", "irrelevance")
FUNCS = {"weather": "get_weather", "time": "get_time", "taxi": "book_taxi", "hotel": "find_hotel"}
PHRASES = {"weather": ("weather in", "forecast for"), "time": ("time in", "clock in"),
           "taxi": ("taxi to", "ride to"), "hotel": ("hotel in", "room in")}
CITIES = ("oslo", "rome", "lima", "kyiv", "bern", "doha", "riga", "baku", "lome", "suva",
          "apia", "male", "nuuk", "oran", "pisa", "agra", "bonn", "cork", "graz", "hue",
          "ipoh", "jena", "kobe", "lodz", "mainz", "nice", "ohio", "perm", "reno", "sfax", "tver", "ulm")
ALIASES = "abcd"
PAD, EOS = "<pad>", "<eos>"
# Word-level tokens (each word or punctuation mark, spaces and newlines included, is one token):
# a few-M-parameter model learns to copy a city in one token far faster than in four characters.
TOKEN_PATTERN = r"\w+|[^\w]"
WORDS = ("F", "Q", "A", "in", "to", "and", "city", "none", *ALIASES, *FUNCS, *FUNCS.values(),
         *[w for ps in PHRASES.values() for p in ps for w in p.split()], *CITIES, "(", ")", "=", ",", ";", ":", " ", "\n")
VOCAB = [PAD, EOS, *dict.fromkeys(WORDS)]


@dataclass(frozen=True)
class Example:
    """One task instance: the prompt ends with 'A:'; the answer is what must follow."""

    category: str
    prompt: str
    answer: str


def _listing(rng: random.Random, kinds: list[str]) -> tuple[str, dict[str, str]]:
    rng.shuffle(kinds)
    alias = {k: ALIASES[i] for i, k in enumerate(kinds)}
    return "F:" + ",".join(f"{alias[k]}={k}" for k in kinds) + "\n", alias


def make_example(category: str, rng: random.Random) -> Example:
    """Draw one example of ``category``."""
    kind = rng.choice(list(FUNCS))
    city = rng.choice(CITIES)
    phrase = rng.choice(PHRASES[kind])
    if category == "simple":
        return Example(category, f"Q:{phrase} {city}\nA:", f"{FUNCS[kind]}(city={city})")
    if category == "multiple":
        others = rng.sample([k for k in FUNCS if k != kind], 2)
        listing, alias = _listing(rng, [kind, *others])
        return Example(category, f"{listing}Q:{phrase} {city}\nA:", f"{alias[kind]}(city={city})")
    if category == "parallel":
        city2 = rng.choice([c for c in CITIES if c != city])
        call = FUNCS[kind]
        return Example(category, f"Q:{phrase} {city} and {city2}\nA:", f"{call}(city={city});{call}(city={city2})")
    if category == "irrelevance":
        others = rng.sample([k for k in FUNCS if k != kind], 2)
        listing, _ = _listing(rng, others)
        return Example(category, f"{listing}Q:{phrase} {city}\nA:", "none")
    raise MergeConfigError(f"unknown zoo category {category!r}; categories: {', '.join(CATEGORIES)}")


def make_split(seed: int, per_category: int, categories: tuple[str, ...] = CATEGORIES,
               exclude: set[str] | None = None) -> list[Example]:
    """``per_category`` distinct examples of each category (none of whose prompts is in ``exclude``)."""
    rng = random.Random(seed)
    out: list[Example] = []
    exclude = set(exclude or ())
    for cat in categories:
        seen: set[str] = set()
        tries = 0
        while len(seen) < per_category:
            ex = make_example(cat, rng)
            tries += 1
            if ex.prompt not in seen and ex.prompt not in exclude:
                seen.add(ex.prompt)
                out.append(ex)
            if tries > 200 * per_category:
                raise MergeConfigError(f"cannot draw {per_category} distinct {cat} examples; lower the zoo's "
                                       "examples per category")
    return out


def sample_mix(rng: random.Random, mix: dict[str, float], n: int, exclude: frozenset[str] = frozenset()) -> list[Example]:
    """``n`` training examples, categories drawn with probabilities ``mix``, none of whose
    prompts is in ``exclude`` (the benchmark's, so the benchmark stays held out)."""
    cats, probs = zip(*mix.items(), strict=True)
    out: list[Example] = []
    while len(out) < n:
        ex = make_example(rng.choices(cats, probs)[0], rng)
        if ex.prompt not in exclude:
            out.append(ex)
    return out
