"""Scheduling: which pending tasks are ready, skipped or still waiting, and in what order.

Work per step is O(changes): only tasks whose readiness may have changed (``Run.dirty``) are
looked at, and ready tasks wait in a per-run set until dispatched.
"""

from __future__ import annotations

from collections.abc import Callable

from paperlab.galaxy.orchestrator.events import Event, Skipped
from paperlab.galaxy.orchestrator.runstate import Run
from paperlab.galaxy.plan.constellation import TaskStar, TaskStatus

__all__ = ["Scheduler"]


class Scheduler:
    """Keeps each run's ready set; skips what can no longer run (through ``record``)."""

    def __init__(self, record: Callable[[Run, Event], None]) -> None:
        self._record = record
        self._ready: dict[str, set[str]] = {}

    def propagate(self, run: Run) -> None:
        """Sort the dirty pending tasks into skipped, ready, or still waiting."""
        ready = self._ready.setdefault(run.run_id, set())
        while run.dirty:  # a skip dirties its successors, so loop until quiet
            for tid in sorted(run.dirty):
                run.dirty.discard(tid)
                t = run.constellation.tasks.get(tid)
                if t is None or t.status is not TaskStatus.PENDING:
                    continue
                verdict, reason = run.constellation.readiness(tid)
                if verdict in ("skip", "skip_condition") and not t.attempts:
                    self._record(run, Skipped(task=tid, reason=reason,
                                              by_condition=verdict == "skip_condition"))
                elif verdict == "ready":
                    ready.add(tid)
                else:  # e.g. an edit gave it a new, unfinished upstream
                    ready.discard(tid)

    def ready(self, run: Run, now: float) -> list[TaskStar]:
        """Ready tasks due now, highest priority first, equal priorities in plan order."""
        c = run.constellation
        ids = self._ready.setdefault(run.run_id, set())
        ready = [c.tasks[t] for t in ids if t in c.tasks and c.tasks[t].status is TaskStatus.PENDING]
        ids.intersection_update(t.id for t in ready)
        ready = [t for t in ready if t.not_before <= now]
        ready.sort(key=lambda t: (-t.priority, run.order.get(t.id, 0)))
        return ready

    def dispatched(self, run: Run, task_id: str) -> None:
        self._ready.get(run.run_id, set()).discard(task_id)

    def forget(self, run_id: str) -> None:
        self._ready.pop(run_id, None)
