"""Per-model, per-category score tables: load (CSV/JSON, wide/long, BFCL as published), choose
candidates and categories, and refuse anything ambiguous with a clear message.

Layouts:
- wide CSV: one row per model, a model column (``model``/``Model``/``name``), one column per category;
- long CSV: columns ``model``, ``category``, ``score``;
- JSON: ``{model: {category: score}}`` (wide), or a list of ``{model, category, score}`` records (long),
  or a list of ``{model, cat1: s1, ...}`` records (wide);
- the BFCL leaderboard CSV: scores as ``"78.45%"``, ``"N/A"`` for missing, metadata columns
  (rank, link, cost, latency, organisation, licence) dropped, and group columns (``Overall Acc``,
  ``Live Acc``, ... : every column whose name ends in ``Acc``) kept apart from the leaf categories.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paperlab.soup.errors import ScoresError

_MODEL_KEYS = ("model", "Model", "name", "Name", "model_name")
_MISSING = {"", "n/a", "na", "nan", "none", "-", "null"}
BFCL_META = {
    "Rank", "Model", "Model Link", "Cost ($ Per 1k Function Calls)", "Latency Mean (s)",
    "Latency Standard Deviation (s)", "Latency 95th Percentile (s)", "Organization", "License",
}


def parse_score(cell: Any, *, where: str) -> float:
    """A score cell -> float (``"78.45%"`` -> 78.45); missing markers -> NaN.

    Raises:
        ScoresError: a non-numeric cell (named by ``where``).
    """
    if cell is None:
        return math.nan
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return float(cell)
    text = str(cell).strip()
    if text.lower() in _MISSING:
        return math.nan
    try:
        return float(text.removesuffix("%").replace(",", ""))
    except ValueError:
        raise ScoresError(f"non-numeric score {text!r} at {where}; fix the cell or drop that column") from None


@dataclass
class ScoreTable:
    """Scores of models (rows) on categories (columns); NaN marks a missing score.

    Attributes:
        models: model names, in file order.
        categories: leaf category names, in file order.
        scores: ``scores[model][category]``.
        groups: aggregate columns (e.g. BFCL's ``Live Acc``), kept apart: ``groups[model][name]``.
    """

    models: list[str]
    categories: list[str]
    scores: dict[str, dict[str, float]]
    groups: dict[str, dict[str, float]] = field(default_factory=dict)

    def value(self, model: str, category: str) -> float:
        return self.scores[model][category]

    def matrix(self) -> list[list[float]]:
        """Rows = models, columns = categories."""
        return [[self.scores[m][c] for c in self.categories] for m in self.models]

    def resolve_models(self, wanted: Sequence[str]) -> list[str]:
        """Names or glob patterns -> model names in this table (case-insensitive; a trailing
        ``" (FC)"``/``" (Prompt)"`` tag may be left out).

        Raises:
            ScoresError: a name matching nothing (with close matches), or one matching several.
        """
        out: list[str] = []
        for w in wanted:
            key = w.lower()
            exact = [m for m in self.models if m.lower() == key]
            if not exact:
                exact = [m for m in self.models if _strip_tag(m).lower() == key]
            if not exact and any(ch in w for ch in "*?["):
                exact = [m for m in self.models if fnmatch.fnmatch(m.lower(), key)]
                out.extend(m for m in exact if m not in out)
                if not exact:
                    raise ScoresError(f"pattern {w!r} matches no model in the score table")
                continue
            if not exact:
                close = difflib.get_close_matches(w, self.models, n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise ScoresError(f"unknown model {w!r} in the score table{hint}")
            if len(exact) > 1:
                raise ScoresError(f"model {w!r} is ambiguous: {', '.join(exact)}; give the full name")
            if exact[0] not in out:
                out.append(exact[0])
        return out

    def select(self, models: Sequence[str] | None = None, categories: Sequence[str] | None = None) -> ScoreTable:
        """A sub-table of chosen models (names or patterns) and categories (names or patterns).

        Raises:
            ScoresError: unknown names, fewer than 2 models, or a missing score among the chosen.
        """
        ms = self.resolve_models(models) if models else list(self.models)
        if categories:
            cs: list[str] = []
            for c in categories:
                hit = [x for x in self.categories if x == c or fnmatch.fnmatch(x, c)]
                if not hit:
                    raise ScoresError(f"unknown category {c!r}; categories are: {', '.join(self.categories)}")
                cs.extend(h for h in hit if h not in cs)
        else:
            cs = list(self.categories)
        for m in ms:
            for c in cs:
                if math.isnan(self.scores[m][c]):
                    raise ScoresError(f"missing score for model {m!r} in category {c!r}; drop the model or the category")
        return ScoreTable(ms, cs, {m: {c: self.scores[m][c] for c in cs} for m in ms},
                          {m: self.groups.get(m, {}) for m in ms})

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {m: dict(self.scores[m]) for m in self.models}


def _strip_tag(name: str) -> str:
    return re.sub(r"\s*\((FC|Prompt)\)\s*$", "", name)


def _add(scores: dict[str, dict[str, float]], order: list[str], model: str, where: str) -> None:
    if model in scores:
        raise ScoresError(f"duplicate model {model!r} ({where}); keep one row per model")
    scores[model] = {}
    order.append(model)


def from_wide_rows(rows: Sequence[dict[str, Any]], *, source: str, bfcl: bool = False) -> ScoreTable:
    """Build a table from wide rows (one dict per model)."""
    if not rows:
        raise ScoresError(f"{source}: no rows")
    keys = list(rows[0].keys())
    model_key = next((k for k in _MODEL_KEYS if k in keys), None)
    if model_key is None:
        raise ScoresError(f"{source}: no model column (expected one of {', '.join(_MODEL_KEYS)})")
    cols = [k for k in keys if k != model_key and not (bfcl and k in BFCL_META)]
    group_cols = [k for k in cols if bfcl and k.strip().endswith("Acc")]
    leaf_cols = [k for k in cols if k not in group_cols]
    scores: dict[str, dict[str, float]] = {}
    groups: dict[str, dict[str, float]] = {}
    order: list[str] = []
    for i, row in enumerate(rows):
        model = str(row.get(model_key, "")).strip()
        if not model:
            raise ScoresError(f"{source}: row {i + 2} has no model name")
        _add(scores, order, model, f"{source}, row {i + 2}")
        for c in leaf_cols:
            scores[model][c] = parse_score(row.get(c), where=f"{source}, row {i + 2}, column {c!r}")
        groups[model] = {g: parse_score(row.get(g), where=f"{source}, row {i + 2}, column {g!r}") for g in group_cols}
    return ScoreTable(order, leaf_cols, scores, groups)


def from_long_rows(rows: Sequence[dict[str, Any]], *, source: str) -> ScoreTable:
    """Build a table from long rows (``model``, ``category``, ``score``)."""
    scores: dict[str, dict[str, float]] = {}
    order: list[str] = []
    cats: list[str] = []
    for i, row in enumerate(rows):
        model, cat = str(row["model"]).strip(), str(row["category"]).strip()
        if model not in scores:
            scores[model] = {}
            order.append(model)
        if cat in scores[model]:
            raise ScoresError(f"duplicate score for model {model!r} in category {cat!r} ({source}, record {i + 1})")
        if cat not in cats:
            cats.append(cat)
        scores[model][cat] = parse_score(row["score"], where=f"{source}, record {i + 1}")
    for m in order:
        for c in cats:
            scores[m].setdefault(c, math.nan)
    return ScoreTable(order, cats, scores)


def load_scores(path: str | Path, *, layout: str = "auto") -> ScoreTable:
    """Load a score table from CSV or JSON.

    Args:
        path: the file.
        layout: "auto" (detect), "wide", "long" or "bfcl".

    Raises:
        ScoresError: a missing file, an unknown layout, or malformed content.
    """
    p = Path(path)
    if not p.is_file():
        raise ScoresError(f"score file {p} does not exist; check the path")
    if layout not in ("auto", "wide", "long", "bfcl"):
        raise ScoresError(f"unknown layout {layout!r}; use auto, wide, long or bfcl")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text())
        except ValueError as exc:
            raise ScoresError(f"{p}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            rows = [{"model": m, **(v if isinstance(v, dict) else {})} for m, v in data.items()]
            return from_wide_rows(rows, source=str(p))
        if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
            is_long = layout == "long" or (layout == "auto" and {"model", "category", "score"} <= set(data[0]))
            return from_long_rows(data, source=str(p)) if is_long else from_wide_rows(data, source=str(p))
        raise ScoresError(f"{p}: expected an object {{model: {{category: score}}}} or a list of records")
    with open(p, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ScoresError(f"{p}: no rows")
    header = set(rows[0])
    if layout == "long" or (layout == "auto" and {"model", "category", "score"} <= header):
        return from_long_rows(rows, source=str(p))
    bfcl = layout == "bfcl" or (layout == "auto" and {"Model", "Overall Acc"} <= header)
    return from_wide_rows(rows, source=str(p), bfcl=bfcl)
