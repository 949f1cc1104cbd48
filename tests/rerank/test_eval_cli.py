"""`paperlab rerank eval` as a user runs it: against a real local HTTP model server, killed
mid-run and resumed, reranking an existing TREC run, with a dense index, with a reply cache and
log, and with honest marks when every passage fell back."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paperlab.cli import main
from paperlab.rerank import Reranker, rank
from paperlab.rerank.beir import load_beir
from paperlab.rerank.evaluate import evaluate_method, evaluate_run, first_stage_run
from paperlab.rerank.retrieve import BM25Index
from paperlab.testing import free_port, start_python_server, stop_process

HERE = Path(__file__).resolve().parent


def _scripted() -> Any:
    # the scripted far side of test_methods_scripted.py (tests run with --import-mode=importlib)
    spec = importlib.util.spec_from_file_location("rerank_scripted_llm", HERE / "test_methods_scripted.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


_S = _scripted()
ScriptedLLM, score_by_number = _S.ScriptedLLM, _S.score_by_number
REPO = HERE.parents[1]
N_QUERIES = 8


def write_dataset(root: Path) -> Path:
    """12 docs 'doc N topicK ...' (the scripted server scores doc N with N % 11), 6 queries."""
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as f:
        for n in range(1, 13):
            f.write(json.dumps({"_id": f"d{n}", "title": "", "text": f"doc {n} topic{n % 3} text"}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for q in range(N_QUERIES):
            f.write(json.dumps({"_id": f"q{q}", "text": f"topic{q % 3} question {q}"}) + "\n")
    # the doc with the highest N of each topic is the relevant one (what the server prefers)
    best = {0: "d9", 1: "d10", 2: "d8"}
    (root / "qrels" / "test.tsv").write_text(
        "".join(f"q{q}\t{best[q % 3]}\t1\n" for q in range(N_QUERIES)))
    return root


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    got = capsys.readouterr()
    return code, got.out, got.err


def server(tmp_path: Path, tscale: float, mode: str, delay: float = 0.0) -> Iterator[str]:
    port = free_port()
    proc = start_python_server(HERE / "scripted_openai_server.py", [str(port), "100000", mode, str(delay)],
                               port, tmp_path / f"server-{mode}.log", 30 * tscale, "/health")
    try:
        yield f"openai:http://127.0.0.1:{port}/v1#scripted"
    finally:
        stop_process(proc)


@pytest.fixture
def scoring_server(tmp_path: Path, tscale: float, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SCRIPTED_LOG", str(tmp_path / "requests.jsonl"))
    yield from server(tmp_path, tscale, "score", delay=0.2)


def test_eval_resumes_in_process_without_redoing_queries(tmp_path: Path, scoring_server: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # the fast-lane twin of the kill test below: a finished part of a run is kept and extended
    data = write_dataset(tmp_path / "beir")
    argv = ["rerank", "eval", "--data", str(data), "--llm", scoring_server, "--group-size", "2",
            "--repeats", "1", "--top-k", "4", "--out", str(tmp_path / "out")]
    code, _, err = cli([*argv, "--max-queries", "3"], capsys)
    assert code == 0, err
    asked = len((tmp_path / "requests.jsonl").read_text().splitlines())
    code, _, err = cli([*argv, "--max-queries", "5"], capsys)
    assert code == 0 and "resuming" in err and "3 of 5 queries already done" in err
    new = [json.loads(x) for x in (tmp_path / "requests.jsonl").read_text().splitlines()[asked:]]
    assert new and not any(f"question {q}\n" in u for u in new for q in range(3))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_queries"] == 5 and summary["flat_queries"] == 0


@pytest.mark.slow  # three `paperlab` processes and a server
def test_killed_eval_resumes_without_redoing_queries(tmp_path: Path, scoring_server: str,
                                                     tscale: float) -> None:
    data = write_dataset(tmp_path / "beir")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "paperlab", "rerank", "eval", "--data", str(data), "--method",
            "grouprank", "--llm", scoring_server, "--group-size", "2", "--repeats", "1",
            "--top-k", "4", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    rows = out / "queries.jsonl"

    def start_and_stop_after(n_done: int, sig: int) -> subprocess.CompletedProcess[str]:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120 * tscale
        while time.monotonic() < deadline and proc.poll() is None:
            if rows.is_file() and len(rows.read_text().splitlines()) >= n_done:
                break
            time.sleep(0.05)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60 * tscale)
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)

    # Ctrl-C: one line saying what was kept and how to go on
    first = start_and_stop_after(1, signal.SIGINT)
    assert first.returncode == 2, first.stderr
    kept = len(rows.read_text().splitlines())
    assert first.stderr.strip().splitlines()[-1] == (
        f"error: interrupted after {kept} of {N_QUERIES} queries, all kept in {out}; "
        "rerun the same command to resume")
    # SIGKILL: no handler runs at all, as after a power cut
    start_and_stop_after(kept + 1, signal.SIGKILL)
    done_before = [json.loads(x)["qid"] for x in rows.read_text().splitlines()]
    assert kept + 1 <= len(done_before) < N_QUERIES, "the run finished before it could be killed"
    asked_before = len((tmp_path / "requests.jsonl").read_text().splitlines())

    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300 * tscale)
    assert again.returncode == 0, again.stderr
    assert f"resuming {out}: {len(done_before)} of {N_QUERIES} queries already done" in again.stderr
    # a progress line per newly ranked query, on stderr
    assert sum(line.startswith("[") for line in again.stderr.splitlines()) == N_QUERIES - len(done_before)
    asked_after = [json.loads(x) for x in (tmp_path / "requests.jsonl").read_text().splitlines()[asked_before:]]
    for qid in done_before:  # no finished query was asked again
        q = int(qid[1:])
        assert not any(f"question {q}\n" in u for u in asked_after)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_queries"] == N_QUERIES and not summary["all_fallback"]
    lines = (out / "run.trec").read_text().splitlines()
    assert len(lines) == len({tuple(x.split()[:3]) for x in lines}) == 4 * N_QUERIES
    assert {x.split()[5] for x in lines} == {"paperlab-grouprank"}
    # the resumed run ranks exactly as an uninterrupted one would
    ds = load_beir(data)
    run: dict[str, dict[str, float]] = {}
    for x in lines:
        qid, _, doc, _, score, _ = x.split()
        run.setdefault(qid, {})[doc] = float(score)
    metrics, _ = evaluate_run(ds.qrels, run)
    assert summary["metrics"] == pytest.approx(metrics)
    assert summary["metrics"]["RR@10"] == pytest.approx(1.0)  # the server's judgement is right
    assert summary["first_stage"]["name"] == "bm25" and "nDCG@10" in summary["first_stage"]["metrics"]


def test_rerank_a_trec_run_file(tmp_path: Path, scoring_server: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    data = write_dataset(tmp_path / "beir")
    ds = load_beir(data)
    # someone else's first stage: every query gets docs d1..d12 in id order, best first
    run_file = tmp_path / "other.trec"
    run_file.write_text("".join(f"q{q} Q0 d{n} {n} {20 - n}.5 theirs\n"
                                for q in range(N_QUERIES) for n in range(1, 13)))
    code, out, err = cli(["rerank", "eval", "--data", str(data), "--method", "first-stage", "--run",
                          str(run_file), "--top-k", "12", "--out", str(tmp_path / "fs")], capsys)
    assert code == 0, err
    fs = json.loads((tmp_path / "fs" / "summary.json").read_text())
    theirs = {f"q{q}": {f"d{n}": 20 - n + 0.5 for n in range(1, 13)} for q in range(N_QUERIES)}
    assert fs["metrics"] == pytest.approx(evaluate_run(ds.qrels, theirs)[0])
    code, out, err = cli(["rerank", "eval", "--data", str(data), "--method", "grouprank", "--run",
                          str(run_file), "--top-k", "12", "--llm", scoring_server, "--group-size", "6",
                          "--repeats", "2", "--max-queries", "2", "--out", str(tmp_path / "gr")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "gr" / "summary.json").read_text())
    assert summary["first_stage"]["name"] == "run" and summary["config"]["repeats"] == 2
    assert summary["cost"]["calls"] == 2 * 2 * 2  # 2 queries x 2 groups x 2 repeats
    lines = (tmp_path / "gr" / "run.trec").read_text().splitlines()
    assert {x.split()[2] for x in lines} == {f"d{n}" for n in range(1, 13)}
    assert lines[0].split()[2] == "d10"  # 10 % 11 = 10: the server's favourite
    assert "grouprank" in out and "run (first stage)" in out


def test_all_fallback_is_marked_everywhere(tmp_path: Path, tscale: float,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = write_dataset(tmp_path / "beir")
    for spec in server(tmp_path, tscale, "garbage"):
        code, out, err = cli(["rerank", "eval", "--data", str(data), "--llm", spec, "--group-size", "4",
                              "--repeats", "3", "--top-k", "4", "--max-queries", "2",
                              "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["all_fallback"] is True and summary["model_scored"]["scored"] == 0
    assert summary["metrics"] == summary["first_stage"]["metrics"]
    # once per passage per repeat: 2 queries x 4 passages x 3 repeats (pointwise re-asks fail too)
    assert summary["cost"]["fallbacks"] == {"first_stage": 24}
    assert "ALL FELL BACK (bm25 order)" in out
    tags = {x.split()[5] for x in (tmp_path / "o" / "run.trec").read_text().splitlines()}
    assert tags == {"paperlab-bm25-fallback-grouprank"}


def test_non_utf8_reply_is_one_line(tmp_path: Path, tscale: float,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "doc 3"}\n{"id": "b", "text": "doc 7"}\n')
    for spec in server(tmp_path, tscale, "latin1"):
        code, _, err = cli(["rerank", "run", "-q", "x", "--docs", str(docs), "--llm", spec], capsys)
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "non-UTF-8" in last


@pytest.mark.slow  # loads sentence-transformers and MiniLM (about 30 s)
def test_dense_index_in_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_dataset(tmp_path / "beir")
    code, _, err = cli(["rerank", "index", "--data", str(data), "--dense", "--out", str(tmp_path / "dense")], capsys)
    assert code == 0, err
    code, out, err = cli(["rerank", "eval", "--data", str(data), "--method", "first-stage", "--index",
                          str(tmp_path / "dense"), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["first_stage"]["name"] == "dense" and summary["n_queries"] == N_QUERIES
    assert "dense (first stage)" in out


def test_reply_cache_log_and_profiles(tmp_path: Path) -> None:
    llm = ScriptedLLM(score_by_number, delay=0.0)
    kw = dict(group_size=3, repeats=2, cache=tmp_path / "cache", log_replies=tmp_path / "replies.jsonl")
    docs = [(f"d{k}", f"doc {k}") for k in range(6)]
    first = Reranker(llm, "grouprank", **kw).rank("q", docs)
    calls = llm.calls
    second = Reranker(llm, "grouprank", **kw).rank("q", docs)
    assert llm.calls == calls == 4 and first.doc_ids() == second.doc_ids()
    log = [json.loads(x) for x in (tmp_path / "replies.jsonl").read_text().splitlines()]
    assert [r["cached"] for r in log] == [False] * 4 + [True] * 4
    assert log[0]["prompt"][-1]["role"] == "user" and log[0]["reply"].startswith("thinking")
    # (id, text) tuples in, ranked results out, in three lines
    top = rank("q", [("x", "doc 2"), ("y", "doc 9"), ("z", "doc 5")], llm=llm).top(2)
    assert [(r.doc_id, r.text) for r in top] == [("y", "doc 9"), ("z", "doc 5")]
    # per-backend defaults: a model in this process on a CPU gets the small profile for what
    # the user left unset; a server gets the published settings
    llm.spec = "hf:/some/model"  # type: ignore[attr-defined]
    small = Reranker(llm, "grouprank", group_size=3).config
    assert (small.profile, small.repeats, small.max_tokens, small.template) == ("cpu-small", 1, 160, "grouprank-json/v1")
    assert small.group_size == 3 and Reranker(llm, "grouprank", repeats=4).config.repeats == 4
    llm.spec = "openai:http://127.0.0.1:1/v1#m"  # type: ignore[attr-defined]
    published = Reranker(llm, "grouprank").config
    assert (published.profile, published.repeats, published.max_tokens) == ("published", 6, 512)


def test_evaluate_method_library_path(tmp_path: Path) -> None:
    ds = load_beir(write_dataset(tmp_path / "beir"))
    cands = first_stage_run(ds, BM25Index.build(ds.corpus), ds.judged_queries(), 4)
    res = evaluate_method(ds, "grouprank", cands, ScriptedLLM(score_by_number, delay=0.0),
                          Reranker(object(), group_size=2, repeats=1).config)
    assert set(res.tags.values()) == {"paperlab-grouprank"} and not res.all_fallback
    assert res.first_stage_metrics.keys() == res.metrics.keys()
    assert res.per_query["q0"]["first_stage"]["nDCG@10"] >= 0.0
