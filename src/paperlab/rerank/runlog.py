"""The output directory of one ``eval``: append-only, so an interrupted run keeps what it did.

    out/manifest.json    what is being run (method, model, config, data, first stage): written
                         once, atomically; a later run with the same --out resumes only when
                         its manifest matches
    out/run.trec         TREC run, appended one query at a time (one write + fsync per query)
    out/queries.jsonl    one line per finished query (its tag and ledger), appended after its
                         run lines are on disk: a query counts as done only once it is here
    out/summary.json     metrics and cost over every finished query, rewritten atomically at
                         the end

On resume, run lines of a query without a queries.jsonl line (the process died between the two
writes, or in the middle of the first) are dropped, so the run file never holds half a query.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from paperlab.io import atomic_write_text
from paperlab.rerank.errors import RerankDataError

FILES = ("manifest.json", "run.trec", "queries.jsonl", "summary.json")
#: Manifest keys that may differ on resume (asking for more queries extends a run).
RESUMABLE_CHANGES = frozenset({"max_queries"})


#: The gap ``untie`` leaves between equal scores: the 6th decimal, the last one a run file keeps.
TIE_STEP = 1e-6


def untie(scores: Mapping[str, float]) -> dict[str, float]:
    """Strictly decreasing scores, best first, equal scores kept in insertion order.

    trec_eval and ir-measures ignore the rank column and break score ties by doc id, so a
    ranking whose scores tie (a small model that writes 0 for most passages) would be scored
    in doc-id order, not in the order the reranker (or its first-stage tie-break) chose. Each
    tied score is lowered by ``TIE_STEP`` per place (at most 1e-4 over 100 passages).
    """
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])  # stable: ties keep insertion order
    out: dict[str, float] = {}
    prev = float("inf")
    for doc, score in ranked:
        prev = min(round(score, 6), round(prev - TIE_STEP, 6))
        out[doc] = prev
    return out


def trec_lines(qid: str, scores: Mapping[str, float], tag: str) -> list[str]:
    """``qid Q0 docid rank score tag`` lines, best first (ties by insertion order, made strict
    with ``untie`` so that trec_eval reads the same order)."""
    ranked = untie(scores)
    return [f"{qid} Q0 {d} {r} {s:.6f} {tag}" for r, (d, s) in enumerate(ranked.items(), start=1)]


class RunLog:
    """An eval's output directory (see the module docstring).

    Args:
        out: the directory.
        manifest: JSON-ready description of the run.
        force: start over, deleting this tool's files in ``out`` (nothing else).

    Raises:
        RerankDataError: ``out`` holds a different run (or other files) and ``force`` is off.
    """

    def __init__(self, out: str | Path, manifest: dict[str, Any], force: bool = False) -> None:
        self.out = Path(out)
        self.manifest = manifest
        self.done: dict[str, dict[str, Any]] = {}  # qid -> its queries.jsonl row
        self.run: dict[str, dict[str, float]] = {}
        self._new_dir = not self.out.exists()
        self._new_run = False
        if self.out.exists() and not self.out.is_dir():
            raise RerankDataError(f"--out {self.out} is a file; pass a directory")
        if force:
            for name in FILES:
                (self.out / name).unlink(missing_ok=True)
        old = self.out / "manifest.json"
        if old.is_file():
            self._resume(json.loads(old.read_text(encoding="utf-8")))
        elif self.out.is_dir() and any(self.out.iterdir()):
            raise RerankDataError(f"--out {self.out} exists and holds no paperlab eval; "
                                  "pass an empty or new directory, or --force to write into it")
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(old, json.dumps(manifest, indent=2, sort_keys=True))
            self._new_run = True

    def _resume(self, old: dict[str, Any]) -> None:
        rows = self.out / "queries.jsonl"
        if rows.is_file():
            for line in rows.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash: that query is simply redone
                self.done[str(row["qid"])] = row
        diff = sorted(k for k in set(old) | set(self.manifest)
                      if k not in RESUMABLE_CHANGES and old.get(k) != self.manifest.get(k))
        if diff and self.done:
            raise RerankDataError(
                f"--out {self.out} holds a run with other settings ({', '.join(diff)} differ); "
                "rerun with the same settings to resume, another --out, or --force to start over")
        if self.manifest != old:  # nothing done yet under the old settings, or more queries asked
            atomic_write_text(self.out / "manifest.json", json.dumps(self.manifest, indent=2, sort_keys=True))
        kept: list[str] = []
        trec = self.out / "run.trec"
        if trec.is_file():
            for line in trec.read_text(encoding="utf-8").splitlines():
                cols = line.split()
                if len(cols) == 6 and cols[0] in self.done:
                    self.run.setdefault(cols[0], {})[cols[2]] = float(cols[4])
                    kept.append(line)
        for q in [q for q in self.done if q not in self.run and self.done[q].get("n_docs", 0)]:
            del self.done[q]  # its run lines are gone: redo it
        atomic_write_text(trec, "".join(f"{x}\n" for x in kept))

    def append(self, qid: str, scores: Mapping[str, float], tag: str, row: dict[str, Any]) -> None:
        """Record one finished query: its run lines first (fsynced), then its row."""
        lines = trec_lines(qid, scores, tag)
        self._append("run.trec", "".join(f"{x}\n" for x in lines))
        full = {"qid": qid, "tag": tag, "n_docs": len(lines), **row}
        self._append("queries.jsonl", json.dumps(full) + "\n")
        self.done[qid] = full
        self.run[qid] = dict(scores)

    def _append(self, name: str, text: str) -> None:
        try:
            with (self.out / name).open("a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise RerankDataError(f"cannot append to {self.out / name} ({e}); free disk space and "
                                  "rerun the same command to resume") from None

    def discard_if_new(self) -> None:
        """Remove what this run wrote when it started the directory and finished no query (a
        run that failed on its first query leaves nothing behind)."""
        if not self._new_run or self.n_done_on_disk():
            return
        for name in FILES:
            (self.out / name).unlink(missing_ok=True)
        if self._new_dir and not any(self.out.iterdir()):
            self.out.rmdir()

    def n_done_on_disk(self) -> int:
        """Finished queries as queries.jsonl holds them (also right after an interrupted append)."""
        try:
            lines = (self.out / "queries.jsonl").read_text(encoding="utf-8").splitlines()
        except OSError:
            return 0
        n = 0
        for line in lines:
            try:
                json.loads(line)
                n += 1
            except json.JSONDecodeError:
                pass
        return n

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """Write summary.json atomically."""
        return atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2))
