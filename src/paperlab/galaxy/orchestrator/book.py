"""The run book: the runs of one orchestrator and the one way their state changes.

Every change is an event: journaled first (commit before anything it announces leaves), then
folded into the run (:meth:`paperlab.galaxy.orchestrator.runstate.Run.apply`), then told to
the listeners. Audit-only events (nothing changes) are journaled and told, not folded. Both
the orchestrator's core and its device link write through this object, which is how the two
share state without importing each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from paperlab.galaxy.orchestrator.events import Event
from paperlab.galaxy.orchestrator.journal import Journal
from paperlab.galaxy.orchestrator.runstate import Run

__all__ = ["Listener", "RunBook"]

log = logging.getLogger(__name__)
Listener = Callable[[str, str, dict[str, Any]], None]


class RunBook:
    """Runs by id, the journal they are written to, and the listeners told of each event."""

    def __init__(self, journal: Journal, clock: Callable[[], float]) -> None:
        self.journal = journal
        self.clock = clock
        self.runs: dict[str, Run] = {}
        self.listeners: list[Listener] = []

    def active(self) -> list[Run]:
        """Runs that have not finished."""
        return [r for r in self.runs.values() if r.finished is None]

    def record(self, run: Run, ev: Event) -> None:
        """Journal ``ev`` (commit first), fold it into the run, tell the listeners."""
        # Stamp the event in place: it was made by the caller for this call and nobody else
        # holds it yet (frozen guards it from here on). dataclasses.replace cost twice as much
        # as the rest of this method, twice per task.
        object.__setattr__(ev, "ts", self.clock())
        data = ev.data()
        self.journal.append(run.run_id, ev, data)
        run.apply(ev)
        self.emit(run.run_id, ev, data)

    def audit(self, run_id: str, ev: Event) -> None:
        """Journal an audit-only event (it changes no state) and tell the listeners."""
        object.__setattr__(ev, "ts", self.clock())  # as in record: ours, unshared
        self.journal.append(run_id, ev)
        self.emit(run_id, ev)

    def emit(self, run_id: str, ev: Event, data: dict[str, Any] | None = None) -> None:
        if not self.listeners:
            return
        # ``data`` was made for this event and the journal has already serialised it, so the
        # timestamp goes in place (a copy per event was a tenth of the dashboard's cost).
        data = ev.data() if data is None else data
        data["ts"] = ev.ts
        for listener in list(self.listeners):
            try:
                listener(run_id, ev.kind, data)
            except Exception:  # a broken UI listener must not stop the run
                log.exception("listener failed")
