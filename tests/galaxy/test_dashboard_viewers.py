"""Dashboard viewers over a real /ui/ws socket: what they are sent, that one who leaves while
nothing changes is forgotten (it used to stay registered until the next change), that an
edit is drawn, and that a viewer who stops reading holds one frame, not the run."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from paperlab.galaxy.control.runtime import start_orchestrator
from paperlab.galaxy.device.local import spawn_device
from paperlab.galaxy.plan.constellation import Constellation, ConstellationState
from paperlab.galaxy.plan.edits import parse_batch

SECRET = "admin"


def test_viewers_share_frames_and_one_that_leaves_quietly_is_forgotten(tmp_path: Path, tscale: float) -> None:
    # No device: the run stays pending, so after the first frame nothing changes at all.
    plan = Constellation.from_plan({"tasks": [{"id": "a", "executor": {"kind": "echo"}},
                                              {"id": "b", "executor": {"kind": "echo"}, "after": ["a"]}]})

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, ui=True) as g:
            rid = g.orch.submit(plan, "quiet")
            url = f"ws://127.0.0.1:{g.server.port}/ui/ws"
            hdr = {"Authorization": f"Bearer {SECRET}"}
            async with connect(url, additional_headers=hdr) as v1, connect(url, additional_headers=hdr) as v2:
                first = []
                for ws in (v1, v2):
                    assert json.loads(await ws.recv()) == {"role": "admin"}
                    first.append(await asyncio.wait_for(ws.recv(), 10 * tscale))
                frame = json.loads(first[0])
                assert 'data-task="b"' in frame["dag"] and frame["tasks"]["b"][0] == "pending"
                assert f'data-run="{rid}"' in frame["metrics"]
                assert len(g.ui._clients) == 2
            for _ in range(int(200 * tscale)):  # both left; no frame is due to tell us
                if not g.ui._clients:
                    break
                await asyncio.sleep(0.05)
            assert not g.ui._clients, "a viewer that left is still registered"

    asyncio.run(main())


def _merge(page: dict[str, Any], frame: dict[str, Any]) -> None:
    """Fold a frame into a page state as the page's script does: panels replace, a new
    SVG brings every task, otherwise only the tasks that changed."""
    if "dag" in frame:
        page["tasks"] = {}
    page.update({k: v for k, v in frame.items() if k != "tasks"})
    page.setdefault("tasks", {}).update(frame.get("tasks", {}))


@pytest.mark.slow
def test_an_edit_is_drawn_and_logged(tmp_path: Path, tscale: float) -> None:
    plan = Constellation.from_plan({"tasks": [{"id": "a", "executor": {"kind": "echo"}}]})

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, ui=True) as g:
            rid = g.orch.submit(plan, "edited")  # no device: "a" stays pending, editable
            url = f"ws://127.0.0.1:{g.server.port}/ui/ws"
            async with connect(url, additional_headers={"Authorization": f"Bearer {SECRET}"}) as ws:
                await ws.recv()
                page: dict[str, Any] = {}
                _merge(page, json.loads(await asyncio.wait_for(ws.recv(), 10 * tscale)))
                assert 'data-task="late"' not in page["dag"]
                ok, why = g.orch.apply_edits(rid, parse_batch(
                    {"reason": "one more", "edits": [{"op": "add_task", "after": ["a"],
                                                      "task": {"id": "late", "executor": {"kind": "echo"}}}]}))
                assert ok, why
                while 'data-task="late"' not in page["dag"]:
                    _merge(page, json.loads(await asyncio.wait_for(ws.recv(), 10 * tscale)))
                assert page["tasks"]["late"][0] == "pending" and page["tasks"]["a"][0] == "pending"
                assert "edit accepted: one more" in page["events"]
                # the edge a -> late is drawn: two columns
                assert 'x="162"' in page["dag"]

    asyncio.run(main())


@pytest.mark.slow
def test_a_stalled_viewer_costs_one_frame_and_catches_up_with_the_whole_page(
        tmp_path: Path, tscale: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """A viewer that stops reading (its socket's reading paused, a small receive buffer)
    while 1200 tasks run on 2 real device processes: the server keeps at most one unsent
    frame for it plus what is in flight (its write buffer stays bounded), another viewer keeps
    getting frames all along, the run completes, and once the stalled viewer reads again it
    catches up with the whole page, consistent with the final state."""
    tasks = [{"id": f"t{i}", "executor": {"kind": "sleep", "args": {"seconds": 0.01}},
              "after": [f"t{i - 40}"] if i >= 40 else []} for i in range(1200)]
    plan = Constellation.from_plan({"name": "stall", "tasks": tasks})
    # The renderer at the orchestrator's priority: this test is about slots and buffers, and at
    # a low priority on a loaded machine (measured at nice +10) it drew too few frames during the
    # run to skip any.
    monkeypatch.setenv("GALAXY_RENDER_NICE", "0")

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, ui=True) as g:
            g.ui.interval = 0.05  # 20 frames/s: many frames while the run lasts
            g.ui.sndbuf = 32 * 1024
            devs = [spawn_device(tmp_path / "dev", f"d{i}", g.url, SECRET, [], max_concurrency=20)
                    for i in range(2)]
            try:
                url = f"ws://127.0.0.1:{g.server.port}/ui/ws"
                hdr = {"Authorization": f"Bearer {SECRET}"}
                # A small receive buffer (and segments to match, so that the window reopens
                # at once when it reads again): the server's sends block soon.
                sock = socket.socket()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
                sock.connect(("127.0.0.1", g.server.port))
                async with connect(url, additional_headers=hdr, max_size=None) as healthy, \
                        connect(url, sock=sock, additional_headers=hdr, max_size=None, max_queue=1) as stalled:
                    for ws in (healthy, stalled):
                        await ws.recv()
                    stalled.transport.pause_reading()
                    # The renderer process is up (its first page reached the healthy viewer)
                    # before the run starts: a cold interpreter's start-up must not eat the run.
                    page: dict[str, Any] = {}
                    _merge(page, json.loads(await asyncio.wait_for(healthy.recv(), 30 * tscale)))
                    while sum(d.online for d in g.orch.devices.values()) < 2:
                        await asyncio.sleep(0.05)
                    rid = g.orch.submit(plan, "stall")
                    viewer = next(v for v in g.ui._clients
                                  if v.conn.remote_address[1] == sock.getsockname()[1])
                    frames, buffered = 0, []
                    done = asyncio.ensure_future(g.orch.wait(rid, 120 * tscale))
                    while not done.done() or frames < 3:
                        _merge(page, json.loads(await asyncio.wait_for(healthy.recv(), 10 * tscale)))
                        frames += 1
                        buffered.append(viewer.conn.transport.get_write_buffer_size())
                    assert done.result() is ConstellationState.COMPLETED
                    assert frames >= 5, "the healthy viewer stopped getting frames"
                    assert viewer.dropped >= 3, "the stalled viewer was not skipped"
                    # bounded: what the server holds for it is at most about one whole page
                    # (the frame in flight), however many frames went by
                    page_bytes = len(json.dumps(page))
                    assert max(buffered) <= page_bytes + 64 * 1024, (max(buffered), page_bytes)
                    # until the healthy page shows every task completed (the last layer's 40
                    # tasks finish in any order, so t1199 alone is not the end)
                    while (len(page.get("tasks", {})) < 1200
                           or any(v[0] != "completed" for v in page["tasks"].values())):
                        _merge(page, json.loads(await asyncio.wait_for(healthy.recv(), 10 * tscale)))
                    stalled.transport.resume_reading()
                    late: dict[str, Any] = {}
                    while 'data-state="completed"' not in late.get("metrics", ""):
                        _merge(late, json.loads(await asyncio.wait_for(stalled.recv(), 20 * tscale)))
                    assert late["tasks"] == page["tasks"] and len(late["tasks"]) == 1200
                    assert {v[0] for v in late["tasks"].values()} == {"completed"}
            finally:
                await asyncio.gather(*(d.astop() for d in devs))

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="scheduling policies are read on Linux only")
@pytest.mark.parametrize(("nice", "policy", "step"), [(None, "SCHED_OTHER", 19), ("5", "SCHED_OTHER", 5),
                                                      ("idle", "SCHED_IDLE", 0)])
def test_the_renderer_runs_below_the_orchestrator_as_told(
        tmp_path: Path, tscale: float, monkeypatch: pytest.MonkeyPatch, nice: str | None, policy: str,
        step: int) -> None:
    """The live renderer process, started for a real viewer: nice +19 by default, another nice
    value or SCHED_IDLE (a core only when nothing else wants one) as GALAXY_RENDER_NICE says."""
    if nice is None:
        monkeypatch.delenv("GALAXY_RENDER_NICE", raising=False)
    else:
        monkeypatch.setenv("GALAXY_RENDER_NICE", nice)
    plan = Constellation.from_plan({"tasks": [{"id": "a", "executor": {"kind": "echo"}}]})

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, ui=True) as g:
            g.orch.submit(plan, "watched")
            url = f"ws://127.0.0.1:{g.server.port}/ui/ws"
            async with connect(url, additional_headers={"Authorization": f"Bearer {SECRET}"}) as ws:
                await ws.recv()
                await asyncio.wait_for(ws.recv(), 10 * tscale)  # a frame: the renderer is up
                proc = g.ui._proc
                assert proc is not None and proc.returncode is None
                assert os.sched_getscheduler(proc.pid) == getattr(os, policy)
                if step:
                    assert os.getpriority(os.PRIO_PROCESS, proc.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + step)

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
@pytest.mark.parametrize(("value", "done"), [(None, "nice +19"), ("+3", "nice +3"), ("idle", "SCHED_IDLE"),
                                             ("not a number", "nice +19")])
def test_a_bad_nice_value_does_not_stop_the_renderer(value: str | None, done: str, tscale: float) -> None:
    """In a child process (the call changes the caller's own scheduling)."""
    import subprocess
    import sys

    env = {} if value is None else {"GALAXY_RENDER_NICE": value}
    code = ("import json, sys; from paperlab.galaxy.dashboard.render import lower_priority; "
            "print(lower_priority(json.loads(sys.argv[1])))")
    import paperlab

    src = str(Path(paperlab.__file__).resolve().parents[1])  # the paperlab under test
    out = subprocess.run([sys.executable, "-c", code, json.dumps(env)], capture_output=True, text=True,
                         check=True, timeout=60 * tscale, env={**os.environ, "PYTHONPATH": src})
    assert out.stdout.strip() == done


def test_ticks_carry_what_the_renderer_lacks_and_cost_nothing_per_event_unwatched(tmp_path: Path) -> None:
    """The scheduler's side of the dashboard, with the real renderer's page state: a run new
    to the renderer is sent only its tasks that are not pending (the renderer draws the others
    as pending, and its frame still brings every task); then only the tasks that changed; a run
    shown again after nobody watched gets every state (one may have gone back to pending
    unseen); and while nobody watches, no listener runs and the run collects nothing."""
    import sqlite3

    from paperlab.galaxy.dashboard.relay import Dashboard
    from paperlab.galaxy.dashboard.render import PageState
    from paperlab.galaxy.orchestrator.events import Dispatched, Refused

    plan = Constellation.from_plan({"tasks": [{"id": "a", "executor": {"kind": "echo"}},
                                              {"id": "b", "executor": {"kind": "echo"}},
                                              {"id": "c", "executor": {"kind": "echo"}, "after": ["a"]}]})

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET) as g:
            orch, dash = g.orch, Dashboard(g.orch)
            page = PageState(sqlite3.connect(f"file:{tmp_path / 'j.sqlite'}?mode=ro", uri=True))
            rid = orch.submit(plan, "r")
            run = orch.runs[rid]
            orch.book.record(run, Dispatched(task="a", attempt="r/a/1", device="d"))

            def tick() -> dict[str, str]:
                """One tick through the renderer's page state; the statuses it carried."""
                msg = json.loads(dash._tick())
                page.tick(msg)
                return {tid: v[0] for tid, v in msg["states"].items()}

            assert tick() == {"a": "running"}  # new to the renderer
            assert page.tasks["b"][0] == "pending" and page.tasks["a"][0] == "running"
            assert 'data-task="c"' in page.panels["dag"] and set(page.tasks) == {"a", "b", "c"}
            orch.book.record(run, Refused(task="a", attempt="r/a/1", device="d", reason="at capacity"))
            assert tick() == {"a": "pending"}  # only what changed
            assert tick() == {}
            orch.book.record(run, Dispatched(task="a", attempt="r/a/2", device="d"))
            assert tick() == {"a": "running"}
            dash._show(None)  # the last viewer left
            assert run.changed is None and not orch.listeners
            orch.book.record(run, Refused(task="a", attempt="r/a/2", device="d", reason="at capacity"))
            # A viewer came back: every state, "a" back to pending among them.
            dash.busy_changes = 2  # (a busy scheduler: more than 2 changed tasks in a tick)
            assert tick() == {"a": "pending", "b": "pending", "c": "pending"}
            assert page.tasks["a"][0] == "pending"
            assert dash.pause() == dash.busy_interval == 1.0  # frames back off while it is busy
            assert tick() == {} and dash.pause() == dash.interval == 0.25

    asyncio.run(main())
