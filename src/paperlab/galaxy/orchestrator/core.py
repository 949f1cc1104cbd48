"""The orchestrator: owns the one authoritative constellation of each run and drives it.

Single-threaded asyncio: every state change is a typed event (:mod:`paperlab.galaxy.orchestrator.events`),
first journaled, then folded into memory (:meth:`paperlab.galaxy.orchestrator.runstate.Run.apply`). The
transport (:mod:`paperlab.galaxy.control.server`) calls :meth:`Orchestrator.device_registered`,
:meth:`on_message` and :meth:`device_disconnected`; the orchestrator answers through each
device's ``send`` callable (that side lives in :mod:`paperlab.galaxy.orchestrator.devicelink`). A periodic
step runs failure detection (:mod:`paperlab.galaxy.orchestrator.failures`), scheduling
(:mod:`paperlab.galaxy.orchestrator.scheduling`) and placement (:mod:`paperlab.galaxy.orchestrator.placement`). Time
comes from the injected ``clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from paperlab.galaxy import defaults
from paperlab.galaxy.errors import EditError
from paperlab.galaxy.orchestrator.devicelink import DeviceLink
from paperlab.galaxy.orchestrator.events import (
    Adopted,
    CancelRun,
    CancelTask,
    Created,
    Dispatched,
    Dropped,
    Edited,
    EditRejected,
    Event,
    Finished,
    Refused,
    Result,
    Resumed,
    TaskFailed,
)
from paperlab.galaxy.orchestrator.failures import Deadlines
from paperlab.galaxy.orchestrator.journal import Journal
from paperlab.galaxy.orchestrator.placement import (
    DeviceState,
    Unplaceable,
    choose_device,
    unplaceable_reason,
)
from paperlab.galaxy.orchestrator.runstate import Run, RunSettings, replay
from paperlab.galaxy.orchestrator.scheduling import Scheduler
from paperlab.galaxy.orchestrator.waker import Waker
from paperlab.galaxy.plan.constellation import (
    Constellation,
    ConstellationState,
    TaskStatus,
    resolve_inputs,
)
from paperlab.galaxy.plan.edits import EditBatch, apply_batch
from paperlab.galaxy.protocol.aip import Cancel, Task, TaskResult

__all__ = ["DeviceState", "Orchestrator", "OrchestratorConfig"]

log = logging.getLogger(__name__)
Clock = Callable[[], float]


@dataclass
class OrchestratorConfig:
    """Knobs of the orchestrator (all times in seconds; defaults in :mod:`.defaults`)."""

    global_cap: int = 256
    per_device_cap: int | None = None  # None: each device's own max_concurrency
    device_timeout: float = defaults.DEVICE_TIMEOUT
    unplaceable_timeout: float = defaults.UNPLACEABLE_TIMEOUT
    evict_after: float = defaults.EVICT_AFTER
    max_info_bytes: int = defaults.MAX_INFO_BYTES
    keep_finished: int = defaults.KEEP_FINISHED
    tick: float = defaults.TICK
    settings: RunSettings = field(default_factory=RunSettings)


class Orchestrator(DeviceLink):
    """Runs constellations over the devices connected to it."""

    def __init__(self, journal: Journal, config: OrchestratorConfig | None = None,
                 clock: Clock = time.time) -> None:
        self.journal = journal
        self.config = config or OrchestratorConfig()
        self.clock = clock
        self.devices: dict[str, DeviceState] = {}
        self.runs: dict[str, Run] = {}
        self._done: dict[str, asyncio.Future[ConstellationState]] = {}
        self._deadlines = Deadlines()
        self._unplaceable = Unplaceable()
        self._scheduler = Scheduler(self._record)
        self._inbox: list[tuple[str, TaskResult]] = []
        self._wake = Waker()
        self._loop_task: asyncio.Task[None] | None = None
        self._conn_seq = 0
        self.listeners: list[Callable[[str, str, dict[str, Any]], None]] = []
        # Called with the run id once a run has finished (after its waiters are told and the
        # oldest finished runs are dropped): runtime.py freezes the live objects for the GC there.
        self.on_finished: list[Callable[[str], None]] = []
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
        run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        now = self.clock()
        ev = Created(plan=constellation.plan_dict(), settings=dataclasses.asdict(self.config.settings), ts=now)
        # The run's own copy, built (and its graph validated) from the plan exactly as a
        # resume will rebuild it; a bad plan raises PlanError here, before anything is journaled.
        run = Run.from_created(run_id, ev)
        self.journal.create_run(run_id, constellation.name, now)
        self.journal.append(run_id, ev)
        self.runs[run_id] = run
        self._emit(run_id, ev)
        self._done[run_id] = asyncio.get_running_loop().create_future()
        self._wake.set()
        return run_id

    def resume(self, run_id: str) -> str:
        """Rebuild a run from the journal and continue it.

        Running attempts stay running: their devices get ``device_timeout`` to reconnect and
        report them (in REGISTER) before they are declared lost and reassigned.
        """
        self.journal.run_info(run_id)
        run = replay(run_id, self.journal.events(run_id))
        self.runs[run_id] = run
        self._done[run_id] = asyncio.get_running_loop().create_future()
        if run.finished is not None:
            self._done[run_id].set_result(run.finished)
            return run_id
        now = self.clock()
        for attempt, (task_id, dev) in run.running_attempts().items():
            self._deadlines.arm(attempt, now + run.constellation.tasks[task_id].timeout)
            d = self.devices.setdefault(dev, DeviceState(dev, set(), 1, last_seen=now))
            d.running.add(attempt)
        self._record(run, Resumed(events=run.events_applied))
        self._wake.set()
        return run_id

    async def wait(self, run_id: str, timeout: float | None = None) -> ConstellationState:
        """Wait until the run finishes; returns its final state."""
        return await asyncio.wait_for(asyncio.shield(self._done[run_id]), timeout)

    # ---- events ------------------------------------------------------------------------
    def _record(self, run: Run, ev: Event) -> None:
        """Journal ``ev`` (commit first), fold it into the run, tell the listeners."""
        # Stamp the event in place: it was made by the caller for this call and nobody else
        # holds it yet (frozen guards it from here on). dataclasses.replace cost twice as much
        # as the rest of this method, twice per task.
        object.__setattr__(ev, "ts", self.clock())
        data = ev.data()
        self.journal.append(run.run_id, ev, data)
        run.apply(ev)
        self._emit(run.run_id, ev, data)

    def _emit(self, run_id: str, ev: Event, data: dict[str, Any] | None = None) -> None:
        if not self.listeners:
            return
        # ``data`` was made for this event and the journal has already serialised it, so the
        # timestamp goes in place (a copy per event was a tenth of the dashboard's cost).
        data = ev.data() if data is None else data
        data["ts"] = ev.ts
        for listener in list(self.listeners):
            try:
                listener(run_id, ev.kind, data)
            except Exception:  # a broken UI listener must not stop the run
                log.exception("listener failed")

    # ---- results -----------------------------------------------------------------------
    def _on_result(self, device_id: str, msg: TaskResult) -> None:
        d = self.devices.get(device_id)
        if d is not None:
            d.running.discard(msg.attempt_id)
            d.foreign.discard(msg.attempt_id)
        run = next((r for r in self._active_runs() if msg.attempt_id in r.attempts), None)
        task = run.constellation.tasks.get(msg.task_id) if run else None
        if (run is not None and task is not None and msg.status != "refused"
                and run.adoptable(msg.attempt_id, device_id)):
            # Declared lost, but it finished on its device before anyone else ran it: adopt.
            self._record(run, Adopted(task=task.id, attempt=msg.attempt_id, device=device_id))
        ok = (run is not None and task is not None and task.status is TaskStatus.RUNNING
              and task.attempt_id == msg.attempt_id and task.assigned_device == device_id)
        if not ok:
            # Late (after timeout or loss), duplicate (resent after a reconnect) or from the
            # wrong device: never applied, only logged and journaled for audit.
            log.info("dropped result for %s from %s", msg.attempt_id, device_id)
            if run is not None:
                self._audit(run.run_id, Dropped(task=msg.task_id, attempt=msg.attempt_id, device=device_id,
                                                why="not the current attempt of a running task on this device"))
            return
        assert run is not None and task is not None
        self._deadlines.disarm(msg.attempt_id)
        if msg.status == "refused":  # the device was full: offer the task again, no retry used
            self._record(run, Refused(task=task.id, attempt=msg.attempt_id, device=device_id,
                                      reason=msg.error or "at capacity"))
            self._wake.set()
            return
        if d is not None and msg.status == "completed":
            d.completed += 1
        self._record(run, Result(task=msg.task_id, attempt=msg.attempt_id, device=device_id,
                                 status=msg.status, result=msg.result, error=msg.error))
        self._replan(run, {"kind": "result", "task": msg.task_id, "status": msg.status, "error": msg.error})
        self._wake.set()

    def _replan(self, run: Run, event: dict[str, Any]) -> None:
        if self.replanner is not None:
            self.replanner(self, run.run_id, [event])

    # ---- edits and cancellation -----------------------------------------------------------
    def apply_edits(self, run_id: str, batch: EditBatch) -> tuple[bool, str]:
        """Validate and apply an edit batch to a live run atomically. Returns (accepted, reason)."""
        run = self.runs[run_id]
        try:
            prepared = apply_batch(run.constellation, batch)  # validated once, here
        except EditError as exc:
            self._audit(run_id, EditRejected(reason=str(exc)))
            return False, str(exc)
        self._record(run, Edited(batch=batch.model_dump(mode="json"), prepared=prepared))
        self._wake.set()
        return True, "applied"

    def cancel_task(self, run_id: str, task_id: str) -> None:
        run = self.runs[run_id]
        task = run.constellation.tasks[task_id]
        attempt, dev = task.attempt_id, task.assigned_device
        was_running = task.status is TaskStatus.RUNNING
        self._record(run, CancelTask(task=task_id))
        if was_running and attempt and dev:
            self._send_cancel(dev, attempt, "task cancelled")
        self._wake.set()

    def cancel_run(self, run_id: str) -> None:
        run = self.runs[run_id]
        running = run.running_attempts()
        self._record(run, CancelRun())
        for attempt, (_, dev) in running.items():
            self._send_cancel(dev, attempt, "run cancelled")
        self._wake.set()

    def _send_cancel(self, device_id: str, attempt: str, reason: str) -> None:
        self._deadlines.disarm(attempt)
        d = self.devices.get(device_id)
        if d is not None:
            d.running.discard(attempt)
            if d.send is not None:
                d.foreign.add(attempt)  # its slot is busy until the device stops it
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
        now = self.clock()
        self._check_devices(now)
        global_running = sum(len(r.running) for r in self._active_runs())
        for run in self._active_runs():
            self._check_deadlines(run, now)
            self._scheduler.propagate(run)
            global_running = self._dispatch(run, now, global_running)
            self._check_unplaceable(run, now)
            self._check_finished(run)

    def _check_deadlines(self, run: Run, now: float) -> None:
        for attempt, task_id, dev in self._deadlines.expired(run, now):
            timeout = run.constellation.tasks[task_id].timeout
            self._send_cancel(dev, attempt, "timed out")
            self._record(run, Result(task=task_id, attempt=attempt, device=dev, status="failed",
                                     error=f"timed out after {timeout:g}s", origin="timeout"))
            self._replan(run, {"kind": "result", "task": task_id, "status": "failed", "error": "timeout"})

    def _dispatch(self, run: Run, now: float, global_running: int) -> int:
        any_online = any(d.online for d in self.devices.values())
        for task in self._scheduler.ready(run, now):
            if global_running >= self.config.global_cap:
                break
            placeable, d = choose_device(self.devices.values(), task, self.config.per_device_cap)
            # With no device online at all we are waiting for devices, not failing tasks.
            self._unplaceable.note(run.run_id, task.id, placeable or not any_online, now)
            if d is None:
                continue
            attempt = f"{run.run_id}/{task.id}/{task.attempts + 1}"
            self._record(run, Dispatched(task=task.id, attempt=attempt, device=d.device_id))
            self._scheduler.dispatched(run, task.id)
            d.running.add(attempt)
            self._deadlines.arm(attempt, now + task.timeout)
            global_running += 1
            assert d.send is not None
            # Built from validated plan fields: no second validation (model_construct).
            d.send(Task.model_construct(task_id=task.id, attempt_id=attempt, executor=task.executor,
                                        inputs=resolve_inputs(run.constellation, task),
                                        timeout=task.timeout))
        return global_running

    def _check_unplaceable(self, run: Run, now: float) -> None:
        for task_id in self._unplaceable.expired(run.run_id, now, self.config.unplaceable_timeout):
            task = run.constellation.tasks.get(task_id)
            if task is not None and task.status is TaskStatus.PENDING:
                self._record(run, TaskFailed(task=task_id, reason=unplaceable_reason(task, self.devices.values())))

    def _check_finished(self, run: Run) -> None:
        if not run.all_terminal():
            return
        state = run.constellation.state(run.cancelled)
        if state is ConstellationState.RUNNING:
            return
        self._record(run, Finished(state=state.value))
        self.journal.set_state(run.run_id, state.value)
        self._scheduler.forget(run.run_id)
        fut = self._done.get(run.run_id)
        if fut is not None and not fut.done():
            fut.set_result(state)
        self._forget_old_runs()
        for hook in self.on_finished:
            hook(run.run_id)

    def _forget_old_runs(self) -> None:
        """Drop the oldest finished runs beyond ``keep_finished`` from memory.

        A long-lived orchestrator would otherwise keep every run it ever ran (about 15,000
        objects per 1000-task run). Their journals stay: :meth:`get_run` replays them.
        """
        finished = [rid for rid, r in self.runs.items() if r.finished is not None]
        for rid in finished[: max(0, len(finished) - self.config.keep_finished)]:
            del self.runs[rid]

    def get_run(self, run_id: str) -> Run:
        """A run in memory, or one replayed from the journal (a finished run forgotten since).

        Raises:
            JournalError: the journal has no such run (the message names the known ones).
        """
        run = self.runs.get(run_id)
        if run is not None:
            return run
        self.journal.run_info(run_id)
        return replay(run_id, self.journal.events(run_id))

