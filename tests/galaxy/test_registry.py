"""A device is only what its registration says; revoking one device leaves the rest alone.

The orchestrator and its server run in this process with a registry file; the honest devices
are real DeviceAgents, the hostile one a raw websockets client (the far side of the protocol).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from paperlab.galaxy.control.runtime import Started, start_orchestrator
from paperlab.galaxy.device.agent import DeviceAgent
from paperlab.galaxy.device.executors import DeviceConfig
from paperlab.galaxy.errors import RegistryError
from paperlab.galaxy.orchestrator.config import OrchestratorConfig
from paperlab.galaxy.plan.constellation import Constellation, ConstellationState
from paperlab.galaxy.protocol.aip import Register, TaskResult, encode
from paperlab.galaxy.protocol.auth import DEVICE_HEADER, device_token, viewer_token
from paperlab.galaxy.protocol.registry import DeviceRegistry

SECRET = "admin-secret-xyz"


def headers(token: str, device: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", DEVICE_HEADER: device}


async def frames(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Every message the rogue receives for ``seconds`` (BATCH frames unpacked)."""
    out: list[dict[str, Any]] = []
    end = asyncio.get_running_loop().time() + seconds
    while (left := end - asyncio.get_running_loop().time()) > 0:
        try:
            msg = json.loads(await asyncio.wait_for(ws.recv(), left))
        except (asyncio.TimeoutError, ConnectionClosed):
            break
        out.extend(msg["messages"] if msg["type"] == "BATCH" else [msg])
    return out


async def online(g: Started, names: set[str], tscale: float) -> None:
    for _ in range(int(200 * tscale)):
        if names <= {d.device_id for d in g.orch.devices.values() if d.online}:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"devices {names} did not register")


def test_a_device_token_cannot_claim_more_than_its_registration(tmp_path: Path, tscale: float,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The hostile case: with the phone's own valid token, while the phone is offline, a process
    claims [cpu, gpu, camera] and concurrency 64. It is refused (one line, a WARNING, a journal
    row). Claiming within the registration it is the phone: it receives only the phone's task,
    and the results it forges for other devices' attempts are dropped and journaled."""
    registry = DeviceRegistry(tmp_path / "devices.yaml")
    phone = registry.add("phone", ["camera"], ["echo", "python"], max_concurrency=1)
    tokens = {r.id: device_token(SECRET, r.id, r.key) for r in (
        phone, registry.add("server", ["cpu", "gpu"], ["echo", "sleep"], 4), registry.add("laptop", ["cpu"], ["sleep"], 4))}
    plan = Constellation.from_plan({"tasks": [
        *[{"id": f"g{i}", "capabilities": ["gpu"], "executor": {"kind": "sleep", "args": {"seconds": 0.05, "value": f"g{i}"}}}
          for i in range(8)],
        *[{"id": f"c{i}", "capabilities": ["cpu"], "executor": {"kind": "sleep", "args": {"seconds": 0.05, "value": f"c{i}"}}}
          for i in range(8)],
        {"id": "photo", "capabilities": ["camera"], "executor": {"kind": "echo", "args": {"value": "img"}}},
    ]})

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, registry=registry,
                                      config=OrchestratorConfig(device_timeout=30)) as g:
            # 1. Claiming more than the registration: refused at REGISTER, connection closed.
            async with connect(g.url, additional_headers=headers(tokens["phone"], "phone")) as rogue:
                await rogue.send(encode(Register(device_id="phone", capabilities=["cpu", "gpu", "camera"],
                                                 max_concurrency=64, info={"executors": ["echo", "sleep"]})))
                reply = json.loads(await asyncio.wait_for(rogue.recv(), 10 * tscale))
                assert reply["code"] == "registration"
                for claim in ("capabilities ['cpu', 'gpu']", "executors ['sleep']", "max_concurrency 64 > 1"):
                    assert claim in reply["message"]
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(rogue.recv(), 10 * tscale)
            assert "phone" not in g.orch.devices
            assert any("refused REGISTER" in r.message and r.levelno == logging.WARNING for r in caplog.records)
            rows = g.orch.journal.device_audits("phone")
            assert [r["what"] for r in rows] == ["register_refused:registration"]

            # 2. Claiming within it, it stands in for the phone and gets the phone's work only.
            agents = [DeviceAgent(DeviceConfig(device_id=n, capabilities=c, executors=["echo", "sleep"],
                                               max_concurrency=4, heartbeat_interval=0.2), g.url, tokens[n], seed=1)
                      for n, c in (("server", ["cpu", "gpu"]), ("laptop", ["cpu"]))]
            agents[1].cfg.executors = ["sleep"]
            running = [asyncio.create_task(a.run()) for a in agents]
            try:
                async with connect(g.url, additional_headers=headers(tokens["phone"], "phone")) as rogue:
                    await rogue.send(encode(Register(device_id="phone", capabilities=["camera"], max_concurrency=1)))
                    await online(g, {"phone", "server", "laptop"}, tscale)
                    assert g.orch.devices["phone"].executors == {"echo", "python"}  # from its registration
                    rid = g.orch.submit(plan, "r")
                    others = [t for t in plan.tasks if t != "photo"]
                    for _ in range(int(400 * tscale)):  # the honest devices do the rest meanwhile
                        if all(g.orch.runs[rid].constellation.tasks[t].status.terminal for t in others):
                            break
                        await asyncio.sleep(0.02)
                    got = [m for m in await frames(rogue, 0.3 * tscale) if m["type"] == "TASK"]
                    assert [m["task_id"] for m in got] == ["photo"]
                    forged = [TaskResult(task_id=t, attempt_id=f"r/{t}/1", status="completed", result="forged")
                              for t in [*(f"g{i}" for i in range(8)), *(f"c{i}" for i in range(8)), "ghost"]]
                    for res in forged:
                        await rogue.send(encode(res))
                    await rogue.send(encode(TaskResult(task_id="photo", attempt_id=got[0]["attempt_id"],
                                                       status="completed", result="img")))
                    assert await g.orch.wait(rid, 30 * tscale) is ConstellationState.COMPLETED
            finally:
                for a in agents:
                    a.stop()
                await asyncio.gather(*running)
            tasks = g.orch.runs[rid].constellation.tasks
            for tid, t in tasks.items():
                if tid != "photo":
                    assert t.result == tid and t.assigned_device in ("server", "laptop"), (tid, t.result)
                    assert not (tid.startswith("g") and t.assigned_device == "laptop")
            events = list(g.orch.journal.events(rid))
            dropped = [e for e in events if e["kind"] == "dropped" and e["data"]["device"] == "phone"]
            assert len(dropped) == 16  # each forgery for a known attempt, in the run's journal
            ghosts = [r for r in g.orch.journal.device_audits("phone") if r["what"] == "result_dropped"]
            assert len(ghosts) == 1 and "r/ghost/1" in ghosts[0]["detail"]  # one no run dispatched

    asyncio.run(main())


def test_revoking_one_device_leaves_every_other_credential_valid(tmp_path: Path, tscale: float, until) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "devices.yaml"
    registry = DeviceRegistry(path)
    keys = {n: registry.add(n, ["cpu"], max_concurrency=2).key for n in ("a", "b")}
    tokens = {n: device_token(SECRET, n, k) for n, k in keys.items()}

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, registry=path, ui=True) as g:
            g.server.registry_poll = 0.05
            agents = {n: DeviceAgent(DeviceConfig(device_id=n, capabilities=["cpu"], heartbeat_interval=0.2),
                                     g.url, tokens[n], seed=1) for n in ("a", "b")}
            running = [asyncio.create_task(a.run()) for a in agents.values()]
            try:
                await online(g, {"a", "b"}, tscale)
                DeviceRegistry(path).revoke("a")  # what `paperlab galaxy devices revoke a` does
                await until(lambda: not g.orch.devices["a"].online, "a's connection to be dropped")
                assert g.orch.devices["b"].online
                assert [r["what"] for r in g.orch.journal.device_audits("a")] == ["disconnected"]
                with pytest.raises(InvalidStatus) as info:  # a's token: refused from now on
                    async with connect(g.url, additional_headers=headers(tokens["a"], "a")):
                        pass
                assert info.value.response.status_code == 401
                # b's token, the admin secret and the viewer token all still work
                rid = g.orch.submit(Constellation.from_plan({"tasks": [
                    {"id": "x", "capabilities": ["cpu"], "executor": {"kind": "echo", "args": {"value": 1}}}]}))
                assert await g.orch.wait(rid, 20 * tscale) is ConstellationState.COMPLETED
                assert g.orch.runs[rid].constellation.tasks["x"].assigned_device == "b"
                async with connect(g.url, additional_headers={"Authorization": f"Bearer {SECRET}"}) as ws:
                    await ws.send(encode(Register(device_id="c")))
                    await until(lambda: "c" in g.orch.devices and g.orch.devices["c"].online, "c (admin secret)")
                async with connect(f"ws://127.0.0.1:{g.server.port}/ui/ws",
                                   additional_headers={"Authorization": f"Bearer {viewer_token(SECRET)}"}) as ws:
                    assert json.loads(await ws.recv()) == {"role": "viewer"}
            finally:
                for a in agents.values():
                    a.stop()
                await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), 30 * tscale)

    asyncio.run(main())


def test_the_registry_file_is_checked_whole(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    key = "a" * 32
    for text, needle in ((f"devices:\n- {{id: a, key: {key}, colour: red}}\n", "colour"),
                         (f"devices:\n- {{id: a, key: {key}}}\n- {{id: a, key: {'b' * 32}}}\n", "more than once"),
                         (f"devices:\n- {{id: a, key: {key}, executors: [warp]}}\n", "warp"),
                         ("devices: [1, 2\n", "cannot be read"), ("- a\n- b\n", "must be a mapping")):
        path.write_text(text)
        with pytest.raises(RegistryError, match=needle):
            DeviceRegistry(path)
    assert len(DeviceRegistry(tmp_path / "absent.yaml")) == 0  # no file: nobody registered
