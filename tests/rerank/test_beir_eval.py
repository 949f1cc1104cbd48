"""BEIR loading, BM25 first stage, and metrics against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from paperlab.rerank.beir import load_beir, load_qrels
from paperlab.rerank.errors import RerankDataError
from paperlab.rerank.evaluate import evaluate_method, evaluate_run, first_stage_run, trec_run_text
from paperlab.rerank.retrieve import BM25Index

CORPUS = {
    "d1": ("Cats", "Cats are small domestic felines that purr."),
    "d2": ("", "Dogs bark and are loyal companions."),
    "d3": ("", "The cat sat on the mat and purred loudly."),
    "d4": ("", "Stock markets fell sharply on Monday."),
}


def write_beir(root: Path, header: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    with (root / "corpus.jsonl").open("w") as f:
        for i, (t, x) in CORPUS.items():
            f.write(json.dumps({"_id": i, "title": t, "text": x}) + "\n")
    (root / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "cat purring"}) + "\n"
        + json.dumps({"_id": "q2", "text": "dog loyalty"}) + "\n"
        + json.dumps({"_id": "q3", "text": "unjudged"}) + "\n")
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + ["q1\td1\t2", "q1\td3\t1", "q2\td2\t1"]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("header", [True, False])
def test_load_beir_with_and_without_header(tmp_path: Path, header: bool) -> None:
    data = load_beir(write_beir(tmp_path / "b", header))
    assert data.corpus["d1"] == "Cats. Cats are small domestic felines that purr."
    assert data.qrels == {"q1": {"d1": 2, "d3": 1}, "q2": {"d2": 1}}
    assert data.judged_queries() == ["q1", "q2"]


def test_trec_four_column_qrels_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "q.tsv"
    p.write_text("q1 0 d1 2\nq1 0 d2 0\n")
    assert load_qrels(p) == {"q1": {"d1": 2, "d2": 0}}
    p.write_text("q1\td1\t2\nq1\td2\tx\n")
    with pytest.raises(RerankDataError, match=":2 has a non-numeric score"):
        load_qrels(p)
    with pytest.raises(RerankDataError, match="does not exist"):
        load_beir(tmp_path / "nope")


def test_metrics_against_hand_computation() -> None:
    qrels = {"q1": {"d1": 2, "d3": 1}, "q2": {"d2": 1}}
    run = {"q1": {"d3": 3.0, "d4": 2.0, "d1": 1.0}, "q2": {"d4": 2.0, "d1": 1.0}}
    agg, per = evaluate_run(qrels, run)
    # trec_eval's nDCG (what ir-measures runs) uses linear gains: grade 1 at rank 1, grade 2
    # at rank 3; ideal: grade 2 at rank 1, grade 1 at rank 2
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert per["q1"]["nDCG@10"] == pytest.approx(dcg / idcg)
    assert per["q1"]["RR@10"] == pytest.approx(1.0)
    assert per["q1"]["R@100"] == pytest.approx(1.0)
    assert per["q2"] == {"nDCG@10": 0.0, "R@100": 0.0, "RR@10": 0.0}
    assert agg["nDCG@10"] == pytest.approx(dcg / idcg / 2)
    assert agg["RR@10"] == pytest.approx(0.5)


def test_bm25_index_roundtrip_and_eval(tmp_path: Path) -> None:
    data = load_beir(write_beir(tmp_path / "b", header=True))
    idx = BM25Index.build(data.corpus)
    idx.save(tmp_path / "idx")
    with pytest.raises(RerankDataError, match="--force"):
        idx.save(tmp_path / "idx")
    loaded = BM25Index.load(tmp_path / "idx")
    hits = loaded.search(["cat purring"], k=10)[0]
    assert {d for d, _ in hits[:2]} == {"d1", "d3"} and len(hits) == 4
    cands = first_stage_run(data, loaded, data.judged_queries(), k=10)
    res = evaluate_method(data, "bm25", cands)
    assert res.metrics["RR@10"] == pytest.approx(1.0)
    out = res.write(tmp_path / "out")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_queries"] == 2 and summary["metrics"] == res.metrics
    first = (out / "run.trec").read_text().splitlines()[0].split()
    assert first[:2] == ["q1", "Q0"] and first[2] in {"d1", "d3"} and first[3] == "1"
    assert trec_run_text({}, "x") == ""


def test_dl19_bm25(shared_data: Path) -> None:
    data = load_beir(shared_data / "ir" / "msmarco-dl19")
    assert len(data.judged_queries()) == 43
    idx = BM25Index.build(data.corpus)
    res = evaluate_method(data, "bm25", first_stage_run(data, idx, data.judged_queries(), 100))
    assert 0.6 < res.metrics["nDCG@10"] < 0.8  # 0.727 measured on this 5000-passage subset


def test_tied_scores_are_scored_in_ranking_order_not_doc_id_order() -> None:
    # A small model that writes 0 for every passage: the reranker keeps the first stage's order
    # for ties; trec_eval/ir-measures would otherwise sort the tie by doc id (the relevant
    # "z-rel" last, RR 0.25).
    run = {"q": {"z-rel": 0.0, "m": 0.0, "b": 0.0, "a": 0.0}}
    metrics, _ = evaluate_run({"q": {"z-rel": 1}}, run)
    assert metrics["RR@10"] == 1.0
    lines = trec_run_text(run, "t").splitlines()
    assert [ln.split()[2] for ln in lines] == ["z-rel", "m", "b", "a"]
    scores = [float(ln.split()[4]) for ln in lines]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False))  # strict: trec_eval keeps it
    assert scores[0] == 0.0 and scores[-1] > -1e-4
