"""Versioned prompt templates for the groupwise, pointwise and listwise rerankers.

A template is data (a :class:`PromptTemplate`): a name, a version, a system message and a user
message with ``{query}``, ``{passages}``, ``{n}`` and ``{example}`` fields. The version is part
of every run's summary so that scores produced by different prompt wordings are never mixed up
silently (a pain point of existing rerankers: scores that drift between releases).

The groupwise shape follows the published GroupRank inference prompt: a 0-10 rubric in bands,
usefulness before topical relevance, passages numbered ``[1] text``, and an answer made of a
short reasoning section followed by one JSON object ``{"[1]": 7, "[2]": 0, ...}``. The wording
here is our own. Users can override a template from a YAML/JSON file (see :func:`load_template`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from paperlab.llm.types import Message
from paperlab.rerank.errors import RerankConfigError

RUBRIC = """Scoring rubric (integers 0-10). Judge usefulness for answering the query first, topical relevance second.
- 9-10: the passage answers the query fully and directly.
- 7-8: the passage answers most of the query or gives the key fact with little else.
- 5-6: the passage is useful but partial, or the answer must be inferred.
- 3-4: the passage is on the topic but does not help answer the query.
- 1-2: the passage shares words with the query but is about something else.
- 0: the passage is irrelevant."""


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt as data. ``user`` is a ``str.format`` pattern over query/passages/n/example.

    ``json_only``: the answer is the score object alone, so decoding can be held to
    :meth:`score_schema` (structured decoding, see :mod:`paperlab.llm.structured`).
    """

    name: str
    version: str
    system: str
    user: str
    json_only: bool = False

    def score_schema(self, n: int) -> dict[str, Any] | None:
        """The JSON schema of the answer ``{"[1]": s, ..., "[n]": s}`` (integers 0-10, every id,
        in order) when the template asks for the object alone; None otherwise."""
        if not self.json_only:
            return None
        keys = [f"[{i}]" for i in range(1, n + 1)]
        return {"type": "object", "additionalProperties": False, "required": keys,
                "properties": {k: {"type": "integer", "minimum": 0, "maximum": 10} for k in keys}}

    @property
    def key(self) -> str:
        """``name/version``: the identifier written into run summaries."""
        return f"{self.name}/{self.version}"

    def render(self, query: str, passages: list[str]) -> list[Message]:
        """Chat messages for ``query`` and already-truncated ``passages`` (numbered from 1)."""
        numbered = "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1))
        example = json.dumps({f"[{i}]": 0 for i in range(1, min(len(passages), 3) + 1)})
        try:
            user = self.user.format(query=query, passages=numbered, n=len(passages), example=example)
        except (KeyError, IndexError, ValueError) as e:
            raise RerankConfigError(
                f"prompt template {self.key} has a bad field ({e}); use only "
                "{query}, {passages}, {n}, {example} and double any literal braces"
            ) from e
        return [Message(role="system", content=self.system), Message(role="user", content=user)]


GROUPWISE_V1 = PromptTemplate(
    name="grouprank",
    version="v1",
    system="You are a careful search-relevance judge. You compare passages with each other and give each one an absolute score.",
    user=(
        "Query: {query}\n\n"
        "Passages:\n{passages}\n\n"
        f"{RUBRIC}\n\n"
        "Compare all {n} passages. First write a short reasoning section (a few lines). "
        "Then write one JSON object on the last line with an integer score for every passage id, "
        "for example {example} ... for all {n} passages."
    ),
)

# The same rubric without the reasoning section: the answer is the JSON object alone. Used
# when completion tokens are scarce (small CPU models, the benchmark); documented in docs.
GROUPWISE_JSON_V1 = replace(
    GROUPWISE_V1,
    name="grouprank-json",
    json_only=True,
    user=(
        "Query: {query}\n\n"
        "Passages:\n{passages}\n\n"
        f"{RUBRIC}\n\n"
        "Compare all {n} passages and answer with one JSON object only, with an integer score "
        "for every passage id, like {example} ... for all {n} passages."
    ),
)

LISTWISE_V1 = PromptTemplate(
    name="listwise",
    version="v1",
    system="You are a search-relevance judge that sorts passages by how well they answer a query.",
    user=(
        "Query: {query}\n\n"
        "Passages:\n{passages}\n\n"
        "Sort all {n} passages from most to least useful for answering the query. "
        "Answer only with the ids in order, like [2] > [1] > [3], using every id once."
    ),
)

TEMPLATES: dict[str, PromptTemplate] = {
    t.key: t for t in (GROUPWISE_V1, GROUPWISE_JSON_V1, LISTWISE_V1)
}

_WS = re.compile(r"\s+")


def truncate_passage(text: str, max_chars: int) -> str:
    """Collapse whitespace and cut to ``max_chars`` characters (at a word boundary when one
    lies in the last fifth, so the model does not see half a word)."""
    text = _WS.sub(" ", text).strip()
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    if space > max_chars * 0.8:
        cut = cut[:space]
    return cut


def get_template(key: str) -> PromptTemplate:
    """A built-in template by ``name/version``; unknown keys raise listing the valid ones."""
    try:
        return TEMPLATES[key]
    except KeyError:
        raise RerankConfigError(
            f"unknown prompt template {key!r}; valid: {', '.join(sorted(TEMPLATES))} "
            "(or pass a YAML/JSON file with name, version, system, user)"
        ) from None


def load_template(path: str | Path) -> PromptTemplate:
    """Load a user template from a YAML or JSON file with keys name, version, system, user."""
    p = Path(path)
    if not p.is_file():
        raise RerankConfigError(f"prompt template file {p} does not exist; pass an existing file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RerankConfigError(f"prompt template {p} is not UTF-8 YAML/JSON ({first}); fix the file") from None
    missing = [k for k in ("name", "version", "system", "user") if not isinstance(data, dict) or k not in data]
    if missing:
        raise RerankConfigError(f"prompt template {p} lacks {', '.join(missing)}; add them as strings")
    tpl = PromptTemplate(str(data["name"]), str(data["version"]), str(data["system"]), str(data["user"]),
                         bool(data.get("json_only", False)))
    tpl.render("q", ["p"])  # validate the fields now, not in the middle of a run
    return tpl


def resolve_template(spec: str | PromptTemplate) -> PromptTemplate:
    """A template from an object, a built-in key, or a file path."""
    if isinstance(spec, PromptTemplate):
        return spec
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    if Path(spec).suffix.lower() in {".yaml", ".yml", ".json"}:
        return load_template(spec)
    return get_template(spec)
