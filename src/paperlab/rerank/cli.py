"""``paperlab rerank``: run, eval and index. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from paperlab.errors import RerankError
from paperlab.rerank.errors import RerankDataError

if TYPE_CHECKING:
    from rich.console import Console

    from paperlab.llm import LLM
    from paperlab.rerank.config import RerankConfig

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="GroupRank: groupwise LLM reranking, baselines, BM25 and BEIR evaluation.")

LLMOpt = Annotated[str, typer.Option("--llm", help="LLM spec: smollm2 | hf:DIR[#file.gguf] | openai:URL#MODEL")]
MethodOpt = Annotated[str, typer.Option("--method", "-m", help="grouprank | pointwise | listwise (eval also: bm25 / first-stage)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file with RerankConfig fields")]
ModeOpt = Annotated[str | None, typer.Option("--mode", help="generate | logit (logit needs an hf backend)")]
ProfileOpt = Annotated[str | None, typer.Option(
    "--profile", help="auto | published | cpu-small: sizes the settings you leave unset (auto: cpu-small "
                      "for an in-process model without a GPU)")]
GroupOpt = Annotated[int | None, typer.Option("--group-size", help="passages per group")]
TemplateOpt = Annotated[str | None, typer.Option("--template", help="prompt template key or YAML/JSON file")]
RepeatsOpt = Annotated[int | None, typer.Option("--repeats", help="shuffled passes")]
FallbackOpt = Annotated[str | None, typer.Option("--fallback", help="pointwise | first_stage, for passages a reply left unscored")]
RetriesOpt = Annotated[int | None, typer.Option("--max-retries", help="re-asks for ids a reply left unscored")]
CharsOpt = Annotated[int | None, typer.Option("--max-chars", help="passage truncation (characters)")]
TokensOpt = Annotated[int | None, typer.Option("--max-tokens", help="completion budget per call")]
FusionOpt = Annotated[float | None, typer.Option("--fusion-weight", help="w in (1-w)*reranker + w*first stage")]
OnErrOpt = Annotated[str | None, typer.Option("--on-llm-error", help="raise | fallback (keep first-stage order)")]
CacheOpt = Annotated[bool, typer.Option("--cache/--no-cache", help="cache replies on disk by (model, prompt, parameters) under $PAPERLAB_CACHE/rerank-replies")]
LogOpt = Annotated[Path | None, typer.Option("--log-replies", help="append every raw reply with its prompt to this JSONL file")]


def _cfg(config: Path | None, **kw: object) -> RerankConfig:
    from paperlab.rerank.config import load_config

    return load_config(config, **kw)


def _console(stderr: bool = False) -> Console:
    """A rich console that does not cut tables at 80 columns when output is piped."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 250)


def _read_docs(docs: Path | None) -> list[dict[str, Any]]:
    """JSONL rows ({"id", "text"[, "score"]}) from a file, or stdin when no file is given."""
    if docs is None:
        if sys.stdin.isatty():
            raise RerankDataError("no --docs file and nothing on stdin; pass --docs FILE.jsonl or pipe JSONL in")
        raw = sys.stdin.buffer.read()
        where = "stdin"
    else:
        if not docs.is_file():
            raise RerankDataError(f"docs file {docs} does not exist; pass a JSONL file with id and text")
        raw = docs.read_bytes()
        where = str(docs)
    try:
        lines = raw.decode("utf-8").removeprefix("\ufeff").splitlines()
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise RerankDataError(f"{where}:{line} is not UTF-8 (byte 0x{raw[e.start]:02x}); "
                              "convert it, e.g. iconv -f latin1 -t utf-8") from None
    rows = []
    for n, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RerankDataError(f"docs line {n} is not JSON ({e.msg}); one object per line") from None
    if not rows:
        raise RerankDataError("no docs given; each JSONL line needs an id and a text")
    return rows


@app.command()
def run(
    query: Annotated[str, typer.Option("--query", "-q", help="The query.")],
    docs: Annotated[Path | None, typer.Option("--docs", help="JSONL with id, text[, score]; stdin if absent")] = None,
    method: MethodOpt = "grouprank",
    llm: LLMOpt = "smollm2",
    mode: ModeOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    group_size: GroupOpt = None,
    template: TemplateOpt = None,
    repeats: RepeatsOpt = None,
    fallback: FallbackOpt = None,
    max_retries: RetriesOpt = None,
    max_chars: CharsOpt = None,
    max_tokens: TokensOpt = None,
    fusion_weight: FusionOpt = None,
    on_llm_error: OnErrOpt = None,
    cache: CacheOpt = False,
    log_replies: LogOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSONL results instead of a table")] = False,
) -> None:
    """Rerank the docs for one query and print the ranking."""
    from rich.table import Table

    from paperlab.rerank.api import Reranker

    rows = _read_docs(docs)
    cfg = _cfg(config, mode=mode, profile=profile, group_size=group_size, template=template,
               repeats=repeats, fallback=fallback, max_retries=max_retries, max_chars=max_chars,
               max_tokens=max_tokens, fusion_weight=fusion_weight, on_llm_error=on_llm_error)
    ranking = Reranker(llm, method, cfg, cache=cache, log_replies=log_replies).rank(query, rows)
    st = ranking.stats
    if as_json:
        for r in ranking:
            typer.echo(json.dumps({"id": r.doc_id, "score": r.score, "rank": r.rank}))
        typer.echo(json.dumps({"stats": st.to_dict()}), err=True)
        return
    note = "  ALL FELL BACK: input order" if st.all_fallback else ""
    table = Table(title=f"{method} ({st.calls} calls, {st.wall_s:.1f} s, "
                        f"{st.model_scored}/{st.passages} model-scored){note}")
    for col in ("rank", "id", "score", "text"):
        table.add_column(col)
    for r in ranking:
        table.add_row(str(r.rank), r.doc_id, f"{r.score:.3f}", r.text[:70])
    _console().print(table)
    _console(stderr=True).print(f"repairs {dict(st.repairs)}  fallbacks {dict(st.fallbacks)}  "
                                f"tokens {st.prompt_tokens}+{st.completion_tokens}")


@app.command()
def index(
    data: Annotated[Path, typer.Option("--data", help="BEIR-layout directory")],
    out: Annotated[Path, typer.Option("--out", help="index directory to write")],
    dense: Annotated[bool, typer.Option("--dense", help="MiniLM dense index instead of BM25")] = False,
    no_stem: Annotated[bool, typer.Option("--no-stem", help="BM25 without stemming")] = False,
    force: Annotated[bool, typer.Option("--force", help="replace an existing index")] = False,
    allow_bad_data: Annotated[bool, typer.Option("--allow-bad-data", help="go on past bad rows (counted)")] = False,
) -> None:
    """Build a BM25 (or dense) index of a BEIR corpus and save it."""
    from paperlab.rerank.beir import DataIssues, load_corpus
    from paperlab.rerank.retrieve import BM25Index, DenseIndex

    issues = DataIssues(strict=not allow_bad_data)
    corpus = load_corpus(data / "corpus.jsonl", issues)
    if issues.counts:
        typer.echo(f"warning: {issues.summary()}", err=True)
    idx = DenseIndex.build(corpus) if dense else BM25Index.build(corpus, stem=not no_stem)
    idx.save(out, force=force)
    typer.echo(f"indexed {len(corpus)} docs -> {out}")


def _first_stage(ds: Any, qids: list[str], top_k: int, run_file: Path | None, index_dir: Path | None,
                 first_stage: str) -> tuple[str, dict[str, list[tuple[str, float]]]]:
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


@app.command("eval")
def eval_(
    data: Annotated[Path, typer.Option("--data", help="BEIR-layout directory")],
    method: MethodOpt = "grouprank",
    llm: LLMOpt = "smollm2",
    mode: ModeOpt = None,
    config: ConfigOpt = None,
    split: Annotated[str, typer.Option(help="qrels/<split>.tsv")] = "test",
    index_dir: Annotated[Path | None, typer.Option("--index", help="saved BM25 or dense index (built in memory if absent)")] = None,
    first_stage: Annotated[str, typer.Option("--first-stage", help="bm25 | dense, when no --index or --run is given")] = "bm25",
    run_file: Annotated[Path | None, typer.Option("--run", help="rerank this TREC run file instead of retrieving")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="first-stage depth to rerank")] = 100,
    max_queries: Annotated[int | None, typer.Option(help="only the first N judged queries")] = None,
    profile: ProfileOpt = None,
    group_size: GroupOpt = None,
    template: TemplateOpt = None,
    repeats: RepeatsOpt = None,
    fallback: FallbackOpt = None,
    max_retries: RetriesOpt = None,
    max_chars: CharsOpt = None,
    max_tokens: TokensOpt = None,
    fusion_weight: FusionOpt = None,
    on_llm_error: OnErrOpt = None,
    cache: CacheOpt = False,
    log_replies: LogOpt = None,
    allow_bad_data: Annotated[bool, typer.Option("--allow-bad-data", help="go on past bad input rows with a warning and a count")] = False,
    out: Annotated[Path, typer.Option("--out", help="run.trec, queries.jsonl, summary.json go here; the same --out resumes")] = Path("rerank-eval"),
    force: Annotated[bool, typer.Option("--force", help="start over in --out instead of resuming")] = False,
) -> None:
    """Evaluate a method on a BEIR directory beside its first stage: nDCG@10, R@100, RR@10,
    cost, repairs, fallbacks. Each finished query is appended to --out at once; rerun the same
    command to resume after an interruption."""
    from rich.table import Table

    from paperlab.rerank.beir import load_beir
    from paperlab.rerank.config import resolve_profile, spec_location
    from paperlab.rerank.evaluate import evaluate_method, evaluate_run, is_first_stage
    from paperlab.rerank.methods import get_method
    from paperlab.rerank.replies import RecordingLLM
    from paperlab.rerank.runlog import RunLog

    reranking = not is_first_stage(method)
    if reranking:
        get_method(method)  # fail on a bad name before loading anything
    cfg = _cfg(config, mode=mode, profile=profile, group_size=group_size, template=template,
               repeats=repeats, fallback=fallback, max_retries=max_retries, max_chars=max_chars,
               max_tokens=max_tokens, fusion_weight=fusion_weight, on_llm_error=on_llm_error)
    if reranking:
        cfg = resolve_profile(cfg, method, spec_location(llm))
    ds = load_beir(data, split, strict=not allow_bad_data)
    qids = ds.judged_queries()[:max_queries] if max_queries else ds.judged_queries()
    if not qids:
        raise RerankDataError(f"no judged query in {data} (split {split!r}); check qrels/{split}.tsv")
    fs_name, cands = _first_stage(ds, qids, top_k, run_file, index_dir, first_stage)
    if ds.issues.counts:
        typer.echo(f"warning: {ds.issues.summary()}", err=True)
    manifest = {"method": method, "llm": llm if reranking else "", "config": cfg.model_dump(),
                "data": str(data.resolve()), "split": split, "top_k": top_k, "first_stage": fs_name,
                "run_file": str(run_file.resolve()) if run_file else None,
                "index": str(index_dir.resolve()) if index_dir else None, "max_queries": max_queries}
    log = RunLog(out, manifest, force=force)
    resumed = sum(q in log.done for q in qids)
    if resumed:
        typer.echo(f"resuming {out}: {resumed} of {len(qids)} queries already done", err=True)
    recorder: list[LLM] = []

    def load_model() -> LLM:
        from paperlab.llm import load_llm
        from paperlab.rerank.replies import wrap_llm

        model = wrap_llm(load_llm(llm, max_concurrency=cfg.concurrency), cache, log_replies)
        recorder.append(model)
        return model

    done = [resumed]
    from paperlab.interrupts import SignalWatch

    # a Ctrl-C whose KeyboardInterrupt Python swallowed still stops the run at the next query
    interrupted = SignalWatch(signal.SIGINT).install()

    def progress(qid: str, row: dict[str, Any]) -> None:
        # A Ctrl-C that Python swallowed (one landing in a weakref or __del__ callback is only
        # printed as "Exception ignored") still stops the run at the next query boundary.
        if interrupted.is_set():
            raise KeyboardInterrupt
        # one plain line per query on stderr: visible in a pipe, a log file or CI
        done[0] += 1
        per, _ = evaluate_run({qid: ds.qrels[qid]}, {qid: log.run.get(qid, {})})
        fs, _ = evaluate_run({qid: ds.qrels[qid]}, {qid: dict(cands[qid])})
        scored = f"  model-scored {row.get('model_scored', 0)}/{row.get('passages', 0)}" if reranking else ""
        typer.echo(f"[{done[0]}/{len(qids)}] {qid}: nDCG@10 {per['nDCG@10']:.4f} ({fs_name} "
                   f"{fs['nDCG@10']:.4f})  {row.get('wall_s', 0.0):.1f} s{scored}  "
                   f"fallbacks {sum((row.get('fallbacks') or {}).values())}  {row['tag']}", err=True)

    try:
        res = evaluate_method(ds, method, cands, load_model if reranking else None, cfg,
                              llm_spec=llm if reranking else "", on_query=progress if reranking else None,
                              first_stage=fs_name, log=log)
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            # a second or still-pending interrupt must not replace this line with a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise RerankError(f"interrupted after {log.n_done_on_disk()} of {len(qids)} queries, all kept in {out}; "
                          "rerun the same command to resume") from None
    finally:
        # after an interrupt the handler stays ignored (set above) while the error line is printed
        if not interrupted.is_set():
            interrupted.restore()
    if ds.issues.counts:
        res.extra["data_issues"] = dict(ds.issues.counts)
    if recorder and isinstance(recorder[0], RecordingLLM):
        res.extra["reply_cache"] = recorder[0].counts()
    log.write_summary(res.summary())

    fs_label = f"{fs_name} (first stage)"
    label = res.method if not res.all_fallback else f"{res.method}: ALL FELL BACK ({fs_name} order)"
    table = Table(title=f"{method} on {data.name} ({len(qids)} queries, {fs_name} top-{top_k})",
                  title_justify="left")
    for col in ("ranking", *res.metrics, "model-scored", "calls", "prompt tok", "compl tok", "wall s",
                "repairs", "fallbacks"):
        table.add_column(col)
    table.add_row(fs_label, *(f"{v:.4f}" for v in res.first_stage_metrics.values()),
                  *(["-"] * 7))
    if reranking:
        st = res.stats
        table.add_row(label, *(f"{v:.4f}" for v in res.metrics.values()),
                      f"{st.model_scored}/{st.passages}", str(st.calls), str(st.prompt_tokens),
                      str(st.completion_tokens), f"{res.wall_s:.1f}", str(st.n_repairs), str(st.n_fallbacks))
    _console().print(table)
    typer.echo(f"wrote {out}/run.trec and {out}/summary.json")
