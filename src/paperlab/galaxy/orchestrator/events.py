"""The typed events of a run: one frozen dataclass per kind, journaled as ``(kind, data, ts)``.

Every change to a run's state is one of these, written to the journal first and then folded
into memory by :meth:`paperlab.galaxy.orchestrator.runstate.Run.apply`. ``--resume`` decodes the journaled
rows back into the same dataclasses (:func:`decode_event`) and folds them again, so the two
paths cannot drift apart. Audit-only kinds (``device``, ``dropped``, ``edit_rejected``,
``resumed``, ``reconciled``) change nothing in the fold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from paperlab.galaxy.plan.constellation import Constellation

__all__ = [
    "Adopted",
    "CancelRun",
    "CancelTask",
    "Created",
    "DeviceChanged",
    "Dispatched",
    "Dropped",
    "EditRejected",
    "Edited",
    "Event",
    "Finished",
    "Lost",
    "Reconciled",
    "Refused",
    "Result",
    "Resumed",
    "Skipped",
    "TaskFailed",
    "decode_event",
]


@dataclass(frozen=True)
class _Event:
    kind: ClassVar[str] = ""
    ts: float = field(default=0.0, kw_only=True)

    def data(self) -> dict[str, Any]:
        """The journaled payload: every field but ``ts`` and in-memory-only ones."""
        return {name: getattr(self, name) for name in _journaled(type(self))}


@dataclass(frozen=True)
class Created(_Event):
    """A new run: its plan and its retry settings."""

    kind: ClassVar[str] = "created"
    plan: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Edited(_Event):
    """An accepted edit batch. ``prepared`` is the validated result, kept in memory only, so
    the live path validates and applies a batch once; a replay recomputes it from ``batch``."""

    kind: ClassVar[str] = "edit"
    batch: dict[str, Any]
    # "edit", or "undo" / "redo" of an earlier one; ``inverse``: the batch that undoes this
    # one (None: it changed nothing that can be undone). Journaled, so a resumed run can undo.
    action: str = "edit"
    inverse: dict[str, Any] | None = None
    prepared: Constellation | None = field(default=None, compare=False, metadata={"journal": False})


@dataclass(frozen=True)
class EditRejected(_Event):
    kind: ClassVar[str] = "edit_rejected"
    reason: str
    action: str = "edit"


@dataclass(frozen=True)
class Dispatched(_Event):
    """An attempt was sent to a device (journaled before the TASK frame leaves)."""

    kind: ClassVar[str] = "dispatched"
    task: str
    attempt: str
    device: str


@dataclass(frozen=True)
class Result(_Event):
    """An attempt ended. ``origin``: ``device`` (its report) or ``timeout`` (our deadline)."""

    kind: ClassVar[str] = "result"
    task: str
    attempt: str
    device: str
    status: str
    result: Any = None
    error: str | None = None
    origin: str = "device"


@dataclass(frozen=True)
class Lost(_Event):
    """The attempt's device went silent or reconnected without it; reassigned, no retry used."""

    kind: ClassVar[str] = "lost"
    task: str
    attempt: str
    device: str
    reason: str = "device lost"


@dataclass(frozen=True)
class Adopted(_Event):
    """A lost attempt turned out to be still running on its device; it is the task's attempt
    again (instead of a duplicate being dispatched)."""

    kind: ClassVar[str] = "adopted"
    task: str
    attempt: str
    device: str


@dataclass(frozen=True)
class Refused(_Event):
    """The device refused the attempt for capacity: a scheduling event, never a retry."""

    kind: ClassVar[str] = "refused"
    task: str
    attempt: str
    device: str
    reason: str = ""


@dataclass(frozen=True)
class Skipped(_Event):
    kind: ClassVar[str] = "skipped"
    task: str
    reason: str = ""
    by_condition: bool = False


@dataclass(frozen=True)
class TaskFailed(_Event):
    """The orchestrator failed a task itself (e.g. no capable device)."""

    kind: ClassVar[str] = "task_failed"
    task: str
    reason: str = ""


@dataclass(frozen=True)
class CancelTask(_Event):
    kind: ClassVar[str] = "cancel_task"
    task: str


@dataclass(frozen=True)
class CancelRun(_Event):
    kind: ClassVar[str] = "cancel_run"


@dataclass(frozen=True)
class Finished(_Event):
    kind: ClassVar[str] = "finished"
    state: str


@dataclass(frozen=True)
class Dropped(_Event):
    """Audit: a result that was not applied (late, duplicate, or from the wrong device)."""

    kind: ClassVar[str] = "dropped"
    task: str
    attempt: str
    device: str
    why: str = ""


@dataclass(frozen=True)
class DeviceChanged(_Event):
    """Audit: a device came online, went offline or was lost."""

    kind: ClassVar[str] = "device"
    device: str
    what: str
    capabilities: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Resumed(_Event):
    kind: ClassVar[str] = "resumed"
    events: int = 0


@dataclass(frozen=True)
class Reconciled(_Event):
    """Audit: a device reported an attempt we did not expect on it, and what we did."""

    kind: ClassVar[str] = "reconciled"
    device: str
    attempt: str
    action: str
    reason: str = ""


_JOURNALED: dict[type, tuple[str, ...]] = {}


def _journaled(cls: type) -> tuple[str, ...]:
    # dataclasses.fields() is slow on the hot path (two calls per event): computed once per kind.
    names = _JOURNALED.get(cls)
    if names is None:
        names = _JOURNALED[cls] = tuple(f.name for f in dataclasses.fields(cls)
                                        if f.name != "ts" and f.metadata.get("journal", True))
    return names


Event = (Created | Edited | EditRejected | Dispatched | Result | Lost | Adopted | Refused | Skipped
         | TaskFailed | CancelTask | CancelRun | Finished | Dropped | DeviceChanged | Resumed
         | Reconciled)

_KINDS: dict[str, type[Any]] = {cls.kind: cls for cls in (
    Created, Edited, EditRejected, Dispatched, Result, Lost, Adopted, Refused, Skipped, TaskFailed,
    CancelTask, CancelRun, Finished, Dropped, DeviceChanged, Resumed, Reconciled)}


def decode_event(kind: str, data: dict[str, Any], ts: float) -> Event | None:
    """A journal row as its event; None for a kind this version does not know (ignored)."""
    cls = _KINDS.get(kind)
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)} - {"ts"}
    return cls(**{k: v for k, v in data.items() if k in names}, ts=ts)  # type: ignore[no-any-return]
