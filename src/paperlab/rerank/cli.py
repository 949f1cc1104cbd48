"""``paperlab rerank``: run, eval and index. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from paperlab.rerank.errors import RerankDataError

if TYPE_CHECKING:
    from rich.console import Console

    from paperlab.llm import LLM
    from paperlab.rerank.config import RerankConfig
    from paperlab.rerank.methods.base import Method

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="GroupRank: groupwise LLM reranking, baselines, BM25 and BEIR evaluation.")

LLMOpt = Annotated[str, typer.Option("--llm", help="LLM spec: smollm2 | hf:DIR[#file.gguf] | openai:URL#MODEL")]
MethodOpt = Annotated[str, typer.Option("--method", "-m", help="grouprank | pointwise | listwise (eval also: bm25 / first-stage)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file with RerankConfig fields")]
ModeOpt = Annotated[str | None, typer.Option(
    "--mode", help="generate | logit (token probabilities: in process, or a server's top_logprobs) | "
                   "first-stage (run no model)")]
ProfileOpt = Annotated[str | None, typer.Option(
    "--profile", help="auto | published | cpu-small | packaged: sizes the settings you leave unset (auto: "
                      "packaged for smollm2, cpu-small for another in-process model without a GPU)")]
ConcOpt = Annotated[int | None, typer.Option("--concurrency", help="LLM calls (logit mode over HTTP: groups) in flight; 1 for a server that runs one sequence (llama-cpp-python)")]
TemplateSrcOpt = Annotated[str | None, typer.Option(
    "--chat-template", help="openai: servers that do not continue an assistant prefill (llama-cpp-python): "
                            "render logit-mode prompts with this model's chat template (smollm2, a model dir, a .gguf)")]
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


def _settings(config: Path | None, **kw: object) -> RerankConfig:
    """The config of run and eval: a YAML file, then the flags given (None: left unset)."""
    return _cfg(config, **kw)


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
    concurrency: ConcOpt = None,
    chat_template: TemplateSrcOpt = None,
    cache: CacheOpt = False,
    log_replies: LogOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSONL results instead of a table")] = False,
) -> None:
    """Rerank the docs for one query and print the ranking."""
    from rich.table import Table

    from paperlab.rerank.api import Reranker
    from paperlab.rerank.eval_steps import ranking_warnings
    from paperlab.threads import set_threads

    rows = _read_docs(docs)
    set_threads()  # this command's edge: an in-process model (or the dense encoder) runs next
    cfg = _settings(config, mode=mode, profile=profile, group_size=group_size, template=template,
                    repeats=repeats, fallback=fallback, max_retries=max_retries, max_chars=max_chars,
                    max_tokens=max_tokens, fusion_weight=fusion_weight, on_llm_error=on_llm_error,
                    concurrency=concurrency)
    ranking = Reranker(llm, method, cfg, cache=cache, log_replies=log_replies,
                       chat_template=chat_template).rank(query, rows)
    st = ranking.stats
    for line in ranking_warnings(st):
        typer.echo(line, err=True)
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
    if dense:
        from paperlab.threads import set_threads

        set_threads()  # the MiniLM encoder runs in process
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
    concurrency: ConcOpt = None,
    chat_template: TemplateSrcOpt = None,
    cache: CacheOpt = False,
    log_replies: LogOpt = None,
    allow_bad_data: Annotated[bool, typer.Option("--allow-bad-data", help="go on past bad input rows with a warning and a count")] = False,
    out: Annotated[Path, typer.Option("--out", help="run.trec, queries.jsonl, summary.json go here; the same --out resumes")] = Path("rerank-eval"),
    force: Annotated[bool, typer.Option("--force", help="start over in --out instead of resuming")] = False,
) -> None:
    """Evaluate a method on a BEIR directory beside its first stage: nDCG@10, R@100, RR@10,
    cost, repairs, fallbacks. Each finished query is appended to --out at once; rerun the same
    command to resume after an interruption."""
    from paperlab.rerank import eval_steps as steps
    from paperlab.rerank.api import build_method, resolve_config
    from paperlab.rerank.evaluate import is_first_stage
    from paperlab.rerank.replies import RecordingLLM
    from paperlab.threads import set_threads

    set_threads()  # this command's edge: in-process models and encoders run with these threads
    from paperlab.rerank.runlog import RunLog

    reranking = not is_first_stage(method)
    cfg = _settings(config, mode=mode, profile=profile, group_size=group_size, template=template,
                    repeats=repeats, fallback=fallback, max_retries=max_retries, max_chars=max_chars,
                    max_tokens=max_tokens, fusion_weight=fusion_weight, on_llm_error=on_llm_error,
                    concurrency=concurrency)
    if reranking:  # a bad method name fails here, before any data or model is loaded
        cfg = resolve_config(cfg, method, llm)
    inputs = steps.read_inputs(data, split, not allow_bad_data, max_queries, top_k, run_file, index_dir,
                               first_stage)
    if inputs.data.issues.counts:
        typer.echo(f"warning: {inputs.data.issues.summary()}", err=True)
    log = RunLog(out, steps.manifest(method, llm, cfg, inputs, data, split, top_k, run_file, index_dir,
                                     max_queries), force=force)
    built: list[LLM] = []

    def load_method() -> Method:  # only when some query is left to rank
        impl = build_method(llm, method, cfg, cache=cache, log_replies=log_replies,
                            chat_template=chat_template)
        built.append(impl.llm)
        return impl

    res = steps.rank_queries(inputs, method, llm, cfg, log, load_method,
                             lambda line: typer.echo(line, err=True), out)
    if inputs.data.issues.counts:
        res.extra["data_issues"] = dict(inputs.data.issues.counts)
    if built and isinstance(built[0], RecordingLLM):
        res.extra["reply_cache"] = built[0].counts()
    log.write_summary(res.summary())
    for line in steps.ranking_warnings(res.stats, len(inputs.qids)):
        typer.echo(line, err=True)
    _console().print(steps.result_table(res, method, data.name, len(inputs.qids), top_k))
    typer.echo(f"wrote {out}/run.trec and {out}/summary.json")
