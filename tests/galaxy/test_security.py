"""Hardening as an attacker and an operator meet it: identities, the control API, the dashboard
cookie, attempt ids, bounded memory under spam, and TLS with a self-signed pair.

The orchestrator and its real servers run in this process; devices are real DeviceAgents or raw
websockets clients playing a hostile device (the far side of the protocol boundary).
"""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import subprocess
import tracemalloc
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from paperlab.galaxy.control.client import call
from paperlab.galaxy.control.runtime import Started, start_orchestrator
from paperlab.galaxy.device.agent import DeviceAgent
from paperlab.galaxy.device.executors import DeviceConfig
from paperlab.galaxy.errors import GalaxyError
from paperlab.galaxy.orchestrator.config import OrchestratorConfig
from paperlab.galaxy.plan.constellation import Constellation, ConstellationState, TaskStatus
from paperlab.galaxy.protocol.aip import DeviceInfo, Register, encode
from paperlab.galaxy.protocol.auth import DEVICE_HEADER, device_token, viewer_token
from paperlab.galaxy.protocol.registry import DeviceRegistry
from paperlab.galaxy.protocol.tls import client_context, server_context

SECRET = "s3cret-admin"


def dev(name: str, **kw: Any) -> DeviceConfig:
    return DeviceConfig(device_id=name, max_concurrency=2, heartbeat_interval=0.2, **kw)


def register(tmp: Path, name: str = "a", **kw: Any) -> tuple[Path, str]:
    """Register device ``name`` (max_concurrency 2) in a registry file under ``tmp``; its
    token."""
    path = tmp / "devices.yaml"
    reg = DeviceRegistry(path).add(name, kw.pop("capabilities", []), max_concurrency=2, **kw)
    return path, device_token(SECRET, name, reg.key)


async def online(g: Started, n: int, tscale: float) -> None:
    for _ in range(int(200 * tscale)):
        if sum(d.online for d in g.orch.devices.values()) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("devices did not register")


def test_device_tokens_bind_ids_and_one_live_connection_per_id(tmp_path: Path, tscale: float) -> None:
    registry, token_a = register(tmp_path, "a")

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, registry=registry) as g:
            own = {"Authorization": f"Bearer {token_a}", DEVICE_HEADER: "a"}
            # a's token claiming b's id, or the viewer token: refused at the handshake or REGISTER
            for hdr in ({"Authorization": f"Bearer {token_a}", DEVICE_HEADER: "b"},
                        {"Authorization": f"Bearer {viewer_token(SECRET)}"}):
                with pytest.raises(InvalidStatus) as info:
                    async with connect(g.url, additional_headers=hdr):
                        pass
                assert info.value.response.status_code == 401
            async with connect(g.url, additional_headers=own) as ws:
                await ws.send(encode(Register(device_id="b")))  # right token, wrong REGISTER id
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10 * tscale))
                assert reply["code"] == "identity" and "belongs to device 'a'" in reply["message"]
            agent = DeviceAgent(dev("a"), g.url, token_a, seed=1)
            task = asyncio.create_task(agent.run())
            try:
                await online(g, 1, tscale)
                # A second live connection under a's id (even with a's own token) is refused
                # and the real device keeps its identity.
                async with connect(g.url, additional_headers=own) as rogue:
                    await rogue.send(encode(Register(device_id="a")))
                    reply = json.loads(await asyncio.wait_for(rogue.recv(), 10 * tscale))
                    assert reply["code"] == "identity" and "live connection" in reply["message"]
                    with pytest.raises(ConnectionClosed):
                        await asyncio.wait_for(rogue.recv(), 10 * tscale)
                assert g.orch.devices["a"].online and agent.connections == 1
                rid = g.orch.submit(Constellation.from_plan({"tasks": [{"id": "x", "executor": {"kind": "echo"}}]}))
                assert await g.orch.wait(rid, 20 * tscale) is ConstellationState.COMPLETED
                assert g.orch.runs[rid].constellation.tasks["x"].assigned_device == "a"
            finally:
                agent.stop()
                await task

    asyncio.run(main())


def test_control_api_submit_status_edit_cancel_devices(tmp_path: Path, tscale: float) -> None:
    plan = {"tasks": [{"id": "slow", "executor": {"kind": "sleep", "args": {"seconds": 30}}},
                      {"id": "quick", "executor": {"kind": "echo", "args": {"value": 1}}}]}

    registry, token_a = register(tmp_path, "a")

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, api_port=0, registry=registry) as g:
            api = g.control.url
            agent = DeviceAgent(dev("a"), g.url, token_a, seed=1)
            task = asyncio.create_task(agent.run())

            def http(method: str, path: str, body: Any = None, token: str = SECRET) -> Any:
                data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
                return call(api, token, method, path, data, timeout=10 * tscale)

            async def ahttp(*a: Any, **kw: Any) -> Any:
                return await asyncio.to_thread(http, *a, **kw)

            try:
                await online(g, 1, tscale)
                with pytest.raises(GalaxyError, match="admin token"):
                    await ahttp("GET", "/devices", token=viewer_token(SECRET))
                assert [d["device"] for d in await ahttp("GET", "/devices")] == ["a"]
                yaml_plan = b"tasks:\n- {id: a, executor: {kind: echo}}\n- {id: b, executor: {kind: echo}, after: [a]}\n"
                with pytest.raises(GalaxyError, match="cycle"):
                    await ahttp("POST", "/runs", yaml_plan.replace(b"[a]}\n", b"[a]}\n") + b"edges: [{source: b, target: a}]\n")
                rid = (await ahttp("POST", "/runs", plan))["run_id"]
                for _ in range(int(100 * tscale)):
                    if g.orch.runs[rid].constellation.tasks["slow"].status is TaskStatus.RUNNING:
                        break
                    await asyncio.sleep(0.05)
                rejected = await ahttp("POST", f"/runs/{rid}/edits", {"edits": [{"op": "remove_task", "task_id": "slow"}]})
                assert not rejected["accepted"] and "running" in rejected["reason"]
                edit = {"reason": "one more", "edits": [{"op": "add_task", "after": ["quick"],
                                                         "task": {"id": "late", "executor": {"kind": "echo"}}}]}
                assert (await ahttp("POST", f"/runs/{rid}/edits", edit))["accepted"]
                await ahttp("POST", f"/runs/{rid}/cancel", {"task": "slow"})
                assert await g.orch.wait(rid, 20 * tscale) is ConstellationState.PARTIALLY_FAILED
                status = await ahttp("GET", f"/runs/{rid}")
                by_id = {t["id"]: t["status"] for t in status["tasks"]}
                assert by_id == {"slow": "cancelled", "quick": "completed", "late": "completed"}
                with pytest.raises(GalaxyError, match="no run 'nope'"):
                    await ahttp("GET", "/runs/nope")
            finally:
                agent.stop()
                await task

    asyncio.run(main())


def test_the_dashboard_takes_no_credential_in_a_url_and_checks_origin(tmp_path: Path, tscale: float) -> None:
    """The page is static (no data, no Set-Cookie, whatever the URL says); a viewer logs in
    with the first WebSocket message (or the Authorization header), never a URL or a cookie;
    another site's page is refused at the handshake; a viewer's cancel is ignored."""
    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, ui=True) as g:
            g.ui.login_timeout = 0.3 * tscale
            base = f"http://127.0.0.1:{g.server.port}/ui"

            def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
                req = urllib.request.Request(url, headers=headers or {})
                try:
                    with urllib.request.urlopen(req, timeout=10 * tscale) as r:
                        return r.status, dict(r.headers), r.read().decode()
                except urllib.error.HTTPError as exc:
                    exc.close()
                    return exc.code, {}, ""

            view = viewer_token(SECRET)
            status, headers, body = await asyncio.to_thread(get, f"{base}?token={view}")
            assert status == 200 and "Set-Cookie" not in headers and view not in body
            assert "legend" in body and "Failed tasks" in body
            rid = g.orch.submit(Constellation.from_plan({"tasks": [{"id": "x", "executor": {"kind": "echo"}}]}))
            ws_url = f"ws://127.0.0.1:{g.server.port}/ui/ws"
            async with connect(ws_url) as ws:  # the page's way: the token as the first message
                await ws.send(json.dumps({"op": "auth", "token": view}))
                assert json.loads(await ws.recv()) == {"role": "viewer"}
                await ws.send(json.dumps({"op": "cancel", "run": rid}))
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10 * tscale))
                assert "dag" in frame and "failures" in frame
                await asyncio.sleep(0.3)
                assert not g.orch.runs[rid].cancelled
            for first in ({"op": "auth", "token": "wrong"}, {"op": "cancel", "run": rid}, None):
                async with connect(ws_url) as ws:
                    if first is not None:
                        await ws.send(json.dumps(first))
                    with pytest.raises(ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), 10 * tscale)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            # another site's page (its browser would send the admin's header for it) is refused
            with pytest.raises(InvalidStatus) as info:
                async with connect(ws_url, origin="http://evil.example",  # type: ignore[arg-type]
                                   additional_headers={"Authorization": f"Bearer {SECRET}"}):
                    pass
            assert info.value.response.status_code == 403
            # a token in the URL is no credential: /aip refuses the handshake, /ui/ws waits for
            # a login message and closes without one
            with pytest.raises(InvalidStatus) as info:
                async with connect(f"{g.url}?token={SECRET}"):
                    pass
            assert info.value.response.status_code == 401
            async with connect(f"{ws_url}?token={SECRET}") as ws:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10 * tscale)
            async with connect(ws_url, origin=f"http://127.0.0.1:{g.server.port}",  # type: ignore[arg-type]
                               additional_headers={"Authorization": f"Bearer {SECRET}"}) as ws:
                assert json.loads(await ws.recv()) == {"role": "admin"}
                await ws.send(json.dumps({"op": "cancel", "run": rid}))
                assert await g.orch.wait(rid, 10 * tscale) is ConstellationState.CANCELLED

    asyncio.run(main())


SIDE_EFFECT = """
from pathlib import Path


def record_attempt(attempt_id: str, out: str) -> str:
    # An idempotent side effect keyed on the attempt id: a re-run of the same attempt
    # finds its marker and does nothing new.
    marker = Path(out) / attempt_id.replace("/", "_")
    marker.touch(exist_ok=True)
    return attempt_id
"""


def test_attempt_ids_reach_shell_and_python_tasks(tmp_path: Path, tscale: float,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "galaxy_side_effect.py").write_text(SIDE_EFFECT)
    monkeypatch.syspath_prepend(str(tmp_path))
    plan = Constellation.from_plan({"tasks": [
        {"id": "sh", "executor": {"kind": "shell", "args": {"argv": ["printenv", "GALAXY_ATTEMPT_ID"]}}},
        {"id": "py", "executor": {"kind": "python", "args": {"function": "rec", "kwargs": {"out": str(tmp_path)}}}},
    ]})

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET) as g:
            cfg = dev("a", shell_allow=["printenv"],
                      python_allow={"rec": "galaxy_side_effect:record_attempt"})
            agent = DeviceAgent(cfg, g.url, SECRET, seed=1)  # the admin secret connects any id
            task = asyncio.create_task(agent.run())
            try:
                await online(g, 1, tscale)
                rid = g.orch.submit(plan, "ids")
                assert await g.orch.wait(rid, 20 * tscale) is ConstellationState.COMPLETED
                tasks = g.orch.runs[rid].constellation.tasks
                assert tasks["sh"].result["stdout"].strip() == "ids/sh/1"
                assert tasks["py"].result == "ids/py/1"
                assert (tmp_path / "ids_py_1").exists()
            finally:
                agent.stop()
                await task

    asyncio.run(main())


@pytest.mark.slow
def test_spam_keeps_memory_bounded(tmp_path: Path, tscale: float) -> None:
    """A token holder floods DEVICE_INFO and churns through fake ids: the orchestrator keeps
    at most max_info_bytes per device and forgets devices gone for longer than evict_after."""
    cfg = OrchestratorConfig(evict_after=0.2, max_info_bytes=4096, device_timeout=60)

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, config=cfg, rate=2000, burst=4000) as g:
            hdr = {"Authorization": f"Bearer {SECRET}"}
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            async with connect(g.url, additional_headers=hdr, max_size=None) as ws:
                await ws.send(encode(Register(device_id="spammer")))
                blob = "x" * 900
                for i in range(1500):  # ~1.4 MB of distinct keys, each frame small
                    await ws.send(encode(DeviceInfo(info={f"k{i}": blob})))
                await asyncio.sleep(0.3)
            for i in range(150):  # fake ids, each connecting once
                async with connect(g.url, additional_headers=hdr) as ws:
                    await ws.send(encode(Register(device_id=f"fake{i}")))
                    await asyncio.sleep(0)
            await asyncio.sleep(0.5)
            g.orch.step()  # eviction runs in the step
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            spam = g.orch.devices.get("spammer")
            assert spam is None or len(json.dumps(spam.info)) <= 4096
            assert len(g.orch.devices) <= 5, sorted(g.orch.devices)
            assert held < 1_000_000, held  # well under the 1.4 MB sent

    asyncio.run(main())


def test_tls_with_a_self_signed_pair(tmp_path: Path, tscale: float) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed pair")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)

    registry, token_a = register(tmp_path, "a")

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, api_port=0, ui=True, registry=registry,
                                      ssl_context=server_context(cert, key)) as g:
            assert g.url.startswith("wss://") and g.control.url.startswith("https://")
            agent = DeviceAgent(dev("a"), g.url, token_a, seed=1,
                                ssl_context=client_context(cert))
            task = asyncio.create_task(agent.run())
            try:
                await online(g, 1, tscale)
                rid = g.orch.submit(Constellation.from_plan({"tasks": [{"id": "x", "executor": {"kind": "echo"}}]}))
                assert await g.orch.wait(rid, 20 * tscale) is ConstellationState.COMPLETED
                got = await asyncio.to_thread(call, g.control.url, SECRET, "GET", f"/runs/{rid}",
                                              None, 10 * tscale, cert)
                assert got["state"] == "completed"
                with pytest.raises(GalaxyError):  # a client that does not trust the pair
                    await asyncio.to_thread(call, g.control.url, SECRET, "GET", "/devices", None, 10 * tscale)
                # the dashboard over wss:// (its frames from the renderer process)
                async with connect(f"wss://127.0.0.1:{g.server.port}/ui/ws", ssl=client_context(cert),
                                   additional_headers={"Authorization": f"Bearer {viewer_token(SECRET)}"},
                                   max_size=None) as ws:
                    assert json.loads(await ws.recv()) == {"role": "viewer"}
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 10 * tscale))
                    assert f'data-run="{rid}"' in frame["metrics"] and frame["tasks"]["x"][0] == "completed"
            finally:
                agent.stop()
                await task

    asyncio.run(main())
