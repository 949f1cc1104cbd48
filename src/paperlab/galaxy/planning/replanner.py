"""Live replanning: on task events, propose an edit batch; the orchestrator applies it atomically.

:class:`RuleReplanner` works offline. When a task has *finally* failed (no retries left) it
applies the first matching rule:

* ``retry_elsewhere``: add a copy of the task (``<id>-retry<n>``) that avoids the devices it failed
  on, and move the failed task's outgoing edges and input references to the copy;
* ``fallback``: add a given fallback task in its place (same rewiring);
* ``skip``: turn the failed task's outgoing edges into ``completion_only``, so its dependents
  run without it.

Each proposal is an :class:`EditBatch`; the orchestrator accepts it or rejects it with a reason,
which the replanner records (and an LLM replanner gets back as feedback). Replans per run are
capped so a failing plan cannot grow forever.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from paperlab.galaxy.plan.constellation import Constellation, EdgeKind, TaskStatus
from paperlab.galaxy.plan.edits import (
    AddDependency,
    AddTask,
    EditBatch,
    RemoveDependency,
    UpdateTask,
)

if TYPE_CHECKING:
    from paperlab.galaxy.orchestrator.core import Orchestrator

__all__ = ["ReplanRule", "RuleReplanner"]

log = logging.getLogger(__name__)


@dataclass
class ReplanRule:
    """``match``: a glob on task ids; ``action``: what to do when such a task finally fails."""

    match: str = "*"
    action: Literal["retry_elsewhere", "fallback", "skip"] = "retry_elsewhere"
    fallback: dict[str, Any] | None = None  # the task to add for ``fallback``
    max_copies: int = 2


@dataclass
class RuleReplanner:
    rules: list[ReplanRule] = field(default_factory=lambda: [ReplanRule()])
    max_replans: int = 10
    replans: dict[str, int] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)

    def attach(self, orch: Orchestrator) -> None:
        orch.replanner = self

    def __call__(self, orch: Orchestrator, run_id: str, events: list[dict[str, Any]]) -> None:
        for ev in events:
            run = orch.runs.get(run_id)
            if run is None:  # finished long ago and forgotten (keep_finished): nothing to edit
                return
            devices = {d.device_id: sorted(d.capabilities) for d in orch.devices.values()
                       if d.online and not d.lost}
            batch = self.propose(run.constellation, ev, devices)
            if batch is None:
                continue
            if self.replans.get(run_id, 0) >= self.max_replans:
                self.log.append({"run": run_id, "event": ev, "outcome": "limit reached"})
                continue
            self.replans[run_id] = self.replans.get(run_id, 0) + 1
            ok, reason = orch.apply_edits(run_id, batch)
            self.log.append({"run": run_id, "event": ev, "reason": batch.reason,
                             "outcome": "applied" if ok else f"rejected: {reason}"})

    def propose(self, c: Constellation, ev: dict[str, Any],
                devices: dict[str, list[str]] | None = None) -> EditBatch | None:
        """An edit batch for one event, or None. ``devices``: online device -> capabilities."""
        task = c.tasks.get(ev.get("task", ""))
        if task is None or task.status is not TaskStatus.FAILED:
            return None  # only final failures; retries are the orchestrator's job
        rule = next((r for r in self.rules if fnmatch.fnmatchcase(task.id, r.match)), None)
        if rule is None:
            return None
        base, _, n = task.id.partition("-retry")
        copies = int(n) if n.isdigit() else 0
        outgoing = [e for e in c.successors(task.id)
                    if c.tasks[e.target].status is TaskStatus.PENDING and not c.tasks[e.target].attempts]
        if rule.action == "skip":
            edits: list[Any] = []
            for e in outgoing:
                edits += [RemoveDependency(source=e.source, target=e.target),
                          AddDependency(source=e.source, target=e.target, kind=EdgeKind.COMPLETION_ONLY)]
            return EditBatch(edits=edits, reason=f"skip failed {task.id}") if edits else None
        if rule.action == "retry_elsewhere":
            if copies >= rule.max_copies:
                return None
            new_id = f"{base}-retry{copies + 1}"
            spec = task.plan_dict()
            spec["id"] = new_id
            failed_on = sorted({s for s in [task.assigned_device] if s})
            others = sorted(d for d, caps in (devices or {}).items()
                            if d not in failed_on and task.model_copy(update={"device": None}).fits(d, caps, None))
            if devices is not None and not others:
                return None  # nowhere else to go
            spec["device"] = others[0] if others else None
            spec["replaces"] = task.id
            spec["description"] = (task.description + f" (retry elsewhere, failed on {failed_on})").strip()
            reason = f"retry {task.id} on another device (failed on {failed_on}: {task.error})"
        else:
            if not rule.fallback:
                return None
            spec = dict(rule.fallback)
            spec.setdefault("id", f"{base}-fallback")
            spec["replaces"] = task.id
            new_id = spec["id"]
            reason = f"fallback for {task.id}"
        if new_id in c.tasks:
            return None
        after = [e.source for e in c.predecessors(task.id)]
        edits = [AddTask(task=spec, after=after)]
        for e in outgoing:
            edits += [RemoveDependency(source=e.source, target=e.target),
                      AddDependency(source=new_id, target=e.target, kind=e.kind, condition=e.condition)]
            target = c.tasks[e.target]
            moved = {k: (new_id + v[len(task.id):] if v.split(".", 1)[0] == task.id else v)
                     for k, v in target.inputs.items()}
            if moved != target.inputs:
                edits.append(UpdateTask(task_id=e.target, changes={"inputs": moved}))
        return EditBatch(edits=edits, reason=reason)
