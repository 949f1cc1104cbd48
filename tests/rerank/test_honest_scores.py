"""Rankings that say what produced them: logit mode over an HTTP server's top_logprobs, flat
scores flagged everywhere, the packaged model's default (first-stage order, with a warning), and
a run that fails on its first query leaving nothing behind. Servers are the far side: scripted."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from paperlab.cli import main
from paperlab.rerank import Passage, RerankConfigError, Reranker
from paperlab.rerank.api import resolve_config
from paperlab.rerank.config import RerankConfig
from paperlab.testing import free_port, start_python_server, stop_process

HERE = Path(__file__).resolve().parent


class LogprobJudge:
    """An OpenAI-style chat server answering one-token requests with top_logprobs: at slot k of
    the assistant prefill it puts most of the mass on the digit N % 10 of passage "[k] doc N";
    after a forced "1" it gives "0" log-probability -3. Records the slot walk of every request."""

    def __init__(self) -> None:
        self.walk: list[tuple[str, int]] = []  # (first passage of the prompt, slot)
        self.fresh_reply = False  # answer as a server that closed the prefilled turn
        judge = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user, prefill = body["messages"][-2]["content"], body["messages"][-1]["content"]
                docs = dict(re.findall(r"^\[(\d+)\] doc (\d+)", user, flags=re.M))
                slot = prefill.count('"[')
                judge.walk.append((docs["1"], slot))
                if judge.fresh_reply:
                    top = {"{": -0.2, "Sure": -2.0, "1": -2.5}
                elif prefill.endswith("1"):
                    top = {",": -0.05, "0": -3.0}
                else:
                    top = {str(int(docs[str(slot)]) % 10): -0.1, "5": -2.5, "}": -4.0}
                entries = [{"token": t, "logprob": v} for t, v in top.items()]
                data = json.dumps({"choices": [{"message": {"content": entries[0]["token"]},
                                                "logprobs": {"content": [{**entries[0], "top_logprobs": entries}]}}],
                                   "usage": {"prompt_tokens": 40 + len(prefill), "completion_tokens": 1}}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.spec = f"openai:http://127.0.0.1:{self.httpd.server_address[1]}/v1#judge"


@pytest.fixture
def judge() -> Iterator[LogprobJudge]:
    j = LogprobJudge()
    yield j
    j.httpd.shutdown()
    j.httpd.server_close()


def docs(n: int) -> list[Passage]:
    return [Passage(f"d{k}", f"doc {k}", float(n - k)) for k in range(n)]


def test_logit_mode_over_http_walks_each_group_and_reads_top_logprobs(judge: LogprobJudge) -> None:
    r = Reranker(judge.spec, "grouprank", mode="logit", group_size=3, repeats=1, shuffle=False,
                 concurrency=1).rank("q", docs(6))
    # passage "doc k" gets expected score ~k (P(k) = e^-0.1 among the reported digits)
    assert r.doc_ids() == ["d5", "d4", "d3", "d2", "d1", "d0"]
    s = {x.doc_id: x.score for x in r}
    w = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.5))  # digits the server did not report: 0
    assert s["d3"] == pytest.approx((3 * w + 5 * (1 - w)) / 10, abs=1e-6)
    q = math.exp(-3.0)  # P("0" | "1") splits P(1) into scores 1 and 10
    assert s["d1"] == pytest.approx((w * (1 - q) + 10 * w * q + 5 * (1 - w)) / 10, abs=1e-6)
    # two requests per slot (after the skeleton, after the forced "1"); one group walked at a time
    assert len(judge.walk) == 2 * 6 and r.stats.calls == 2
    assert [first for first, _ in judge.walk] == ["0"] * 6 + ["3"] * 6
    assert [slot for _, slot in judge.walk[:6]] == [1, 1, 2, 2, 3, 3]
    assert r.stats.model_scored == 6 and r.stats.n_fallbacks == 0 and not r.stats.flat_rankings
    judge.fresh_reply = True  # a digit among the top tokens, but little mass: the wrong position
    with pytest.raises(RerankConfigError, match=r"put 0\.08 of the probability.*--chat-template"):
        Reranker(judge.spec, "grouprank", mode="logit", group_size=3, repeats=1).rank("q", docs(3))


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    got = capsys.readouterr()
    return code, got.out, got.err


def write_dataset(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{n}", "text": f"doc {n} topic{n % 2}"}) + "\n" for n in range(1, 7)))
    (root / "queries.jsonl").write_text("".join(
        json.dumps({"_id": f"q{q}", "text": f"topic{q} question"}) + "\n" for q in range(2)))
    (root / "qrels" / "test.tsv").write_text("q0\td6\t1\nq1\td5\t1\n")
    return root


def test_flat_scores_are_flagged_in_ledger_summary_tag_and_warning(
        tmp_path: Path, tscale: float, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    proc = start_python_server(HERE / "scripted_openai_server.py", [str(port), "100000", "zeros"], port,
                               tmp_path / "server.log", 30 * tscale, "/health")
    spec = f"openai:http://127.0.0.1:{port}/v1#scripted"
    try:
        r = Reranker(spec, "grouprank", group_size=3, repeats=2).rank("q", docs(5))
        assert r.stats.flat_rankings == 1 and r.stats.score_spread == 0.0
        assert r.stats.model_scored == 5 and not r.stats.all_fallback
        data = write_dataset(tmp_path / "beir")
        code, out, err = cli(["rerank", "eval", "--data", str(data), "--llm", spec, "--group-size", "3",
                              "--repeats", "1", "--top-k", "4", "--out", str(tmp_path / "o")], capsys)
        assert code == 0, err
        summary = json.loads((tmp_path / "o" / "summary.json").read_text())
        assert summary["flat_queries"] == 2 and summary["per_query"]["q0"]["flat_rankings"] == 1
        assert summary["metrics"] == summary["first_stage"]["metrics"]  # the tie-break is BM25's
        tags = {x.split()[5] for x in (tmp_path / "o" / "run.trec").read_text().splitlines()}
        assert tags == {"paperlab-bm25-flat-grouprank"}
        assert "FLAT SCORES in 2/2 queries" in out
        assert "same score" in err and "2 of 2 queries" in err
        (tmp_path / "docs.jsonl").write_text('{"id": "a", "text": "doc 1"}\n{"id": "b", "text": "doc 2"}\n')
        code, _, err = cli(["rerank", "run", "-q", "x", "--docs", str(tmp_path / "docs.jsonl"), "--llm", spec], capsys)
        assert code == 0 and "warning: the model gave every passage (nearly) the same score (spread 0.0000)" in err
    finally:
        stop_process(proc)


def test_packaged_model_keeps_first_stage_order_unless_a_mode_is_set(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = resolve_config(RerankConfig(), "grouprank", "smollm2")
    assert (cfg.profile, cfg.mode, cfg.repeats) == ("packaged", "first-stage", 1)
    assert resolve_config(RerankConfig(mode="logit"), "grouprank", "smollm2").mode == "logit"
    assert resolve_config(RerankConfig(), "grouprank", "openai:http://h/v1#m").profile == "published"
    # the default command: no model is loaded, the order is the input's, and it says so
    (tmp_path / "docs.jsonl").write_text('{"id": "a", "text": "x", "score": 2}\n{"id": "b", "text": "y", "score": 9}\n')
    code, out, err = cli(["rerank", "run", "-q", "x", "--docs", str(tmp_path / "docs.jsonl"), "--json"], capsys)
    assert code == 0, err
    assert [json.loads(x)["id"] for x in out.splitlines()] == ["b", "a"]  # by first-stage score
    assert "ranks below its first stage" in err and "--mode logit" in err
    assert json.loads(err.splitlines()[-1])["stats"]["first_stage_only"] == 1


def test_a_run_failing_on_its_first_query_leaves_nothing(tmp_path: Path, tscale: float,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # a server that returns no log-probabilities (as `transformers serve`)
    proc = start_python_server(HERE / "scripted_openai_server.py", [str(port), "100000"], port,
                               tmp_path / "server.log", 30 * tscale, "/health")
    try:
        data = write_dataset(tmp_path / "beir")
        out_dir = tmp_path / "new" / "out"
        code, _, err = cli(["rerank", "eval", "--data", str(data), "--llm", f"openai:http://127.0.0.1:{port}/v1#m",
                            "--mode", "logit", "--top-k", "4", "--out", str(out_dir)], capsys)
    finally:
        stop_process(proc)
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "no top log-probabilities" in last and "--mode generate" in last
    assert not out_dir.exists() and (tmp_path / "new").exists()


def test_settings_reach_the_method_the_same_way_in_run_and_eval(tmp_path: Path) -> None:
    from paperlab.rerank.api import build_method

    cfg = RerankConfig(group_size=7)
    m: Any = build_method("openai:http://127.0.0.1:9/v1#m", "grouprank", cfg, chat_template=None)
    assert m.cfg.group_size == 7 and m.cfg.profile == "published" and m.llm.max_concurrency == 32
    with pytest.raises(Exception, match="--chat-template is for openai"):
        build_method("hf:/x", "grouprank", RerankConfig(mode="logit"), chat_template="smollm2")
