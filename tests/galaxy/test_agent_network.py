"""A device agent never dies of a network fault: it retries with backoff, one log line per
failure at a bounded rate, and connects once the orchestrator is really there. The far sides
are real local sockets: nothing listening, a server that accepts and hangs up, a TLS port
dialled with ws://, a server at its connection cap."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from paperlab.galaxy.control.guard import ConnectionCaps
from paperlab.galaxy.control.runtime import start_orchestrator
from paperlab.galaxy.device.agent import DeviceAgent, RegistrationRefused
from paperlab.galaxy.device.executors import DeviceConfig
from paperlab.galaxy.protocol.auth import device_token
from paperlab.galaxy.protocol.registry import DeviceRegistry
from paperlab.galaxy.protocol.tls import server_context
from paperlab.testing import free_port

SECRET = "admin-secret-xyz"


def agent(url: str, token: str = SECRET, name: str = "a", **cfg: object) -> DeviceAgent:
    return DeviceAgent(DeviceConfig(device_id=name, heartbeat_interval=0.2, **cfg), url, token,  # type: ignore[arg-type]
                       backoff_base=0.01, backoff_cap=0.05, seed=1)


async def keeps_trying(a: DeviceAgent, seconds: float, min_attempts: int) -> asyncio.Task[None]:
    task = asyncio.create_task(a.run())
    await asyncio.sleep(seconds)
    assert not task.done(), task.exception() if task.done() else None
    assert a.failed_attempts >= min_attempts and a.connections == 0
    return task


async def hang_up_server(port: int) -> asyncio.Server:
    """Accepts each connection and closes it before answering anything."""
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return await asyncio.start_server(close, "127.0.0.1", port)


def test_the_agent_outlives_every_fault_and_connects_when_the_orchestrator_comes(
        tmp_path: Path, tscale: float, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="paperlab.galaxy.device.agent")
    port = free_port()

    async def main() -> None:
        a = agent(f"ws://127.0.0.1:{port}/aip")
        task = await keeps_trying(a, 0.3 * tscale, 3)  # nothing listening: refused
        hang = await hang_up_server(port)
        before = a.failed_attempts
        await asyncio.sleep(0.3 * tscale)  # accepted, then closed before any reply
        assert not task.done() and a.failed_attempts >= before + 3
        hang.close()
        await hang.wait_closed()
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, port=port) as g:
            for _ in range(int(200 * tscale)):
                if "a" in g.orch.devices and g.orch.devices["a"].online:
                    break
                await asyncio.sleep(0.05)
            assert g.orch.devices["a"].online and a.connections == 1
            a.stop()
            await task

    asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if "connecting to" in r.getMessage()]
    kinds = {m.split("): ")[1].split(":")[0] for m in lines}
    assert {"ConnectionRefusedError", "InvalidMessage"} <= kinds, lines
    assert len(lines) <= 8, lines  # dozens of attempts, a few lines


def test_ws_against_a_tls_port_and_a_full_server_are_retried_too(tmp_path: Path, tscale: float) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed pair")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    registry = DeviceRegistry(tmp_path / "devices.yaml")
    token = device_token(SECRET, "a", registry.add("a").key)

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, ssl_context=server_context(cert, key)) as g:
            a = agent(f"ws://127.0.0.1:{g.server.port}/aip")  # plain text against TLS
            task = await keeps_trying(a, 0.3 * tscale, 2)
            a.stop()
            await task
        async with start_orchestrator(tmp_path / "k.sqlite", SECRET, registry=registry,
                                      caps=ConnectionCaps(device=0)) as g:
            a = agent(g.url, token)  # HTTP 429: at its cap (0 here), later perhaps not
            task = await keeps_trying(a, 0.3 * tscale, 2)
            a.stop()
            await task

    asyncio.run(main())


def test_what_retrying_cannot_fix_stops_the_agent_with_one_line(tmp_path: Path, tscale: float) -> None:
    registry = DeviceRegistry(tmp_path / "devices.yaml")
    token = device_token(SECRET, "a", registry.add("a", ["cpu"]).key)

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, registry=registry) as g:
            with pytest.raises(RegistrationRefused, match=r"claims capabilities \['gpu'\]"):
                await asyncio.wait_for(agent(g.url, token, capabilities=["cpu", "gpu"]).run(), 20 * tscale)

    asyncio.run(main())
