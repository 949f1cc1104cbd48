"""The LLM in the loop: a model reads task results and edits the live DAG, as UFO's
constellation agent does in its editing mode.

After each task result the :class:`LLMEditor` holds the run (nothing new starts and the run
does not finish, UFO's safe assignment lock), shows the model the request, the devices, a
snapshot of the constellation and the new results, and asks for an edit batch through
``paperlab.llm``'s schema-constrained door (:func:`edits_schema`: the edit operations, with
task ids, capabilities and executor kinds narrowed to what exists). The reply goes through
the same validated path as every other edit (:meth:`Orchestrator.apply_edits`: all or
nothing, journaled, undoable); a rejected batch is fed back once per ``max_attempts``. Results
that arrive while the model thinks are batched into its next round (UFO's batched editing).
Bounds: ``max_rounds`` per run, and ``think_timeout`` seconds per round after which the hold
is released (a later answer is still applied if it is valid then).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from paperlab.galaxy.errors import EditError, PlanError
from paperlab.galaxy.plan.constellation import EXECUTOR_KINDS, ID_PATTERN, Constellation, TaskStatus
from paperlab.galaxy.plan.edits import EditBatch, parse_batch
from paperlab.galaxy.planning.planner import DeviceSummary, extract_json

if TYPE_CHECKING:
    from paperlab.galaxy.orchestrator.core import Orchestrator
    from paperlab.llm import LLM, Message

__all__ = ["LLMEditor", "edits_schema", "snapshot"]

log = logging.getLogger(__name__)

_SYSTEM = """You steer a running task DAG (a constellation) spread over devices. After tasks
finish you see their results and may edit the DAG: add follow-up tasks, remove or change
tasks that have not started, add or remove dependencies. Tasks that are running or finished
cannot change. Reply with ONE JSON object {"reason": why, "edits": [...]}; {"edits": []} when
nothing should change. Ops: add_task {task: {id, description, capabilities, executor: {kind,
args}, inputs: {arg: "upstream_id.field"}}, after: [ids]}; remove_task {task_id};
update_task {task_id, changes: {...}}; add_edge {source, target, kind, condition};
remove_edge {source, target}. A task reads an upstream result through inputs, and needs an
edge from that upstream (add it with after)."""


def snapshot(c: Constellation, focus: set[str], limit: int = 40, result_chars: int = 300) -> list[dict[str, Any]]:
    """The tasks a model sees: those in ``focus`` (just finished) and their neighbours first,
    then the others, at most ``limit``; each with status, what it runs, its upstream ids and
    its result or error (JSON, cut to ``result_chars``)."""
    near = set(focus)
    for tid in focus:
        near.update(e.target for e in c.successors(tid))
        near.update(e.source for e in c.predecessors(tid))
    order = [t for t in c.tasks if t in near] + [t for t in c.tasks if t not in near]
    out = []
    for tid in order[:limit]:
        t = c.tasks[tid]
        row: dict[str, Any] = {"id": tid, "status": t.status.value, "executor": t.executor.kind,
                               "capabilities": t.capabilities, "after": [e.source for e in c.predecessors(tid)]}
        if t.result is not None:
            row["result"] = json.dumps(t.result, default=str)[:result_chars]
        if t.error:
            row["error"] = t.error[:result_chars]
        out.append(row)
    return out


def edits_schema(c: Constellation, devices: list[DeviceSummary], max_edits: int = 8) -> dict[str, Any]:
    """The JSON schema of an edit reply, narrowed to this run: existing task ids where an op
    names one (pending ones where it changes one), the plan fields an edit may set, and the
    capabilities, devices and executor kinds online. What a schema cannot say (no cycle, inputs that name an upstream) is checked
    by the edit path and fed back."""
    every = sorted(c.tasks)
    pending = sorted(t for t, x in c.tasks.items() if x.status is TaskStatus.PENDING and not x.attempts)
    kinds = sorted({k for d in devices for k in d.executors}) if devices else list(EXECUTOR_KINDS)
    caps = sorted({x for d in devices for x in d.capabilities})
    executor = {"type": "object", "additionalProperties": False, "required": ["kind", "args"],
                "properties": {"kind": {"enum": kinds}, "args": {"type": "object"}}}
    fields: dict[str, Any] = {  # what an edit may set (no timeout or retries: a grammar cannot bound digits)
        "description": {"type": "string"}, "priority": {"type": "integer", "minimum": -9, "maximum": 9},
        "capabilities": {"type": "array", "items": {"enum": caps} if caps else {"type": "string"}},
        "executor": executor, "inputs": {"type": "object", "additionalProperties": {"type": "string"}}}
    if devices:
        fields["device"] = {"enum": sorted(d.device_id for d in devices)}
    task = {"type": "object", "additionalProperties": False, "required": ["id", "executor"],
            "properties": {"id": {"type": "string", "pattern": ID_PATTERN}, **fields}}

    def op(name: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False, "required": ["op", *required],
                "properties": {"op": {"const": name}, **props}}

    ops = [op("add_task", {"task": task, "after": {"type": "array", "items": {"enum": every}}}, ["task"])]
    if pending:  # the other ops change a task that has not started; with none, only adding is left
        ops += [
            op("remove_task", {"task_id": {"enum": pending}}, ["task_id"]),
            op("update_task", {"task_id": {"enum": pending}, "changes": {
                "type": "object", "additionalProperties": False, "minProperties": 1, "properties": fields}},
               ["task_id", "changes"]),
            op("add_edge", {"source": {"enum": every}, "target": {"enum": pending},
                            "kind": {"enum": ["success_only", "completion_only", "conditional"]},
                            "condition": {"type": "string"}}, ["source", "target"]),
            op("remove_edge", {"source": {"enum": every}, "target": {"enum": pending}}, ["source", "target"]),
        ]
    return {"type": "object", "additionalProperties": False, "required": ["edits"], "properties": {
        "reason": {"type": "string"}, "edits": {"type": "array", "items": {"anyOf": ops}, "maxItems": max_edits}}}


@dataclass
class LLMEditor:
    """Edits a live run from its results with a :class:`paperlab.llm.LLM` (see the module).

    Args:
        llm: the model.
        request: what the user asked for (context for the model).
        hold: ``run`` pauses the run's dispatching and finishing while the model thinks
            (UFO's lock); ``finish`` only keeps the run from finishing, so work goes on.
        max_rounds: model rounds per run; max_attempts: asks per round (a rejection is fed
            back); think_timeout: seconds a round may hold the run; max_tokens: per ask.
    """

    llm: LLM
    request: str = ""
    hold: Literal["run", "finish"] = "run"
    max_rounds: int = 20
    max_attempts: int = 2
    think_timeout: float = 120.0
    max_tokens: int = 512
    log: list[dict[str, Any]] = field(default_factory=list)  # one entry per round
    _pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _busy: set[str] = field(default_factory=set)
    _rounds: dict[str, int] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def attach(self, orch: Orchestrator) -> None:
        orch.replanner = self

    def __call__(self, orch: Orchestrator, run_id: str, events: list[dict[str, Any]]) -> None:
        """The orchestrator's hook, called inside its step: queue the results, start a round."""
        results = [e for e in events if e.get("kind") == "result"]
        if not results or self._rounds.get(run_id, 0) >= self.max_rounds:
            return
        self._pending.setdefault(run_id, []).extend(results)
        if run_id not in self._busy:
            self._busy.add(run_id)
            orch.hold(run_id, dispatch=self.hold == "finish")  # before this step dispatches anything
            task = asyncio.get_running_loop().create_task(self._rounds_of(orch, run_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _rounds_of(self, orch: Orchestrator, run_id: str) -> None:
        held = True
        try:
            while self._pending.get(run_id) and self._rounds.get(run_id, 0) < self.max_rounds:
                events = self._pending.pop(run_id)
                self._rounds[run_id] = self._rounds.get(run_id, 0) + 1
                think = asyncio.ensure_future(self._round(orch, run_id, events))
                done, _ = await asyncio.wait({think}, timeout=self.think_timeout)
                if not done and held:
                    log.warning("run %s: the model took over %.0fs; the run goes on meanwhile", run_id,
                                self.think_timeout)
                    orch.release(run_id, dispatch=self.hold == "finish")
                    held = False
                await think
        finally:
            self._pending.pop(run_id, None)
            self._busy.discard(run_id)
            if held:
                orch.release(run_id, dispatch=self.hold == "finish")

    async def _round(self, orch: Orchestrator, run_id: str, events: list[dict[str, Any]]) -> None:
        entry: dict[str, Any] = {"run": run_id, "tasks": [e["task"] for e in events], "outcome": "no change"}
        self.log.append(entry)
        feedback = ""
        for attempt in range(1, self.max_attempts + 1):
            run = orch.runs.get(run_id)
            if run is None or run.finished is not None:
                entry["outcome"] = "run over"
                return
            devices = [DeviceSummary(d.device_id, sorted(d.capabilities), sorted(d.executors or EXECUTOR_KINDS),
                                     sorted(d.info.get("python_allow", [])))
                       for d in orch.devices.values() if d.online and not d.lost]
            try:
                batch = await self.propose(run.constellation, events, devices, feedback)
            except (PlanError, EditError) as exc:  # a reply that is no edit batch: said back to it
                feedback = str(exc)
                entry.update(outcome=f"invalid reply: {feedback}"[:300], attempts=attempt)
                continue
            except Exception as exc:  # a broken model server must not stop the run
                entry["outcome"] = f"model failed: {type(exc).__name__}: {exc}"[:300]
                log.warning("run %s: %s", run_id, entry["outcome"])
                return
            if batch is None:
                entry["outcome"] = "no change" if not feedback else f"gave up: {feedback}"
                return
            ok, reason = orch.apply_edits(run_id, batch)
            entry.update(outcome="applied" if ok else f"rejected: {reason}", reason=batch.reason, attempts=attempt)
            if ok:
                return
            feedback = reason

    async def propose(self, c: Constellation, events: list[dict[str, Any]], devices: list[DeviceSummary],
                      feedback: str = "") -> EditBatch | None:
        """One ask: the model's edit batch (validated as a batch; the orchestrator's edit path
        checks it against the DAG), or None for no change.

        Raises:
            PlanError, EditError: the reply holds no JSON object, or not an edit batch.
        """
        focus = {e["task"] for e in events}
        user = {"request": self.request,
                "devices": [{"id": d.device_id, "capabilities": d.capabilities, "executors": d.executors,
                             "python_functions": d.python_allow} for d in devices],
                "tasks": snapshot(c, focus),
                "new_results": [{k: v for k, v in e.items() if k != "kind"} for e in events]}
        messages = [{"role": "system", "content": _SYSTEM},
                    {"role": "user", "content": json.dumps(user, default=str)[:12_000]}]
        if feedback:
            messages.append({"role": "user", "content": f"Your last edit was rejected: {feedback}. "
                                                        "Reply with a corrected JSON object, or no edits."})
        gen = await self.llm.agenerate(cast("list[Message]", messages), max_tokens=self.max_tokens,
                                       temperature=0.0, schema=edits_schema(c, devices))
        data = extract_json(gen.text)
        if not isinstance(data, dict) or not data.get("edits"):
            return None
        return parse_batch({"edits": data["edits"], "reason": str(data.get("reason", ""))[:200]})
