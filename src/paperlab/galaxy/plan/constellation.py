"""The TaskConstellation: a DAG of TaskStars joined by TaskStarLines.

A TaskStar is one subtask: what to run (an executor kind and its arguments), where it may run
(required capabilities, an optional device pin), how hard to try (timeout, retries), and which
upstream results it consumes (``inputs``: argument name -> ``"task_id"`` or
``"task_id.key.sub"``). Results flow between tasks by these explicit references, never by
rewriting descriptions.

A TaskStarLine is an edge ``source -> target`` of one kind:

* ``success_only``: the target runs only if the source completed;
* ``completion_only``: the target runs once the source ended, whether it succeeded or failed;
* ``conditional``: the target runs only if the source completed and a safe expression over its
  result holds (see :mod:`paperlab.galaxy.plan.conditions`).

A target whose incoming edge cannot be satisfied is *skipped*; a skip caused by a false
condition is a normal outcome, a skip caused by a failed upstream counts as a failure.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from paperlab.errors import config_error
from paperlab.galaxy.errors import ConditionError, PlanError
from paperlab.galaxy.plan.conditions import check_condition, evaluate
from paperlab.galaxy.plan.task import (  # noqa: F401 - re-exported: the plan's public names
    EXECUTOR_KINDS,
    ID_PATTERN,
    PLAN_FIELDS,
    ConstellationState,
    EdgeKind,
    ExecutorSpec,
    Seconds,
    TaskPlan,
    TaskStar,
    TaskState,
    TaskStatus,
)
from paperlab.io.atomic import atomic_write_text

__all__ = [
    "EXECUTOR_KINDS",
    "ID_PATTERN",
    "PLAN_FIELDS",
    "Seconds",
    "Constellation",
    "ConstellationState",
    "EdgeKind",
    "ExecutorSpec",
    "TaskStar",
    "TaskPlan",
    "TaskStarLine",
    "TaskState",
    "TaskStatus",
    "load_constellation",
    "resolve_inputs",
]



class TaskStarLine(BaseModel):
    """A dependency edge ``source -> target``."""

    model_config = ConfigDict(extra="forbid")
    source: str
    target: str
    kind: EdgeKind = EdgeKind.SUCCESS_ONLY
    condition: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.target)


class Constellation(BaseModel):
    """The DAG. ``tasks`` keeps insertion order; edges are unique per (source, target)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "constellation"
    request: str = ""
    tasks: dict[str, TaskStar] = Field(default_factory=dict)
    edges: list[TaskStarLine] = Field(default_factory=list)
    # Adjacency index, rebuilt lazily; anything that mutates tasks/edges calls invalidate().
    _index: tuple[dict[str, list[TaskStarLine]], dict[str, list[TaskStarLine]]] | None = PrivateAttr(None)

    # ---- structure -------------------------------------------------------------------
    def invalidate(self) -> None:
        """Drop the cached adjacency after tasks or edges changed."""
        self._index = None

    def _adjacency(self) -> tuple[dict[str, list[TaskStarLine]], dict[str, list[TaskStarLine]]]:
        # Read through __pydantic_private__ (a slot): ``self._index`` goes through pydantic's
        # __getattr__, 25x slower, and the scheduler asks for neighbours of every task it touches.
        index = self.__pydantic_private__["_index"] if self.__pydantic_private__ else None
        if index is None:
            preds: dict[str, list[TaskStarLine]] = defaultdict(list)
            succs: dict[str, list[TaskStarLine]] = defaultdict(list)
            for e in self.edges:
                preds[e.target].append(e)
                succs[e.source].append(e)
            index = self._index = (preds, succs)
        return index

    def predecessors(self, task_id: str) -> list[TaskStarLine]:
        return list(self._adjacency()[0].get(task_id, ()))

    def successors(self, task_id: str) -> list[TaskStarLine]:
        return list(self._adjacency()[1].get(task_id, ()))

    def topological_order(self) -> list[str]:
        """Kahn's algorithm. Raises PlanError naming the tasks on a cycle."""
        indeg = {t: 0 for t in self.tasks}
        out: dict[str, list[str]] = defaultdict(list)
        for e in self.edges:
            indeg[e.target] += 1
            out[e.source].append(e.target)
        queue = deque(t for t, d in indeg.items() if d == 0)
        order: list[str] = []
        while queue:
            t = queue.popleft()
            order.append(t)
            for n in out[t]:
                indeg[n] -= 1
                if indeg[n] == 0:
                    queue.append(n)
        if len(order) != len(self.tasks):
            stuck = sorted(t for t, d in indeg.items() if d > 0)
            raise PlanError(f"the dependencies form a cycle through {stuck}; remove one edge")
        return order

    def depths(self) -> dict[str, int]:
        """Task id -> length of the longest path of edges reaching it (0 for roots), in
        topological order. Raises PlanError on a cycle."""
        preds = self._adjacency()[0]
        depth: dict[str, int] = {}
        for t in self.topological_order():
            depth[t] = max((depth[e.source] + 1 for e in preds.get(t, ())), default=0)
        return depth

    def validate_graph(self) -> None:
        """Check every structural invariant; raise PlanError naming the first broken one."""
        self.invalidate()
        for key, task in self.tasks.items():
            if key != task.id:
                raise PlanError(f"task stored under {key!r} has id {task.id!r}")
        seen: set[tuple[str, str]] = set()
        for e in self.edges:
            for end in (e.source, e.target):
                if end not in self.tasks:
                    raise PlanError(f"edge {e.source}->{e.target} names unknown task {end!r}")
            if e.source == e.target:
                raise PlanError(f"edge {e.source}->{e.target} is a self-loop")
            if e.key in seen:
                raise PlanError(f"edge {e.source}->{e.target} appears twice")
            seen.add(e.key)
            if e.kind is EdgeKind.CONDITIONAL:
                if not e.condition:
                    raise PlanError(f"conditional edge {e.source}->{e.target} needs a condition")
                try:
                    check_condition(e.condition)
                except ConditionError as exc:
                    raise PlanError(f"edge {e.source}->{e.target}: {exc}") from None
        for task in self.tasks.values():
            if task.replaces is not None and task.replaces not in self.tasks:
                raise PlanError(f"task {task.id!r} replaces unknown task {task.replaces!r}")
            if not task.inputs:
                continue
            preds = {e.source for e in self.predecessors(task.id)}
            for arg, ref in task.inputs.items():
                src = ref.split(".", 1)[0]
                if src not in preds:
                    raise PlanError(
                        f"task {task.id!r} input {arg!r} reads {src!r}, which is not a direct "
                        f"upstream; add an edge {src}->{task.id}"
                    )
        self.topological_order()

    # ---- run semantics ---------------------------------------------------------------
    def edge_verdict(self, edge: TaskStarLine) -> str:
        """``wait``, ``ok``, ``blocked`` (upstream failed) or ``false`` (condition false)."""
        src = self.tasks[edge.source]
        if not src.status.terminal:
            return "wait"
        if edge.kind is EdgeKind.COMPLETION_ONLY:
            return "ok"
        if src.status is not TaskStatus.COMPLETED:
            return "blocked"
        if edge.kind is EdgeKind.CONDITIONAL:
            assert edge.condition is not None
            return "ok" if evaluate(edge.condition, src.result, src.status.value) else "false"
        return "ok"

    def readiness(self, task_id: str) -> tuple[str, str]:
        """(``ready``|``wait``|``skip``|``skip_condition``, reason) for a pending task."""
        verdicts = [(e, self.edge_verdict(e)) for e in self.predecessors(task_id)]
        if any(v == "wait" for _, v in verdicts):
            return "wait", ""
        blocked = [e.source for e, v in verdicts if v == "blocked"]
        if blocked:
            return "skip", f"upstream {blocked} did not complete"
        false = [e.source for e, v in verdicts if v == "false"]
        if false:
            return "skip_condition", f"condition on edge from {false} was false"
        return "ready", ""

    def state(self, cancelled: bool = False) -> ConstellationState:
        """The whole constellation's state from its tasks' statuses."""
        tasks = list(self.tasks.values())
        if any(not t.status.terminal for t in tasks):
            return ConstellationState.RUNNING
        if cancelled:
            return ConstellationState.CANCELLED
        recovered = self.recovered()
        bad = [
            t for t in tasks
            if (t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED) and t.id not in recovered)
            or (t.status is TaskStatus.SKIPPED and not t.skipped_by_condition)
        ]
        if not bad:
            return ConstellationState.COMPLETED
        if not any(t.status is TaskStatus.COMPLETED for t in tasks):
            return ConstellationState.FAILED
        return ConstellationState.PARTIALLY_FAILED

    def recovered(self) -> set[str]:
        """Failed tasks that a completed replacement (``replaces``, transitively) stands in for."""
        out: set[str] = set()
        for t in self.tasks.values():
            if t.status is not TaskStatus.COMPLETED:
                continue
            cur = t.replaces
            while cur is not None and cur in self.tasks and cur not in out:
                out.add(cur)
                cur = self.tasks[cur].replaces
        return out

    # ---- metrics ---------------------------------------------------------------------
    def metrics(self, durations: dict[str, float] | None = None) -> dict[str, float]:
        """Critical path length, total work and parallel width = work / critical path.

        ``durations`` gives each task's cost (default: measured run time where known, else 1).
        """
        cost: dict[str, float] = {}
        for task in self.tasks.values():
            if durations and task.id in durations:
                cost[task.id] = durations[task.id]
            elif task.started_at is not None and task.ended_at is not None:
                cost[task.id] = max(task.ended_at - task.started_at, 0.0)
            else:
                cost[task.id] = 1.0
        finish: dict[str, float] = {}
        preds = self._adjacency()[0]
        for t in self.topological_order():
            start = max((finish[e.source] for e in preds.get(t, ())), default=0.0)
            finish[t] = start + cost[t]
        critical = max(finish.values(), default=0.0)
        work = sum(cost.values())
        return {
            "tasks": float(len(self.tasks)),
            "critical_path": critical,
            "total_work": work,
            "parallel_width": work / critical if critical > 0 else 0.0,
        }

    # ---- files -----------------------------------------------------------------------
    def plan_copy(self) -> Constellation:
        """The plan alone (every task pending, no run state), as new objects, without
        validating the fields again: they were validated when this constellation was built."""
        tasks = {tid: TaskStar.from_plan_values(t.plan_values()) for tid, t in self.tasks.items()}
        return Constellation.model_construct(name=self.name, request=self.request, tasks=tasks,
                                             edges=[e.model_copy() for e in self.edges])

    def plan_dict(self) -> dict[str, Any]:
        """The plan without run state (what a plan file holds)."""
        return {
            "name": self.name,
            "request": self.request,
            "tasks": [t.plan_dict() for t in self.tasks.values()],
            "edges": [e.model_dump(mode="json", exclude_none=True) for e in self.edges],
        }

    def save(self, path: str | Path) -> Path:
        """Write the plan as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically."""
        p = Path(path)
        data = self.plan_dict()
        text = (yaml.safe_dump(data, sort_keys=False) if p.suffix in (".yaml", ".yml")
                else json.dumps(data, indent=2))
        return atomic_write_text(p, text)

    @classmethod
    def from_plan(cls, data: Any) -> Constellation:
        """Build and validate a constellation from plan data.

        Besides ``edges``, a task may list ``after: [ids]`` as shorthand for success_only
        edges. Raises PlanError with the field path and the problem.
        """
        if not isinstance(data, dict):
            raise PlanError("a plan must be a mapping with 'tasks' (a list) and optional 'edges'")
        raw_tasks = data.get("tasks")
        if not isinstance(raw_tasks, list) or not raw_tasks:
            raise PlanError("a plan needs 'tasks': a non-empty list of task mappings")
        tasks: dict[str, TaskStar] = {}
        edges: list[dict[str, Any]] = list(data.get("edges") or [])
        for i, raw in enumerate(raw_tasks):
            if not isinstance(raw, dict):
                raise PlanError(f"tasks[{i}] must be a mapping")
            raw = dict(raw)
            after = raw.pop("after", []) or []
            try:
                task = TaskStar.model_validate(raw)
            except ValidationError as exc:
                raise config_error(exc, f"plan tasks[{i}]", PlanError) from None
            if task.id in tasks:
                raise PlanError(f"tasks[{i}]: duplicate task id {task.id!r}")
            tasks[task.id] = task
            edges.extend({"source": a, "target": task.id} for a in after)
        try:
            c = cls(name=str(data.get("name", "constellation")),
                    request=str(data.get("request", "")), tasks=tasks,
                    edges=[TaskStarLine.model_validate(e) for e in edges])
        except ValidationError as exc:
            raise config_error(exc, "plan edges", PlanError) from None
        c.validate_graph()
        return c


def load_constellation(path: str | Path) -> Constellation:
    """Load a plan from a YAML or JSON file (``yaml.safe_load`` reads both)."""
    p = Path(path)
    if not p.is_file():
        raise PlanError(f"plan file {p} does not exist; pass the path of a YAML or JSON plan")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PlanError(f"plan file {p} is not valid YAML/JSON: {exc}") from None
    return Constellation.from_plan(data)


def resolve_inputs(c: Constellation, task: TaskStar) -> dict[str, Any]:
    """The values of a task's ``inputs``, read from its upstream tasks' results."""
    values: dict[str, Any] = {}
    for arg, ref in task.inputs.items():
        src, *path = ref.split(".")
        value = c.tasks[src].result
        for key in path:
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                value = None
                break
        values[arg] = value
    return values
