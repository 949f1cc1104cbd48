"""Edit batches: all-or-nothing, and random edit sequences never break an invariant."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paperlab.galaxy.errors import EditError
from paperlab.galaxy.plan.constellation import Constellation, TaskStatus
from paperlab.galaxy.plan.edits import (
    AddDependency,
    AddTask,
    EditBatch,
    RemoveDependency,
    RemoveTask,
    UpdateTask,
    apply_batch,
    check_invariants,
    parse_batch,
)

IDS = [f"t{i}" for i in range(8)]


def chain() -> Constellation:
    return Constellation.from_plan({"tasks": [
        {"id": "a", "executor": {"kind": "echo"}},
        {"id": "b", "executor": {"kind": "echo"}, "after": ["a"]},
        {"id": "c", "executor": {"kind": "echo"}, "after": ["b"]},
    ]})


def test_cycle_rejected_dag_unchanged() -> None:
    c = chain()
    before = c.model_dump()
    batch = EditBatch(edits=[AddTask(task={"id": "x", "executor": {"kind": "echo"}}),
                             AddDependency(source="c", target="a")])
    with pytest.raises(EditError, match="cycle"):
        apply_batch(c, batch)
    assert c.model_dump() == before  # the first edit (add x) was rolled back too


def test_started_tasks_are_frozen() -> None:
    c = chain()
    c.tasks["a"].status = TaskStatus.RUNNING
    c.tasks["a"].attempts = 1
    c.tasks["a"].assigned_device = "d1"
    for edit in (UpdateTask(task_id="a", changes={"device": "d2"}), RemoveTask(task_id="a"),
                 AddDependency(source="c", target="a")):
        with pytest.raises(EditError, match="only pending|started"):
            apply_batch(c, EditBatch(edits=[edit]))
    new = apply_batch(c, EditBatch(edits=[UpdateTask(task_id="c", changes={"priority": 3}),
                                          RemoveDependency(source="b", target="c")]))
    assert new.tasks["c"].priority == 3 and new.tasks["a"].assigned_device == "d1"


def test_parse_batch_reports_field() -> None:
    with pytest.raises(EditError, match="edits"):
        parse_batch({"edits": [{"op": "explode"}]})
    assert parse_batch({"edits": [{"op": "remove_task", "task_id": "a"}]}).edits[0].task_id == "a"


edit_st = st.one_of(
    st.builds(lambda i, a: AddTask(task={"id": i, "executor": {"kind": "echo"}}, after=a),
              st.sampled_from(IDS), st.lists(st.sampled_from(IDS), max_size=2, unique=True)),
    st.builds(lambda i: RemoveTask(task_id=i), st.sampled_from(IDS)),
    st.builds(lambda i, p: UpdateTask(task_id=i, changes={"priority": p}),
              st.sampled_from(IDS), st.integers(-3, 3)),
    st.builds(lambda s, t: AddDependency(source=s, target=t), st.sampled_from(IDS), st.sampled_from(IDS)),
    st.builds(lambda s, t: RemoveDependency(source=s, target=t), st.sampled_from(IDS), st.sampled_from(IDS)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(edit_st, min_size=1, max_size=4), min_size=1, max_size=12),
       started=st.sets(st.sampled_from(IDS), max_size=3))
def test_random_edit_sequences_keep_invariants(batches, started) -> None:  # type: ignore[no-untyped-def]
    c = Constellation.from_plan({"tasks": [{"id": "t0", "executor": {"kind": "echo"}}]})
    for edits in batches:
        snapshot = c.model_dump()
        try:
            new = apply_batch(c, EditBatch(edits=edits))
        except EditError:
            assert c.model_dump() == snapshot  # rejected: nothing changed
            continue
        check_invariants(c, new)
        new.topological_order()  # acyclic
        assert all(e.source in new.tasks and e.target in new.tasks for e in new.edges)
        c = new
        # Start some tasks between batches; they must then never change.
        for tid in started & set(c.tasks):
            t = c.tasks[tid]
            if t.status is TaskStatus.PENDING:
                t.status, t.attempts, t.assigned_device = TaskStatus.RUNNING, 1, "dev"


def _shape(c: Constellation) -> tuple[dict, set]:
    """The plan as a comparable value: tasks' plan fields, and edges as a set."""
    return ({t: c.tasks[t].plan_dict() for t in sorted(c.tasks)},
            {(e.source, e.target, e.kind.value, e.condition) for e in c.edges})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(edit_st, min_size=1, max_size=4), min_size=1, max_size=8))
def test_the_inverse_of_an_accepted_batch_restores_the_dag(batches) -> None:  # type: ignore[no-untyped-def]
    from paperlab.galaxy.plan.edits import inverse_batch

    c = Constellation.from_plan({"tasks": [{"id": "t0", "executor": {"kind": "echo"}}]})
    for edits in batches:
        try:
            new = apply_batch(c, EditBatch(edits=edits))
        except EditError:
            continue
        inverse = inverse_batch(c, new)
        if inverse is None:
            assert _shape(new) == _shape(c)
        else:
            assert _shape(apply_batch(new, inverse)) == _shape(c)  # undo
            redo = inverse_batch(new, apply_batch(new, inverse))
            assert redo is not None and _shape(apply_batch(apply_batch(new, inverse), redo)) == _shape(new)
        c = new
