"""SoCE end to end: candidates -> per-category scores -> experts -> weight search -> the soup.

    zoo: default              # or: candidates: [dir, ...] with evaluator: / test_evaluator:
    tau: 0.5
    search: grid              # or coarse_to_fine; the other one runs too, for the count
    out: soce-out             # the souped checkpoint goes to OUT/model

Every soup during the search is rebuilt in memory (:class:`~paperlab.soup.memory.ExpertBank`)
and evaluated on the *validation* evaluator; the final table scores each method on the
held-out *test* evaluator (the same one when no test evaluator is given). Evaluated points go
to a journal (default ``OUT.journal.jsonl`` beside the output), so an interrupted run resumes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paperlab.errors import config_error
from paperlab.io.atomic import atomic_directory
from paperlab.soup.baselines import greedy_soup, one_hot, uniform_over
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
from paperlab.soup.select import DEFAULT_TAU, Selection, plot_heatmap, select_experts

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def tokenizer_files(model_dir: Path) -> list[str]:
    """The tokenizer files a model directory holds (none: transformers cannot load a tokenizer)."""
    return [f for f in TOKENIZER_FILES if (model_dir / f).is_file()]


class SoceConfig(BaseModel):
    """A SoCE run (YAML for ``paperlab soup soce``)."""

    model_config = ConfigDict(extra="forbid")
    zoo: str | None = None  # "default" or "small": build/cache the offline zoo and use it
    candidates: list[str] = Field(default_factory=list)
    evaluator: str | None = None  # validation: jsonl:PATH, zoo:PATH or module:function
    test_evaluator: str | None = None
    tau: float = Field(default=DEFAULT_TAU, gt=0, le=1)
    search: str = "grid"
    out: str = "soce-out"
    journal: str | None = None
    baselines: bool = True
    force: bool = False
    threads: int | None = None  # torch intra-op threads (None: torch's default); 1 suits a busy 2-core box


def load_soce_config(path: str | Path) -> SoceConfig:
    """Read a SoCE YAML config (paths relative to the file).

    Raises:
        MergeConfigError: a missing file, bad YAML, or an invalid field (named).
    """
    p = Path(path)
    if not p.is_file():
        raise MergeConfigError(f"SoCE config {p} does not exist; check the path")
    try:
        data = yaml.safe_load(p.read_text()) or {}
        cfg = SoceConfig(**data)
    except yaml.YAMLError as exc:
        raise MergeConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except ValidationError as exc:
        raise config_error(exc, f"SoCE config {p}", MergeConfigError) from None
    except TypeError:
        raise MergeConfigError(f"{p}: a SoCE config must be a YAML mapping") from None

    def rel(x: str) -> str:
        q = Path(x).expanduser()
        return str(q if q.is_absolute() else p.parent / q)

    cfg.candidates = [rel(c) for c in cfg.candidates]
    cfg.out = rel(cfg.out)
    if cfg.journal:
        cfg.journal = rel(cfg.journal)
    for name in ("evaluator", "test_evaluator"):
        spec = getattr(cfg, name)
        if spec and spec.split(":", 1)[0] in ("jsonl", "zoo"):
            kind, path_ = spec.split(":", 1)
            setattr(cfg, name, f"{kind}:{rel(path_)}")
    return cfg


@dataclass
class MethodRow:
    """One line of the result table."""

    method: str
    weights: tuple[float, ...]
    val: dict[str, float]
    test: dict[str, float]


@dataclass
class SoceResult:
    selection: Selection
    candidates: list[str]
    rows: list[MethodRow]
    search_counts: dict[str, int]
    best_weights: tuple[float, ...]
    out_dir: Path
    heatmap: Path
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> tuple[list[str], list[list[object]]]:
        cats = self.selection.categories
        headers = ["method", "weights", *cats, "overall (test)", "overall (val)"]
        rows: list[list[object]] = []
        for r in self.rows:
            w = "/".join(f"{x:.1f}" for x in r.weights)
            rows.append([r.method, w, *[round(r.test[c], 1) for c in cats], round(aggregate(r.test), 2),
                         round(aggregate(r.val), 2)])
        return headers, rows

    def markdown(self) -> str:
        headers, rows = self.table()
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        return "\n".join(lines) + "\n"


def _short(p: str) -> str:
    return Path(p).name


def run_soce(cfg: SoceConfig, *, progress: Callable[[str, int | None], Callable[[], None]] | None = None) -> SoceResult:
    """Run SoCE as configured and write OUT (model/, soce.yaml, heatmap.png, table.md).

    Args:
        cfg: the run config.
        progress: ``progress(label, total)`` returns a tick function (for progress bars).

    Raises:
        SoupError: bad config, bad candidates, evaluator or search errors.
    """
    import torch
    from transformers import AutoTokenizer

    from paperlab.soup.config import MergeSpec, ModelEntry
    from paperlab.soup.evaluators import make_evaluator
    from paperlab.soup.memory import ExpertBank
    from paperlab.soup.merge import merge

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    tick_none: Callable[[], None] = lambda: None  # noqa: E731
    prog = progress or (lambda label, total: tick_none)
    out = Path(cfg.out)
    if out.exists() and not cfg.force:
        raise SoupError(f"output directory {out} already exists; choose another `out:` or set force: true")
    get_search(cfg.search)  # an unknown search fails here, before the zoo or any evaluation
    if cfg.zoo:
        from paperlab.soup.zoo.build import (
            ZooConfig,
            build_zoo,
            small_config,
            total_steps,
            zoo_candidates,
        )

        zcfg = {"default": ZooConfig, "small": small_config}.get(cfg.zoo)
        if zcfg is None:
            raise MergeConfigError(f"unknown zoo {cfg.zoo!r}; use default or small")
        zc = zcfg()
        from paperlab.soup.zoo.build import cache_root

        cached = (cache_root() / f"zoo-{zc.key()}" / "zoo.json").is_file()
        label = "zoo (cached)" if cached else "building the zoo (cached after the first run)"
        tick_zoo = prog(label, total_steps(zc))
        zoo = build_zoo(zc, tick=tick_zoo)
        if cached:
            for _ in range(total_steps(zc)):
                tick_zoo()
        candidates = [str(p) for p in zoo_candidates(zoo)]
        val_spec, test_spec = f"zoo:{zoo / 'val.jsonl'}", f"zoo:{zoo / 'test.jsonl'}"
    else:
        candidates = cfg.candidates
        if len(candidates) < 2:
            raise MergeConfigError("SoCE needs at least 2 candidates (or zoo: default)")
        if not cfg.evaluator:
            raise MergeConfigError("set `evaluator:` (jsonl:PATH, zoo:PATH or module:function)")
        val_spec, test_spec = cfg.evaluator, cfg.test_evaluator or cfg.evaluator
    n = len(candidates)
    has_tokenizer = all(tokenizer_files(Path(c)) for c in candidates)
    if not has_tokenizer and any(s.startswith("jsonl:") for s in (val_spec, test_spec)):
        missing = next(c for c in candidates if not tokenizer_files(Path(c)))
        raise EvaluatorError(f"the jsonl evaluator needs a tokenizer, and candidate {missing} has no tokenizer files "
                             f"({', '.join(TOKENIZER_FILES)}); save the tokenizer beside each candidate, or use a "
                             "module:function evaluator that brings its own")
    bank = ExpertBank(candidates)
    live = bank.load_model()
    val_ev = make_evaluator(val_spec, tokenizer_dir=candidates[0])
    test_ev = make_evaluator(test_spec, tokenizer_dir=candidates[0]) if test_spec != val_spec else val_ev
    journal_path = Path(cfg.journal) if cfg.journal else out.parent / f"{out.name}.journal.jsonl"

    def score_full(w: tuple[float, ...], ev: Any = val_ev) -> dict[str, float]:
        bank.build_into(live, w, normalize=False)
        return ev.evaluate(live)

    # Candidates and baselines are a handful of points: cached in memory, not journaled.
    def val_scores(w: tuple[float, ...]) -> dict[str, float]:
        key = tuple(int(round(x * 1000)) for x in w)
        if key not in cache:
            cache[key] = score_full(w)
        return cache[key]

    cache: dict[tuple[int, ...], dict[str, float]] = {}
    tick = prog("scoring candidates", n)
    cand_val = []
    for i in range(n):
        cand_val.append(val_scores(one_hot(i, n)))
        tick()
    cats = list(cand_val[0])
    table = ScoreTable([_short(c) for c in candidates], cats,
                       {_short(c): s for c, s in zip(candidates, cand_val, strict=True)})
    sel = select_experts(table, cfg.tau)
    experts = [candidates[[_short(c) for c in candidates].index(e)] for e in sel.experts]
    notes: list[str] = []
    if not experts:
        # Our choice (the paper is silent): with an empty L, fall back to the best candidate.
        top = max(range(n), key=lambda i: (aggregate(cand_val[i]), -i))
        experts = [candidates[top]]
        notes.append(f"L is empty at tau = {cfg.tau}: SoCE falls back to the best candidate, {_short(candidates[top])}")
    idx = [candidates.index(e) for e in experts]
    k = len(idx)

    def expand(w: tuple[float, ...]) -> tuple[float, ...]:
        full = [0.0] * n
        for i, x in zip(idx, w, strict=True):
            full[i] = x
        return tuple(full)

    search_journal = Journal(journal_path, {"candidates": candidates, "evaluator": val_spec, "experts": experts})
    counts: dict[str, int] = {}
    if k >= 2:
        # The registry is the one place a search is looked up; the chosen one picks the weights,
        # the others run too (on the same journal) so that their evaluation counts can be compared.
        first = get_search(cfg.search)
        t1 = prog(f"weight search ({cfg.search}, {len(grid(k))} grid points)", len(grid(k)) if first is grid_search else None)
        res = first(lambda w: score_full(expand(w)), k, search_journal, t1)
        results = {res.method: res}
        for name, search in SEARCHES.items():
            if name != cfg.search:
                other = search(lambda w: score_full(expand(w)), k, search_journal, None)
                results[other.method] = other
        counts.update({name: r.evaluations for name, r in results.items()})
        grid_best = results["grid"].best_aggregate
        cheap = results["coarse_to_fine"]
        notes.append(
            f"coarse_to_fine used {counts['coarse_to_fine']} evaluations vs the grid's {counts['grid']} "
            f"and reached {cheap.best_aggregate:.2f} (grid best {grid_best:.2f})"
        )
        best = expand(res.best)
    else:
        best = expand((1.0,))
        notes.append("only one expert was selected: the SoCE soup is that expert")
    rows: list[tuple[str, tuple[float, ...]]] = []
    if cfg.baselines:
        rows += [(_short(c), one_hot(i, n)) for i, c in enumerate(candidates)]
        rows.append(("uniform soup", uniform_over(range(n), n)))
        greedy_w, greedy_log = greedy_soup(val_scores, n)
        notes.append("greedy soup: " + "; ".join(greedy_log))
        rows.append(("greedy soup", greedy_w))
        rows.append(("SoCE, uniform weights", uniform_over(idx, n)))
    rows.append(("SoCE", best))
    tick = prog("held-out evaluation", len(rows))
    table_rows = []
    for name, w in rows:
        test = score_full(w, test_ev)
        table_rows.append(MethodRow(name, w, val_scores(w), test))
        tick()
    result_rows = table_rows
    with atomic_directory(out, force=cfg.force, error=SoupError) as tmp:
        plot_heatmap(sel, tmp / "heatmap.png", title="SoCE: category correlation over the candidates")
        spec = MergeSpec(models=[ModelEntry(model=c, weight=w) for c, w in zip(candidates, best, strict=True) if w > 0],
                         parameters={"normalize": False})
        merge(spec, tmp / "model")
        # Candidates without tokenizer files (a module:function evaluator brings its own) give a
        # soup without them too; the record says so instead of failing at the very end.
        tok_name = type(AutoTokenizer.from_pretrained(str(tmp / "model"))).__name__ if has_tokenizer else None
        if not has_tokenizer:
            notes.append("the candidates have no tokenizer files, so neither has the souped model; copy one in")
        record = {
            "tau": cfg.tau, "low_correlation_set": sel.low_corr, "experts": [_short(e) for e in experts],
            "weights": {_short(c): w for c, w in zip(candidates, best, strict=True) if w > 0},
            "selection": sel.to_dict(), "search": cfg.search, "evaluations": counts, "notes": notes,
            "evaluated_points": [
                {"weights": list(to_weights(p)), "scores": search_journal.done[p],
                 "aggregate": aggregate(search_journal.done[p])}
                for p in search_journal.order
            ],
            "table": [{"method": r.method, "weights": list(r.weights), "val": r.val, "test": r.test} for r in result_rows],
            "tokenizer": tok_name,
        }
        (tmp / "soce.yaml").write_text(yaml.safe_dump(record, sort_keys=False, width=120))
        res_obj = SoceResult(sel, candidates, result_rows, counts, best, out, out / "heatmap.png", notes)
        (tmp / "table.md").write_text(res_obj.markdown())
    res_obj.seconds = time.perf_counter() - start
    if any(math.isnan(aggregate(r.test)) for r in result_rows):
        raise SoupError("an evaluator returned no categories; check the benchmark")
    return res_obj
