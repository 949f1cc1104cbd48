"""The control surface under a hostile client: a REGISTER deadline, connections capped per
credential, refusals logged at a bounded rate, Origin checked on the control API, a warning
for plain text on a non-loopback address. Real servers on 127.0.0.1, raw websockets clients."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from paperlab.galaxy.control.guard import ConnectionCaps, is_loopback
from paperlab.galaxy.control.runtime import start_orchestrator
from paperlab.galaxy.protocol.aip import Register, encode
from paperlab.galaxy.protocol.auth import DEVICE_HEADER, device_token
from paperlab.galaxy.protocol.registry import DeviceRegistry

SECRET = "admin-secret-xyz"


def test_a_connection_that_never_registers_is_closed(tmp_path: Path, tscale: float) -> None:
    async def main() -> None:
        async with (start_orchestrator(tmp_path / "j.sqlite", SECRET, register_timeout=0.3 * tscale) as g,
                    connect(g.url, additional_headers={"Authorization": f"Bearer {SECRET}"}) as ws):
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10 * tscale)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert "no REGISTER within" in closed.value.rcvd.reason

    asyncio.run(main())


def test_connections_are_capped_per_credential_and_refusals_logged_at_a_bounded_rate(
        tmp_path: Path, tscale: float, caplog: pytest.LogCaptureFixture, until) -> None:  # type: ignore[no-untyped-def]
    registry = DeviceRegistry(tmp_path / "devices.yaml")
    token = device_token(SECRET, "a", registry.add("a").key)
    hdr = {"Authorization": f"Bearer {token}", DEVICE_HEADER: "a"}
    caplog.set_level(logging.WARNING, logger="paperlab.galaxy.control.server")

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, registry=registry,
                                      caps=ConnectionCaps(device=2, admin=3)) as g:
            held = [await connect(g.url, additional_headers=hdr) for _ in range(2)]
            admin = [await connect(g.url, additional_headers={"Authorization": f"Bearer {SECRET}"}) for _ in range(3)]
            refused = 0
            for h in [hdr] * 200 + [{"Authorization": f"Bearer {SECRET}"}] * 5 + [{"Authorization": "Bearer nope"}] * 200:
                try:
                    async with connect(g.url, additional_headers=h):
                        pass
                except InvalidStatus as exc:
                    assert exc.response.status_code in (401, 429)
                    refused += 1
            assert refused == 405
            for ws in held + admin:
                await ws.close()
            # once they are gone, the credential connects again
            await until(lambda: not g.server.caps.live, "the closed connections to be counted out")
            async with connect(g.url, additional_headers=hdr) as ws:
                await ws.send(encode(Register(device_id="a")))
                await until(lambda: "a" in g.orch.devices and g.orch.devices["a"].online, "a to register")

    asyncio.run(main())
    lines = [r for r in caplog.records if "refused a connection" in r.getMessage()]
    assert 1 <= len(lines) <= 4, [r.getMessage() for r in lines]  # 405 refusals, a few lines


def test_the_control_api_checks_origin(tmp_path: Path, tscale: float) -> None:
    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, api_port=0,
                                      allow_origins=["https://ops.example.org"]) as g:
            url = f"{g.control.url}/runs"

            def post(origin: str | None) -> int:
                h = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
                if origin:
                    h["Origin"] = origin
                body = json.dumps({"tasks": [{"id": "a", "executor": {"kind": "echo"}}]}).encode()
                try:
                    with urllib.request.urlopen(urllib.request.Request(url, body, h, method="POST"),
                                                timeout=10 * tscale) as r:
                        return r.status
                except urllib.error.HTTPError as exc:
                    exc.close()
                    return exc.code

            assert await asyncio.to_thread(post, "http://evil.example") == 403
            assert not g.orch.runs
            assert await asyncio.to_thread(post, "https://ops.example.org") == 200
            assert await asyncio.to_thread(post, f"http://127.0.0.1:{g.control.port}") == 200
            assert await asyncio.to_thread(post, None) == 200  # a script sends no Origin

    asyncio.run(main())


def test_plain_text_on_a_non_loopback_address_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("example.org")

    async def main(host: str) -> None:
        async with start_orchestrator(tmp_path / f"{host}.sqlite", SECRET, host=host, api_port=0):
            pass

    caplog.set_level(logging.WARNING)
    asyncio.run(main("127.0.0.1"))
    assert not [r for r in caplog.records if "without TLS" in r.getMessage()]
    asyncio.run(main("0.0.0.0"))
    warned = [r.getMessage() for r in caplog.records if "without TLS" in r.getMessage()]
    assert len(warned) == 2 and "the orchestrator" in warned[0] and "the control API" in warned[1]
