"""The orchestrator with its real WebSocket server on 127.0.0.1, in one event loop.

Devices are real DeviceAgents, or a raw websockets client playing a misbehaving device (the far
side of the protocol boundary) to check that results are accepted once, from the right device.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from paperlab.galaxy.control.server import OrchestratorServer
from paperlab.galaxy.device.agent import DeviceAgent
from paperlab.galaxy.device.executors import DeviceConfig
from paperlab.galaxy.orchestrator.config import OrchestratorConfig, RunSettings
from paperlab.galaxy.orchestrator.core import Orchestrator
from paperlab.galaxy.orchestrator.journal import Journal
from paperlab.galaxy.plan.constellation import Constellation, ConstellationState, TaskStatus
from paperlab.galaxy.plan.edits import AddDependency, AddTask, EditBatch
from paperlab.galaxy.protocol.aip import Register, TaskResult, encode

TOKEN = "tok"


def sleep_task(tid: str, seconds: float, **kw: Any) -> dict:
    return {"id": tid, "executor": {"kind": "sleep", "args": {"seconds": seconds, **kw.pop("args", {})}}, **kw}


async def with_galaxy(tmp: Path, tscale: float, body: Callable[..., Awaitable[None]],
                      devices: list[DeviceConfig], **cfg: Any) -> None:
    journal = Journal(tmp / "j.sqlite")
    server_kw = cfg.pop("server", {})
    orch = Orchestrator(journal, OrchestratorConfig(
        device_timeout=cfg.pop("device_timeout", 2.0) * tscale,
        unplaceable_timeout=cfg.pop("unplaceable_timeout", 2.0) * tscale,
        settings=RunSettings(backoff_base=0.05, backoff_max=0.2), **cfg))
    server = OrchestratorServer(orch, TOKEN, **server_kw)
    await server.start()
    agents = [DeviceAgent(d, server.url, TOKEN, seed=1) for d in devices]
    tasks = [asyncio.create_task(a.run()) for a in agents]
    try:
        await body(orch, server, agents)
    finally:
        for a in agents:
            a.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.close()
        journal.close()


async def wait_devices(orch: Orchestrator, n: int, tscale: float) -> None:
    for _ in range(int(200 * tscale)):
        if sum(d.online for d in orch.devices.values()) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("devices did not register")


def dev(name: str, caps: list[str], conc: int = 2, **kw: Any) -> DeviceConfig:
    return DeviceConfig(device_id=name, capabilities=caps, max_concurrency=conc, heartbeat_interval=0.2, **kw)


def test_dispatch_by_capability_caps_and_retries(tmp_path: Path, tscale: float) -> None:
    plan = Constellation.from_plan({"tasks": [
        *[sleep_task(f"w{i}", 0.2, capabilities=["gpu"]) for i in range(6)],
        sleep_task("flaky", 0.01, args={"fail": "boom"}, max_retries=2),
        sleep_task("only_cpu", 0.01, capabilities=["cpu"], priority=5),
    ]})
    peak: dict[str, int] = {}

    async def body(orch: Orchestrator, server: OrchestratorServer, agents: list[DeviceAgent]) -> None:
        await wait_devices(orch, 2, tscale)
        rid = orch.submit(plan)
        orch.listeners.append(lambda r, k, d: [peak.__setitem__(x.device_id, max(peak.get(x.device_id, 0), len(x.running)))
                                               for x in orch.devices.values()])
        state = await orch.wait(rid, 30 * tscale)
        c = orch.runs[rid].constellation
        assert state is ConstellationState.PARTIALLY_FAILED
        assert all(c.tasks[f"w{i}"].assigned_device == "g" for i in range(6))
        assert c.tasks["only_cpu"].assigned_device == "c"
        flaky = c.tasks["flaky"]
        assert flaky.status is TaskStatus.FAILED and flaky.attempts == 3 and "boom" in (flaky.error or "")
        attempts = [e["data"]["attempt"] for e in orch.journal.events(rid) if e["kind"] == "dispatched"
                    and e["data"]["task"] == "flaky"]
        assert len(set(attempts)) == 3  # each retry has its own attempt id

    await_run(tmp_path, tscale, body, [dev("g", ["gpu", "cpu"], conc=2), dev("c", ["cpu"], conc=1)])
    assert peak["g"] <= 2 and peak["c"] <= 1  # per-device caps held


def await_run(tmp: Path, tscale: float, body: Callable[..., Awaitable[None]],
              devices: list[DeviceConfig], **cfg: Any) -> None:
    asyncio.run(with_galaxy(tmp, tscale, body, devices, **cfg))


def test_global_cap(tmp_path: Path, tscale: float) -> None:
    plan = Constellation.from_plan({"tasks": [sleep_task(f"t{i}", 0.1) for i in range(8)]})
    seen: list[int] = []

    async def body(orch: Orchestrator, server: OrchestratorServer, agents: list[DeviceAgent]) -> None:
        await wait_devices(orch, 2, tscale)
        rid = orch.submit(plan)
        orch.listeners.append(lambda r, k, d: seen.append(len(orch.runs[rid].running_attempts())))
        assert await orch.wait(rid, 30 * tscale) is ConstellationState.COMPLETED

    await_run(tmp_path, tscale, body, [dev("a", [], 4), dev("b", [], 4)], global_cap=3)
    assert max(seen) == 3


def test_timeout_cancels_and_retries_then_fails(tmp_path: Path, tscale: float) -> None:
    plan = Constellation.from_plan({"tasks": [sleep_task("slow", 30, timeout=0.3 * tscale, max_retries=1)]})

    async def body(orch: Orchestrator, server: OrchestratorServer, agents: list[DeviceAgent]) -> None:
        await wait_devices(orch, 1, tscale)
        rid = orch.submit(plan)
        assert await orch.wait(rid, 30 * tscale) is ConstellationState.FAILED
        t = orch.runs[rid].constellation.tasks["slow"]
        assert t.attempts == 2 and "timed out" in (t.error or "")
        for _ in range(100):  # the device got CANCEL and stopped running it
            if not agents[0].running:
                break
            await asyncio.sleep(0.05)
        assert not agents[0].running

    await_run(tmp_path, tscale, body, [dev("a", [])])


def test_cancel_run_reaches_the_device(tmp_path: Path, tscale: float) -> None:
    plan = Constellation.from_plan({"tasks": [sleep_task("long", 30), sleep_task("after", 0.01, after=["long"])]})

    async def body(orch: Orchestrator, server: OrchestratorServer, agents: list[DeviceAgent]) -> None:
        await wait_devices(orch, 1, tscale)
        rid = orch.submit(plan)
        while not agents[0].running:
            await asyncio.sleep(0.02)
        orch.cancel_run(rid)
        assert await orch.wait(rid, 10 * tscale) is ConstellationState.CANCELLED
        for _ in range(100):
            if not agents[0].running:
                break
            await asyncio.sleep(0.05)
        assert not agents[0].running
        assert {t.status for t in orch.runs[rid].constellation.tasks.values()} == {TaskStatus.CANCELLED}

    await_run(tmp_path, tscale, body, [dev("a", [])])


def test_results_only_from_assigned_device_and_once(tmp_path: Path, tscale: float) -> None:
    plan = Constellation.from_plan({"tasks": [{"id": "x", "executor": {"kind": "echo"}}]})

    async def body(orch: Orchestrator, server: OrchestratorServer, agents: list[DeviceAgent]) -> None:
        hdr = {"Authorization": f"Bearer {TOKEN}"}
        async with connect(server.url, additional_headers=hdr) as good, \
                connect(server.url, additional_headers=hdr) as evil:
            await good.send(encode(Register(device_id="good")))
            await wait_devices(orch, 1, tscale)
            rid = orch.submit(plan)
            task = json.loads(await asyncio.wait_for(good.recv(), 10 * tscale))
            assert task["type"] == "TASK"
            await evil.send(encode(Register(device_id="evil")))
            forged = TaskResult(task_id="x", attempt_id=task["attempt_id"], status="completed", result="forged")
            await evil.send(encode(forged))
            real = forged.model_copy(update={"result": "real"})
            await asyncio.sleep(0.2)
            assert orch.runs[rid].constellation.tasks["x"].status is TaskStatus.RUNNING
            await good.send(encode(real))
            await good.send(encode(real.model_copy(update={"result": "again"})))
            assert await orch.wait(rid, 10 * tscale) is ConstellationState.COMPLETED
            await asyncio.sleep(0.2)
            assert orch.runs[rid].constellation.tasks["x"].result == "real"
            j = orch.journal
            assert j.count(rid, "result", "x") == 1
            assert j.count(rid, "dropped", "x") >= 1  # the forged one (the late duplicate may be after finish)

    await_run(tmp_path, tscale, body, [])


@pytest.mark.slow
def test_a_device_that_stops_reading_is_disconnected_not_buffered(tmp_path: Path, tscale: float,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A device that registers for 1024 tasks and then stops reading: the frames for it stop
    at the server's bound (1 MiB here) with one warning and a disconnect, instead of 12 MB of
    TASKs held in the orchestrator; its attempts are then lost and re-run elsewhere."""
    big = "x" * 300_000
    plan = Constellation.from_plan({"tasks": [{"id": f"t{i}", "executor": {"kind": "echo", "args": {"value": big}}}
                                              for i in range(40)]})

    async def body(orch: Orchestrator, server: OrchestratorServer, agents: list[DeviceAgent]) -> None:
        sock = socket.socket()  # a small receive window, so the kernel holds little for it
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", server.port))
        async with connect(server.url, sock=sock, additional_headers={"Authorization": f"Bearer {TOKEN}"},
                           max_queue=1, max_size=None) as slow:
            await slow.send(encode(Register(device_id="slow", max_concurrency=1024)))
            await wait_devices(orch, 1, tscale)
            slow.transport.pause_reading()
            with caplog.at_level(logging.WARNING, logger="paperlab.galaxy.control.server"):
                rid = orch.submit(plan)
                for _ in range(int(200 * tscale)):
                    if not orch.devices["slow"].online:
                        break
                    await asyncio.sleep(0.05)
            assert not orch.devices["slow"].online, "the device that stopped reading is still connected"
            assert "device slow is not reading: more than 1048576 bytes queued" in caplog.text
            slow.transport.resume_reading()  # so that it sees the server has gone (no close wait)
        good = DeviceAgent(dev("good", [], conc=2), server.url, TOKEN, seed=1)  # 2 x 300 KB a step: under the bound
        running = asyncio.create_task(good.run())
        try:
            assert await orch.wait(rid, 60 * tscale) is ConstellationState.COMPLETED
        finally:
            good.stop()
            await asyncio.gather(running, return_exceptions=True)

    await_run(tmp_path, tscale, body, [], device_timeout=1.0, server={"max_send_bytes": 1 << 20})


def test_bad_token_and_bad_frames(tmp_path: Path, tscale: float) -> None:
    async def body(orch: Orchestrator, server: OrchestratorServer, agents: list[DeviceAgent]) -> None:
        for hdr in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as info:
                async with connect(server.url, additional_headers=hdr):
                    pass
            assert info.value.response.status_code == 401
        async with connect(server.url, additional_headers={"Authorization": f"Bearer {TOKEN}"},
                           max_size=None) as ws:
            for frame in ("{{{", json.dumps({"type": "TASK_RESULT"}), "x" * (2 << 20), "[]"):
                await ws.send(frame)
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10 * tscale))
                assert reply["type"] == "ERROR", reply
            await ws.send(encode(Register(device_id="ok")))
            await wait_devices(orch, 1, tscale)  # still serving after the garbage

    await_run(tmp_path, tscale, body, [])


def test_live_edit_and_rejected_cycle(tmp_path: Path, tscale: float) -> None:
    plan = Constellation.from_plan({"tasks": [sleep_task("a", 0.3), sleep_task("b", 0.01, after=["a"])]})

    async def body(orch: Orchestrator, server: OrchestratorServer, agents: list[DeviceAgent]) -> None:
        await wait_devices(orch, 1, tscale)
        rid = orch.submit(plan)
        before = orch.runs[rid].constellation.plan_dict()
        ok, reason = orch.apply_edits(rid, EditBatch(edits=[AddDependency(source="b", target="a")]))
        assert not ok and "cycle" in reason
        assert orch.runs[rid].constellation.plan_dict() == before
        ok, _ = orch.apply_edits(rid, EditBatch(edits=[AddTask(
            task={"id": "c", "executor": {"kind": "echo", "args": {"value": 7}}}, after=["b"])]))
        assert ok
        assert await orch.wait(rid, 20 * tscale) is ConstellationState.COMPLETED
        assert orch.runs[rid].constellation.tasks["c"].result == 7

    await_run(tmp_path, tscale, body, [dev("a", [])])


def test_cancel_one_task_keeps_the_rest(tmp_path: Path, tscale: float) -> None:
    plan = Constellation.from_plan({"tasks": [sleep_task("long", 30), sleep_task("short", 0.05),
                                              sleep_task("after_long", 0.01, after=["long"])]})

    async def body(orch: Orchestrator, server: OrchestratorServer, agents: list[DeviceAgent]) -> None:
        await wait_devices(orch, 1, tscale)
        rid = orch.submit(plan)
        while not any(a.endswith("/long/1") for a in agents[0].running):
            await asyncio.sleep(0.02)
        orch.cancel_task(rid, "long")
        assert await orch.wait(rid, 10 * tscale) is ConstellationState.PARTIALLY_FAILED
        tasks = orch.runs[rid].constellation.tasks
        assert tasks["long"].status is TaskStatus.CANCELLED
        assert tasks["short"].status is TaskStatus.COMPLETED
        assert tasks["after_long"].status is TaskStatus.SKIPPED
        for _ in range(100):
            if not agents[0].running:
                break
            await asyncio.sleep(0.05)
        assert not agents[0].running  # CANCEL reached the device

    await_run(tmp_path, tscale, body, [dev("a", [], 2)])


def test_a_lost_device_that_speaks_again_comes_back(tmp_path: Path) -> None:
    import time

    from paperlab.galaxy.protocol.aip import Heartbeat

    async def main() -> None:
        journal = Journal(tmp_path / "j.sqlite")
        orch = Orchestrator(journal, OrchestratorConfig(device_timeout=1.0))
        orch.device_registered(Register(device_id="slow"), lambda m: None)
        orch.link.check(time.time() + 5)  # silent past the timeout: lost
        assert orch.devices["slow"].status() == "lost"
        orch.on_message("slow", Heartbeat())  # its connection was alive all along
        assert orch.devices["slow"].status() == "online"
        journal.close()

    asyncio.run(main())


def test_finished_runs_beyond_keep_finished_leave_memory_not_the_journal(tmp_path: Path, tscale: float) -> None:
    # A long-lived orchestrator used to keep every run it ever ran in memory.
    plan = Constellation.from_plan({"tasks": [sleep_task("a", 0.01), sleep_task("b", 0.01, after=["a"])]})

    async def body(orch: Orchestrator, server: OrchestratorServer, agents: list[DeviceAgent]) -> None:
        await wait_devices(orch, 1, tscale)
        rids = []
        for _ in range(5):
            rids.append(orch.submit(plan))
            assert await orch.wait(rids[-1], 30 * tscale) is ConstellationState.COMPLETED
        assert list(orch.runs) == rids[-2:]  # the newest two stay
        old = orch.get_run(rids[0])  # read back from the journal
        assert old.finished is ConstellationState.COMPLETED
        assert {t.status for t in old.constellation.tasks.values()} == {TaskStatus.COMPLETED}
        assert await orch.wait(rids[0], 1) is ConstellationState.COMPLETED

    await_run(tmp_path, tscale, body, [dev("a", [], 2)], keep_finished=2)
