"""Loading BEIR-layout directories: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

The qrels file may or may not start with a header line (BEIR's own files have
``query-id\tcorpus-id\tscore``; the DL19 subset in ../shared has none): a first line whose
score column is not an integer is taken as a header. TREC's 4-column form
(``qid 0 docid rel``) is accepted too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from paperlab.rerank.errors import RerankDataError


@dataclass
class BeirData:
    """A loaded BEIR directory. ``corpus`` maps doc id -> text (title joined in)."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def judged_queries(self) -> list[str]:
        """Query ids that have qrels, in queries.jsonl order."""
        return [q for q in self.queries if q in self.qrels]


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise RerankDataError(f"{path} is missing; a BEIR directory holds corpus.jsonl, queries.jsonl, qrels/")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RerankDataError(f"{path}:{lineno} is not valid JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(row, dict) or "_id" not in row:
                raise RerankDataError(f"{path}:{lineno} has no '_id' field; BEIR rows need _id and text")
            rows.append(row)
    return rows


def load_corpus(path: Path) -> dict[str, str]:
    """doc id -> "title. text" (or just text when the title is empty)."""
    out: dict[str, str] = {}
    for row in _read_jsonl(path):
        title, text = str(row.get("title") or "").strip(), str(row.get("text") or "")
        out[str(row["_id"])] = f"{title}. {text}" if title else text
    return out


def load_queries(path: Path) -> dict[str, str]:
    """query id -> text."""
    return {str(r["_id"]): str(r.get("text") or "") for r in _read_jsonl(path)}


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """qid -> {doc id: grade}, from a TSV with or without a header line."""
    if not path.is_file():
        raise RerankDataError(f"qrels file {path} is missing; pass --split with an existing qrels/<split>.tsv")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) == 4:  # TREC: qid iter docid rel
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise RerankDataError(f"{path}:{lineno} needs 3 columns (query-id, corpus-id, score)")
            try:
                grade = int(float(parts[2]))
            except ValueError:
                if lineno == 1:
                    continue  # a header line
                raise RerankDataError(f"{path}:{lineno} has a non-numeric score {parts[2]!r}") from None
            qrels.setdefault(parts[0], {})[parts[1]] = grade
    return qrels


def load_beir(data_dir: str | Path, split: str = "test") -> BeirData:
    """Load a BEIR-layout directory.

    Raises:
        RerankDataError: a file is missing or malformed (the message names it).
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise RerankDataError(f"data directory {d} does not exist; pass a BEIR-layout directory to --data")
    return BeirData(load_corpus(d / "corpus.jsonl"), load_queries(d / "queries.jsonl"),
                    load_qrels(d / "qrels" / f"{split}.tsv"))
