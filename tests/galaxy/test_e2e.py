"""End-to-end fault tests with REAL processes on 127.0.0.1: an orchestrator (`paperlab galaxy
run`) and device agents (`paperlab galaxy device`), killed with SIGKILL where the test says so.
Every wait is scaled by PAPERLAB_TEST_TIMEOUT_SCALE (the `tscale` fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def write_plan(path: Path, tasks: list[dict], name: str = "plan") -> Path:
    path.write_text(yaml.safe_dump({"name": name, "tasks": tasks}))
    return path


def sleep(tid: str, seconds: float, **kw: object) -> dict:
    return {"id": tid, "executor": {"kind": "sleep", "args": {"seconds": seconds}}, **kw}


def by_kind(events: list[dict], kind: str, task: str | None = None) -> list[dict]:
    return [e for e in events if e["kind"] == kind and (task is None or e["data"].get("task") == task)]


def test_fan_out_fan_in_makespan_below_sum(galaxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fan = [sleep(f"m{i}", 1.0, after=["start"]) for i in range(6)]
    plan = write_plan(tmp_path / "fan.yaml", [
        {"id": "start", "executor": {"kind": "echo", "args": {"value": 1}}}, *fan,
        {"id": "join", "executor": {"kind": "echo"}, "after": [f"m{i}" for i in range(6)],
         "inputs": {"first": "m0.slept"}}])
    galaxy.start_orchestrator(str(plan), "--run-id", "fan")
    for name, caps in (("d1", ["cpu"]), ("d2", ["cpu"]), ("d3", ["gpu"])):
        galaxy.device(name, caps, max_concurrency=2)
    assert galaxy.wait_orchestrator(60) == 0, galaxy.orch_output()
    events = galaxy.events("fan")
    assert by_kind(events, "finished")[0]["data"]["state"] == "completed"
    spans = {}
    for i in range(6):
        start = by_kind(events, "dispatched", f"m{i}")[0]["ts"]
        end = by_kind(events, "result", f"m{i}")[0]["ts"]
        spans[i] = (start, end)
    makespan = max(e for _, e in spans.values()) - min(s for s, _ in spans.values())
    total = sum(e - s for s, e in spans.values())
    assert makespan < 0.6 * total, (makespan, total)
    assert len({by_kind(events, "dispatched", f"m{i}")[0]["data"]["device"] for i in range(6)}) == 3
    join = by_kind(events, "result", "join")[0]["data"]["result"]
    assert join["inputs"] == {"first": 1.0}  # the upstream result, passed by reference


def test_device_kill_reassign_and_reconnect(galaxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = write_plan(tmp_path / "p.yaml", [
        sleep("long", 3.0, max_retries=0),
        sleep("pinned", 0.1, after=["long"], device="a"),  # only completes if `a` comes back
    ])
    galaxy.start_orchestrator(str(plan), "--run-id", "kill", device_timeout=1.5)
    a = galaxy.device("a", [])
    galaxy.wait_event("kill", lambda e: e["kind"] == "dispatched" and e["data"]["device"] == "a",
                      30, "the long task to start on a")
    galaxy.device("b", [])
    galaxy.wait_event("kill", lambda e: e["kind"] == "device" and e["data"]["device"] == "b", 30,
                      "device b to register")
    a.kill()  # SIGKILL mid-task
    lost = galaxy.wait_event("kill", lambda e: e["kind"] == "lost", 30, "device a to be declared lost")
    assert lost["data"]["device"] == "a" and lost["data"]["task"] == "long"
    galaxy.wait_event("kill", lambda e: e["kind"] == "dispatched" and e["data"]["device"] == "b",
                      30, "reassignment to b")
    galaxy.device("a", [])  # the restarted device reconnects under the same id
    assert galaxy.wait_orchestrator(60) == 0, galaxy.orch_output()
    events = galaxy.events("kill")
    onlines = [e for e in by_kind(events, "device") if e["data"]["device"] == "a"
               and e["data"]["what"] == "online"]
    assert len(onlines) == 2
    assert by_kind(events, "result", "long")[0]["data"]["device"] == "b"
    assert by_kind(events, "result", "pinned")[0]["data"]["device"] == "a"
    assert len(by_kind(events, "result", "long")) == 1


def test_orchestrator_kill9_then_resume_applies_each_result_once(galaxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    layers = [[f"l{i}_{j}" for j in range(4)] for i in range(4)]
    tasks = []
    for i, layer in enumerate(layers):
        for tid in layer:
            tasks.append(sleep(tid, 0.4, **({"after": layers[i - 1][:2]} if i else {})))
    plan = write_plan(tmp_path / "p.yaml", tasks)
    galaxy.start_orchestrator(str(plan), "--run-id", "crash")
    for name in ("d1", "d2"):
        galaxy.device(name, [], max_concurrency=2)
    # Kill once some results are in and others are still running.
    galaxy.wait_event("crash", lambda e: e["kind"] == "result" and e["data"]["task"].startswith("l1"),
                      60, "the second layer to produce a result")
    galaxy.orch.kill()
    galaxy.orch.wait()
    before = galaxy.events("crash")
    done_before = {e["data"]["task"] for e in by_kind(before, "result") if e["data"]["status"] == "completed"}
    assert done_before and len(done_before) < 16
    galaxy.start_orchestrator("--resume", "crash")
    assert galaxy.wait_orchestrator(90) == 0, galaxy.orch_output()
    events = galaxy.events("crash")
    assert by_kind(events, "finished")[0]["data"]["state"] == "completed"
    assert by_kind(events, "resumed")
    for t in tasks:
        completed = [e for e in by_kind(events, "result", t["id"]) if e["data"]["status"] == "completed"]
        assert len(completed) == 1, (t["id"], completed)  # applied exactly once
    for tid in done_before:  # finished before the crash: never dispatched again
        assert len(by_kind(events, "dispatched", tid)) == 1


def test_unplaceable_task_and_allow_list_refusals(galaxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "must-survive"
    marker.write_text("x")
    plan = write_plan(tmp_path / "p.yaml", [
        {"id": "ok", "executor": {"kind": "shell", "args": {"argv": ["echo", "hello"]}}},
        {"id": "rm", "max_retries": 0,
         "executor": {"kind": "shell", "args": {"argv": ["rm", "-f", str(marker)]}}},
        {"id": "py", "max_retries": 0,
         "executor": {"kind": "python", "args": {"function": "os_system"}}},
        {"id": "quantum", "capabilities": ["quantum"], "executor": {"kind": "echo"}},
    ])
    galaxy.start_orchestrator(str(plan), "--run-id", "refuse", unplaceable_timeout=1.5)
    galaxy.device("d1", ["cpu"], shell_allow=["echo"])
    assert galaxy.wait_orchestrator(60) == 1, galaxy.orch_output()  # not completed
    events = galaxy.events("refuse")
    assert by_kind(events, "finished")[0]["data"]["state"] == "partially_failed"
    assert by_kind(events, "result", "ok")[0]["data"]["result"]["stdout"] == "hello\n"
    rm = by_kind(events, "result", "rm")[0]["data"]
    assert rm["status"] == "failed" and "not on device d1's allow-list" in rm["error"]
    assert marker.exists()
    assert "not allowed on device d1" in by_kind(events, "result", "py")[0]["data"]["error"]
    reason = by_kind(events, "task_failed", "quantum")[0]["data"]["reason"]
    assert "no device can run it" in reason and "quantum" in reason
    assert "quantum" in galaxy.orch_output() and "partially_failed" in galaxy.orch_output()


def test_wrong_token_is_refused(galaxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = write_plan(tmp_path / "p.yaml", [{"id": "x", "executor": {"kind": "echo"}}])
    galaxy.start_orchestrator(str(plan), "--run-id", "tok")
    bad = galaxy.device("intruder", [], token="not-the-token")
    assert bad.proc.wait(30 * galaxy.tscale) == 2
    assert "refused the token" in bad.log()
    galaxy.device("good", [])
    assert galaxy.wait_orchestrator(60) == 0
    devices = {e["data"]["device"] for e in by_kind(galaxy.events("tok"), "device")}
    assert devices == {"good"}


def test_stalled_device_resumes_and_every_task_completes_once(galaxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGSTOP a device past the heartbeat timeout, SIGCONT it: its attempts were declared lost,
    but it still runs them. They are adopted back (or cancelled when re-run elsewhere), capacity
    refusals use no retry, and every task completes exactly once with no retries to spare."""
    import os
    import signal
    import time

    plan = write_plan(tmp_path / "p.yaml", [sleep(f"s{i}", 2.0, max_retries=0) for i in range(4)])
    galaxy.start_orchestrator(str(plan), "--run-id", "stall", device_timeout=1.0)
    a = galaxy.device("a", [], max_concurrency=2, extra_args=["--log-level", "DEBUG"])
    galaxy.wait_event("stall", lambda e: e["kind"] == "dispatched" and e["data"]["task"] == "s1"
                      and e["data"]["device"] == "a", 30, "two tasks to start on a")
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        galaxy.wait_event("stall", lambda e: e["kind"] == "lost", 30, "a to be declared lost")
        time.sleep(0.3 * galaxy.tscale)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    assert galaxy.wait_orchestrator(60) == 0, galaxy.orch_output()
    events = galaxy.events("stall")
    assert by_kind(events, "finished")[0]["data"]["state"] == "completed"
    for i in range(4):
        results = by_kind(events, "result", f"s{i}")
        assert [r["data"]["status"] for r in results] == ["completed"], results  # exactly once
    assert by_kind(events, "adopted"), "the stalled attempts should be adopted back"
    # The device logs what it does, with levels: connections at INFO, each task at DEBUG.
    assert " INFO " in a.log() and " DEBUG " in a.log() and "completed stall/s0/1" in a.log()
