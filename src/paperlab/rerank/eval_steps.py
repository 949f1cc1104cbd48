"""What ``paperlab rerank eval`` does, one step per function: read the data and the first
stage, describe the run (its manifest), rank the queries into the output directory (resumable,
interruptible), then report: the table, and warnings for rankings that are not the model's."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperlab.errors import RerankError
from paperlab.rerank.errors import RerankDataError

if TYPE_CHECKING:
    from rich.table import Table

    from paperlab.rerank.beir import BeirData
    from paperlab.rerank.config import RerankConfig
    from paperlab.rerank.evaluate import EvalResult
    from paperlab.rerank.methods.base import Method
    from paperlab.rerank.runlog import RunLog
    from paperlab.rerank.types import RerankStats

Candidates = dict[str, list[tuple[str, float]]]


@dataclass
class EvalInputs:
    """The judged queries to rank and their first-stage candidates."""

    data: BeirData
    qids: list[str]
    first_stage: str  # bm25, dense or run
    candidates: Candidates


def first_stage_candidates(ds: BeirData, qids: list[str], top_k: int, run_file: Path | None,
                           index_dir: Path | None, first_stage: str) -> tuple[str, Candidates]:
    """(name, candidates per query) from a run file, a saved index, or an index built now."""
    from paperlab.rerank.evaluate import first_stage_run
    from paperlab.rerank.retrieve import (
        BM25Index,
        DenseIndex,
        check_index,
        load_index,
        read_trec_run,
    )

    if run_file is not None:
        got = read_trec_run(run_file, ds.queries, ds.corpus, top_k, ds.issues)
        # a judged query the run lacks keeps an empty ranking (it scores 0, as it should)
        return "run", {q: got.get(q, []) for q in qids}
    if index_dir is not None:
        idx = load_index(index_dir)
        check_index(idx, ds.corpus, index_dir)
    elif first_stage == "dense":
        idx = DenseIndex.build(ds.corpus)
    elif first_stage == "bm25":
        idx = BM25Index.build(ds.corpus)
    else:
        raise RerankDataError(f"unknown --first-stage {first_stage!r}; valid: bm25, dense")
    return idx.kind, first_stage_run(ds, idx, qids, top_k)


def read_inputs(data: Path, split: str, strict: bool, max_queries: int | None, top_k: int,
                run_file: Path | None, index_dir: Path | None, first_stage: str) -> EvalInputs:
    """Step 1: the BEIR directory, its judged queries (the first ``max_queries``), and their
    first-stage candidates."""
    from paperlab.rerank.beir import load_beir

    ds = load_beir(data, split, strict=strict)
    qids = ds.judged_queries()[:max_queries] if max_queries else ds.judged_queries()
    if not qids:
        raise RerankDataError(f"no judged query in {data} (split {split!r}); check qrels/{split}.tsv")
    name, cands = first_stage_candidates(ds, qids, top_k, run_file, index_dir, first_stage)
    return EvalInputs(ds, qids, name, cands)


def manifest(method: str, llm: str, cfg: RerankConfig, inputs: EvalInputs, data: Path, split: str,
             top_k: int, run_file: Path | None, index_dir: Path | None,
             max_queries: int | None) -> dict[str, Any]:
    """Step 2: what this run is (the output directory resumes only a run with the same one)."""
    from paperlab.rerank.evaluate import is_first_stage

    return {"method": method, "llm": "" if is_first_stage(method) else llm, "config": cfg.model_dump(),
            "data": str(data.resolve()), "split": split, "top_k": top_k, "first_stage": inputs.first_stage,
            "run_file": str(run_file.resolve()) if run_file else None,
            "index": str(index_dir.resolve()) if index_dir else None, "max_queries": max_queries}


def progress_printer(inputs: EvalInputs, log: RunLog, reranking: bool, done_before: int,
                     echo: Callable[[str], None], interrupted: threading.Event
                     ) -> Callable[[str, dict[str, Any]], None]:
    """One plain line per finished query (visible in a pipe, a log file or CI)."""
    from paperlab.rerank.evaluate import evaluate_run

    done = [done_before]

    def progress(qid: str, row: dict[str, Any]) -> None:
        # A Ctrl-C that Python swallowed (one landing in a weakref or __del__ callback is only
        # printed as "Exception ignored") still stops the run at the next query boundary.
        if interrupted.is_set():
            raise KeyboardInterrupt
        done[0] += 1
        qrels = {qid: inputs.data.qrels[qid]}
        per, _ = evaluate_run(qrels, {qid: log.run.get(qid, {})})
        fs, _ = evaluate_run(qrels, {qid: dict(inputs.candidates[qid])})
        scored = f"  model-scored {row.get('model_scored', 0)}/{row.get('passages', 0)}" if reranking else ""
        echo(f"[{done[0]}/{len(inputs.qids)}] {qid}: nDCG@10 {per['nDCG@10']:.4f} ({inputs.first_stage} "
             f"{fs['nDCG@10']:.4f})  {row.get('wall_s', 0.0):.1f} s{scored}  "
             f"fallbacks {sum((row.get('fallbacks') or {}).values())}  {row['tag']}")

    return progress


def rank_queries(inputs: EvalInputs, method: str, llm_spec: str, cfg: RerankConfig, log: RunLog,
                 load_method: Callable[[], Method], echo: Callable[[str], None], out: Path) -> EvalResult:
    """Step 3: rank every query not yet in ``log`` and append it there at once. Ctrl-C stops at
    a query boundary with one line saying what was kept; an error before the first query of a
    new output directory leaves nothing behind."""
    from paperlab.interrupts import SignalWatch
    from paperlab.rerank.evaluate import evaluate_method, is_first_stage

    reranking = not is_first_stage(method)
    resumed = sum(q in log.done for q in inputs.qids)
    if resumed:
        echo(f"resuming {out}: {resumed} of {len(inputs.qids)} queries already done")
    interrupted = SignalWatch(signal.SIGINT).install()
    progress = progress_printer(inputs, log, reranking, resumed, echo, interrupted)
    try:
        return evaluate_method(inputs.data, method, inputs.candidates, load_method if reranking else None,
                               cfg, llm_spec=llm_spec if reranking else "",
                               on_query=progress if reranking else None,
                               first_stage=inputs.first_stage, log=log)
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            # a second or still-pending interrupt must not replace this line with a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise RerankError(f"interrupted after {log.n_done_on_disk()} of {len(inputs.qids)} queries, all "
                          f"kept in {out}; rerun the same command to resume") from None
    except Exception:
        log.discard_if_new()
        raise
    finally:
        # after an interrupt the handler stays ignored (set above) while the error line is printed
        if not interrupted.is_set():
            interrupted.restore()


def result_table(res: EvalResult, method: str, data_name: str, n_queries: int, top_k: int) -> Table:
    """Step 4: the method beside its first stage on the same queries."""
    from rich.table import Table

    fs = res.first_stage
    label = res.method
    if res.all_fallback:
        label = f"{res.method}: ALL FELL BACK ({fs} order)"
    elif res.stats.first_stage_only:
        label = f"{res.method}: NO MODEL RUN ({fs} order)"
    elif res.stats.flat_rankings:
        label = f"{res.method}: FLAT SCORES in {res.stats.flat_rankings}/{n_queries} queries"
    table = Table(title=f"{method} on {data_name} ({n_queries} queries, {fs} top-{top_k})", title_justify="left")
    for col in ("ranking", *res.metrics, "model-scored", "calls", "prompt tok", "compl tok", "wall s",
                "repairs", "fallbacks"):
        table.add_column(col)
    table.add_row(f"{fs} (first stage)", *(f"{v:.4f}" for v in res.first_stage_metrics.values()), *(["-"] * 7))
    if res.method == method and not _is_first_stage(method):
        st = res.stats
        table.add_row(label, *(f"{v:.4f}" for v in res.metrics.values()),
                      f"{st.model_scored}/{st.passages}", str(st.calls), str(st.prompt_tokens),
                      str(st.completion_tokens), f"{res.wall_s:.1f}", str(st.n_repairs), str(st.n_fallbacks))
    return table


def _is_first_stage(method: str) -> bool:
    from paperlab.rerank.evaluate import is_first_stage

    return is_first_stage(method)


def ranking_warnings(stats: RerankStats, n_rankings: int = 1) -> list[str]:
    """Warning lines for rankings that are not the model's judgement (run and eval print them)."""
    from paperlab.rerank.config import PACKAGED_NOTE
    from paperlab.rerank.types import FLAT_SPREAD

    lines = []
    if stats.first_stage_only:
        lines.append(f"warning: {PACKAGED_NOTE}")
    if stats.flat_rankings:
        where = ("this ranking" if n_rankings == 1 else
                 f"{stats.flat_rankings} of {n_rankings} queries")
        spread = "" if n_rankings > 1 or stats.score_spread is None else f" (spread {stats.score_spread:.4f})"
        lines.append(f"warning: the model gave every passage (nearly) the same score{spread}, below "
                     f"{FLAT_SPREAD} on the 0-1 scale, in {where}: the order is the first stage's "
                     "tie-break, not the model's judgement; use a larger model (--llm)")
    return lines
