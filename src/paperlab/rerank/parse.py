"""Robust parsing of LLM replies: group score objects and listwise permutations.

The parsers never raise on a reply string: any text at all yields a result, plus a count of
what had to be repaired. The methods decide what to do with what is still missing (retry, then
fall back) — see :mod:`paperlab.rerank.methods.base`.

Repairs counted (``repairs`` keys):

- ``truncated_json``: no complete JSON object; scores read from the cut-off object.
- ``prose_scores``: no JSON at all; scores read from ``[3]: 7``-like pairs in the text.
- ``extra_id``: an id outside 1..n (ignored).
- ``duplicate_id``: an id given twice (the last value wins for scores, the first position for
  permutations).
- ``non_integer``: a fractional score (kept as is).
- ``string_score``: a score written as a string ("7") (converted).
- ``bad_value``: a value that is no number (ignored; the id then counts as missing).
- ``out_of_range``: a score outside 0-10 (clipped).
- ``missing_id`` (permutations): ids the reply left out, appended in input order.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

SCORE_MIN = 0.0
SCORE_MAX = 10.0

_KEY = re.compile(r"^\W*(?:passage|doc(?:ument)?|id)?\s*[\[(]?\s*(\d{1,6})\s*[\])]?\W*$", re.I)
# "[3]": 7  /  "3": 7  /  [3] = 7  /  [3] -> 7   (inside a cut-off object or in prose)
_PAIR_IN_OBJECT = re.compile(r"\"?\[?\s*(\d{1,6})\s*\]?\"?\s*:\s*\"?(-?\d+(?:\.\d+)?)")
_PAIR_IN_PROSE = re.compile(r"\[\s*(\d{1,6})\s*\]\s*(?::|=|->|score(?:\s*:)?|is)\s*\"?(-?\d+(?:\.\d+)?)", re.I)
_BRACKET_ID = re.compile(r"\[\s*(\d{1,6})\s*\]")
_BARE_ID = re.compile(r"(?<![\d.])(\d{1,6})(?![\d.])")


@dataclass
class GroupParse:
    """Scores read from one group reply. ``scores`` maps 1-based ids to values in 0..10."""

    scores: dict[int, float]
    missing: list[int]
    repairs: Counter[str] = field(default_factory=Counter)
    found_json: bool = False

    @property
    def complete(self) -> bool:
        """Whether every id 1..n got a score."""
        return not self.missing


@dataclass
class PermutationParse:
    """A permutation read from a listwise reply: 0-based indices, every index once."""

    order: list[int]
    n_found: int
    repairs: Counter[str] = field(default_factory=Counter)


def _key_to_id(key: object) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key
    m = _KEY.match(str(key))
    return int(m.group(1)) if m else None


def _value_to_score(value: object, repairs: Counter[str]) -> float | None:
    if isinstance(value, bool) or value is None:
        repairs["bad_value"] += 1
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            repairs["bad_value"] += 1
            return None
        repairs["string_score"] += 1
    if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        repairs["bad_value"] += 1
        return None
    score = float(value)
    if not score.is_integer():
        repairs["non_integer"] += 1
    if score < SCORE_MIN or score > SCORE_MAX:
        repairs["out_of_range"] += 1
        score = min(max(score, SCORE_MIN), SCORE_MAX)
    return score


def _json_objects(text: str) -> list[tuple[int, dict]]:
    """Every JSON object that decodes starting at some ``{`` in the text, with its offset."""
    decoder = json.JSONDecoder()
    found: list[tuple[int, dict]] = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, _end = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            found.append((pos, obj))
        pos = text.find("{", pos + 1)
    return found


def _flatten(obj: dict) -> list[tuple[object, object]]:
    """Key/value pairs, looking one level into nested objects ({"scores": {...}})."""
    pairs: list[tuple[object, object]] = []
    for k, v in obj.items():
        if isinstance(v, dict):
            pairs.extend(v.items())
        else:
            pairs.append((k, v))
    return pairs


def _collect(pairs: Sequence[tuple[object, object]], n: int, repairs: Counter[str]) -> dict[int, float]:
    scores: dict[int, float] = {}
    for key, value in pairs:
        idx = _key_to_id(key)
        if idx is None:
            continue
        if not 1 <= idx <= n:
            repairs["extra_id"] += 1
            continue
        score = _value_to_score(value, repairs)
        if score is None:
            continue
        if idx in scores:
            repairs["duplicate_id"] += 1
        scores[idx] = score
    return scores


def parse_group_scores(text: str, n: int) -> GroupParse:
    """Read a score for each of passages ``1..n`` from a reply; never raises.

    The last complete JSON object with usable ids wins (a reasoning section may quote other
    braces before it). Without one, scores are read from a truncated object after the last
    ``{``, and without any ``{`` from ``[k]: v`` pairs in the prose.

    Args:
        text: the model's reply, any string.
        n: the number of passages in the group.

    Returns:
        A :class:`GroupParse`; ids without a usable score are listed in ``missing``.
    """
    repairs: Counter[str] = Counter()
    best: dict[int, float] = {}
    found_json = False
    for _pos, obj in reversed(_json_objects(text)):
        trial: Counter[str] = Counter()
        scores = _collect(_flatten(obj), n, trial)
        if len(scores) > len(best):
            best, found_json = scores, True
            repairs = trial
        if len(best) == n:
            break
    if not best:
        repairs = Counter()
        brace = text.rfind("{")
        if brace != -1:
            pairs = [(m.group(1), float(m.group(2))) for m in _PAIR_IN_OBJECT.finditer(text[brace:])]
            best = _collect(pairs, n, repairs)
            if best:
                repairs["truncated_json"] += 1
        if not best:
            repairs = Counter()
            pairs = [(m.group(1), float(m.group(2))) for m in _PAIR_IN_PROSE.finditer(text)]
            best = _collect(pairs, n, repairs)
            if best:
                repairs["prose_scores"] += 1
    missing = [i for i in range(1, n + 1) if i not in best]
    return GroupParse(scores=best, missing=missing, repairs=repairs, found_json=found_json)


def parse_permutation(text: str, n: int) -> PermutationParse:
    """Read a ranking of passages ``1..n`` (``[2] > [1] > [3]``) from a reply; never raises.

    Bracketed ids are preferred; without any, bare integers are read. Ids outside 1..n and
    repeats are skipped; ids the reply left out follow in their input order (the RankGPT rule).

    Returns:
        A :class:`PermutationParse` whose ``order`` holds every 0-based index exactly once.
    """
    repairs: Counter[str] = Counter()
    ids = [int(m.group(1)) for m in _BRACKET_ID.finditer(text)]
    if not ids:
        ids = [int(m.group(1)) for m in _BARE_ID.finditer(text)]
    seen: set[int] = set()
    order: list[int] = []
    for i in ids:
        if not 1 <= i <= n:
            repairs["extra_id"] += 1
        elif i in seen:
            repairs["duplicate_id"] += 1
        else:
            seen.add(i)
            order.append(i - 1)
    n_found = len(order)
    if n_found < n:
        repairs["missing_id"] += n - n_found
        order.extend(i for i in range(n) if i + 1 not in seen)
    return PermutationParse(order=order, n_found=n_found, repairs=repairs)
