"""The orchestrator's WebSocket endpoint: a thin asyncio layer over :class:`protocol.Session`.

Devices connect to ``ws://HOST:PORT/aip`` (``wss://`` with TLS) with ``Authorization: Bearer
TOKEN`` and, for a per-device token, ``X-Galaxy-Device: ID`` (see :mod:`paperlab.galaxy.protocol.auth`).
The token is checked during the HTTP handshake, so a wrong or missing one gets HTTP 401 and
never reaches the protocol; a device token binds the connection to its id, so REGISTER under
another id is refused. Each frame goes through the connection's Session; accepted messages go
to the orchestrator, ERROR replies go back. Each connection is rate-limited (a token bucket):
frames beyond the budget are dropped and count as protocol errors, so a flood gets the
connection closed. Frames TO a device wait in a per-connection queue bounded in bytes
(``max_send_bytes``): a device that stops reading while frames for it pile up past the bound is
disconnected with a warning (its attempts then follow the usual loss rules) instead of
growing the orchestrator's memory. The dashboard (when enabled) is served from the same port
under ``/ui``; its viewers have their own bound (one frame each, see :mod:`.dashboard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from paperlab.galaxy import defaults
from paperlab.galaxy.orchestrator.core import Orchestrator
from paperlab.galaxy.protocol.aip import (
    DEFAULT_MAX_BYTES,
    ErrorMsg,
    Register,
    Session,
    batch_frames,
    encode,
)
from paperlab.galaxy.protocol.auth import DEVICE_HEADER, Identity, identify, presented_token

__all__ = ["OrchestratorServer", "RateLimit", "SendQueue", "token_ok"]

# Bytes queued for one device before it counts as not reading: 64 frames of the largest size.
# A step queues at most max_concurrency TASKs for a device at once, which must fit.
DEFAULT_MAX_SEND_BYTES = defaults.MAX_SEND_MB << 20

log = logging.getLogger(__name__)


class UIHandler(Protocol):
    def http(self, path: str, query: dict[str, list[str]], identity: Identity,
             token: str) -> Response | None: ...
    async def websocket(self, conn: ServerConnection, identity: Identity) -> None: ...


def token_ok(request: Request, token: str) -> bool:
    """True if the request carries the admin ``token`` (header, cookie or query)."""
    ident = identify(token, presented_token(request.headers, request.path))
    return ident is not None and ident.role == "admin"


class RateLimit:
    """A token bucket: ``rate`` messages per second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def charge(self, n: int) -> None:
        """Take ``n`` more tokens (the other messages of a BATCH): the budget counts messages,
        not frames. The bucket may go into debt; frames are dropped until it refills."""
        self.tokens -= n


class SendQueue:
    """Frames for one connection, in order, bounded in bytes: a frame counts from when it is
    queued until its send returned (so the writer's batch in flight counts too)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self.full = False
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def put(self, frame: str) -> bool:
        """Queue ``frame``; False (and nothing queued, now or later) once over the bound."""
        if self.full:
            return False
        self.bytes += len(frame)
        if self.bytes > self.limit:
            self.full = True
            return False
        self.queue.put_nowait(frame)
        return True

    def sent(self, frames: list[str]) -> None:
        self.bytes -= sum(map(len, frames))
        for _ in frames:
            self.queue.task_done()


class OrchestratorServer:
    """Serves AIP (and optionally the dashboard) for one orchestrator."""

    def __init__(self, orchestrator: Orchestrator, token: str, host: str = "127.0.0.1",
                 port: int = 0, max_bytes: int = DEFAULT_MAX_BYTES, ui: UIHandler | None = None,
                 ssl_context: ssl.SSLContext | None = None, rate: float = 2000.0,
                 burst: float = 4000.0, max_send_bytes: int = DEFAULT_MAX_SEND_BYTES) -> None:
        if not token:
            raise ValueError("a non-empty token is required")
        self.orch = orchestrator
        self.token = token
        self.host = host
        self.port = port
        self.max_bytes = max_bytes
        self.ui = ui
        self.ssl_context = ssl_context
        self.rate, self.burst = rate, burst
        self.max_send_bytes = max_send_bytes
        self._server: Server | None = None

    async def start(self) -> int:
        """Start listening; returns the bound port (useful with port 0)."""
        self._server = await serve(
            self._handle, self.host, self.port, process_request=self._process_request,
            # Let frames up to 4x our limit through so the Session can answer them with an
            # ERROR; anything larger is closed by websockets itself (code 1009).
            max_size=4 * self.max_bytes, ping_interval=None, ssl=self.ssl_context,
            # No per-message deflate: AIP frames are small, and compressing dashboard frames
            # would cost the scheduler's loop CPU for every viewer.
            max_queue=64, compression=None)
        self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self.port
        self.orch.start()
        log.info("orchestrator listening on %s", self.url)
        return self.port

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl_context else 'ws'}://{self.host}:{self.port}/aip"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.orch.stop()

    def _identity(self, request: Request) -> Identity | None:
        return identify(self.token, presented_token(request.headers, request.path),
                        request.headers.get(DEVICE_HEADER))

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        query = parse_qs(urlsplit(request.path).query)
        ident = self._identity(request)
        if path.startswith("/ui"):
            if self.ui is None:
                return conn.respond(HTTPStatus.NOT_FOUND, "dashboard not enabled (serve --ui)\n")
            if ident is None or ident.role == "device":
                return conn.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
            return self.ui.http(path, query, ident, presented_token(request.headers, request.path))
        if path != "/aip":
            return conn.respond(HTTPStatus.NOT_FOUND, "devices connect to /aip\n")
        if ident is None or ident.role == "viewer":
            log.warning("refused a device connection from %s: missing or wrong token",
                        conn.remote_address[0] if conn.remote_address else "?")
            return conn.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        path = urlsplit(request.path).path if request is not None else ""
        ident = self._identity(request) if request is not None else None
        if ident is None:
            return
        if path.startswith("/ui") and self.ui is not None:
            await self.ui.websocket(ws, ident)
            return
        session = Session("orchestrator", max_bytes=self.max_bytes)
        queue = SendQueue(self.max_send_bytes)
        writer = asyncio.create_task(self._writer(ws, queue))
        limit = RateLimit(self.rate, self.burst)
        device_id: str | None = None
        conn = 0
        refused = ""

        def send(msg: Any) -> None:
            session.send(msg)
            for frame in session.data_to_send():
                put(frame)

        def put(frame: str) -> None:
            if not queue.put(frame) and not ws.transport.is_closing():  # False: over the bound
                log.warning("device %s is not reading: more than %d bytes queued for it; disconnecting",
                            device_id, queue.limit)
                ws.transport.abort()  # its reader ends at once, and the orchestrator hears of it

        try:
            async for frame in ws:
                if not limit.allow():
                    session.errors += 1  # dropped unread; a sustained flood closes the connection
                    if session.should_close:
                        refused = "message rate limit exceeded"
                    msgs: list[Any] = []
                else:
                    msgs = session.receive(frame)
                    if len(msgs) > 1:
                        limit.charge(len(msgs) - 1)
                for msg in msgs:
                    if isinstance(msg, Register):
                        if ident.role == "device" and msg.device_id != ident.device_id:
                            refused = f"this token belongs to device {ident.device_id!r}, not {msg.device_id!r}"
                        else:
                            accepted = self.orch.device_registered(msg, send)
                            if accepted is None:
                                refused = f"device {msg.device_id!r} already has a live connection"
                            else:
                                device_id, conn = msg.device_id, accepted
                        if refused:
                            log.warning("refused REGISTER: %s", refused)
                            session.send(ErrorMsg(code="identity", message=refused))
                            break
                    elif isinstance(msg, ErrorMsg):
                        log.warning("device %s reported error %s: %s", device_id, msg.code, msg.message)
                    elif device_id is not None:
                        self.orch.on_message(device_id, msg, conn)
                for out in session.data_to_send():
                    put(out)
                if refused or session.should_close:
                    await queue.queue.join()
                    await ws.close(1008, (refused or "too many protocol errors")[:100])
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
    async def _writer(ws: ServerConnection, queue: SendQueue) -> None:
        # One writer per connection keeps frames in order without blocking the orchestrator.
        # Whatever piled up meanwhile (a step's TASKs) leaves as one BATCH frame.
        q = queue.queue
        while True:
            frames = [await q.get()]
            while not q.empty():
                frames.append(q.get_nowait())
            try:
                for frame in batch_frames(frames):
                    await ws.send(frame)
            except ConnectionClosed:
                pass
            finally:
                queue.sent(frames)


def encode_error(code: str, message: str) -> str:
    return encode(ErrorMsg(code=code, message=message))
