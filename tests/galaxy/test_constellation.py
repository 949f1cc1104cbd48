"""The constellation model: loading, validation, readiness semantics, state and metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from paperlab.galaxy.errors import PlanError
from paperlab.galaxy.plan.constellation import (
    Constellation,
    ConstellationState,
    TaskStatus,
    load_constellation,
    resolve_inputs,
)


def plan(**extra: object) -> dict:
    return {
        "name": "p",
        "tasks": [
            {"id": "a", "executor": {"kind": "echo", "args": {"value": {"n": 5, "xs": [7, 8]}}}},
            {"id": "b", "executor": {"kind": "echo"}, "after": ["a"], "inputs": {"x": "a.xs.1"}},
            {"id": "c", "executor": {"kind": "echo"}},
            {"id": "d", "executor": {"kind": "echo"}, "after": ["b"]},
        ],
        "edges": [
            {"source": "a", "target": "c", "kind": "conditional", "condition": "result.n > 3"},
            {"source": "c", "target": "d", "kind": "completion_only"},
        ],
        **extra,
    }


def test_roundtrip_yaml_and_json(tmp_path: Path) -> None:
    c = Constellation.from_plan(plan())
    for name in ("p.yaml", "p.json"):
        c.save(tmp_path / name)
        again = load_constellation(tmp_path / name)
        assert again.plan_dict() == c.plan_dict()
    assert {(e.source, e.target) for e in c.edges} == {("a", "b"), ("b", "d"), ("a", "c"), ("c", "d")}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p["edges"].append({"source": "d", "target": "a"}), "cycle"),
        (lambda p: p["edges"].append({"source": "a", "target": "zz"}), "unknown task"),
        (lambda p: p["tasks"][2].update(inputs={"y": "b"}), "not a direct upstream"),
        (lambda p: p["tasks"].append({"id": "a", "executor": {"kind": "echo"}}), "duplicate"),
        (lambda p: p["tasks"][0].update(timeout=-1), "timeout"),
        (lambda p: p["edges"][0].update(condition="__import__('os')"), "edge a->c: condition"),
        (lambda p: p["tasks"][0].update(bogus=1), "bogus"),
    ],
)
def test_invalid_plans_name_the_problem(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    p = plan()
    mutate(p)
    with pytest.raises(PlanError, match=message):
        Constellation.from_plan(p)


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="does not exist"):
        load_constellation(tmp_path / "nope.yaml")


def finish(c: Constellation, tid: str, status: TaskStatus, result: object = None) -> None:
    c.tasks[tid].status = status
    c.tasks[tid].result = result


def test_readiness_edge_kinds_and_inputs() -> None:
    c = Constellation.from_plan(plan())
    assert c.readiness("a")[0] == "ready"
    assert c.readiness("b")[0] == "wait"
    finish(c, "a", TaskStatus.COMPLETED, {"n": 5, "xs": [7, 8]})
    assert c.readiness("b")[0] == "ready"
    assert resolve_inputs(c, c.tasks["b"]) == {"x": 8}
    assert c.readiness("c")[0] == "ready"  # condition n > 3 holds
    c.tasks["a"].result = {"n": 1}
    assert c.readiness("c")[0] == "skip_condition"
    finish(c, "a", TaskStatus.FAILED)
    assert c.readiness("b")[0] == "skip"  # success_only after a failure
    finish(c, "b", TaskStatus.COMPLETED)
    finish(c, "c", TaskStatus.FAILED)
    assert c.readiness("d")[0] == "ready"  # completion_only runs after a failure too


def test_states() -> None:
    c = Constellation.from_plan(plan())
    assert c.state() is ConstellationState.RUNNING
    for t in c.tasks.values():
        t.status = TaskStatus.COMPLETED
    assert c.state() is ConstellationState.COMPLETED
    c.tasks["c"].status = TaskStatus.SKIPPED
    c.tasks["c"].skipped_by_condition = True
    assert c.state() is ConstellationState.COMPLETED
    c.tasks["d"].status = TaskStatus.FAILED
    assert c.state() is ConstellationState.PARTIALLY_FAILED
    for t in c.tasks.values():
        t.status = TaskStatus.FAILED
    assert c.state() is ConstellationState.FAILED
    assert c.state(cancelled=True) is ConstellationState.CANCELLED


def test_metrics_fan_out_fan_in() -> None:
    tasks = [{"id": "s", "executor": {"kind": "echo"}}]
    tasks += [{"id": f"m{i}", "executor": {"kind": "echo"}, "after": ["s"]} for i in range(4)]
    tasks += [{"id": "e", "executor": {"kind": "echo"}, "after": [f"m{i}" for i in range(4)]}]
    c = Constellation.from_plan({"tasks": tasks})
    m = c.metrics()
    assert m["critical_path"] == 3 and m["total_work"] == 6 and m["parallel_width"] == 2
    m = c.metrics({"s": 1, "e": 1, "m0": 4, "m1": 1, "m2": 1, "m3": 1})
    assert m["critical_path"] == 6 and m["total_work"] == 9
