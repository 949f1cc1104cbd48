"""The orchestrator's side of its devices: registration, messages, liveness, reconciliation.

Kept apart from :mod:`.core` because it is the failure-detection half: who is connected (one
live connection per device id), who went silent (lost, attempts reassigned without a retry),
who came back and what it still runs (adopted or cancelled, see
:func:`paperlab.galaxy.orchestrator.failures.reconcile`), and which long-gone devices to
forget. It writes run state only through the shared :class:`~.book.RunBook`, and hands
results to the core through the ``on_result`` callable it is given: it imports nothing of the
core.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from paperlab.galaxy.orchestrator.book import RunBook
from paperlab.galaxy.orchestrator.config import OrchestratorConfig
from paperlab.galaxy.orchestrator.events import Adopted, DeviceChanged, Lost, Reconciled
from paperlab.galaxy.orchestrator.failures import Deadlines, reconcile, stale
from paperlab.galaxy.orchestrator.placement import DeviceState, Unplaceable
from paperlab.galaxy.orchestrator.runstate import Run
from paperlab.galaxy.orchestrator.waker import Waker
from paperlab.galaxy.protocol.aip import Cancel, DeviceInfo, Heartbeat, Register, TaskResult

__all__ = ["DeviceLink"]

log = logging.getLogger(__name__)


class DeviceLink:
    """Device registry and liveness for one orchestrator.

    Args:
        book: the runs and the one way their state changes.
        config: the orchestrator's knobs (timeouts, info size).
        deadlines, unplaceable, wake: shared with the core.
        on_result: the core's handler of a device's TASK_RESULT.
        on_lost: told of each attempt lost with its device (the replanner's hook).
    """

    def __init__(self, book: RunBook, config: OrchestratorConfig, deadlines: Deadlines,
                 unplaceable: Unplaceable, wake: Waker,
                 on_result: Callable[[str, TaskResult], None],
                 on_lost: Callable[[Run, dict[str, Any]], None]) -> None:
        self.book, self.config = book, config
        self.deadlines, self.unplaceable, self.wake = deadlines, unplaceable, wake
        self.on_result, self.on_lost = on_result, on_lost
        self.devices: dict[str, DeviceState] = {}
        self._inbox: list[tuple[str, TaskResult]] = []
        self._conn_seq = 0

    def drain_inbox(self) -> None:
        """Apply the results heard since the last step (one commit for the batch)."""
        inbox, self._inbox = self._inbox, []
        for device_id, msg in inbox:
            self.on_result(device_id, msg)

    def registered(self, msg: Register, send: Callable[[Any], None]) -> int | None:
        """A device (re)connected. Returns a connection number for :meth:`disconnected`, or
        None when refused: the id already has a live connection (a second one is an impostor
        or a confused restart; the first keeps the id until it closes or goes silent)."""
        now = self.book.clock()
        d = self.devices.get(msg.device_id)
        if d is not None and d.online and not d.lost and d.send is not None:
            log.warning("refused a second connection for device %s (one is live)", msg.device_id)
            return None
        if d is None:
            d = self.devices[msg.device_id] = DeviceState(msg.device_id, set(), 1)
        self._conn_seq += 1
        d.capabilities = set(msg.capabilities)
        d.max_concurrency = msg.max_concurrency
        ex = msg.info.get("executors")
        d.executors = set(ex) if isinstance(ex, list) else None
        d.info = dict(msg.info) if _size(msg.info) <= self.config.max_info_bytes else {"executors": ex}
        d.online, d.lost, d.last_seen, d.send, d.conn, d.gone_since = True, False, now, send, self._conn_seq, None
        with self.book.journal.transaction():
            self.drain_inbox()  # results heard before this REGISTER come first
            for res in msg.results:  # results finished while we could not hear the device
                self.on_result(msg.device_id, res)
            reported = set(msg.running)
            for run in self.book.active():
                for attempt, (task_id, dev) in run.running_attempts().items():
                    if dev == msg.device_id and attempt not in reported:
                        self.deadlines.disarm(attempt)
                        self.book.record(run, Lost(task=task_id, attempt=attempt, device=dev,
                                                   reason=f"device {dev} reconnected without it"))
                        d.running.discard(attempt)
            self._reconcile(d, reported)
        self.unplaceable.clear()  # a new device may be the capable one a waiting task needs
        self._device_event("online", d)
        self.wake.set()
        return self._conn_seq

    def disconnected(self, device_id: str, conn: int) -> None:
        """The connection closed; the device stays until its heartbeat goes stale."""
        d = self.devices.get(device_id)
        if d is not None and d.conn == conn:
            d.online, d.send, d.gone_since = False, None, self.book.clock()
            self._device_event("offline", d)
            self.wake.set()

    def message(self, device_id: str, msg: Any, conn: int | None = None) -> None:
        """A message from a registered device (the Session already validated it)."""
        d = self.devices.get(device_id)
        if d is None or (conn is not None and conn != d.conn):
            return  # an old connection of a device that has since reconnected
        d.last_seen = self.book.clock()
        if d.lost and d.send is not None:
            # Declared lost for silence but its connection lives on (a stalled process, a
            # slow network): it is back. What it still runs is reconciled below.
            d.lost, d.online = False, True
            self._device_event("online", d)
            self.wake.set()
        if isinstance(msg, TaskResult):
            # Results wait for the next step, which journals a whole batch in one commit
            # (group commit) before acting on it.
            self._inbox.append((device_id, msg))
            self.wake.set()
        elif isinstance(msg, Heartbeat):
            with self.book.journal.transaction():
                self.drain_inbox()  # a result sent before this beat is not a running attempt
                self._reconcile(d, set(msg.running))
            if d.send is not None:
                d.send(Heartbeat(sent_at=msg.sent_at))
        elif isinstance(msg, DeviceInfo):
            merged = {**d.info, **msg.info}
            if _size(merged) <= self.config.max_info_bytes:
                d.info = merged
            elif not d.info_capped:  # warn once per device, not once per spam frame
                d.info_capped = True
                log.warning("device %s: DEVICE_INFO past %d bytes ignored", device_id,
                            self.config.max_info_bytes)

    def _reconcile(self, d: DeviceState, reported: set[str]) -> None:
        d.foreign &= reported  # attempts it no longer reports have stopped: their slots free up
        for v in reconcile(self.book.active(), d, sorted(reported)):
            if v.action == "adopt" and v.run is not None and v.task is not None:
                self.book.record(v.run, Adopted(task=v.task, attempt=v.attempt, device=d.device_id))
                d.running.add(v.attempt)
                self.deadlines.arm(v.attempt, v.run.constellation.tasks[v.task], self.book.clock())
            else:
                d.foreign.add(v.attempt)
                if d.send is not None:
                    d.send(Cancel(attempt_id=v.attempt, reason=v.reason))
            if v.run is not None:
                self.book.audit(v.run.run_id, Reconciled(device=d.device_id, attempt=v.attempt,
                                                         action=v.action, reason=v.reason))
            log.info("device %s: %s %s (%s)", d.device_id, v.action, v.attempt, v.reason)
        self.wake.set()

    def _device_event(self, what: str, d: DeviceState) -> None:
        for run in self.book.active():
            self.book.record(run, DeviceChanged(device=d.device_id, what=what,
                                                capabilities=sorted(d.capabilities)))

    def check(self, now: float) -> None:
        """Declare silent devices lost (their attempts reassigned) and forget long-gone ones."""
        for d in stale(self.devices.values(), now, self.config.device_timeout):
            d.lost, d.online = True, False
            self._device_event("lost", d)
            for run in self.book.active():
                for attempt, (task_id, dev) in run.running_attempts().items():
                    if dev == d.device_id:
                        self.deadlines.disarm(attempt)
                        self.book.record(run, Lost(task=task_id, attempt=attempt, device=dev,
                                                   reason=f"device {dev} lost (silent for "
                                                          f"{self.config.device_timeout:g}s)"))
                        self.on_lost(run, {"kind": "lost", "task": task_id, "device": dev})
            d.running.clear()
            d.foreign.clear()
        for d in list(self.devices.values()):  # forget devices gone for long (bounded registry)
            if (d.send is None and not d.running and d.gone_since is not None
                    and now - d.gone_since > self.config.evict_after):
                del self.devices[d.device_id]

    def send_cancel(self, device_id: str, attempt: str, reason: str) -> None:
        """Tell the device to stop ``attempt``; its slot stays busy until it stops reporting it."""
        self.deadlines.disarm(attempt)
        d = self.devices.get(device_id)
        if d is not None:
            d.running.discard(attempt)
            if d.send is not None:
                d.foreign.add(attempt)
                d.send(Cancel(attempt_id=attempt, reason=reason))


def _size(info: dict[str, Any]) -> int:
    try:
        return len(json.dumps(info))
    except (TypeError, ValueError):
        return 1 << 30
