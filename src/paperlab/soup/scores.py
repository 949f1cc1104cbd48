"""Per-model, per-category score tables: load (CSV/JSON, wide/long, BFCL as published), choose
candidates and categories, and refuse anything ambiguous with a clear message.

Layouts:
- wide CSV: one row per model, a model column (``model``/``Model``/``name``), one column per category;
- long CSV: columns ``model``, ``category``, ``score``;
- JSON: ``{model: {category: score}}`` (wide), or a list of ``{model, category, score}`` records (long),
  or a list of ``{model, cat1: s1, ...}`` records (wide);
- the BFCL leaderboard CSV, v3 and v4 (``Overall Acc`` and ``Model`` columns): scores as
  ``"78.45%"``, ``"N/A"`` for missing. Non-score columns (rank, link, cost in any spelling, such as
  v3's ``Cost ($ Per 1k Function Calls)`` and v4's ``Total Cost ($)``, latency, organisation,
  licence) are never categories; group columns (every column whose name ends in ``Acc``:
  ``Overall Acc``, ``Live Acc``, v4's ``Web Search Acc``, ``Memory Acc`` ...) are kept apart from the
  leaf categories; v4's lower-is-better ``Format Sensitivity ...`` columns are excluded by default
  (``lower_is_better="flip"`` negates them into higher-is-better categories instead).

Missing scores (``N/A``, blank, ``-``) are handled by :meth:`ScoreTable.select`'s policy:
``drop-models`` (the default: a model missing any chosen category is left out, with a notice),
``drop-categories`` (a category missing for any chosen model is left out), or ``error``.
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
    "Rank", "Model", "Model Link", "Cost ($ Per 1k Function Calls)", "Total Cost ($)", "Latency Mean (s)",
    "Latency Standard Deviation (s)", "Latency 95th Percentile (s)", "Organization", "License",
}
BFCL_LOWER_IS_BETTER = ("Format Sensitivity",)  # v4: a smaller swing across formats is better
MISSING_POLICIES = ("drop-models", "drop-categories", "error")


def is_bfcl_meta(col: str) -> bool:
    """A BFCL column that is not a score (whatever the version calls its cost or latency)."""
    c = col.strip()
    low = c.lower()
    return c in BFCL_META or "cost" in low or low.startswith("latency") or low in ("rank", "organization", "license")


def is_lower_is_better(col: str) -> bool:
    return col.strip().startswith(BFCL_LOWER_IS_BETTER)


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
    notes: list[str] = field(default_factory=list)

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

    def select(
        self,
        models: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        *,
        exclude_models: Sequence[str] = (),
        exclude_categories: Sequence[str] = (),
        missing: str = "drop-models",
    ) -> ScoreTable:
        """A sub-table of chosen models and categories (names or glob patterns), less the
        excluded ones, with missing scores handled by ``missing``; what was dropped and why
        goes to the result's ``notes``.

        Raises:
            ScoresError: unknown names, an unknown policy, fewer than 2 models left, or (with
                ``missing="error"``) a missing score among the chosen.
        """
        if missing not in MISSING_POLICIES:
            raise ScoresError(f"unknown missing-value policy {missing!r}; use {', '.join(MISSING_POLICIES)}")
        ms = self.resolve_models(models) if models else list(self.models)
        cs = self._match_categories(categories) if categories else list(self.categories)
        notes = list(self.notes)
        if exclude_models:
            gone = [m for m in ms if any(fnmatch.fnmatch(m.lower(), p.lower()) for p in exclude_models)]
            if not gone:
                raise ScoresError(f"--exclude-model {', '.join(exclude_models)} matches no chosen model")
            ms = [m for m in ms if m not in gone]
            notes.append(f"excluded {len(gone)} model(s): {short_list(gone)}")
        if exclude_categories:
            gone = self._match_categories(exclude_categories)
            cs = [c for c in cs if c not in gone]
            notes.append(f"excluded {len(gone)} categor{'y' if len(gone) == 1 else 'ies'}: {short_list(gone)}")
        holes = {m: [c for c in cs if math.isnan(self.scores[m][c])] for m in ms}
        holes = {m: h for m, h in holes.items() if h}
        if holes and missing == "error":
            m, h = next(iter(holes.items()))
            raise ScoresError(f"missing score for model {m!r} in category {h[0]!r}; use --missing drop-models or "
                              "drop-categories, or --exclude-model / --exclude-category")
        if holes and missing == "drop-models":
            ms = [m for m in ms if m not in holes]
            notes.append(f"dropped {len(holes)} model(s) with missing scores (--missing drop-models): "
                         f"{short_list(list(holes))}")
        elif holes and missing == "drop-categories":
            bad = [c for c in cs if any(c in h for h in holes.values())]
            cs = [c for c in cs if c not in bad]
            notes.append(f"dropped {len(bad)} categor{'y' if len(bad) == 1 else 'ies'} missing for some model "
                         f"(--missing drop-categories): {short_list(bad)}")
        if len(ms) < 2:
            raise ScoresError(f"only {len(ms)} model(s) left after exclusions and missing scores; "
                              "try --missing drop-categories or fewer exclusions")
        if not cs:
            raise ScoresError("no category left after exclusions and missing scores; try --missing drop-models")
        return ScoreTable(ms, cs, {m: {c: self.scores[m][c] for c in cs} for m in ms},
                          {m: self.groups.get(m, {}) for m in ms}, notes)

    def _match_categories(self, patterns: Sequence[str]) -> list[str]:
        out: list[str] = []
        for c in patterns:
            hit = [x for x in self.categories if x == c or fnmatch.fnmatch(x, c)]
            if not hit:
                raise ScoresError(f"unknown category {c!r}; categories are: {', '.join(self.categories)}")
            out.extend(h for h in hit if h not in out)
        return out

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {m: dict(self.scores[m]) for m in self.models}


def short_list(items: list[str], limit: int = 3) -> str:
    """A notice's list: the first few names and how many more (a notice stays a line or two)."""
    return ", ".join(items) if len(items) <= limit else f"{', '.join(items[:limit])} and {len(items) - limit} more"


def _strip_tag(name: str) -> str:
    return re.sub(r"\s*\((FC|Prompt)\)\s*$", "", name)


def _add(scores: dict[str, dict[str, float]], order: list[str], model: str, where: str) -> None:
    if model in scores:
        raise ScoresError(f"duplicate model {model!r} ({where}); keep one row per model")
    scores[model] = {}
    order.append(model)


def from_wide_rows(rows: Sequence[dict[str, Any]], *, source: str, bfcl: bool = False,
                   lower_is_better: str = "exclude") -> ScoreTable:
    """Build a table from wide rows (one dict per model).

    Args:
        bfcl: read BFCL's column conventions (see the module docstring).
        lower_is_better: for BFCL's lower-is-better columns, "exclude" them or "flip" them (negated).
    """
    if not rows:
        raise ScoresError(f"{source}: no rows")
    keys = list(rows[0].keys())
    model_key = next((k for k in _MODEL_KEYS if k in keys), None)
    if model_key is None:
        raise ScoresError(f"{source}: no model column (expected one of {', '.join(_MODEL_KEYS)})")
    if lower_is_better not in ("exclude", "flip"):
        raise ScoresError(f"unknown lower-is-better handling {lower_is_better!r}; use exclude or flip")
    notes: list[str] = []
    cols = [k for k in keys if k != model_key and not (bfcl and is_bfcl_meta(k))]
    lower = [k for k in cols if bfcl and is_lower_is_better(k)]
    if lower and lower_is_better == "exclude":
        cols = [k for k in cols if k not in lower]
        notes.append(f"excluded lower-is-better column(s) {', '.join(lower)} (--lower-is-better flip keeps them, negated)")
    elif lower:
        notes.append(f"negated lower-is-better column(s) {', '.join(lower)} so that higher is better")
    if bfcl:
        version = "v4" if any(k in keys for k in ("Total Cost ($)", "Web Search Acc", "Memory Acc")) or lower else "v3"
        notes.insert(0, f"read as a BFCL {version} leaderboard: cost, latency, rank, link, organisation and licence "
                        "columns are not categories; *Acc columns are groups, not leaf categories")
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
            v = parse_score(row.get(c), where=f"{source}, row {i + 2}, column {c!r}")
            scores[model][c] = -v if c in lower else v
        groups[model] = {g: parse_score(row.get(g), where=f"{source}, row {i + 2}, column {g!r}") for g in group_cols}
    return ScoreTable(order, leaf_cols, scores, groups, notes)


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


def load_scores(path: str | Path, *, layout: str = "auto", lower_is_better: str = "exclude") -> ScoreTable:
    """Load a score table from CSV or JSON.

    Args:
        path: the file.
        layout: "auto" (detect), "wide", "long" or "bfcl".
        lower_is_better: BFCL v4's lower-is-better columns: "exclude" (default) or "flip".

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
    return from_wide_rows(rows, source=str(p), bfcl=bfcl, lower_is_better=lower_is_better)
