"""A run's state as a fold over its journaled events.

:meth:`Run.apply` is the ONLY place task run-state changes. The orchestrator journals an event
and then applies it; ``--resume`` applies the journaled events again in order. Because apply
uses only the event's own data (its timestamp included), the replayed state equals the state
the crashed process had after its last committed event.

Event kinds (``data`` fields):

* ``created`` {plan, settings}             the plan and retry settings
* ``edit`` {batch}                          an edit batch that was accepted
* ``dispatched`` {task, attempt, device}    an attempt was sent to a device
* ``result`` {task, attempt, device, status, result, error, origin}
* ``lost`` {task, attempt, device, reason}  the attempt's device was lost
* ``skipped`` {task, reason, by_condition}
* ``task_failed`` {task, reason}            e.g. no capable device
* ``cancel_task`` {task}, ``cancel_run`` {}
* ``finished`` {state}
* ``dropped`` / ``device`` / ``edit_rejected``: audit only, no state change
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from paperlab.galaxy.constellation import Constellation, ConstellationState, TaskStatus
from paperlab.galaxy.edits import apply_batch, parse_batch

__all__ = ["Run", "RunSettings"]


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
    events_applied: int = 0
    # Indexes kept in step with task statuses so a step costs O(changes), not O(tasks):
    pending: set[str] = field(default_factory=set)
    running: dict[str, tuple[str, str]] = field(default_factory=dict)  # attempt -> (task, device)
    dirty: set[str] = field(default_factory=set)  # pending tasks whose readiness may have changed
    order: dict[str, int] = field(default_factory=dict)  # plan order, the priority tie-break

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
    def from_created(cls, run_id: str, data: dict[str, Any]) -> Run:
        return cls(run_id, Constellation.from_plan(data["plan"]),
                   RunSettings(**data.get("settings", {})))

    def apply(self, kind: str, data: dict[str, Any], ts: float) -> None:
        """Apply one journaled event. Unknown or audit kinds change nothing."""
        self.events_applied += 1
        c = self.constellation
        task = c.tasks.get(data["task"]) if "task" in data else None
        old_attempt = task.attempt_id if task is not None and task.status is TaskStatus.RUNNING else None
        self._apply(kind, data, ts, task)
        if kind == "edit":
            self.reindex()
        elif kind == "cancel_run":
            for t in self.constellation.tasks.values():
                self._touch(t.id, t.attempt_id)
        elif task is not None:
            self._touch(task.id, old_attempt)

    def _apply(self, kind: str, data: dict[str, Any], ts: float, task: Any) -> None:
        c = self.constellation
        if kind == "edit":
            self.constellation = apply_batch(c, parse_batch(data["batch"]))
        elif kind == "dispatched" and task is not None:
            task.status = TaskStatus.RUNNING
            task.attempts += 1
            task.attempt_id = data["attempt"]
            task.assigned_device = data["device"]
            task.started_at = ts
            task.ended_at = None
            self.attempts[data["attempt"]] = task.id
        elif kind == "result" and task is not None:
            self._end_attempt(task.id, data, ts)
            if data["status"] == "completed":
                task.status = TaskStatus.COMPLETED
                task.result = data.get("result")
                task.error = None
            else:
                task.failures += 1
                task.error = data.get("error") or data["status"]
                if task.failures <= task.max_retries:
                    task.status = TaskStatus.PENDING
                    task.not_before = ts + self.settings.backoff(task.failures)
                else:
                    task.status = TaskStatus.FAILED
            task.ended_at = ts
        elif kind == "lost" and task is not None:
            self._end_attempt(task.id, {**data, "status": "lost"}, ts)
            task.losses += 1
            task.error = data.get("reason", "device lost")
            # A lost device is not the task's fault: it is reassigned without using a retry,
            # up to max_reassignments times so a task that kills every device stops somewhere.
            if task.losses <= self.settings.max_reassignments:
                task.status = TaskStatus.PENDING
                task.not_before = ts
            else:
                task.status = TaskStatus.FAILED
            task.ended_at = ts
        elif kind == "skipped" and task is not None:
            task.status = TaskStatus.SKIPPED
            task.error = data.get("reason")
            task.skipped_by_condition = bool(data.get("by_condition"))
        elif kind == "task_failed" and task is not None:
            task.status = TaskStatus.FAILED
            task.error = data.get("reason")
            task.ended_at = ts
        elif kind == "cancel_task" and task is not None:
            self._cancel(task.id, ts)
        elif kind == "cancel_run":
            self.cancelled = True
            for t in c.tasks.values():
                self._cancel(t.id, ts)
        elif kind == "finished":
            self.finished = ConstellationState(data["state"])

    def _cancel(self, task_id: str, ts: float) -> None:
        task = self.constellation.tasks[task_id]
        if task.status.terminal:
            return
        if task.status is TaskStatus.RUNNING:
            self._end_attempt(task_id, {"attempt": task.attempt_id, "device": task.assigned_device,
                                        "status": "cancelled"}, ts)
        task.status = TaskStatus.CANCELLED
        task.error = "cancelled"
        task.ended_at = ts

    def _end_attempt(self, task_id: str, data: dict[str, Any], ts: float) -> None:
        task = self.constellation.tasks[task_id]
        self.timeline.append({
            "task": task_id, "attempt": data.get("attempt"), "device": data.get("device"),
            "start": task.started_at if task.started_at is not None else ts, "end": ts,
            "status": data.get("status"),
        })

    def running_attempts(self) -> dict[str, tuple[str, str]]:
        """attempt id -> (task id, device id) for every task now running (a copy)."""
        return dict(self.running)

    def all_terminal(self) -> bool:
        return not self.pending and not self.running
