"""The SQLite run journal: an append-only log of every state change, one transaction each.

The orchestrator writes an event *before* it changes its in-memory state (and before it sends
the TASK that a ``dispatched`` event announces). Replaying a run's events through
:func:`paperlab.galaxy.orchestrator.runstate.replay` rebuilds the state exactly, which is how
``--resume RUN_ID`` works after a ``kill -9``. WAL mode with ``synchronous=NORMAL`` keeps every
committed event across a process crash (an OS crash may lose the last few, which the resume
logic treats like events that never happened).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from paperlab.galaxy.errors import JournalError
from paperlab.galaxy.orchestrator.events import Event

__all__ = ["Journal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    task_id TEXT,
    attempt_id TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, seq);
CREATE TABLE IF NOT EXISTS device_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    device TEXT NOT NULL,
    what TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


class Journal:
    """One SQLite file holding any number of runs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._in_tx = False
        try:
            # isolation_level=None: we issue one INSERT per event, each its own transaction.
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group the events of one orchestrator step into one commit.

        The caller must not send anything that an event announces before the block ends (the
        orchestrator only queues frames during a step; writer tasks send them afterwards).
        The block commits even when the step raises: memory already reflects every event
        that was written, so the journal must keep them too.
        """
        if self._in_tx:
            yield
            return
        self._db.execute("BEGIN")
        self._in_tx = True
        try:
            yield
        finally:
            self._in_tx = False
            self._db.execute("COMMIT")

    def create_run(self, run_id: str, name: str, created: float | None = None) -> None:
        """Register a new run; JournalError if the id is taken."""
        created = time.time() if created is None else created
        try:
            self._db.execute("INSERT INTO runs VALUES (?, ?, ?, 'running')", (run_id, name, created))
        except sqlite3.IntegrityError:
            raise JournalError(f"run {run_id!r} already exists in {self.path}; use --resume {run_id}") from None

    def append(self, run_id: str, ev: Event, data: dict[str, Any] | None = None) -> None:
        """Commit one event with its own timestamp (which replay uses, so it is deterministic).
        ``data``: ``ev.data()`` when the caller has it already."""
        data = ev.data() if data is None else data
        self._db.execute(
            "INSERT INTO events (run_id, ts, kind, task_id, attempt_id, data) VALUES (?,?,?,?,?,?)",
            (run_id, ev.ts, ev.kind, data.get("task"), data.get("attempt"), json.dumps(data)),
        )

    def device_audit(self, ts: float, device: str, what: str, detail: str) -> None:
        """Record something a device (or a process claiming to be one) did that no run owns:
        a refused registration, a result for an attempt no run dispatched, a revoked
        credential. (Each connection's message rate limit bounds how fast these can come.)"""
        self._db.execute("INSERT INTO device_audit (ts, device, what, detail) VALUES (?,?,?,?)",
                         (ts, device[:64], what, detail[:1000]))

    def device_audits(self, device: str | None = None) -> list[dict[str, Any]]:
        """The device audit rows, oldest first (of one device when ``device`` is given)."""
        q = "SELECT ts, device, what, detail FROM device_audit"
        args: tuple[str, ...] = ()
        if device is not None:
            q, args = q + " WHERE device=?", (device,)
        rows = self._db.execute(q + " ORDER BY seq", args).fetchall()
        return [dict(zip(("ts", "device", "what", "detail"), r, strict=True)) for r in rows]

    def set_state(self, run_id: str, state: str) -> None:
        self._db.execute("UPDATE runs SET state=? WHERE run_id=?", (state, run_id))

    def run_info(self, run_id: str) -> dict[str, Any]:
        """The run's row; JournalError listing known runs if absent."""
        row = self._db.execute("SELECT run_id, name, created, state FROM runs WHERE run_id=?",
                               (run_id,)).fetchone()
        if row is None:
            known = [r["run_id"] for r in self.runs()][-10:]
            raise JournalError(f"no run {run_id!r} in {self.path}; known runs: {known or 'none'}")
        return dict(zip(("run_id", "name", "created", "state"), row, strict=True))

    def runs(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT run_id, name, created, state FROM runs ORDER BY created").fetchall()
        return [dict(zip(("run_id", "name", "created", "state"), r, strict=True)) for r in rows]

    def events(self, run_id: str) -> Iterator[dict[str, Any]]:
        """The run's events in commit order, each ``{seq, ts, kind, data}``."""
        cur = self._db.execute("SELECT seq, ts, kind, data FROM events WHERE run_id=? ORDER BY seq",
                               (run_id,))
        for seq, ts, kind, data in cur:
            yield {"seq": seq, "ts": ts, "kind": kind, "data": json.loads(data)}

    def count(self, run_id: str, kind: str, task_id: str | None = None) -> int:
        q = "SELECT COUNT(*) FROM events WHERE run_id=? AND kind=?"
        args: tuple[Any, ...] = (run_id, kind)
        if task_id is not None:
            q += " AND task_id=?"
            args += (task_id,)
        return int(self._db.execute(q, args).fetchone()[0])

    def close(self) -> None:
        self._db.close()
