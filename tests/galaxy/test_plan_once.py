"""Each plan field is read and validated once: at the edge where the plan comes in.

A plan file is validated when it is loaded; submitting it, and editing other tasks, validates
nothing again; an edit validates only what it brings (a new task, the changed fields); a
resume validates the plan it reads back from the journal (that is an edge too).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paperlab.galaxy.errors import EditError
from paperlab.galaxy.orchestrator.core import Orchestrator
from paperlab.galaxy.orchestrator.failures import Deadlines
from paperlab.galaxy.orchestrator.journal import Journal
from paperlab.galaxy.plan.constellation import Constellation, TaskPlan, TaskStar
from paperlab.galaxy.plan.edits import AddTask, EditBatch, UpdateTask, apply_batch

PLAN = {"tasks": [{"id": f"t{i}", "executor": {"kind": "echo"}, "timeout": 5, "after": [f"t{i - 1}"] if i else []}
                  for i in range(20)]}


class _Counting:
    """A stand-in for a model's pydantic-core validator that counts what it validates."""

    def __init__(self, inner: Any, seen: Counter[str], name: str) -> None:
        self._inner, self._seen, self._name = inner, seen, name

    def validate_python(self, *a: Any, **kw: Any) -> Any:
        self._seen[self._name] += 1
        return self._inner.validate_python(*a, **kw)

    def validate_assignment(self, *a: Any, **kw: Any) -> Any:
        self._seen[f"{self._name}.{a[1]}"] += 1
        return self._inner.validate_assignment(*a, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    seen: Counter[str] = Counter()
    for cls in (TaskPlan, TaskStar):
        monkeypatch.setattr(cls, "__pydantic_validator__", _Counting(cls.__pydantic_validator__, seen, cls.__name__))
    yield seen


def test_a_plan_is_validated_when_loaded_and_never_again_when_submitted(tmp_path: Path,
                                                                         validations: Counter[str]) -> None:
    c = Constellation.from_plan(PLAN)
    assert validations == Counter({"TaskStar": 20})  # one per task, at the edge

    async def main() -> None:
        journal = Journal(tmp_path / "j.sqlite")
        orch = Orchestrator(journal)
        try:
            rid = orch.submit(c)
            assert validations == Counter({"TaskStar": 20})  # submit validates nothing again
            assert orch.runs[rid].constellation.tasks["t3"].timeout == 5.0
            ok, reason = orch.apply_edits(rid, EditBatch(edits=[
                AddTask(task={"id": "extra", "executor": {"kind": "echo"}}, after=["t19"]),
                UpdateTask(task_id="t5", changes={"timeout": 9, "priority": 2})]))
            assert ok, reason
            # the new task once, and the two changed fields of t5; nothing else
            assert validations == Counter({"TaskStar": 20, "TaskPlan": 1, "TaskPlan.timeout": 1,
                                           "TaskPlan.priority": 1})
            assert orch.runs[rid].constellation.tasks["t5"].timeout == 9.0
        finally:
            journal.close()

    asyncio.run(main())


def test_an_edit_still_refuses_bad_values_and_unknown_keys() -> None:
    c = Constellation.from_plan(PLAN)
    with pytest.raises(EditError, match="timeout"):
        apply_batch(c, EditBatch(edits=[UpdateTask(task_id="t1", changes={"timeout": -1})]))
    with pytest.raises(EditError, match="timout"):
        apply_batch(c, EditBatch(edits=[AddTask(task={"id": "x", "timout": 3, "executor": {"kind": "echo"}})]))
    new = apply_batch(c, EditBatch(edits=[AddTask(task={"id": "x", "after": ["t2"], "executor": {"kind": "echo"}})]))
    assert [e.source for e in new.predecessors("x")] == ["t2"]


def test_the_orchestrator_reads_a_timeout_in_one_place() -> None:
    task = Constellation.from_plan(PLAN).tasks["t0"]
    deadlines = Deadlines()
    assert deadlines.arm("r/t0/1", task, now=100.0) == 5.0
    from paperlab.galaxy.orchestrator.runstate import Run

    run = Run("r", Constellation.from_plan(PLAN))
    run.running["r/t0/1"] = ("t0", "d")
    assert deadlines.expired(run, 104.9) == []
    assert deadlines.expired(run, 105.1) == [("r/t0/1", "t0", "d", 5.0)]
    src = (Path(__file__).resolve().parents[2] / "src" / "paperlab" / "galaxy")
    reads = [p.relative_to(src).as_posix() for p in src.rglob("*.py")
             if ".timeout" in p.read_text().replace("msg.timeout", "").replace("self.timeout", "")
             and p.parent.name in ("orchestrator", "control", "planning", "dashboard")]
    assert reads == ["orchestrator/failures.py"], reads
