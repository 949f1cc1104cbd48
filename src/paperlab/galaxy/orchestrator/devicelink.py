"""The orchestrator's side of its devices: registration, messages, liveness, reconciliation.

A mixin of :class:`paperlab.galaxy.orchestrator.core.Orchestrator`, kept apart because it is the
failure-detection half: who is connected (one live connection per device id), who went silent
(lost, attempts reassigned without a retry), who came back and what it still runs (adopted or
cancelled, see :func:`paperlab.galaxy.orchestrator.failures.reconcile`), and which long-gone devices to forget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from paperlab.galaxy.orchestrator.events import Adopted, DeviceChanged, Event, Lost, Reconciled
from paperlab.galaxy.orchestrator.failures import Deadlines, reconcile, stale
from paperlab.galaxy.orchestrator.journal import Journal
from paperlab.galaxy.orchestrator.placement import DeviceState, Unplaceable
from paperlab.galaxy.orchestrator.runstate import Run
from paperlab.galaxy.orchestrator.waker import Waker
from paperlab.galaxy.protocol.aip import Cancel, DeviceInfo, Heartbeat, Register, TaskResult

if TYPE_CHECKING:
    from paperlab.galaxy.orchestrator.core import OrchestratorConfig

__all__ = ["DeviceLink"]

log = logging.getLogger(__name__)


class DeviceLink:
    """Device registry and liveness; the state it shares with the orchestrator is below."""

    journal: Journal
    config: OrchestratorConfig
    clock: Callable[[], float]
    devices: dict[str, DeviceState]
    runs: dict[str, Run]
    _deadlines: Deadlines
    _unplaceable: Unplaceable
    _inbox: list[tuple[str, TaskResult]]
    _wake: Waker
    _conn_seq: int

    def _record(self, run: Run, ev: Event) -> None:
        raise NotImplementedError

    def _on_result(self, device_id: str, msg: TaskResult) -> None:
        raise NotImplementedError

    def _replan(self, run: Run, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def _drain_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for device_id, msg in inbox:
            self._on_result(device_id, msg)

    def _active_runs(self) -> list[Run]:
        return [r for r in self.runs.values() if r.finished is None]

    def device_registered(self, msg: Register, send: Callable[[Any], None]) -> int | None:
        """A device (re)connected. Returns a connection number for device_disconnected, or
        None when refused: the id already has a live connection (a second one is an
        impostor or a confused restart; the first keeps the id until it closes or goes
        silent)."""
        now = self.clock()
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
        with self.journal.transaction():
            self._drain_inbox()  # results heard before this REGISTER come first
            for res in msg.results:  # results finished while we could not hear the device
                self._on_result(msg.device_id, res)
            reported = set(msg.running)
            for run in self._active_runs():
                for attempt, (task_id, dev) in run.running_attempts().items():
                    if dev == msg.device_id and attempt not in reported:
                        self._deadlines.disarm(attempt)
                        self._record(run, Lost(task=task_id, attempt=attempt, device=dev,
                                               reason=f"device {dev} reconnected without it"))
                        d.running.discard(attempt)
            self._reconcile(d, reported)
        self._unplaceable.clear()  # a new device may be the capable one a waiting task needs
        self._device_event("online", d)
        self._wake.set()
        return self._conn_seq

    def device_disconnected(self, device_id: str, conn: int) -> None:
        """The connection closed; the device stays until its heartbeat goes stale."""
        d = self.devices.get(device_id)
        if d is not None and d.conn == conn:
            d.online, d.send, d.gone_since = False, None, self.clock()
            self._device_event("offline", d)
            self._wake.set()

    def on_message(self, device_id: str, msg: Any, conn: int | None = None) -> None:
        """A message from a registered device (the Session already validated it)."""
        d = self.devices.get(device_id)
        if d is None or (conn is not None and conn != d.conn):
            return  # an old connection of a device that has since reconnected
        d.last_seen = self.clock()
        if d.lost and d.send is not None:
            # Declared lost for silence but its connection lives on (a stalled process, a
            # slow network): it is back. What it still runs is reconciled below.
            d.lost, d.online = False, True
            self._device_event("online", d)
            self._wake.set()
        if isinstance(msg, TaskResult):
            # Results wait for the next step, which journals a whole batch in one commit
            # (group commit) before acting on it.
            self._inbox.append((device_id, msg))
            self._wake.set()
        elif isinstance(msg, Heartbeat):
            with self.journal.transaction():
                self._drain_inbox()  # a result sent before this beat is not a running attempt
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

    def _audit(self, run_id: str, ev: Event) -> None:
        """Journal an audit-only event (it changes no state) and tell the listeners."""
        object.__setattr__(ev, "ts", self.clock())  # as in Orchestrator._record: ours, unshared
        self.journal.append(run_id, ev)
        self._emit(run_id, ev)

    def _emit(self, run_id: str, ev: Event, data: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def _reconcile(self, d: DeviceState, reported: set[str]) -> None:
        d.foreign &= reported  # attempts it no longer reports have stopped: their slots free up
        for v in reconcile(self._active_runs(), d, sorted(reported)):
            if v.action == "adopt" and v.run is not None and v.task is not None:
                self._record(v.run, Adopted(task=v.task, attempt=v.attempt, device=d.device_id))
                d.running.add(v.attempt)
                timeout = v.run.constellation.tasks[v.task].timeout
                self._deadlines.arm(v.attempt, self.clock() + timeout)
            else:
                d.foreign.add(v.attempt)
                if d.send is not None:
                    d.send(Cancel(attempt_id=v.attempt, reason=v.reason))
            if v.run is not None:
                self._audit(v.run.run_id, Reconciled(device=d.device_id, attempt=v.attempt,
                                                     action=v.action, reason=v.reason))
            log.info("device %s: %s %s (%s)", d.device_id, v.action, v.attempt, v.reason)
        self._wake.set()

    def _device_event(self, what: str, d: DeviceState) -> None:
        for run in self._active_runs():
            self._record(run, DeviceChanged(device=d.device_id, what=what, capabilities=sorted(d.capabilities)))

    def _check_devices(self, now: float) -> None:
        for d in stale(self.devices.values(), now, self.config.device_timeout):
            d.lost, d.online = True, False
            self._device_event("lost", d)
            for run in self._active_runs():
                for attempt, (task_id, dev) in run.running_attempts().items():
                    if dev == d.device_id:
                        self._deadlines.disarm(attempt)
                        self._record(run, Lost(task=task_id, attempt=attempt, device=dev,
                                               reason=f"device {dev} lost (silent for "
                                                      f"{self.config.device_timeout:g}s)"))
                        self._replan(run, {"kind": "lost", "task": task_id, "device": dev})
            d.running.clear()
            d.foreign.clear()
        for d in list(self.devices.values()):  # forget devices gone for long (bounded registry)
            if (d.send is None and not d.running and d.gone_since is not None
                    and now - d.gone_since > self.config.evict_after):
                del self.devices[d.device_id]



def _size(info: dict[str, Any]) -> int:
    try:
        return len(json.dumps(info))
    except (TypeError, ValueError):
        return 1 << 30
