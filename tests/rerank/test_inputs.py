"""Input checks on the files users really bring: each kind of bad data is refused through the
real CLI with one line and exit 2, and ``--allow-bad-data`` goes on with a warning and a count."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from paperlab.cli import main
from paperlab.rerank import rank
from paperlab.rerank.beir import load_beir
from paperlab.rerank.errors import RerankDataError

CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats are small domestic felines that purr."},
    {"_id": "d2", "title": "", "text": "Dogs bark and are loyal companions."},
    {"_id": "d3", "title": "", "text": "The cat sat on the mat and purred loudly."},
    {"_id": "d4", "title": "", "text": "Stock markets fell sharply on Monday."},
]
QUERIES = [{"_id": "q1", "text": "cat purring"}, {"_id": "q2", "text": "dog loyalty"}]
QRELS = ["q1\td1\t2", "q1\td3\t1", "q2\td2\t1"]


def write_beir(root: Path, corpus: list[dict] | None = None, queries: list[dict] | None = None,
               qrels: list[str] | None = None, header: bool = True) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (corpus or CORPUS)))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (queries or QUERIES)))
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + (qrels or QRELS)
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


def write_latin1(root: Path) -> None:
    write_beir(root)
    latin1_corpus(root)


def latin1_corpus(root: Path) -> None:
    # a corpus saved by a Windows tool: "café" in Latin-1 on line 2
    raw = (root / "corpus.jsonl").read_bytes().replace(b"Dogs bark", "Café dogs bark".encode("latin-1"))
    (root / "corpus.jsonl").write_bytes(raw)


BAD: dict[str, tuple[Callable[[Path], None], str]] = {
    "duplicate_id": (lambda d: write_beir(d, corpus=[*CORPUS, {"_id": "d2", "text": "again"}]),
                     "id 'd2' already appeared at line 2"),
    "empty_query": (lambda d: write_beir(d, queries=[*QUERIES, {"_id": "q3", "text": "  "}]),
                    "query 'q3' has no text"),
    "qrels_unknown_doc": (lambda d: write_beir(d, qrels=[*QRELS, "q2\td99\t1"]),
                          "judges doc 'd99', absent from corpus.jsonl"),
    "id_whitespace": (lambda d: write_beir(d, corpus=[*CORPUS[:3], {"_id": "d 4", "text": "x"}]),
                      "id 'd 4' holds whitespace"),
    "non_utf8": (write_latin1,
                 "corpus.jsonl:2 is not UTF-8 (byte 0xe9 at column"),
}


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    got = capsys.readouterr()
    return code, got.out, got.err


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_data_refused_in_one_line_or_counted(kind: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    make, fragment = BAD[kind]
    data = tmp_path / "beir"
    make(data)
    code, out, err = cli(["rerank", "eval", "--data", str(data), "--method", "bm25",
                          "--out", str(tmp_path / "o1")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert fragment in err and "--allow-bad-data" in err and "Traceback" not in err
    assert not (tmp_path / "o1").exists()  # refused before anything was written
    code, out, err = cli(["rerank", "eval", "--data", str(data), "--method", "bm25", "--allow-bad-data",
                          "--out", str(tmp_path / "o2")], capsys)
    assert code == 0, err
    assert f"warning: went on past bad input data: {kind} x1" in err
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["data_issues"] == {kind: 1}
    assert summary["n_queries"] == 2


def test_lenient_choices(tmp_path: Path) -> None:
    data = write_beir(tmp_path / "b", corpus=[*CORPUS[:3], {"_id": "d 4", "text": "x"},
                                              {"_id": "d1", "text": "dup"}],
                      queries=[*QUERIES, {"_id": "q3", "text": ""}],
                      qrels=[*QRELS, "q2\td 4\t1", "q2\tnope\t1"])
    latin1_corpus(data)
    ds = load_beir(data, strict=False)
    assert ds.corpus["d1"].startswith("Cats.")  # the first row wins
    assert ds.corpus["d2"].startswith("Caf\ufffd dogs")  # undecodable byte replaced
    assert "d_4" in ds.corpus and ds.qrels["q2"] == {"d2": 1, "d_4": 1, "nope": 1}  # same rewrite
    assert "q3" not in ds.queries
    assert ds.issues.counts == {"duplicate_id": 1, "id_whitespace": 2, "empty_query": 1,
                                "non_utf8": 1, "qrels_unknown_doc": 1}


def test_dbpedia_style_ids_header_qrels_and_utf8_bom(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    corpus = [{"_id": "<dbpedia:Albert_Einstein>", "title": "Albert Einstein",
               "text": "Albert Einstein was a theoretical physicist who developed relativity."},
              {"_id": "<dbpedia:Paris>", "title": "Paris", "text": "Paris is the capital of France."},
              {"_id": "<dbpedia:Banana>", "title": "Banana", "text": "A banana is an edible fruit."}]
    queries = [{"_id": "INEX_LD-2009022", "text": "physicist relativity"},
               {"_id": "QALD2_te-1", "text": "capital of France"}]
    data = write_beir(tmp_path / "dbp", corpus, queries,
                      ["INEX_LD-2009022\t<dbpedia:Albert_Einstein>\t2", "QALD2_te-1\t<dbpedia:Paris>\t1"])
    (data / "queries.jsonl").write_bytes(b"\xef\xbb\xbf" + (data / "queries.jsonl").read_bytes())
    code, out, err = cli(["rerank", "eval", "--data", str(data), "--method", "bm25",
                          "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["metrics"]["RR@10"] == pytest.approx(1.0)
    first = (tmp_path / "o" / "run.trec").read_text().splitlines()[0].split()
    assert first == ["INEX_LD-2009022", "Q0", "<dbpedia:Albert_Einstein>", "1", first[4], "paperlab-bm25"]
    # a piped table keeps its columns (no cut at 80)
    assert "fallbacks" in out and "first stage" in out


def test_docs_file_and_query_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes('{"id": "a", "text": "caf\u00e9"}\n'.encode("latin-1"))
    code, _, err = cli(["rerank", "run", "-q", "x", "--docs", str(docs)], capsys)
    assert code == 2 and err.startswith("error: ") and "is not UTF-8" in err and err.count("\n") == 1
    with pytest.raises(RerankDataError, match="query is empty"):
        rank("  ", ["a"], llm=object())
    with pytest.raises(RerankDataError, match="no number"):
        rank("q", [{"id": "a", "text": "x", "score": "n/a"}], llm=object())
    bad_cfg = tmp_path / "cfg.yaml"
    bad_cfg.write_text("repeats: [1,\n")
    docs.write_text('{"id": "a", "text": "fine"}\n')
    code, _, err = cli(["rerank", "run", "-q", "x", "--docs", str(docs), "--config", str(bad_cfg)], capsys)
    assert code == 2 and "is not UTF-8 YAML" in err and err.count("\n") == 1
