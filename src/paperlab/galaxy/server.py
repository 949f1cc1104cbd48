"""The orchestrator's WebSocket endpoint: a thin asyncio layer over :class:`protocol.Session`.

Devices connect to ``ws://HOST:PORT/aip`` with ``Authorization: Bearer TOKEN`` (or
``?token=TOKEN``). The token is checked during the HTTP handshake, so a wrong or missing token
gets HTTP 401 and never reaches the protocol. Each frame goes through the connection's Session;
accepted messages go to the orchestrator, ERROR replies go back. The dashboard (when enabled)
is served from the same port under ``/ui``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from paperlab.galaxy.orchestrator import Orchestrator
from paperlab.galaxy.protocol import DEFAULT_MAX_BYTES, ErrorMsg, Register, Session, encode

__all__ = ["OrchestratorServer", "token_ok"]

log = logging.getLogger(__name__)


class UIHandler(Protocol):
    def http(self, path: str, query: dict[str, list[str]]) -> Response | None: ...
    async def websocket(self, conn: ServerConnection) -> None: ...


def token_ok(request: Request, token: str) -> bool:
    """True if the request carries ``token`` as a Bearer header or a ``token`` query value."""
    given = ""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = auth[len("Bearer "):]
    else:
        given = (parse_qs(urlsplit(request.path).query).get("token") or [""])[0]
    # compare_digest: the time taken does not leak how much of the token matched
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


class OrchestratorServer:
    """Serves AIP (and optionally the dashboard) for one orchestrator."""

    def __init__(self, orchestrator: Orchestrator, token: str, host: str = "127.0.0.1",
                 port: int = 0, max_bytes: int = DEFAULT_MAX_BYTES, ui: UIHandler | None = None) -> None:
        if not token:
            raise ValueError("a non-empty token is required")
        self.orch = orchestrator
        self.token = token
        self.host = host
        self.port = port
        self.max_bytes = max_bytes
        self.ui = ui
        self._server: Server | None = None

    async def start(self) -> int:
        """Start listening; returns the bound port (useful with port 0)."""
        self._server = await serve(
            self._handle, self.host, self.port, process_request=self._process_request,
            # Let frames up to 4x our limit through so the Session can answer them with an
            # ERROR; anything larger is closed by websockets itself (code 1009).
            max_size=4 * self.max_bytes, ping_interval=None)
        self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self.port
        self.orch.start()
        log.info("orchestrator listening on ws://%s:%d/aip", self.host, self.port)
        return self.port

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/aip"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.orch.stop()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        query = parse_qs(urlsplit(request.path).query)
        if path.startswith("/ui"):
            if self.ui is None:
                return conn.respond(HTTPStatus.NOT_FOUND, "dashboard not enabled (serve --ui)\n")
            if not token_ok(request, self.token):
                return conn.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
            return self.ui.http(path, query)  # None lets /ui/ws upgrade to a WebSocket
        if path != "/aip":
            return conn.respond(HTTPStatus.NOT_FOUND, "devices connect to /aip\n")
        if not token_ok(request, self.token):
            log.warning("refused a connection with a missing or wrong token")
            return conn.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        path = urlsplit(ws.request.path).path if ws.request is not None else ""
        if path.startswith("/ui") and self.ui is not None:
            await self.ui.websocket(ws)
            return
        session = Session("orchestrator", max_bytes=self.max_bytes)
        queue: asyncio.Queue[str] = asyncio.Queue()
        writer = asyncio.create_task(self._writer(ws, queue))
        device_id: str | None = None
        conn = 0
        refused = False

        def send(msg: Any) -> None:
            session.send(msg)
            for frame in session.data_to_send():
                queue.put_nowait(frame)

        try:
            async for frame in ws:
                for msg in session.receive(frame):
                    if isinstance(msg, Register):
                        accepted = self.orch.device_registered(msg, send)
                        if accepted is None:
                            session.send(ErrorMsg(code="duplicate_device", message=(
                                f"device {msg.device_id!r} already has a live connection")))
                            refused = True
                            break
                        device_id, conn = msg.device_id, accepted
                    elif isinstance(msg, ErrorMsg):
                        log.warning("device %s reported error %s: %s", device_id, msg.code, msg.message)
                    elif device_id is not None:
                        self.orch.on_message(device_id, msg, conn)
                for out in session.data_to_send():
                    queue.put_nowait(out)
                if refused or session.should_close:
                    await queue.join()
                    await ws.close(1008, "duplicate device id" if refused else "too many protocol errors")
                    break
        except ConnectionClosed:
            pass
        finally:
            session.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if device_id is not None:
                self.orch.device_disconnected(device_id, conn)

    @staticmethod
    async def _writer(ws: ServerConnection, queue: asyncio.Queue[str]) -> None:
        # One writer per connection keeps frames in order without blocking the orchestrator.
        while True:
            frame = await queue.get()
            try:
                await ws.send(frame)
            except ConnectionClosed:
                pass
            finally:
                queue.task_done()


def encode_error(code: str, message: str) -> str:
    return encode(ErrorMsg(code=code, message=message))
