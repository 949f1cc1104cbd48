"""``paperlab rerank``: run, eval and index. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from paperlab.rerank.errors import RerankDataError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="GroupRank: groupwise LLM reranking, baselines, BM25 and BEIR evaluation.")

LLMOpt = Annotated[str, typer.Option("--llm", help="LLM spec: smollm2 | hf:DIR[#file.gguf] | openai:URL#MODEL")]
MethodOpt = Annotated[str, typer.Option("--method", "-m", help="grouprank | pointwise | listwise (eval also: bm25)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file with RerankConfig fields")]
ModeOpt = Annotated[str | None, typer.Option("--mode", help="generate | logit (logit needs an hf backend)")]


def _cfg(config: Path | None, **kw: object):  # type: ignore[no-untyped-def]
    from paperlab.rerank.config import load_config

    return load_config(config, **kw)


def _read_docs(docs: Path | None) -> list[dict]:
    """JSONL rows ({"id", "text"[, "score"]}) from a file, or stdin when no file is given."""
    if docs is None:
        if sys.stdin.isatty():
            raise RerankDataError("no --docs file and nothing on stdin; pass --docs FILE.jsonl or pipe JSONL in")
        lines = sys.stdin.read().splitlines()
    else:
        if not docs.is_file():
            raise RerankDataError(f"docs file {docs} does not exist; pass a JSONL file with id and text")
        lines = docs.read_text(encoding="utf-8").splitlines()
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
    group_size: Annotated[int | None, typer.Option(help="passages per group")] = None,
    repeats: Annotated[int | None, typer.Option(help="shuffled passes")] = None,
    max_chars: Annotated[int | None, typer.Option(help="passage truncation")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="completion budget per call")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSONL results instead of a table")] = False,
) -> None:
    """Rerank the docs for one query and print the ranking."""
    from rich.console import Console
    from rich.table import Table

    from paperlab.rerank.api import Reranker

    rows = _read_docs(docs)
    cfg = _cfg(config, mode=mode, group_size=group_size, repeats=repeats, max_chars=max_chars,
               max_tokens=max_tokens)
    ranking = Reranker(llm, method, cfg).rank(query, rows)
    if as_json:
        for r in ranking:
            typer.echo(json.dumps({"id": r.doc_id, "score": r.score, "rank": r.rank}))
        typer.echo(json.dumps({"stats": ranking.stats.to_dict()}), err=True)
        return
    texts = {str(r.get("id", r.get("_id", r.get("doc_id")))): str(r.get("text", "")) for r in rows}
    table = Table(title=f"{method} ({ranking.stats.calls} calls, {ranking.stats.wall_s:.1f} s)")
    for col in ("rank", "id", "score", "text"):
        table.add_column(col)
    for r in ranking:
        table.add_row(str(r.rank), r.doc_id, f"{r.score:.3f}", texts.get(r.doc_id, "")[:70])
    Console().print(table)
    st = ranking.stats
    Console(stderr=True).print(f"repairs {dict(st.repairs)}  fallbacks {dict(st.fallbacks)}  "
                               f"tokens {st.prompt_tokens}+{st.completion_tokens}")


@app.command()
def index(
    data: Annotated[Path, typer.Option("--data", help="BEIR-layout directory")],
    out: Annotated[Path, typer.Option("--out", help="index directory to write")],
    dense: Annotated[bool, typer.Option("--dense", help="MiniLM dense index instead of BM25")] = False,
    no_stem: Annotated[bool, typer.Option("--no-stem", help="BM25 without stemming")] = False,
    force: Annotated[bool, typer.Option("--force", help="replace an existing index")] = False,
) -> None:
    """Build a BM25 (or dense) index of a BEIR corpus and save it."""
    from paperlab.rerank.beir import load_corpus
    from paperlab.rerank.retrieve import BM25Index, DenseIndex

    corpus = load_corpus(data / "corpus.jsonl")
    idx = DenseIndex.build(corpus) if dense else BM25Index.build(corpus, stem=not no_stem)
    idx.save(out, force=force)
    typer.echo(f"indexed {len(corpus)} docs -> {out}")


@app.command("eval")
def eval_(
    data: Annotated[Path, typer.Option("--data", help="BEIR-layout directory")],
    method: MethodOpt = "grouprank",
    llm: LLMOpt = "smollm2",
    mode: ModeOpt = None,
    config: ConfigOpt = None,
    split: Annotated[str, typer.Option(help="qrels/<split>.tsv")] = "test",
    index_dir: Annotated[Path | None, typer.Option("--index", help="saved index (built in memory if absent)")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="first-stage depth to rerank")] = 100,
    max_queries: Annotated[int | None, typer.Option(help="only the first N judged queries")] = None,
    repeats: Annotated[int | None, typer.Option(help="shuffled passes")] = None,
    max_chars: Annotated[int | None, typer.Option(help="passage truncation")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="completion budget per call")] = None,
    out: Annotated[Path, typer.Option("--out", help="writes run.trec and summary.json here")] = Path("rerank-eval"),
) -> None:
    """Evaluate a method on a BEIR directory: nDCG@10, R@100, RR@10, cost, repairs."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from paperlab.rerank.beir import load_beir
    from paperlab.rerank.evaluate import FIRST_STAGE, evaluate_method, first_stage_run
    from paperlab.rerank.methods import get_method
    from paperlab.rerank.retrieve import BM25Index

    if method != FIRST_STAGE:
        get_method(method)  # fail on a bad name before loading anything
    cfg = _cfg(config, mode=mode, repeats=repeats, max_chars=max_chars, max_tokens=max_tokens)
    ds = load_beir(data, split)
    idx = BM25Index.load(index_dir) if index_dir else BM25Index.build(ds.corpus)
    qids = ds.judged_queries()[:max_queries] if max_queries else ds.judged_queries()
    cands = first_stage_run(ds, idx, qids, top_k)
    model = None
    if method != FIRST_STAGE:
        from paperlab.llm import load_llm

        model = load_llm(llm, max_concurrency=cfg.concurrency)
    with Progress(transient=True) as bar:
        task = bar.add_task(f"{method}", total=len(qids))
        res = evaluate_method(ds, method, cands, model, cfg, llm_spec=llm if model else "",
                              on_query=lambda q, row: bar.advance(task))
    res.write(out)
    table = Table(title=f"{method} on {data.name} ({len(qids)} queries, top-{top_k})")
    for col in (*res.metrics, "calls", "prompt tok", "compl tok", "wall s", "repairs", "fallbacks"):
        table.add_column(col)
    st = res.stats
    table.add_row(*(f"{v:.4f}" for v in res.metrics.values()), str(st.calls), str(st.prompt_tokens),
                  str(st.completion_tokens), f"{res.wall_s:.1f}", str(st.n_repairs), str(st.n_fallbacks))
    Console().print(table)
    typer.echo(f"wrote {out}/run.trec and {out}/summary.json")
