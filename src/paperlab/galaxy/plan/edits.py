"""Live edits of a constellation, applied as all-or-nothing batches.

An :class:`EditBatch` is a list of commands (add/remove/update a task, add/remove a
dependency). :func:`apply_batch` applies them to a deep copy and validates the result; only a
batch that keeps every invariant is returned, so the caller swaps it in or keeps the old DAG
untouched. The invariants:

* the graph is acyclic and every edge names tasks that exist;
* a task that is running or finished is never modified or removed, and neither are the edges
  into it (so its inputs and its device never change while it runs or after);
* inputs reference direct upstream tasks.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from paperlab.errors import config_error
from paperlab.galaxy.errors import EditError, PlanError
from paperlab.galaxy.plan.constellation import (
    PLAN_FIELDS,
    Constellation,
    EdgeKind,
    TaskPlan,
    TaskStar,
    TaskStarLine,
    TaskStatus,
)

__all__ = [
    "AddDependency",
    "AddTask",
    "Edit",
    "EditBatch",
    "RemoveDependency",
    "RemoveTask",
    "UpdateTask",
    "apply_batch",
    "check_invariants",
    "inverse_batch",
]


class _Cmd(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddTask(_Cmd):
    op: Literal["add_task"] = "add_task"
    task: dict[str, Any]
    after: list[str] = Field(default_factory=list)


class RemoveTask(_Cmd):
    op: Literal["remove_task"] = "remove_task"
    task_id: str


class UpdateTask(_Cmd):
    op: Literal["update_task"] = "update_task"
    task_id: str
    changes: dict[str, Any]


class AddDependency(_Cmd):
    op: Literal["add_edge"] = "add_edge"
    source: str
    target: str
    kind: EdgeKind = EdgeKind.SUCCESS_ONLY
    condition: str | None = None


class RemoveDependency(_Cmd):
    op: Literal["remove_edge"] = "remove_edge"
    source: str
    target: str


Edit = Annotated[
    AddTask | RemoveTask | UpdateTask | AddDependency | RemoveDependency, Field(discriminator="op")
]


class EditBatch(BaseModel):
    """Edits applied together; ``reason`` is journaled with them."""

    model_config = ConfigDict(extra="forbid")
    edits: list[Edit] = Field(min_length=1)
    reason: str = ""


_BATCH = TypeAdapter(EditBatch)


def parse_batch(data: Any) -> EditBatch:
    """Validate edit data (e.g. from a replanner or an LLM). Raises EditError."""
    try:
        return _BATCH.validate_python(data)
    except ValidationError as exc:
        raise config_error(exc, "edit batch", EditError) from None


def _pending(c: Constellation, task_id: str, what: str) -> TaskStar:
    task = c.tasks.get(task_id)
    if task is None:
        raise EditError(f"{what}: no task {task_id!r}")
    if task.status is not TaskStatus.PENDING or task.attempts > 0:
        raise EditError(f"{what}: task {task_id!r} is {task.status.value}; only pending tasks change")
    return task


def _apply_one(c: Constellation, e: Any) -> None:
    c.invalidate()
    try:
        _apply_one_inner(c, e)
    finally:
        c.invalidate()


def _apply_one_inner(c: Constellation, e: Any) -> None:
    if isinstance(e, AddTask):
        spec = dict(e.task)
        after = [*e.after, *(spec.pop("after", None) or [])]  # as in a plan file, or beside it
        try:
            plan = TaskPlan.model_validate(spec)  # the new task's one validation
        except ValidationError as exc:
            raise config_error(exc, "add_task", EditError) from None
        task = TaskStar.from_plan_values({k: getattr(plan, k) for k in PLAN_FIELDS})
        if task.id in c.tasks:
            raise EditError(f"add_task: task {task.id!r} already exists")
        c.tasks[task.id] = task
        for src in after:
            if src not in c.tasks:
                raise EditError(f"add_task {task.id!r}: 'after' names unknown task {src!r}")
            c.edges.append(TaskStarLine(source=src, target=task.id))
    elif isinstance(e, RemoveTask):
        _pending(c, e.task_id, "remove_task")
        if any(c.tasks[x.target].status is not TaskStatus.PENDING for x in c.successors(e.task_id)):
            raise EditError(f"remove_task: {e.task_id!r} feeds a task that already started")
        del c.tasks[e.task_id]
        c.edges = [x for x in c.edges if e.task_id not in (x.source, x.target)]
    elif isinstance(e, UpdateTask):
        task = _pending(c, e.task_id, "update_task")
        bad = set(e.changes) - (PLAN_FIELDS - {"id"})
        if bad:
            raise EditError(f"update_task: cannot change {sorted(bad)}; allowed: "
                            f"{sorted(PLAN_FIELDS - {'id'})}")
        # Only the changed fields are validated (the others were, when the task was made);
        # the task is pending and never attempted, so it has no run state to keep.
        new = TaskStar.from_plan_values(task.plan_values())
        for name, value in e.changes.items():
            try:
                TaskPlan.__pydantic_validator__.validate_assignment(new, name, value)
            except ValidationError as exc:
                raise config_error(exc, f"update_task {e.task_id!r}", EditError) from None
        c.tasks[e.task_id] = new
    elif isinstance(e, AddDependency):
        for end in (e.source, e.target):
            if end not in c.tasks:
                raise EditError(f"add_edge {e.source}->{e.target}: no task {end!r}")
        _pending(c, e.target, f"add_edge {e.source}->{e.target}")
        if any(x.key == (e.source, e.target) for x in c.edges):
            raise EditError(f"add_edge: {e.source}->{e.target} already exists")
        c.edges.append(TaskStarLine(source=e.source, target=e.target, kind=e.kind,
                                    condition=e.condition))
    elif isinstance(e, RemoveDependency):
        if not any(x.key == (e.source, e.target) for x in c.edges):
            raise EditError(f"remove_edge: no edge {e.source}->{e.target}")
        _pending(c, e.target, f"remove_edge {e.source}->{e.target}")
        c.edges = [x for x in c.edges if x.key != (e.source, e.target)]
    else:  # pragma: no cover - the union is closed
        raise EditError(f"unknown edit {e!r}")


def apply_batch(c: Constellation, batch: EditBatch) -> Constellation:
    """Apply ``batch`` to a copy of ``c``; return the copy, or raise EditError (``c`` untouched).

    The copy is validated as a whole at the end, so a batch may pass through an intermediate
    state (say, an edge added before its task) as long as the final DAG is valid.
    """
    new = c.model_copy(deep=True)
    new.invalidate()
    for i, e in enumerate(batch.edits):
        try:
            _apply_one(new, e)
        except EditError as exc:
            raise EditError(f"edit {i} rejected, batch rolled back: {exc}") from None
    try:
        new.validate_graph()
    except PlanError as exc:
        raise EditError(f"batch rejected, DAG unchanged: {exc}") from None
    _started_unchanged(c, new)
    return new


def check_invariants(before: Constellation, after: Constellation) -> None:
    """Raise EditError if ``after`` changed a started task, its incoming edges, or is invalid."""
    try:
        after.validate_graph()
    except PlanError as exc:
        raise EditError(str(exc)) from None
    _started_unchanged(before, after)


def _started_unchanged(before: Constellation, after: Constellation) -> None:
    for tid, task in before.tasks.items():
        if task.status is TaskStatus.PENDING and task.attempts == 0:
            continue
        other = after.tasks.get(tid)
        if other is None or other.model_dump() != task.model_dump():
            raise EditError(f"started task {tid!r} was changed")
        if {x.key for x in before.predecessors(tid)} != {x.key for x in after.predecessors(tid)}:
            raise EditError(f"edges into started task {tid!r} were changed")


def inverse_batch(before: Constellation, after: Constellation, reason: str = "") -> EditBatch | None:
    """The batch that turns ``after`` back into ``before`` (None when they do not differ):
    what undoing an edit applies. It is an ordinary batch, so it goes through the same
    validated path and is refused, DAG unchanged, when a task it would touch has started since."""
    edits: list[Any] = []
    old_edges = {e.key: e for e in before.edges}
    new_edges = {e.key: e for e in after.edges}
    added = [t for t in after.tasks if t not in before.tasks]
    removed = [t for t in before.tasks if t not in after.tasks]
    for key, e in new_edges.items():  # edges to drop (those of added tasks go with them)
        if (key not in old_edges or old_edges[key] != e) and not ({e.source, e.target} & set(added)):
            edits.append(RemoveDependency(source=e.source, target=e.target))
    edits += [RemoveTask(task_id=t) for t in added]
    edits += [AddTask(task=before.tasks[t].plan_dict()) for t in removed]
    for tid, old in before.tasks.items():
        new = after.tasks.get(tid)
        if new is None:
            continue
        was, now = old.plan_dict(), new.plan_dict()
        changes = {k: v for k, v in was.items() if now.get(k) != v}
        if changes:
            edits.append(UpdateTask(task_id=tid, changes=changes))
    for key, e in old_edges.items():  # edges to restore
        if key not in new_edges or new_edges[key] != e:
            edits.append(AddDependency(source=e.source, target=e.target, kind=e.kind, condition=e.condition))
    return EditBatch(edits=edits, reason=reason) if edits else None
