"""The steps of a SoCE run, one function each; :func:`paperlab.soup.soce.run_soce` chains them.

    candidates -> score each on validation -> select experts -> search weights ->
    baselines -> held-out table -> write OUT (model/, soce.yaml, heatmap.png, table.md)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paperlab.soup.baselines import greedy_soup, one_hot, uniform_over
from paperlab.soup.checkpoint import tokenizer_files
from paperlab.soup.errors import EvaluatorError, MergeConfigError, SoupError
from paperlab.soup.scores import ScoreTable
from paperlab.soup.search import (
    SEARCHES,
    Journal,
    aggregate,
    get_search,
    grid,
    grid_search,
    to_weights,
)
from paperlab.soup.select import Selection, plot_heatmap, select_experts

Weights = tuple[float, ...]
Progress = Callable[[str, int | None], Callable[[], None]]
def short(p: str) -> str:
    return Path(p).name


@dataclass
class Candidates:
    """The models SoCE chooses from and the evaluators' specs (validation, held-out test)."""

    paths: list[str]
    val_spec: str
    test_spec: str

    @property
    def has_tokenizer(self) -> bool:
        return all(tokenizer_files(Path(c)) for c in self.paths)


def gather_candidates(cfg: Any, prog: Progress) -> Candidates:
    """The configured candidates, or the offline zoo's (built, or read from its cache).

    Raises:
        MergeConfigError: an unknown zoo, fewer than 2 candidates, or no evaluator.
        EvaluatorError: a jsonl evaluator for candidates without tokenizer files.
    """
    if cfg.zoo:
        from paperlab.soup.zoo.build import (
            ZooConfig,
            build_zoo,
            cache_root,
            small_config,
            total_steps,
            zoo_candidates,
        )

        make = {"default": ZooConfig, "small": small_config}.get(cfg.zoo)
        if make is None:
            raise MergeConfigError(f"unknown zoo {cfg.zoo!r}; use default or small")
        zc = make()
        cached = (cache_root() / f"zoo-{zc.key()}" / "zoo.json").is_file()
        tick = prog("zoo (cached)" if cached else "building the zoo (cached after the first run)", total_steps(zc))
        zoo = build_zoo(zc, tick=tick)
        if cached:
            for _ in range(total_steps(zc)):
                tick()
        c = Candidates([str(p) for p in zoo_candidates(zoo)], f"zoo:{zoo / 'val.jsonl'}", f"zoo:{zoo / 'test.jsonl'}")
    else:
        if len(cfg.candidates) < 2:
            raise MergeConfigError("SoCE needs at least 2 candidates (or zoo: default)")
        if not cfg.evaluator:
            raise MergeConfigError("set `evaluator:` (jsonl:PATH, zoo:PATH or module:function)")
        c = Candidates(list(cfg.candidates), cfg.evaluator, cfg.test_evaluator or cfg.evaluator)
    if not c.has_tokenizer and any(s.startswith("jsonl:") for s in (c.val_spec, c.test_spec)):
        missing = next(p for p in c.paths if not tokenizer_files(Path(p)))
        raise EvaluatorError(f"the jsonl evaluator needs a tokenizer, and candidate {missing} has no tokenizer files "
                             "(tokenizer.json, tokenizer_config.json, ...); save the tokenizer beside each candidate, or use a "
                             "module:function evaluator that brings its own")
    return c


class Scorer:
    """Soups rebuilt in memory and scored: validation scores cached by weights (candidates and
    baselines are a handful of points), held-out scores on the test evaluator."""

    def __init__(self, cands: Candidates) -> None:
        from paperlab.soup.evaluators import make_evaluator
        from paperlab.soup.memory import ExpertBank

        self.bank = ExpertBank(cands.paths)
        self.live = self.bank.load_model()
        self.val = make_evaluator(cands.val_spec, tokenizer_dir=cands.paths[0])
        self.test = (make_evaluator(cands.test_spec, tokenizer_dir=cands.paths[0])
                     if cands.test_spec != cands.val_spec else self.val)
        self._cache: dict[tuple[int, ...], dict[str, float]] = {}

    def score(self, w: Weights, held_out: bool = False) -> dict[str, float]:
        self.bank.build_into(self.live, w, normalize=False)
        return (self.test if held_out else self.val).evaluate(self.live)

    def cached(self, w: Weights) -> dict[str, float]:
        key = tuple(int(round(x * 1000)) for x in w)
        if key not in self._cache:
            self._cache[key] = self.score(w)
        return self._cache[key]


@dataclass
class Chosen:
    """The selection and the experts as candidate indices."""

    selection: Selection
    idx: list[int]
    notes: list[str] = field(default_factory=list)

    def expand(self, w: Weights, n: int) -> Weights:
        """Weights over the experts -> weights over all n candidates (zeros elsewhere)."""
        full = [0.0] * n
        for i, x in zip(self.idx, w, strict=True):
            full[i] = x
        return tuple(full)


def choose_experts(cfg: Any, cands: Candidates, scorer: Scorer, prog: Progress) -> Chosen:
    """Score every candidate on validation, correlate the categories, pick the experts."""
    n = len(cands.paths)
    tick = prog("scoring candidates", n)
    scores = []
    for i in range(n):
        scores.append(scorer.cached(one_hot(i, n)))
        tick()
    names = [short(c) for c in cands.paths]
    table = ScoreTable(names, list(scores[0]), dict(zip(names, scores, strict=True)))
    sel = select_experts(table, cfg.tau, floor=cfg.expert_floor)
    idx = [names.index(e) for e in sel.experts]
    notes = list(sel.notices)
    if not idx:
        # Our choice (the paper is silent): with an empty L, fall back to the best candidate.
        top = max(range(n), key=lambda i: (aggregate(scores[i]), -i))
        idx = [top]
        notes.append(f"L is empty at tau = {cfg.tau}: SoCE falls back to the best candidate, {names[top]}")
    return Chosen(sel, idx, notes)


def search_weights(cfg: Any, chosen: Chosen, cands: Candidates, scorer: Scorer, journal: Journal,
                   prog: Progress) -> tuple[Weights, dict[str, int], list[str]]:
    """The chosen search over the experts' weights; the other registered searches run too (on
    the same journal, so mostly free) so that their evaluation counts can be compared."""
    n, k = len(cands.paths), len(chosen.idx)
    if k < 2:
        return chosen.expand((1.0,), n), {}, ["only one expert was selected: the SoCE soup is that expert"]

    def evaluate(w: Weights) -> dict[str, float]:
        return scorer.score(chosen.expand(w, n))

    first = get_search(cfg.search)
    t1 = prog(f"weight search ({cfg.search}, {len(grid(k))} grid points)", len(grid(k)) if first is grid_search else None)
    res = first(evaluate, k, journal, t1)
    results = {res.method: res}
    for name, search in SEARCHES.items():
        if name != cfg.search:
            other = search(evaluate, k, journal, None)
            results[other.method] = other
    counts = {name: r.evaluations for name, r in results.items()}
    cheap = results["coarse_to_fine"]
    note = (f"coarse_to_fine used {counts['coarse_to_fine']} evaluations vs the grid's {counts['grid']} "
            f"and reached {cheap.best_aggregate:.2f} (grid best {results['grid'].best_aggregate:.2f})")
    return chosen.expand(res.best, n), counts, [note]


def method_rows(cfg: Any, chosen: Chosen, cands: Candidates, best: Weights, scorer: Scorer,
                notes: list[str]) -> list[tuple[str, Weights]]:
    """The soups the table compares: each candidate, the uniform and greedy soups, SoCE with
    uniform weights over its experts (baselines), and SoCE."""
    n = len(cands.paths)
    rows: list[tuple[str, Weights]] = []
    if cfg.baselines:
        rows += [(short(c), one_hot(i, n)) for i, c in enumerate(cands.paths)]
        rows.append(("uniform soup", uniform_over(range(n), n)))
        greedy_w, greedy_log = greedy_soup(scorer.cached, n)
        notes.append("greedy soup: " + "; ".join(greedy_log))
        rows.append(("greedy soup", greedy_w))
        rows.append(("SoCE, uniform weights", uniform_over(chosen.idx, n)))
    rows.append(("SoCE", best))
    return rows


def held_out(rows: list[tuple[str, Weights]], scorer: Scorer, prog: Progress) -> list[Any]:
    """Every soup of the table scored on the held-out test evaluator (and its validation scores)."""
    from paperlab.soup.soce import MethodRow

    tick = prog("held-out evaluation", len(rows))
    out = []
    for name, w in rows:
        out.append(MethodRow(name, w, scorer.cached(w), scorer.score(w, held_out=True)))
        tick()
    if any(math.isnan(aggregate(r.test)) for r in out):
        raise SoupError("an evaluator returned no categories; check the benchmark")
    return out


def write_outputs(tmp: Path, cfg: Any, cands: Candidates, chosen: Chosen, best: Weights, counts: dict[str, int],
                  notes: list[str], journal: Journal, rows: list[Any], markdown: str) -> None:
    """OUT's contents: heatmap.png, the souped model/ (by the merge engine), soce.yaml, table.md."""
    from paperlab.soup.config import MergeSpec, ModelEntry
    from paperlab.soup.merge import merge

    sel = chosen.selection
    plot_heatmap(sel, tmp / "heatmap.png", title="SoCE: category correlation over the candidates")
    spec = MergeSpec(models=[ModelEntry(model=c, weight=w) for c, w in zip(cands.paths, best, strict=True) if w > 0],
                     parameters={"normalize": False})
    merge(spec, tmp / "model", write_model_card=False)
    tok_name = None
    if cands.has_tokenizer:
        from transformers import AutoTokenizer

        tok_name = type(AutoTokenizer.from_pretrained(str(tmp / "model"))).__name__
    else:
        # A module:function evaluator brings its own tokenizer; the record says the soup has none.
        notes.append("the candidates have no tokenizer files, so neither has the souped model; copy one in")
    record = {
        "tau": cfg.tau, "low_correlation_set": sel.low_corr, "experts": [short(cands.paths[i]) for i in chosen.idx],
        "weights": {short(c): w for c, w in zip(cands.paths, best, strict=True) if w > 0},
        "selection": sel.to_dict(), "search": cfg.search, "evaluations": counts, "notes": notes,
        "evaluated_points": [{"weights": list(to_weights(p)), "scores": journal.done[p],
                              "aggregate": aggregate(journal.done[p])} for p in journal.order],
        "table": [{"method": r.method, "weights": list(r.weights), "val": r.val, "test": r.test} for r in rows],
        "tokenizer": tok_name,
    }
    (tmp / "soce.yaml").write_text(yaml.safe_dump(record, sort_keys=False, width=120))
    (tmp / "table.md").write_text(markdown)
