"""A run's state as a fold over its journaled events (:mod:`paperlab.galaxy.orchestrator.events`).

:meth:`Run.apply` is the ONLY place task run-state changes. The orchestrator journals an event
and then applies it; ``--resume`` decodes the journaled rows into the same event types and
applies them again in order. Because apply uses only the event's own data (its timestamp
included), the replayed state equals the state the crashed process had after its last
committed event.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from paperlab.galaxy.orchestrator.events import (
    Adopted,
    CancelRun,
    CancelTask,
    Created,
    Dispatched,
    Edited,
    Event,
    Finished,
    Lost,
    Refused,
    Result,
    Skipped,
    TaskFailed,
    decode_event,
)
from paperlab.galaxy.plan.constellation import (
    Constellation,
    ConstellationState,
    TaskStar,
    TaskStatus,
)
from paperlab.galaxy.plan.edits import apply_batch, parse_batch

__all__ = ["Run", "RunSettings", "replay"]

# A capacity refusal waits this long before the task is offered again (no retry is used).
REFUSED_DELAY = 0.2
MAX_UNDO = 100  # edits a run can undo (the oldest beyond are forgotten)


@dataclass
class RunSettings:
    """Per-run retry policy, journaled in ``created`` so a resume uses the same policy."""

    backoff_base: float = 0.2
    backoff_max: float = 5.0
    max_reassignments: int = 3

    def backoff(self, failures: int) -> float:
        return min(self.backoff_max, self.backoff_base * (2 ** max(failures - 1, 0)))


@dataclass
class Run:
    run_id: str
    constellation: Constellation
    settings: RunSettings = field(default_factory=RunSettings)
    cancelled: bool = False
    finished: ConstellationState | None = None
    # attempt id -> task id, for every attempt ever dispatched in this run
    attempts: dict[str, str] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)  # attempts declared lost (adoptable if still running)
    events_applied: int = 0
    # Indexes kept in step with task statuses so a step costs O(changes), not O(tasks):
    pending: set[str] = field(default_factory=set)
    running: dict[str, tuple[str, str]] = field(default_factory=dict)  # attempt -> (task, device)
    dirty: set[str] = field(default_factory=set)  # pending tasks whose readiness may have changed
    order: dict[str, int] = field(default_factory=dict)  # plan order, the priority tie-break
    # Tasks whose state changed, collected only while a dashboard shows this run (None: off),
    # so the dashboard costs the scheduler one set.add per event and no listener call.
    changed: set[str] | None = None
    # Estimated bytes this run holds, set once it has finished (see memory.estimate_bytes).
    footprint: int | None = None
    # Accepted edits as (batch, inverse) pairs, newest last: what undo and redo take from
    # (see history.EditHistory). Part of the fold, so a resumed run can undo what came before.
    undo_stack: list[tuple[dict[str, Any], dict[str, Any] | None]] = field(default_factory=list)
    redo_stack: list[tuple[dict[str, Any], dict[str, Any] | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the indexes from the tasks (after creation or an edit)."""
        c = self.constellation
        self.pending = {t.id for t in c.tasks.values() if t.status is TaskStatus.PENDING}
        self.running = {t.attempt_id: (t.id, t.assigned_device or "") for t in c.tasks.values()
                        if t.status is TaskStatus.RUNNING and t.attempt_id}
        self.dirty = set(self.pending)
        self.order = {tid: i for i, tid in enumerate(c.tasks)}

    def _touch(self, task_id: str, old_attempt: str | None) -> None:
        if self.changed is not None:
            self.changed.add(task_id)
        t = self.constellation.tasks[task_id]
        if old_attempt is not None and t.status is not TaskStatus.RUNNING:
            self.running.pop(old_attempt, None)
        if t.status is TaskStatus.PENDING:
            self.pending.add(task_id)
            self.dirty.add(task_id)
        else:
            self.pending.discard(task_id)
        if t.status is TaskStatus.RUNNING and t.attempt_id:
            self.running[t.attempt_id] = (task_id, t.assigned_device or "")
        if t.status.terminal:
            self.dirty.update(e.target for e in self.constellation.successors(task_id))

    @classmethod
    def from_created(cls, run_id: str, ev: Created, prepared: Constellation | None = None) -> Run:
        """The run a ``created`` event starts. ``prepared``: the plan as the live path has it,
        validated already (a replay validates ``ev.plan``, read back from the journal)."""
        c = prepared if prepared is not None else Constellation.from_plan(ev.plan)
        return cls(run_id, c, RunSettings(**ev.settings))

    def apply(self, ev: Event) -> None:
        """Fold one event into the state. Audit-only events change nothing."""
        self.events_applied += 1
        task_id = getattr(ev, "task", None)
        task = self.constellation.tasks.get(task_id) if isinstance(task_id, str) else None
        old_attempt = task.attempt_id if task is not None and task.status is TaskStatus.RUNNING else None
        self._apply(ev, task)
        if isinstance(ev, Edited):
            self.reindex()
        elif isinstance(ev, CancelRun):
            for t in self.constellation.tasks.values():
                self._touch(t.id, t.attempt_id)
        elif task is not None:
            self._touch(task.id, old_attempt)

    def _apply(self, ev: Event, task: TaskStar | None) -> None:
        ts = ev.ts
        if isinstance(ev, Edited):
            self.constellation = (ev.prepared.model_copy(deep=True) if ev.prepared is not None
                                  else apply_batch(self.constellation, parse_batch(ev.batch)))
            self._stack(ev)
        elif isinstance(ev, CancelRun):
            self.cancelled = True
            for t in self.constellation.tasks.values():
                self._cancel(t.id, ts)
        elif isinstance(ev, Finished):
            self.finished = ConstellationState(ev.state)
        elif task is None:
            return
        elif isinstance(ev, Dispatched):
            task.status = TaskStatus.RUNNING
            task.attempts += 1
            task.attempt_id = ev.attempt
            task.assigned_device = ev.device
            task.started_at = ts
            task.ended_at = None
            self.attempts[ev.attempt] = task.id
        elif isinstance(ev, Adopted):
            # The lost attempt is the task's attempt again; the span it was "lost" for is
            # dropped from the timeline, since the device ran it all along.
            self.timeline = [s for s in self.timeline if s["attempt"] != ev.attempt]
            self.lost.discard(ev.attempt)
            task.status = TaskStatus.RUNNING
            task.attempt_id = ev.attempt
            task.assigned_device = ev.device
            task.losses = max(task.losses - 1, 0)
            task.ended_at = None
        elif isinstance(ev, Refused):
            self._end_attempt(task.id, ev.attempt, ev.device, "refused", ts)
            # Neither failures nor losses change: a refusal never uses a retry. (``attempts``
            # keeps counting so every attempt id stays unique.)
            task.status = TaskStatus.PENDING
            task.not_before = ts + REFUSED_DELAY
            task.ended_at = ts
        elif isinstance(ev, Result):
            self._end_attempt(task.id, ev.attempt, ev.device, ev.status, ts)
            if ev.status == "completed":
                task.status = TaskStatus.COMPLETED
                task.result = ev.result
                task.error = None
            else:
                task.failures += 1
                task.error = ev.error or ev.status
                if task.failures <= task.max_retries:
                    task.status = TaskStatus.PENDING
                    task.not_before = ts + self.settings.backoff(task.failures)
                else:
                    task.status = TaskStatus.FAILED
            task.ended_at = ts
        elif isinstance(ev, Lost):
            self._end_attempt(task.id, ev.attempt, ev.device, "lost", ts)
            self.lost.add(ev.attempt)
            task.losses += 1
            task.error = ev.reason
            # A lost device is not the task's fault: it is reassigned without using a retry,
            # up to max_reassignments times so a task that kills every device stops somewhere.
            if task.losses <= self.settings.max_reassignments:
                task.status = TaskStatus.PENDING
                task.not_before = ts
            else:
                task.status = TaskStatus.FAILED
            task.ended_at = ts
        elif isinstance(ev, Skipped):
            task.status = TaskStatus.SKIPPED
            task.error = ev.reason
            task.skipped_by_condition = ev.by_condition
        elif isinstance(ev, TaskFailed):
            task.status = TaskStatus.FAILED
            task.error = ev.reason
            task.ended_at = ts
        elif isinstance(ev, CancelTask):
            self._cancel(task.id, ts)

    def _stack(self, ev: Edited) -> None:
        entry = (ev.batch, ev.inverse)
        if ev.action == "undo":
            if self.undo_stack:
                self.undo_stack.pop()
            self.redo_stack.append(entry)
        else:
            if ev.action == "redo":
                if self.redo_stack:
                    self.redo_stack.pop()
            else:
                self.redo_stack.clear()  # a new edit forks the history: nothing left to redo
            self.undo_stack.append(entry)
        del self.undo_stack[:-MAX_UNDO]

    def _cancel(self, task_id: str, ts: float) -> None:
        task = self.constellation.tasks[task_id]
        if task.status.terminal:
            return
        if task.status is TaskStatus.RUNNING:
            self._end_attempt(task_id, task.attempt_id, task.assigned_device, "cancelled", ts)
        task.status = TaskStatus.CANCELLED
        task.error = "cancelled"
        task.ended_at = ts

    def _end_attempt(self, task_id: str, attempt: str | None, device: str | None, status: str,
                     ts: float) -> None:
        task = self.constellation.tasks[task_id]
        self.timeline.append({
            "task": task_id, "attempt": attempt, "device": device,
            "start": task.started_at if task.started_at is not None else ts, "end": ts,
            "status": status,
        })

    def adoptable(self, attempt: str, device: str) -> str | None:
        """The task whose last attempt ``attempt`` was declared lost on ``device`` and which
        has not been given a new attempt since: the device may hand it back."""
        task = self.constellation.tasks.get(self.attempts.get(attempt, ""))
        if (task is not None and attempt in self.lost and task.status is TaskStatus.PENDING
                and task.attempt_id == attempt and task.assigned_device == device):
            return task.id
        return None

    def running_attempts(self) -> dict[str, tuple[str, str]]:
        """attempt id -> (task id, device id) for every task now running (a copy)."""
        return dict(self.running)

    def all_terminal(self) -> bool:
        return not self.pending and not self.running


def replay(run_id: str, rows: Iterable[dict[str, Any]]) -> Run:
    """Rebuild a run from its journal rows (``{kind, data, ts}``; the first is ``created``)."""
    it = iter(rows)
    first = next(it, None)
    created = decode_event(first["kind"], first["data"], first["ts"]) if first else None
    if not isinstance(created, Created):
        from paperlab.galaxy.errors import JournalError

        raise JournalError(f"run {run_id!r} has no 'created' event")
    run = Run.from_created(run_id, created)
    for row in it:
        ev = decode_event(row["kind"], row["data"], row["ts"])
        if ev is not None:
            run.apply(ev)
    return run
