"""The orchestrator: owns the one authoritative constellation of each run and drives it.

Single-threaded asyncio: every state change is a typed event (:mod:`.events`), first
journaled, then folded into memory (:meth:`.runstate.Run.apply`), both through the
:class:`~.book.RunBook`. The transport (:mod:`paperlab.galaxy.control.server`) calls
:meth:`Orchestrator.device_registered`, :meth:`on_message` and :meth:`device_disconnected`,
which the :class:`~.devicelink.DeviceLink` handles; the orchestrator answers through each
device's ``send`` callable. A periodic step runs failure detection (:mod:`.failures`),
scheduling (:mod:`.scheduling`) and placement (:mod:`.placement`). Time comes from the
injected ``clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from paperlab.galaxy.orchestrator.book import Listener, RunBook
from paperlab.galaxy.orchestrator.config import OrchestratorConfig
from paperlab.galaxy.orchestrator.devicelink import DeviceLink
from paperlab.galaxy.orchestrator.events import (
    Adopted,
    CancelRun,
    CancelTask,
    Created,
    Dispatched,
    Dropped,
    Finished,
    Refused,
    Result,
    Resumed,
    TaskFailed,
)
from paperlab.galaxy.orchestrator.failures import Deadlines
from paperlab.galaxy.orchestrator.history import EditHistory
from paperlab.galaxy.orchestrator.journal import Journal
from paperlab.galaxy.orchestrator.memory import forget_old_runs
from paperlab.galaxy.orchestrator.placement import (
    DeviceState,
    Unplaceable,
    choose_device,
    unplaceable_reason,
)
from paperlab.galaxy.orchestrator.runstate import Run, replay
from paperlab.galaxy.orchestrator.scheduling import Scheduler
from paperlab.galaxy.orchestrator.waker import Waker
from paperlab.galaxy.plan.constellation import (
    Constellation,
    ConstellationState,
    TaskStatus,
    resolve_inputs,
)
from paperlab.galaxy.plan.edits import EditBatch
from paperlab.galaxy.protocol.aip import Register, Task, TaskResult
from paperlab.galaxy.ratelog import RateLimitedLog

__all__ = ["DeviceState", "Orchestrator", "OrchestratorConfig"]

log = logging.getLogger(__name__)
Clock = Callable[[], float]
#: Called with (orchestrator, run id, events) after results and losses; may edit the run.
Replanner = Callable[["Orchestrator", str, list[dict[str, Any]]], Any]


class Orchestrator:
    """Runs constellations over the devices connected to it."""

    def __init__(self, journal: Journal, config: OrchestratorConfig | None = None,
                 clock: Clock = time.time) -> None:
        self.config = config or OrchestratorConfig()
        self.book = RunBook(journal, clock)
        self._done: dict[str, asyncio.Future[ConstellationState]] = {}
        self._deadlines = Deadlines()
        self._unplaceable = Unplaceable()
        self._wake = Waker()
        self._scheduler = Scheduler(self.book.record)
        self.link = DeviceLink(self.book, self.config, self._deadlines, self._unplaceable, self._wake,
                               on_result=self._on_result, on_lost=self._replan)
        self.edits = EditHistory(self.book, self._wake)
        self._loop_task: asyncio.Task[None] | None = None
        # Called with the run id once a run has finished (after its waiters are told and the
        # oldest finished runs are dropped): runtime.py freezes the live objects for the GC there.
        self.on_finished: list[Callable[[str], None]] = []
        self.replanner: Replanner | None = None
        # Runs a planner is editing (see hold()): run id -> holds on finishing, and on dispatching.
        self._holds: dict[str, int] = {}
        self._paused: dict[str, int] = {}
        self._dropped_log = RateLimitedLog(log)

    # ---- shared state, read-only views ------------------------------------------------
    @property
    def journal(self) -> Journal:
        return self.book.journal

    @property
    def clock(self) -> Clock:
        return self.book.clock

    @property
    def runs(self) -> dict[str, Run]:
        return self.book.runs

    @property
    def listeners(self) -> list[Listener]:
        return self.book.listeners

    @property
    def devices(self) -> dict[str, DeviceState]:
        return self.link.devices

    def active_runs(self) -> list[Run]:
        return self.book.active()

    # ---- the transport's calls (see DeviceLink) ------------------------------------------
    def device_registered(self, msg: Register, send: Callable[[Any], None]) -> int | None:
        return self.link.registered(msg, send)

    def device_disconnected(self, device_id: str, conn: int) -> None:
        self.link.disconnected(device_id, conn)

    def on_message(self, device_id: str, msg: Any, conn: int | None = None) -> None:
        self.link.message(device_id, msg, conn)

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
        """Start a new run of ``constellation`` (validated when it was built, e.g. by
        :meth:`Constellation.from_plan`); returns its run id."""
        run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        now = self.clock()
        # The run's own copy: the plan without run state. Its fields were validated when the
        # caller's constellation was built; only the graph is checked again (cheap, no
        # pydantic), so a bad graph raises PlanError here, before anything is journaled.
        fresh = constellation.plan_copy()
        fresh.validate_graph()
        ev = Created(plan=fresh.plan_dict(), settings=dataclasses.asdict(self.config.settings), ts=now)
        run = Run.from_created(run_id, ev, prepared=fresh)
        self.journal.create_run(run_id, fresh.name, now)
        self.journal.append(run_id, ev)
        self.runs[run_id] = run
        self.book.emit(run_id, ev)
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
            self._deadlines.arm(attempt, run.constellation.tasks[task_id], now)
            d = self.devices.setdefault(dev, DeviceState(dev, set(), 1, last_seen=now))
            d.running.add(attempt)
        self.book.record(run, Resumed(events=run.events_applied))
        self._wake.set()
        return run_id

    async def wait(self, run_id: str, timeout: float | None = None) -> ConstellationState:
        """Wait until the run finishes; returns its final state."""
        return await asyncio.wait_for(asyncio.shield(self._done[run_id]), timeout)

    # ---- results -----------------------------------------------------------------------
    def _on_result(self, device_id: str, msg: TaskResult) -> None:
        d = self.devices.get(device_id)
        if d is not None:
            d.running.discard(msg.attempt_id)
            d.foreign.discard(msg.attempt_id)
        run = next((r for r in self.active_runs() if msg.attempt_id in r.attempts), None)
        task = run.constellation.tasks.get(msg.task_id) if run else None
        if (run is not None and task is not None and msg.status != "refused"
                and run.adoptable(msg.attempt_id, device_id)):
            # Declared lost, but it finished on its device before anyone else ran it: adopt.
            self.book.record(run, Adopted(task=task.id, attempt=msg.attempt_id, device=device_id))
        ok = (run is not None and task is not None and task.status is TaskStatus.RUNNING
              and task.attempt_id == msg.attempt_id and task.assigned_device == device_id)
        if not ok:
            self._drop(run, device_id, msg)
            return
        assert run is not None and task is not None
        self._deadlines.disarm(msg.attempt_id)
        if msg.status == "refused":  # the device was full: offer the task again, no retry used
            self.book.record(run, Refused(task=task.id, attempt=msg.attempt_id, device=device_id,
                                          reason=msg.error or "at capacity"))
            self._wake.set()
            return
        if d is not None and msg.status == "completed":
            d.completed += 1
        self.book.record(run, Result(task=msg.task_id, attempt=msg.attempt_id, device=device_id,
                                     status=msg.status, result=msg.result, error=msg.error))
        self._replan(run, {"kind": "result", "task": msg.task_id, "status": msg.status, "error": msg.error,
                           "result": msg.result})
        self._wake.set()

    def _drop(self, run: Run | None, device_id: str, msg: TaskResult) -> None:
        """A result that is not applied: late (after a timeout or loss), a duplicate (resent
        after a reconnect), from the wrong device, or for an attempt no active run dispatched
        (a forgery, or a run since finished). Every one is journaled (in its run's events, else
        in the device audit) and logged (at a bounded rate: a forger could send thousands)."""
        why = ("not the current attempt of a running task on this device" if run is not None
               else "no active run dispatched this attempt")
        self._dropped_log.info(device_id, "dropped result for %s from %s: %s", msg.attempt_id, device_id, why)
        if run is not None:
            self.book.audit(run.run_id, Dropped(task=msg.task_id, attempt=msg.attempt_id,
                                                device=device_id, why=why))
        else:
            self.journal.device_audit(self.clock(), device_id, "result_dropped", f"{msg.attempt_id}: {why}")

    def _replan(self, run: Run, event: dict[str, Any]) -> None:
        if self.replanner is not None:
            self.replanner(self, run.run_id, [event])

    # ---- holds: a planner thinking about a run ------------------------------------------
    def hold(self, run_id: str, dispatch: bool = False) -> None:
        """Keep ``run_id`` from finishing, and (``dispatch=False``) from starting tasks, until
        :meth:`release` (holds are counted): what a planner editing the run from its results
        needs, so that nothing starts from a DAG it is about to change (UFO's safe assignment
        lock) and the run does not end before a follow-up task is added. Results, deadlines
        and device liveness carry on."""
        self._holds[run_id] = self._holds.get(run_id, 0) + 1
        if not dispatch:
            self._paused[run_id] = self._paused.get(run_id, 0) + 1

    def release(self, run_id: str, dispatch: bool = False) -> None:
        """Undo one :meth:`hold` (with the same ``dispatch``)."""
        for counts in (self._holds,) if dispatch else (self._holds, self._paused):
            n = counts.get(run_id, 0) - 1
            if n > 0:
                counts[run_id] = n
            else:
                counts.pop(run_id, None)
        self._wake.set()

    def held(self, run_id: str) -> bool:
        return run_id in self._holds

    # ---- edits and cancellation -----------------------------------------------------------
    def apply_edits(self, run_id: str, batch: EditBatch) -> tuple[bool, str]:
        """Validate and apply an edit batch to a live run atomically. Returns (accepted, reason)."""
        return self.edits.apply(self.runs[run_id], batch)

    def undo(self, run_id: str) -> tuple[bool, str]:
        """Undo the run's newest edit (itself a validated edit batch). Returns (accepted, reason)."""
        return self.edits.undo(self.runs[run_id])

    def redo(self, run_id: str) -> tuple[bool, str]:
        """Redo the run's newest undone edit. Returns (accepted, reason)."""
        return self.edits.redo(self.runs[run_id])

    def cancel_task(self, run_id: str, task_id: str) -> None:
        run = self.runs[run_id]
        task = run.constellation.tasks[task_id]
        attempt, dev = task.attempt_id, task.assigned_device
        was_running = task.status is TaskStatus.RUNNING
        self.book.record(run, CancelTask(task=task_id))
        if was_running and attempt and dev:
            self.link.send_cancel(dev, attempt, "task cancelled")
        self._wake.set()

    def cancel_run(self, run_id: str) -> None:
        run = self.runs[run_id]
        running = run.running_attempts()
        self.book.record(run, CancelRun())
        for attempt, (_, dev) in running.items():
            self.link.send_cancel(dev, attempt, "run cancelled")
        self._wake.set()

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
        self.link.drain_inbox()
        now = self.clock()
        self.link.check(now)
        global_running = sum(len(r.running) for r in self.active_runs())
        for run in self.active_runs():
            self._check_deadlines(run, now)
            self._scheduler.propagate(run)
            if run.run_id not in self._paused:  # a planner editing it: nothing starts
                global_running = self._dispatch(run, now, global_running)
                self._check_unplaceable(run, now)
            if run.run_id not in self._holds:  # ... and it does not finish
                self._check_finished(run)

    def _check_deadlines(self, run: Run, now: float) -> None:
        for attempt, task_id, dev, timeout in self._deadlines.expired(run, now):
            self.link.send_cancel(dev, attempt, "timed out")
            self.book.record(run, Result(task=task_id, attempt=attempt, device=dev, status="failed",
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
            self.book.record(run, Dispatched(task=task.id, attempt=attempt, device=d.device_id))
            self._scheduler.dispatched(run, task.id)
            d.running.add(attempt)
            timeout = self._deadlines.arm(attempt, task, now)
            global_running += 1
            assert d.send is not None
            # Built from validated plan fields: no second validation (model_construct).
            d.send(Task.model_construct(task_id=task.id, attempt_id=attempt, executor=task.executor,
                                        inputs=resolve_inputs(run.constellation, task), timeout=timeout))
        return global_running

    def _check_unplaceable(self, run: Run, now: float) -> None:
        for task_id in self._unplaceable.expired(run.run_id, now, self.config.unplaceable_timeout):
            task = run.constellation.tasks.get(task_id)
            if task is not None and task.status is TaskStatus.PENDING:
                self.book.record(run, TaskFailed(task=task_id,
                                                 reason=unplaceable_reason(task, self.devices.values())))

    def _check_finished(self, run: Run) -> None:
        if not run.all_terminal():
            return
        state = run.constellation.state(run.cancelled)
        if state is ConstellationState.RUNNING:
            return
        self.book.record(run, Finished(state=state.value))
        self.journal.set_state(run.run_id, state.value)
        self._scheduler.forget(run.run_id)
        fut = self._done.get(run.run_id)
        if fut is not None and not fut.done():
            fut.set_result(state)
        forget_old_runs(self.runs, self.config.keep_finished, self.config.keep_mb)
        for hook in self.on_finished:
            hook(run.run_id)

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
