"""Loading BEIR-layout directories: corpus.jsonl, queries.jsonl, qrels/<split>.tsv, checked.

The qrels file may or may not start with a header line (BEIR's own files have
``query-id\tcorpus-id\tscore``; the DL19 subset in ../shared has none): a first line whose
score column is not an integer is taken as a header. TREC's 4-column form
(``qid 0 docid rel``) is accepted too. Tab-separated lines are split on tabs only, so ids
like ``<dbpedia:Albert_Einstein>`` pass through unchanged.

Every file is checked as it is read; each problem is one :class:`DataIssues` kind:

- ``non_utf8``: a line that is not UTF-8 (lenient: undecodable bytes become U+FFFD);
- ``duplicate_id``: a corpus or query id seen before (lenient: the first row wins);
- ``id_whitespace``: an id holding whitespace, which would shift the columns of a TREC run
  file (lenient: each whitespace run becomes ``_``, the same in corpus, queries and qrels);
- ``empty_id``: a row whose id is empty (lenient: the row is skipped);
- ``empty_query``: a query with no text (lenient: the query is left out of the evaluation);
- ``qrels_unknown_doc``: qrels naming a doc the corpus lacks, which no retriever can find
  (lenient: kept, so recall still counts it as missed);
- ``qrels_unknown_query``: qrels for a query queries.jsonl lacks (lenient: ignored).

By default (``strict``) the first problem raises :class:`RerankDataError` naming the file, the
line and the fix; with ``strict=False`` (the CLI's ``--allow-bad-data``) each is logged,
counted, and the run goes on.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paperlab.rerank.errors import RerankDataError

log = logging.getLogger(__name__)
_WS = re.compile(r"\s+")
LENIENT_HINT = "or pass --allow-bad-data to go on with a warning and a count"


@dataclass
class DataIssues:
    """Problems found in input data: raised at once (``strict``) or counted by kind."""

    strict: bool = True
    counts: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def report(self, kind: str, message: str) -> None:
        """Raise (strict) or count and log one problem. ``message`` says what and the fix.

        Raises:
            RerankDataError: in strict mode.
        """
        if self.strict:
            raise RerankDataError(f"{message}; {LENIENT_HINT}")
        if kind not in self.first:  # one warning per kind; summary() has the counts
            self.first[kind] = message
            log.warning("%s (going on: --allow-bad-data; further ones counted)", message)
        self.counts[kind] += 1

    def summary(self) -> str:
        """One line: the count of every kind and the first example of each ('' when clean)."""
        if not self.counts:
            return ""
        parts = [f"{k} x{n} (first: {self.first[k]})" for k, n in sorted(self.counts.items())]
        return "went on past bad input data: " + "; ".join(parts)


def clean_id(raw: object, where: str, issues: DataIssues) -> str | None:
    """An id as a string, checked; None when it is empty and the row is to be skipped."""
    s = str(raw)
    if not s.strip():
        issues.report("empty_id", f"{where} has an empty id; give every row a non-empty _id")
        return None
    if _WS.search(s):
        issues.report("id_whitespace",
                      f"{where}: id {s!r} holds whitespace, which breaks TREC run columns; "
                      "replace the whitespace in that id")
        return _WS.sub("_", s.strip())
    return s


def read_lines(path: Path, issues: DataIssues) -> Iterator[tuple[int, str]]:
    """(line number, text) for every line, decoded as UTF-8 and checked.

    Raises:
        RerankDataError: the file is missing, or (strict) a line is not UTF-8.
    """
    if not path.is_file():
        raise RerankDataError(f"{path} is missing; a BEIR directory holds corpus.jsonl, queries.jsonl, qrels/")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                issues.report("non_utf8",
                              f"{path}:{lineno} is not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                              f"{e.start + 1}); convert the file, e.g. iconv -f latin1 -t utf-8")
                text = raw.decode("utf-8", errors="replace")
            if lineno == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
            yield lineno, text


def _read_jsonl(path: Path, issues: DataIssues) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in read_lines(path, issues):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RerankDataError(f"{path}:{lineno} is not valid JSON ({e.msg}); fix or remove that line") from None
        if not isinstance(row, dict) or "_id" not in row:
            raise RerankDataError(f"{path}:{lineno} has no '_id' field; BEIR rows need _id and text")
        yield lineno, row


def _unique_rows(path: Path, issues: DataIssues) -> Iterator[tuple[str, dict[str, Any]]]:
    """(checked id, row) per JSONL row, duplicates reported (the first row wins)."""
    seen: dict[str, int] = {}
    for lineno, row in _read_jsonl(path, issues):
        doc_id = clean_id(row["_id"], f"{path}:{lineno}", issues)
        if doc_id is None:
            continue
        if doc_id in seen:
            issues.report("duplicate_id",
                          f"{path}:{lineno}: id {doc_id!r} already appeared at line {seen[doc_id]}; "
                          "ids must be unique (remove or rename one)")
            continue
        seen[doc_id] = lineno
        yield doc_id, row


def load_corpus(path: Path, issues: DataIssues | None = None) -> dict[str, str]:
    """doc id -> "title. text" (or just text when the title is empty)."""
    issues = issues or DataIssues()
    out: dict[str, str] = {}
    for doc_id, row in _unique_rows(path, issues):
        title, text = str(row.get("title") or "").strip(), str(row.get("text") or "")
        out[doc_id] = f"{title}. {text}" if title else text
    return out


def load_queries(path: Path, issues: DataIssues | None = None) -> dict[str, str]:
    """query id -> text; empty queries are reported (lenient: left out)."""
    issues = issues or DataIssues()
    out: dict[str, str] = {}
    for qid, row in _unique_rows(path, issues):
        text = str(row.get("text") or "")
        if not text.strip():
            issues.report("empty_query", f"{path}: query {qid!r} has no text; remove it or give it a text")
            continue
        out[qid] = text
    return out


def _qrels_columns(line: str) -> list[str]:
    # BEIR qrels are TSV: split on tabs only, so an id may hold spaces (checked afterwards)
    if "\t" in line:
        return [c.strip() for c in line.rstrip("\r\n").split("\t")]
    return line.split()


def load_qrels(path: Path, issues: DataIssues | None = None) -> dict[str, dict[str, int]]:
    """qid -> {doc id: grade}, from a TSV with or without a header line."""
    issues = issues or DataIssues()
    if not path.is_file():
        raise RerankDataError(f"qrels file {path} is missing; pass --split with an existing qrels/<split>.tsv")
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in read_lines(path, issues):
        parts = _qrels_columns(line)
        if not any(parts):
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
        qid = clean_id(parts[0], f"{path}:{lineno}", issues)
        doc_id = clean_id(parts[1], f"{path}:{lineno}", issues)
        if qid is None or doc_id is None:
            continue
        qrels.setdefault(qid, {})[doc_id] = grade
    return qrels


def check_qrels(qrels: dict[str, dict[str, int]], corpus: dict[str, str], queries: dict[str, str],
                path: Path, issues: DataIssues) -> dict[str, dict[str, int]]:
    """Qrels checked against the corpus and queries (see the module docstring)."""
    out: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        if qid not in queries:
            issues.report("qrels_unknown_query",
                          f"{path}: query {qid!r} is judged but absent from queries.jsonl; "
                          "add the query or drop its qrels")
            continue
        for doc_id in judged:
            if doc_id not in corpus:
                issues.report("qrels_unknown_doc",
                              f"{path}: query {qid!r} judges doc {doc_id!r}, absent from corpus.jsonl, "
                              "so no retriever can find it; use the matching corpus")
        out[qid] = judged
    return out


@dataclass
class BeirData:
    """A loaded BEIR directory. ``corpus`` maps doc id -> text (title joined in)."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    issues: DataIssues = field(default_factory=DataIssues)

    def judged_queries(self) -> list[str]:
        """Query ids that have qrels, in queries.jsonl order."""
        return [q for q in self.queries if q in self.qrels]


def load_beir(data_dir: str | Path, split: str = "test", strict: bool = True) -> BeirData:
    """Load and check a BEIR-layout directory.

    Args:
        data_dir: holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv.
        split: which qrels file.
        strict: raise on the first data problem (default); False counts them in ``issues``.

    Raises:
        RerankDataError: a file is missing or malformed, or (strict) holds bad data; the
            message names the file, the line and the fix.
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise RerankDataError(f"data directory {d} does not exist; pass a BEIR-layout directory to --data")
    issues = DataIssues(strict=strict)
    corpus = load_corpus(d / "corpus.jsonl", issues)
    queries = load_queries(d / "queries.jsonl", issues)
    qrels_path = d / "qrels" / f"{split}.tsv"
    qrels = check_qrels(load_qrels(qrels_path, issues), corpus, queries, qrels_path, issues)
    return BeirData(corpus, queries, qrels, issues)
