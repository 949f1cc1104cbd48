"""A TaskStar: one subtask of a constellation, its plan (what a file or an edit may set) and its
run state (what the orchestrator's journaled events change), and the enums both use."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from enum import Enum
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["EXECUTOR_KINDS", "ID_PATTERN", "PLAN_FIELDS", "ConstellationState", "EdgeKind", "ExecutorSpec",
           "Seconds", "TaskPlan", "TaskStar", "TaskState", "TaskStatus"]

ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"  # no dots: inputs use them as paths
#: The executor kinds a device may offer (the device room registers one executor per kind).
EXECUTOR_KINDS: tuple[str, ...] = ("echo", "sleep", "shell", "python", "llm")


class TaskStatus(str, Enum):
    """Where one task is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.RUNNING)


class ConstellationState(str, Enum):
    """The whole run's state."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PARTIALLY_FAILED = "partially_failed"
    CANCELLED = "cancelled"


class EdgeKind(str, Enum):
    SUCCESS_ONLY = "success_only"
    COMPLETION_ONLY = "completion_only"
    CONDITIONAL = "conditional"


#: A duration in seconds, > 0: the one rule for a task's ``timeout``, in plans and on the wire.
Seconds = Annotated[float, Field(gt=0)]


class ExecutorSpec(BaseModel):
    """Which executor runs the task on the device, and its arguments (JSON values)."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)


class TaskPlan(BaseModel):
    """One subtask as a plan states it: what to run, where, how hard to try, which inputs.

    Edits may change these fields of a task that has not started; nothing else."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    description: str = ""
    capabilities: list[str] = Field(default_factory=list)
    device: str | None = None
    priority: int = 0
    timeout: Seconds = 60.0
    max_retries: int = Field(default=1, ge=0, le=20)
    executor: ExecutorSpec
    inputs: dict[str, str] = Field(default_factory=dict)
    # Set by a replanner: this task stands in for that failed one; when it completes, the
    # failed one counts as recovered in the run's state.
    replaces: str | None = None

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, v: list[str]) -> list[str]:
        return sorted({c.strip() for c in v if c.strip()})

    def fits(self, device_id: str, capabilities: Iterable[str], executors: Iterable[str] | None) -> bool:
        """Whether a device with these capabilities and executor kinds (None: any) may run
        this task: the one place a task's ``capabilities``, ``device`` pin and executor kind
        are matched against a device (placement, planners and replanners all ask here)."""
        return ((self.device is None or self.device == device_id)
                and set(self.capabilities).issubset(capabilities)
                and (executors is None or self.executor.kind in executors))


#: What a plan (and an edit) may set; everything else of a task is run state.
PLAN_FIELDS: frozenset[str] = frozenset(TaskPlan.model_fields)


class TaskState(BaseModel):
    """One task's run state: owned by the orchestrator, changed only by folding journaled
    events (:meth:`paperlab.galaxy.orchestrator.runstate.Run.apply`), never written in a plan."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)
    status: TaskStatus = TaskStatus.PENDING
    result: Any = None
    error: str | None = None
    attempts: int = 0
    failures: int = 0
    losses: int = 0
    attempt_id: str | None = None
    assigned_device: str | None = None
    not_before: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    skipped_by_condition: bool = False


class TaskStar(TaskPlan, TaskState):
    """A task in a live constellation: its plan (:class:`TaskPlan`) with its run state
    (:class:`TaskState`). The plan part is what files and edits see (:meth:`plan_dict`)."""

    # Derived from the plan type, so a new plan field is never forgotten here.
    PLAN_FIELDS: ClassVar[frozenset[str]] = PLAN_FIELDS

    def plan_dict(self) -> dict[str, Any]:
        """The task as written in a plan (no run state)."""
        return self.model_dump(mode="json", include=set(PLAN_FIELDS))

    def plan_values(self) -> dict[str, Any]:
        """The plan fields as (deep-copied) values, already validated."""
        return {k: copy.deepcopy(getattr(self, k)) for k in PLAN_FIELDS}

    @classmethod
    def from_plan_values(cls, values: dict[str, Any]) -> TaskStar:
        """A pending task from plan values that were validated already (by :class:`TaskPlan`
        or another TaskStar): no second validation."""
        return cls.model_construct(**values)
