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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paperlab.errors import config_error
from paperlab.io.atomic import atomic_directory
from paperlab.soup.errors import MergeConfigError, SoupError
from paperlab.soup.search import (
    Journal,
    aggregate,
    get_search,
)
from paperlab.soup.select import DEFAULT_TAU, Selection

log = logging.getLogger(__name__)

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
    threads: int | None = None  # torch threads, sized by the command at its start (None: paperlab.threads' default)
    expert_floor: float | None = None  # lowest mean over all categories an expert may have


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


def run_soce(cfg: SoceConfig, *, progress: Callable[[str, int | None], Callable[[], None]] | None = None) -> SoceResult:
    """Run SoCE as configured and write OUT (model/, soce.yaml, heatmap.png, table.md).

    The steps (:mod:`paperlab.soup.soce_steps`): candidates, validation scores and experts,
    the weight search (resumable journal), baselines, the held-out table, the outputs.

    Args:
        cfg: the run config.
        progress: ``progress(label, total)`` returns a tick function (for progress bars).

    Raises:
        SoupError: bad config, bad candidates, evaluator or search errors.
    """

    from paperlab.soup import soce_steps as steps

    start = time.perf_counter()
    tick_none: Callable[[], None] = lambda: None  # noqa: E731
    prog = progress or (lambda label, total: tick_none)
    out = Path(cfg.out)
    if out.exists() and not cfg.force:
        raise SoupError(f"output directory {out} already exists; choose another `out:` or set force: true")
    get_search(cfg.search)  # an unknown search fails here, before the zoo or any evaluation
    cands = steps.gather_candidates(cfg, prog)
    scorer = steps.Scorer(cands)
    chosen = steps.choose_experts(cfg, cands, scorer, prog)
    journal_path = Path(cfg.journal) if cfg.journal else out.parent / f"{out.name}.journal.jsonl"
    experts = [cands.paths[i] for i in chosen.idx]
    journal = Journal(journal_path, {"candidates": cands.paths, "evaluator": cands.val_spec, "experts": experts})
    best, counts, notes = steps.search_weights(cfg, chosen, cands, scorer, journal, prog)
    notes = [*chosen.notes, *notes]
    rows = steps.held_out(steps.method_rows(cfg, chosen, cands, best, scorer, notes), scorer, prog)
    result = SoceResult(chosen.selection, cands.paths, rows, counts, best, out, out / "heatmap.png", notes)
    with atomic_directory(out, force=cfg.force, error=SoupError) as tmp:
        steps.write_outputs(tmp, cfg, cands, chosen, best, counts, notes, journal, rows, result.markdown())
    result.seconds = time.perf_counter() - start
    return result
