"""Failure detection and reconciliation: silent devices, overdue attempts, and what a device
that comes back still runs.

* A device silent for ``device_timeout`` is *lost*: its attempts are reassigned without using
  a retry (their late results are dropped).
* An attempt past its task's ``timeout`` is cancelled on the device and fails (a retry).
* Reconciliation, on every heartbeat and REGISTER: each attempt the device reports running is
  compared with our view. One we think it runs: fine. One whose task is still waiting for a
  new attempt because we declared this one lost: *adopted* back, so the task is not run twice.
  Any other (its task finished, was cancelled or runs elsewhere): *cancelled* on the device
  explicitly, and its slot counts as busy until the device stops reporting it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from paperlab.galaxy.orchestrator.placement import DeviceState
from paperlab.galaxy.orchestrator.runstate import Run
from paperlab.galaxy.plan.constellation import TaskPlan

__all__ = ["Deadlines", "Verdict", "reconcile", "stale"]


class Deadlines:
    """attempt -> (deadline, timeout) (memory only: a resume gives running attempts a fresh
    timeout). The one place the orchestrator reads a task's ``timeout``."""

    def __init__(self) -> None:
        self._at: dict[str, tuple[float, float]] = {}

    def arm(self, attempt: str, task: TaskPlan, now: float) -> float:
        """Start ``attempt``'s clock for ``task``; returns the timeout (it goes in the TASK)."""
        self._at[attempt] = (now + task.timeout, task.timeout)
        return task.timeout

    def disarm(self, attempt: str) -> None:
        self._at.pop(attempt, None)

    def expired(self, run: Run, now: float) -> list[tuple[str, str, str, float]]:
        """(attempt, task, device, timeout) of the run's running attempts past their deadline."""
        return [(a, t, d, at[1]) for a, (t, d) in run.running.items()
                if (at := self._at.get(a)) is not None and now > at[0]]


def stale(devices: Iterable[DeviceState], now: float, timeout: float) -> list[DeviceState]:
    """Devices not yet declared lost that have been silent for longer than ``timeout``."""
    return [d for d in devices if not d.lost and now - d.last_seen > timeout]


@dataclass(frozen=True)
class Verdict:
    attempt: str
    action: str  # "adopt" | "cancel"
    run: Run | None
    task: str | None
    reason: str


def reconcile(runs: Iterable[Run], device: DeviceState, reported: Iterable[str]) -> list[Verdict]:
    """What to do with each attempt ``device`` reports running that we do not expect there."""
    runs = list(runs)
    out: list[Verdict] = []
    for attempt in reported:
        if attempt in device.running or attempt in device.foreign:
            continue
        run = next((r for r in runs if attempt in r.attempts), None)
        task = run.constellation.tasks.get(run.attempts[attempt]) if run is not None else None
        if run is None or task is None:
            out.append(Verdict(attempt, "cancel", run, None, "no active run knows this attempt"))
        elif run.adoptable(attempt, device.device_id):
            out.append(Verdict(attempt, "adopt", run, task.id,
                               "declared lost, but the device still runs it"))
        else:
            out.append(Verdict(attempt, "cancel", run, task.id,
                               f"task is {task.status.value} with attempt {task.attempt_id}"))
    return out
