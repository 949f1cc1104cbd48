"""Placement: which device may run a task, which one gets it, and when a task is unplaceable.

A device is *capable* of a task when it is online, offers every required capability, matches
the pin and enables the executor kind. Among capable devices with a free slot (under the
per-device cap) the least loaded wins. A ready task that no online device is capable of for
``unplaceable_timeout`` seconds fails with a reason naming what it needs and what is online.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from paperlab.galaxy.plan.constellation import TaskStar

__all__ = ["DeviceState", "Unplaceable", "capable", "choose_device", "slot_cap"]


@dataclass
class DeviceState:
    """The orchestrator's view of one device."""

    device_id: str
    capabilities: set[str]
    max_concurrency: int
    executors: set[str] | None = None
    online: bool = False
    lost: bool = False
    last_seen: float = 0.0
    running: set[str] = field(default_factory=set)  # attempts we sent that it runs
    # Attempts it reported that are not ours any more: being cancelled, they still take slots.
    foreign: set[str] = field(default_factory=set)
    send: Callable[[Any], None] | None = None
    conn: int = 0
    completed: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    gone_since: float | None = None  # when it went offline (for eviction)
    info_capped: bool = False  # its info hit the size limit (warned once)

    def status(self) -> str:
        if self.lost:
            return "lost"
        if not self.online:
            return "offline"
        return "busy" if self.running else "online"

    @property
    def load(self) -> int:
        return len(self.running) + len(self.foreign)


def capable(d: DeviceState, task: TaskStar) -> bool:
    return not d.lost and d.online and task.fits(d.device_id, d.capabilities, d.executors)


def slot_cap(d: DeviceState, per_device_cap: int | None) -> int:
    return min(per_device_cap, d.max_concurrency) if per_device_cap else d.max_concurrency


def choose_device(devices: Iterable[DeviceState], task: TaskStar,
                  per_device_cap: int | None) -> tuple[bool, DeviceState | None]:
    """(some online device is capable, the least-loaded capable device with a free slot).

    Least loaded: the smallest share of its slots in use, then fewest running, then id."""
    any_able = False
    best: DeviceState | None = None
    best_key: tuple[float, int, str] | None = None
    for d in devices:  # one pass: this runs once per dispatched task
        if not capable(d, task):
            continue
        any_able = True
        cap, load = slot_cap(d, per_device_cap), d.load
        if load >= cap:
            continue
        key = (load / cap, load, d.device_id)
        if best_key is None or key < best_key:
            best, best_key = d, key
    return any_able, best


class Unplaceable:
    """Since when each ready task has had no capable device online."""

    def __init__(self) -> None:
        self._since: dict[tuple[str, str], float] = {}

    def note(self, run_id: str, task_id: str, placeable: bool, now: float) -> None:
        if placeable:
            self._since.pop((run_id, task_id), None)
        else:
            self._since.setdefault((run_id, task_id), now)

    def expired(self, run_id: str, now: float, timeout: float) -> list[str]:
        """Tasks of ``run_id`` unplaceable for longer than ``timeout`` (forgotten once told)."""
        out = [t for (r, t), since in self._since.items() if r == run_id and now - since > timeout]
        for t in out:
            del self._since[(run_id, t)]
        return out

    def clear(self) -> None:
        """A device joined: it may be the capable one, so every clock restarts."""
        self._since.clear()


def unplaceable_reason(task: TaskStar, devices: Iterable[DeviceState]) -> str:
    online = {d.device_id: sorted(d.capabilities) for d in devices if d.online and not d.lost}
    pin = f" on device {task.device!r}" if task.device else ""
    return (f"no device can run it: needs capabilities {task.capabilities}{pin} "
            f"and executor {task.executor.kind!r}; online devices: {online}")
