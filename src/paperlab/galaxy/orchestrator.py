"""The orchestrator: owns the one authoritative constellation of each run and drives it.

Single-threaded asyncio: every state change happens on the event loop, first journaled, then
applied (:mod:`paperlab.galaxy.runstate`). The transport (:mod:`paperlab.galaxy.server`) calls
:meth:`Orchestrator.device_registered`, :meth:`on_message` and :meth:`device_disconnected`; the
orchestrator answers through each device's ``send`` callable. A periodic step checks device
staleness, attempt deadlines, skips, unplaceable tasks, dispatch and run completion.

Dispatch: for each ready task (highest priority first), the devices that offer every required
capability (and the pin, and the executor kind) are the candidates; among those with a free
slot under the per-device cap, the least loaded wins; the global cap bounds all running
attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from paperlab.galaxy.constellation import (
    Constellation,
    ConstellationState,
    TaskStatus,
    resolve_inputs,
)
from paperlab.galaxy.edits import EditBatch, apply_batch
from paperlab.galaxy.errors import EditError, JournalError
from paperlab.galaxy.journal import Journal
from paperlab.galaxy.protocol import Cancel, DeviceInfo, Heartbeat, Register, Task, TaskResult
from paperlab.galaxy.runstate import Run, RunSettings

__all__ = ["DeviceState", "Orchestrator", "OrchestratorConfig"]

log = logging.getLogger(__name__)


@dataclass
class OrchestratorConfig:
    """Knobs of the orchestrator (all times in seconds)."""

    global_cap: int = 256
    per_device_cap: int | None = None  # None: each device's own max_concurrency
    device_timeout: float = 5.0  # no message for this long -> device lost
    unplaceable_timeout: float = 5.0  # ready task with no capable device for this long -> failed
    tick: float = 0.05
    settings: RunSettings = field(default_factory=RunSettings)


@dataclass
class DeviceState:
    device_id: str
    capabilities: set[str]
    max_concurrency: int
    executors: set[str] | None = None
    online: bool = False
    lost: bool = False
    last_seen: float = 0.0
    running: set[str] = field(default_factory=set)
    send: Callable[[Any], None] | None = None
    conn: int = 0
    completed: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def status(self) -> str:
        if self.lost:
            return "lost"
        if not self.online:
            return "offline"
        return "busy" if self.running else "online"


class _Waker:
    """Wakes the main loop early. (asyncio.wait_for around Event.wait can lose a
    cancellation on Python 3.11, which hung shutdown; a plain future with call_later cannot.)"""

    def __init__(self) -> None:
        self._fut: asyncio.Future[None] | None = None
        self._pending = False

    def set(self) -> None:
        self._pending = True
        if self._fut is not None and not self._fut.done():
            self._fut.set_result(None)

    async def wait(self, timeout: float) -> None:
        if self._pending:
            self._pending = False
            await asyncio.sleep(0)  # let the transport deliver more messages before a step
            return
        loop = asyncio.get_running_loop()
        self._fut = loop.create_future()
        handle = loop.call_later(timeout, lambda f: f.done() or f.set_result(None), self._fut)
        try:
            await self._fut
        finally:
            handle.cancel()
            self._fut = None
            self._pending = False


class Orchestrator:
    """Runs constellations over the devices connected to it."""

    def __init__(self, journal: Journal, config: OrchestratorConfig | None = None) -> None:
        self.journal = journal
        self.config = config or OrchestratorConfig()
        self.devices: dict[str, DeviceState] = {}
        self.runs: dict[str, Run] = {}
        self._done: dict[str, asyncio.Future[ConstellationState]] = {}
        self._deadline: dict[str, float] = {}  # attempt -> deadline (memory only; reset on resume)
        self._unplaceable_since: dict[tuple[str, str], float] = {}
        self._inbox: list[tuple[str, TaskResult]] = []
        self._ready: dict[str, set[str]] = {}  # run -> pending tasks whose inputs are all in
        self._wake = _Waker()
        self._loop_task: asyncio.Task[None] | None = None
        self._conn_seq = 0
        self.listeners: list[Callable[[str, str, dict[str, Any]], None]] = []
        self.replanner: Callable[[Orchestrator, str, list[dict[str, Any]]], Any] | None = None

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._main())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    def submit(self, constellation: Constellation, run_id: str | None = None) -> str:
        """Start a new run of ``constellation``; returns its run id."""
        constellation.validate_graph()
        run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.journal.create_run(run_id, constellation.name)
        s = self.config.settings
        data = {"plan": constellation.plan_dict(),
                "settings": {"backoff_base": s.backoff_base, "backoff_max": s.backoff_max,
                             "max_reassignments": s.max_reassignments}}
        ts = self.journal.append(run_id, "created", data)
        self.runs[run_id] = Run.from_created(run_id, data)
        self._emit(run_id, "created", data, ts)
        self._done[run_id] = asyncio.get_running_loop().create_future()
        self._wake.set()
        return run_id

    def resume(self, run_id: str) -> str:
        """Rebuild a run from the journal and continue it.

        Running attempts stay running: their devices get ``device_timeout`` to reconnect and
        report them (in REGISTER) before they are declared lost and reassigned.
        """
        events = iter(self.journal.events(run_id))
        first = next(events, None)
        if first is None or first["kind"] != "created":
            raise JournalError(f"run {run_id!r} has no 'created' event in {self.journal.path}")
        run = Run.from_created(run_id, first["data"])
        for ev in events:
            run.apply(ev["kind"], ev["data"], ev["ts"])
        self.runs[run_id] = run
        self._done[run_id] = asyncio.get_running_loop().create_future()
        if run.finished is not None:
            self._done[run_id].set_result(run.finished)
            return run_id
        now = time.time()
        for attempt, (task_id, dev) in run.running_attempts().items():
            self._deadline[attempt] = now + run.constellation.tasks[task_id].timeout
            d = self.devices.setdefault(dev, DeviceState(dev, set(), 1, last_seen=now))
            d.running.add(attempt)
        self._record(run, "resumed", {"events": run.events_applied})
        self._wake.set()
        return run_id

    async def wait(self, run_id: str, timeout: float | None = None) -> ConstellationState:
        """Wait until the run finishes; returns its final state."""
        return await asyncio.wait_for(asyncio.shield(self._done[run_id]), timeout)

    # ---- journaling --------------------------------------------------------------------
    def _record(self, run: Run, kind: str, data: dict[str, Any]) -> None:
        ts = self.journal.append(run.run_id, kind, data)  # commit first, then change memory
        run.apply(kind, data, ts)
        self._emit(run.run_id, kind, data, ts)

    def _emit(self, run_id: str, kind: str, data: dict[str, Any], ts: float) -> None:
        for listener in list(self.listeners):
            try:
                listener(run_id, kind, {**data, "ts": ts})
            except Exception:  # a broken UI listener must not stop the run
                log.exception("listener failed")

    # ---- devices -----------------------------------------------------------------------
    def device_registered(self, msg: Register, send: Callable[[Any], None]) -> int:
        """A device (re)connected. Returns a connection number for device_disconnected."""
        now = time.time()
        self._conn_seq += 1
        d = self.devices.get(msg.device_id)
        if d is None:
            d = self.devices[msg.device_id] = DeviceState(msg.device_id, set(), 1)
        d.capabilities = set(msg.capabilities)
        d.max_concurrency = msg.max_concurrency
        ex = msg.info.get("executors")
        d.executors = set(ex) if isinstance(ex, list) else None
        d.info = dict(msg.info)
        d.online, d.lost, d.last_seen, d.send, d.conn = True, False, now, send, self._conn_seq
        with self.journal.transaction():
            self._drain_inbox()  # results heard before this REGISTER come first
            for res in msg.results:  # results finished while we could not hear the device
                self._on_result(msg.device_id, res)
        reported = set(msg.running)
        for run in self._active_runs():
            for attempt, (task_id, dev) in run.running_attempts().items():
                if dev == msg.device_id and attempt not in reported:
                    self._record(run, "lost", {"task": task_id, "attempt": attempt, "device": dev,
                                               "reason": f"device {dev} reconnected without it"})
                    d.running.discard(attempt)
        # A new device may be the capable one a waiting task needs: restart the clocks.
        self._unplaceable_since.clear()
        self._device_event("online", d)
        self._wake.set()
        return self._conn_seq

    def device_disconnected(self, device_id: str, conn: int) -> None:
        """The connection closed; the device stays until its heartbeat goes stale."""
        d = self.devices.get(device_id)
        if d is not None and d.conn == conn:
            d.online = False
            d.send = None
            self._device_event("offline", d)
            self._wake.set()

    def on_message(self, device_id: str, msg: Any) -> None:
        """A message from a registered device (the Session already validated it)."""
        d = self.devices.get(device_id)
        if d is None:
            return
        d.last_seen = time.time()
        if d.lost and d.send is not None:
            # Declared lost for silence but its connection lives on (a stalled process, a
            # slow network): it is back. Its old attempts stay lost; late results are dropped.
            d.lost, d.online = False, True
            self._device_event("online", d)
            self._wake.set()
        if isinstance(msg, TaskResult):
            # Results wait for the next step, which journals a whole batch in one commit
            # (group commit) before acting on it.
            self._inbox.append((device_id, msg))
            self._wake.set()
        elif isinstance(msg, Heartbeat) and d.send is not None:
            d.send(Heartbeat(sent_at=msg.sent_at))
        elif isinstance(msg, DeviceInfo):
            d.info.update(msg.info)

    def _device_event(self, what: str, d: DeviceState) -> None:
        for run in self._active_runs():
            self._record(run, "device", {"device": d.device_id, "what": what,
                                         "capabilities": sorted(d.capabilities)})

    def _active_runs(self) -> list[Run]:
        return [r for r in self.runs.values() if r.finished is None]

    # ---- results -----------------------------------------------------------------------
    def _on_result(self, device_id: str, msg: TaskResult) -> None:
        d = self.devices.get(device_id)
        if d is not None:
            d.running.discard(msg.attempt_id)
        run = next((r for r in self._active_runs() if msg.attempt_id in r.attempts), None)
        task = run.constellation.tasks.get(msg.task_id) if run else None
        ok = (run is not None and task is not None and task.status is TaskStatus.RUNNING
              and task.attempt_id == msg.attempt_id and task.assigned_device == device_id)
        if not ok:
            # Late (after timeout or loss), duplicate (resent after a reconnect) or from the
            # wrong device: never applied, only logged and journaled for audit.
            log.info("dropped result for %s from %s", msg.attempt_id, device_id)
            if run is not None:
                self.journal.append(run.run_id, "dropped", {
                    "task": msg.task_id, "attempt": msg.attempt_id, "device": device_id,
                    "why": "not the current attempt of a running task on this device"})
            return
        assert run is not None and task is not None
        if d is not None and msg.status == "completed":
            d.completed += 1
        self._deadline.pop(msg.attempt_id, None)
        self._record(run, "result", {
            "task": msg.task_id, "attempt": msg.attempt_id, "device": device_id,
            "status": msg.status, "result": msg.result, "error": msg.error, "origin": "device"})
        self._replan(run, {"kind": "result", "task": msg.task_id, "status": msg.status,
                           "error": msg.error})
        self._wake.set()

    def _replan(self, run: Run, event: dict[str, Any]) -> None:
        if self.replanner is not None:
            self.replanner(self, run.run_id, [event])

    # ---- edits and cancellation -----------------------------------------------------------
    def apply_edits(self, run_id: str, batch: EditBatch) -> tuple[bool, str]:
        """Apply an edit batch to a live run atomically. Returns (accepted, reason)."""
        run = self.runs[run_id]
        try:
            apply_batch(run.constellation, batch)  # dry run: rejects before anything is journaled
        except EditError as exc:
            self.journal.append(run_id, "edit_rejected", {"reason": str(exc)})
            self._emit(run_id, "edit_rejected", {"reason": str(exc)}, time.time())
            return False, str(exc)
        self._record(run, "edit", {"batch": batch.model_dump(mode="json")})
        self._wake.set()
        return True, "applied"

    def cancel_task(self, run_id: str, task_id: str) -> None:
        run = self.runs[run_id]
        task = run.constellation.tasks[task_id]
        attempt, dev = task.attempt_id, task.assigned_device
        was_running = task.status is TaskStatus.RUNNING
        self._record(run, "cancel_task", {"task": task_id})
        if was_running and attempt and dev:
            self._send_cancel(dev, attempt, "task cancelled")
        self._wake.set()

    def cancel_run(self, run_id: str) -> None:
        run = self.runs[run_id]
        running = run.running_attempts()
        self._record(run, "cancel_run", {})
        for attempt, (_, dev) in running.items():
            self._send_cancel(dev, attempt, "run cancelled")
        self._wake.set()

    def _send_cancel(self, device_id: str, attempt: str, reason: str) -> None:
        self._deadline.pop(attempt, None)
        d = self.devices.get(device_id)
        if d is not None:
            d.running.discard(attempt)
            if d.send is not None:
                d.send(Cancel(attempt_id=attempt, reason=reason))

    # ---- the periodic step -----------------------------------------------------------------
    async def _main(self) -> None:
        while True:
            await self._wake.wait(self.config.tick)
            try:
                with self.journal.transaction():
                    self.step()
            except Exception:  # keep orchestrating; the bug is logged with its traceback
                log.exception("orchestrator step failed")

    def step(self) -> None:
        """One pass of every periodic check; public so tests can drive it."""
        self._drain_inbox()
        now = time.time()
        self._check_devices(now)
        global_running = sum(len(r.running) for r in self._active_runs())
        for run in self._active_runs():
            self._check_deadlines(run, now)
            self._propagate(run)
            global_running = self._dispatch(run, now, global_running)
            self._check_unplaceable(run, now)
            self._check_finished(run)

    def _drain_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for device_id, msg in inbox:
            self._on_result(device_id, msg)

    def _check_devices(self, now: float) -> None:
        for d in self.devices.values():
            if not d.lost and now - d.last_seen > self.config.device_timeout:
                d.lost, d.online = True, False
                self._device_event("lost", d)
                for run in self._active_runs():
                    for attempt, (task_id, dev) in run.running_attempts().items():
                        if dev == d.device_id:
                            self._deadline.pop(attempt, None)
                            self._record(run, "lost", {
                                "task": task_id, "attempt": attempt, "device": dev,
                                "reason": f"device {dev} lost (silent for "
                                          f"{self.config.device_timeout:g}s)"})
                            self._replan(run, {"kind": "lost", "task": task_id, "device": dev})
                d.running.clear()

    def _check_deadlines(self, run: Run, now: float) -> None:
        for attempt, (task_id, dev) in list(run.running.items()):
            deadline = self._deadline.get(attempt)
            if deadline is not None and now > deadline:
                timeout = run.constellation.tasks[task_id].timeout
                self._send_cancel(dev, attempt, "timed out")
                self._record(run, "result", {
                    "task": task_id, "attempt": attempt, "device": dev, "status": "failed",
                    "result": None, "error": f"timed out after {timeout:g}s", "origin": "timeout"})
                self._replan(run, {"kind": "result", "task": task_id, "status": "failed",
                                   "error": "timeout"})

    def _propagate(self, run: Run) -> None:
        """Sort the dirty pending tasks into skipped, ready, or still waiting."""
        while run.dirty:  # a skip dirties its successors, so loop until quiet
            for tid in sorted(run.dirty):
                run.dirty.discard(tid)
                t = run.constellation.tasks.get(tid)
                if t is None or t.status is not TaskStatus.PENDING:
                    continue
                verdict, reason = run.constellation.readiness(tid)
                if verdict in ("skip", "skip_condition") and not t.attempts:
                    self._record(run, "skipped", {"task": tid, "reason": reason,
                                                  "by_condition": verdict == "skip_condition"})
                elif verdict == "ready":
                    self._ready.setdefault(run.run_id, set()).add(tid)
                else:  # e.g. an edit gave it a new, unfinished upstream
                    self._ready.setdefault(run.run_id, set()).discard(tid)

    def _capable(self, d: DeviceState, task: Any) -> bool:
        return (not d.lost and d.online and set(task.capabilities) <= d.capabilities
                and (task.device is None or task.device == d.device_id)
                and (d.executors is None or task.executor.kind in d.executors))

    def _dispatch(self, run: Run, now: float, global_running: int) -> int:
        c = run.constellation
        ready_ids = self._ready.setdefault(run.run_id, set())
        ready = [c.tasks[t] for t in ready_ids if t in c.tasks and c.tasks[t].status is TaskStatus.PENDING]
        ready_ids.intersection_update(t.id for t in ready)
        ready = [t for t in ready if t.not_before <= now]
        ready.sort(key=lambda t: (-t.priority, run.order.get(t.id, 0)))  # equal priorities keep plan order
        for task in ready:
            if global_running >= self.config.global_cap:
                break
            capable = [d for d in self.devices.values() if self._capable(d, task)]
            if capable or not any(d.online for d in self.devices.values()):
                # With no device online at all we are waiting for devices, not failing tasks.
                self._unplaceable_since.pop((run.run_id, task.id), None)
            else:
                self._unplaceable_since.setdefault((run.run_id, task.id), now)
            free = [d for d in capable if len(d.running) < self._cap(d)]
            if not free:
                continue
            d = min(free, key=lambda d: (len(d.running) / self._cap(d), len(d.running), d.device_id))
            attempt = f"{run.run_id}/{task.id}/{task.attempts + 1}"
            self._record(run, "dispatched", {"task": task.id, "attempt": attempt,
                                             "device": d.device_id})
            ready_ids.discard(task.id)
            d.running.add(attempt)
            self._deadline[attempt] = now + task.timeout
            global_running += 1
            assert d.send is not None
            d.send(Task(task_id=task.id, attempt_id=attempt, executor=task.executor,
                        inputs=resolve_inputs(c, task), timeout=task.timeout))
        return global_running

    def _cap(self, d: DeviceState) -> int:
        cap = self.config.per_device_cap
        return min(cap, d.max_concurrency) if cap else d.max_concurrency

    def _check_unplaceable(self, run: Run, now: float) -> None:
        for (rid, task_id), since in list(self._unplaceable_since.items()):
            if rid != run.run_id or now - since <= self.config.unplaceable_timeout:
                continue
            del self._unplaceable_since[(rid, task_id)]
            task = run.constellation.tasks.get(task_id)
            if task is None or task.status is not TaskStatus.PENDING:
                continue
            online = {d.device_id: sorted(d.capabilities) for d in self.devices.values()
                      if d.online and not d.lost}
            pin = f" on device {task.device!r}" if task.device else ""
            self._record(run, "task_failed", {
                "task": task_id,
                "reason": f"no device can run it: needs capabilities {task.capabilities}{pin} "
                          f"and executor {task.executor.kind!r}; online devices: {online}"})

    def _check_finished(self, run: Run) -> None:
        if not run.all_terminal():
            return
        state = run.constellation.state(run.cancelled)
        if state is ConstellationState.RUNNING:
            return
        self._record(run, "finished", {"state": state.value})
        self.journal.set_state(run.run_id, state.value)
        fut = self._done.get(run.run_id)
        if fut is not None and not fut.done():
            fut.set_result(state)
