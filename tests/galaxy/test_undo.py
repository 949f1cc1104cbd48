"""Undo and redo of a live run's edits: the same validated path as any edit, journaled, and
still there after a resume. The orchestrator runs in this process; no device is needed, since
only pending tasks change (one task is marked started through the journal's own event)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from paperlab.galaxy.orchestrator.config import OrchestratorConfig
from paperlab.galaxy.orchestrator.core import Orchestrator
from paperlab.galaxy.orchestrator.events import Dispatched
from paperlab.galaxy.orchestrator.journal import Journal
from paperlab.galaxy.orchestrator.runstate import replay
from paperlab.galaxy.plan.constellation import Constellation
from paperlab.galaxy.plan.edits import AddTask, EditBatch, RemoveDependency, UpdateTask

PLAN = {"name": "undo", "tasks": [{"id": "a", "executor": {"kind": "echo"}},
                                  {"id": "b", "executor": {"kind": "echo"}, "after": ["a"]},
                                  {"id": "c", "executor": {"kind": "echo"}, "after": ["b"]}]}
EDIT = EditBatch(reason="rewire", edits=[
    AddTask(task={"id": "x", "executor": {"kind": "echo"}, "priority": 4}, after=["a"]),
    UpdateTask(task_id="c", changes={"priority": 7, "timeout": 3}),
    RemoveDependency(source="b", target="c")])


def shape(c: Constellation) -> tuple[dict, set]:
    return ({t: c.tasks[t].plan_dict() for t in sorted(c.tasks)},
            {(e.source, e.target, e.kind.value) for e in c.edges})


def orchestrator(tmp: Path) -> Orchestrator:
    return Orchestrator(Journal(tmp / "j.sqlite"), OrchestratorConfig(unplaceable_timeout=3600))


def test_undo_and_redo_go_through_the_edit_path(tmp_path: Path) -> None:
    async def main() -> None:
        orch = orchestrator(tmp_path)
        rid = orch.submit(Constellation.from_plan(PLAN), "r")
        original = shape(orch.runs[rid].constellation)
        assert orch.undo(rid) == (False, "nothing to undo in run r")
        assert orch.apply_edits(rid, EDIT) == (True, "applied")
        edited = shape(orch.runs[rid].constellation)
        assert orch.undo(rid) == (True, "undo applied")
        assert shape(orch.runs[rid].constellation) == original
        assert orch.redo(rid) == (True, "redo applied")
        assert shape(orch.runs[rid].constellation) == edited
        assert orch.undo(rid)[0] and orch.redo(rid)[0] and orch.undo(rid)[0]
        ok, _ = orch.apply_edits(rid, EditBatch(edits=[UpdateTask(task_id="a", changes={"priority": 1})]))
        assert ok and orch.redo(rid) == (False, "nothing to redo in run r")  # a new edit forks
        kinds = [(e["kind"], e["data"].get("action")) for e in orch.journal.events(rid) if e["kind"] == "edit"]
        assert kinds == [("edit", "edit"), ("edit", "undo"), ("edit", "redo"), ("edit", "undo"), ("edit", "redo"),
                         ("edit", "undo"), ("edit", "edit")]
        orch.journal.close()

    asyncio.run(main())


def test_undo_is_refused_once_a_task_it_touches_has_started(tmp_path: Path) -> None:
    async def main() -> None:
        orch = orchestrator(tmp_path)
        rid = orch.submit(Constellation.from_plan(PLAN), "r")
        assert orch.apply_edits(rid, EDIT)[0]
        run = orch.runs[rid]
        orch.book.record(run, Dispatched(task="x", attempt="r/x/1", device="d"))  # x started
        before = shape(run.constellation)
        ok, reason = orch.undo(rid)
        assert not ok and reason.startswith("cannot undo:") and "'x'" in reason and "running" in reason
        assert shape(run.constellation) == before
        rejected = [e for e in orch.journal.events(rid) if e["kind"] == "edit_rejected"]
        assert rejected[-1]["data"] == {"reason": reason, "action": "undo"}
        orch.journal.close()

    asyncio.run(main())


def test_the_history_survives_a_resume(tmp_path: Path) -> None:
    async def first() -> tuple[tuple, tuple]:
        orch = orchestrator(tmp_path)
        rid = orch.submit(Constellation.from_plan(PLAN), "r")
        original = shape(orch.runs[rid].constellation)
        orch.apply_edits(rid, EDIT)
        orch.apply_edits(rid, EditBatch(edits=[UpdateTask(task_id="a", changes={"priority": 2})]))
        orch.undo(rid)
        stacks = (len(orch.runs[rid].undo_stack), len(orch.runs[rid].redo_stack))
        assert stacks == (1, 1)
        orch.journal.close()  # the process dies here (no finish, no cleanup)
        return original, stacks

    original, stacks = asyncio.run(first())
    j = Journal(tmp_path / "j.sqlite")
    replayed = replay("r", j.events("r"))
    assert (len(replayed.undo_stack), len(replayed.redo_stack)) == stacks
    j.close()

    async def second() -> None:
        orch = orchestrator(tmp_path)
        orch.resume("r")
        assert orch.redo("r")[0] and orch.runs["r"].constellation.tasks["a"].priority == 2
        assert orch.undo("r")[0] and orch.undo("r")[0]  # the redone edit, then the one before the crash
        assert shape(orch.runs["r"].constellation) == original
        orch.journal.close()

    asyncio.run(second())
