"""The Monte Carlo sweep: functions x prompt sets x shot counts x queries -> result rows.

Every row is one (function, prompt set, k, query) with the model's two exact-match scores and
the two baselines for the same prompt: ``mode`` (answer the most frequent output among the k
examples) and ``random`` (answer a uniformly random 8-bit string, drawn from a seeded RNG; its
expectation is 1/256). Shot counts whose prompt does not fit the model's context are kept as
rows with ``status=skipped`` so that a table always says what was not measured.
"""

from __future__ import annotations

import csv
import io
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from paperlab.errors import ICLError
from paperlab.icl.encodings import EncodingScheme
from paperlab.icl.prompts import build_prompt_sets, mode_answer
from paperlab.icl.scoring import Scorer, fitting_shots
from paperlab.icl.tasks import N_BITS, TaskFunction, to_str
from paperlab.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

FIELDS = [
    "model", "encoding", "function", "family", "replicate", "query", "shots", "status",
    "mapping", "greedy", "constrained", "bit_accuracy", "mode", "random",
]
ProgressCallback = Callable[[int, int], None]


def run_sweep(
    scorer: Scorer,
    functions: Sequence[TaskFunction],
    scheme: EncodingScheme,
    shots: Sequence[int],
    *,
    model_name: str,
    n_prompts: int = 1,
    n_queries: int = 4,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
) -> list[dict[str, Any]]:
    """Score every function on ``n_prompts`` prompt sets at every shot count.

    Args:
        scorer: see :mod:`paperlab.icl.scoring`.
        functions: the hidden functions.
        scheme: the encoding (a mapping is drawn per prompt set).
        shots: shot counts (sorted); those over the scorer's context are recorded as skipped.
        model_name: recorded in every row.
        n_prompts: prompt sets (Monte Carlo draws) per function.
        n_queries: queries per prompt set; they share the set's examples and mapping.
        seed: the sweep seed (prompt sets and the random baseline derive from it).
        on_progress: called with (done, total) prompt sets.

    Returns:
        One dict per (function, set, k, query) with the keys of :data:`FIELDS`.
    """
    shots = sorted(set(shots))
    ok_shots = fitting_shots(shots, scorer.context)
    skipped = [k for k in shots if k not in ok_shots]
    if skipped:
        log.info("skipping shots %s: prompts exceed the context of %s tokens", skipped, scorer.context)
    sets = build_prompt_sets(functions, scheme, n_prompts=n_prompts, max_shots=max(shots),
                             n_queries=n_queries, seed=seed)
    rows: list[dict[str, Any]] = []
    for done, ps in enumerate(sets, 1):
        rng = random.Random(f"random-baseline:{seed}:{ps.function.name}:{ps.replicate}")
        base = {"model": model_name, "encoding": scheme.name, "function": ps.function.name,
                "family": ps.function.family, "replicate": ps.replicate,
                "mapping": ps.mapping.describe()}
        scores = {(s.shots, s.query): s for s in scorer.score_set(ps, ok_shots)}
        for k in shots:
            mode = mode_answer(ps, k)
            for qi, q in enumerate(ps.queries):
                truth = ps.function(q)
                guess = tuple(rng.randrange(2) for _ in range(N_BITS))
                row = base | {"query": to_str(q), "shots": k}
                if k in skipped:
                    row |= {"status": "skipped", "greedy": "", "constrained": "", "bit_accuracy": "",
                            "mode": "", "random": ""}
                else:
                    s = scores[(k, qi)]
                    row |= {"status": "ok", "greedy": int(s.greedy), "constrained": int(s.constrained),
                            "bit_accuracy": round(s.bit_accuracy, 4), "mode": int(mode == truth),
                            "random": int(guess == truth)}
                rows.append(row)
        if on_progress:
            on_progress(done, len(sets))
    return rows


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Render result rows as CSV text with the :data:`FIELDS` header."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write result rows to ``path`` atomically."""
    return atomic_write_text(path, rows_to_csv(rows))


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Read a results CSV written by :func:`write_csv`.

    Raises:
        ICLError: the file is missing or lacks the expected columns.
    """
    p = Path(path)
    if not p.is_file():
        raise ICLError(f"no results file at {p}; create one with `paperlab icl run --out {p}`")
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(FIELDS) - set(reader.fieldnames or [])
        if missing:
            raise ICLError(f"{p} is not an icl results CSV (missing columns: {', '.join(sorted(missing))})")
        return list(reader)
