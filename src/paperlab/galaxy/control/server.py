"""The orchestrator's WebSocket endpoint: a thin asyncio layer over the AIP Session.

Devices connect to ``ws://HOST:PORT/aip`` (``wss://`` with TLS) with ``Authorization: Bearer
TOKEN`` and, for a device token, ``X-Galaxy-Device: ID`` (see :mod:`paperlab.galaxy.protocol.auth`).
What a connection must pass, in order:

1. the handshake (HTTP): an ``Origin``, if any, that is ours or allowed (else 403); a known
   token in the header, never in the URL (else 401); a credential under its connection cap
   (else 429). Refusals are logged at a bounded rate;
2. REGISTER within ``register_timeout`` seconds (else closed, 1008); a device token's REGISTER
   must name its own id, and any REGISTER for a registered id may claim no more than the
   registration (else ERROR ``identity`` / ``registration``, a WARNING, a device-audit row in
   the journal, and the connection closed);
3. the message rate limit and the protocol's error budget (a flood gets the connection closed).

Frames TO a device wait in a per-connection queue bounded in bytes (``max_send_bytes``): a
device that stops reading is disconnected with a warning instead of growing our memory. The
registry file is reread when it changes: a revoked (or narrowed) device's live connection is
closed. The dashboard (when enabled) is served from the same port under ``/ui``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from paperlab.galaxy import defaults
from paperlab.galaxy.control.flow import RateLimit, SendQueue
from paperlab.galaxy.control.guard import ConnectionCaps, Origins, warn_if_plaintext
from paperlab.galaxy.errors import RegistryError
from paperlab.galaxy.orchestrator.core import Orchestrator
from paperlab.galaxy.protocol.aip import (
    DEFAULT_MAX_BYTES,
    ErrorMsg,
    Register,
    Session,
    batch_frames,
)
from paperlab.galaxy.protocol.auth import DEVICE_HEADER, Identity, bearer_token, identify
from paperlab.galaxy.protocol.registry import DeviceRegistry
from paperlab.galaxy.ratelog import RateLimitedLog

__all__ = ["OrchestratorServer", "UIHandler"]

# Bytes queued for one device before it counts as not reading: 64 frames of the largest size.
# A step queues at most max_concurrency TASKs for a device at once, which must fit.
DEFAULT_MAX_SEND_BYTES = defaults.MAX_SEND_MB << 20

log = logging.getLogger(__name__)


class UIHandler(Protocol):
    def http(self, path: str) -> Response | None: ...
    async def websocket(self, conn: ServerConnection, identity: Identity | None,
                        identify: Callable[[str], Identity | None]) -> None: ...


class _Refused(Exception):
    """A REGISTER this connection may not make: (ERROR code, one line)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class OrchestratorServer:
    """Serves AIP (and optionally the dashboard) for one orchestrator."""

    def __init__(self, orchestrator: Orchestrator, token: str, host: str = "127.0.0.1",
                 port: int = 0, max_bytes: int = DEFAULT_MAX_BYTES, ui: UIHandler | None = None,
                 ssl_context: ssl.SSLContext | None = None, rate: float = 2000.0,
                 burst: float = 4000.0, max_send_bytes: int = DEFAULT_MAX_SEND_BYTES,
                 registry: DeviceRegistry | None = None, origins: Origins | None = None,
                 caps: ConnectionCaps | None = None, register_timeout: float = defaults.REGISTER_TIMEOUT,
                 registry_poll: float = 1.0) -> None:
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
        self.registry = registry if registry is not None else DeviceRegistry()
        self.origins = origins or Origins()
        self.caps = caps or ConnectionCaps()
        self.register_timeout = register_timeout
        self.registry_poll = registry_poll
        self.refusals = RateLimitedLog(log)
        # Live device connections: what they presented and registered, for revocation.
        self._live: dict[ServerConnection, tuple[Identity, str, Register | None]] = {}
        self._server: Server | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start listening; returns the bound port (useful with port 0)."""
        warn_if_plaintext(self.host, self.ssl_context is not None, "the orchestrator")
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
        if self.registry.path is not None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_registry())
        log.info("orchestrator listening on %s", self.url)
        return self.port

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl_context else 'ws'}://{self.host}:{self.port}/aip"

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.orch.stop()

    def identify(self, token: str, device_id: str | None = None) -> Identity | None:
        """Who holds ``token`` here (the dashboard asks this for its first-message login)."""
        return identify(self.token, token, device_id, self.registry)

    # ---- the handshake -----------------------------------------------------------------
    def _refuse(self, conn: ServerConnection, status: HTTPStatus, why: str, path: str) -> Response:
        peer = conn.remote_address[0] if conn.remote_address else "?"
        self.refusals.warning(f"{status.value}", "refused a connection to %s from %s: %s", path, peer, why)
        return conn.respond(status, why + "\n")

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if not self.origins.allows(request.headers.get("Origin"), request.headers.get("Host"),
                                   self.ssl_context is not None):
            return self._refuse(conn, HTTPStatus.FORBIDDEN, f"origin {request.headers.get('Origin')!r} "
                                "is not allowed (serve --allow-origin)", path)
        token = bearer_token(request.headers)
        if path.startswith("/ui"):
            if self.ui is None:
                return conn.respond(HTTPStatus.NOT_FOUND, "dashboard not enabled (serve --ui)\n")
            if path != "/ui/ws":
                return self.ui.http(path)  # the page: static, no data in it
            ident = self.identify(token) if token else None
            if token and (ident is None or ident.role == "device"):
                return self._refuse(conn, HTTPStatus.UNAUTHORIZED, "missing or wrong token", path)
            return None  # without a header, the page logs in with its first message
        if path != "/aip":
            return conn.respond(HTTPStatus.NOT_FOUND, "devices connect to /aip\n")
        ident = self.identify(token, request.headers.get(DEVICE_HEADER))
        if ident is None or ident.role == "viewer":
            return self._refuse(conn, HTTPStatus.UNAUTHORIZED, "missing or wrong token", path)
        if self.caps.full(ident.key):
            return self._refuse(conn, HTTPStatus.TOO_MANY_REQUESTS,
                                f"too many connections for this credential ({self.caps.cap(ident.key)})", path)
        return None

    # ---- a connection --------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        if request is None:
            return
        path = urlsplit(request.path).path
        token = bearer_token(request.headers)
        if path == "/ui/ws" and self.ui is not None:
            await self.ui.websocket(ws, self.identify(token) if token else None, self.identify)
            return
        ident = self.identify(token, request.headers.get(DEVICE_HEADER))
        if ident is None:
            return
        if not self.caps.open(ident.key):  # handshakes that raced past the check
            await ws.close(1008, "too many connections for this credential")
            return
        try:
            await self._serve_device(ws, ident, token)
        finally:
            self.caps.close(ident.key)
            self._live.pop(ws, None)

    async def _serve_device(self, ws: ServerConnection, ident: Identity, token: str) -> None:
        session = Session("orchestrator", max_bytes=self.max_bytes)
        queue = SendQueue(self.max_send_bytes)
        writer = asyncio.create_task(self._writer(ws, queue))
        limit = RateLimit(self.rate, self.burst)
        device_id: str | None = None
        conn = 0
        closing = ""
        self._live[ws] = (ident, token, None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.register_timeout

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
            while True:
                if device_id is None:
                    try:
                        frame = await asyncio.wait_for(ws.recv(), max(0.0, deadline - loop.time()))
                    except asyncio.TimeoutError:
                        closing = f"no REGISTER within {self.register_timeout:g}s"
                        self.refusals.warning("register-timeout", "closed a connection: %s", closing)
                        break
                else:
                    frame = await ws.recv()
                if not limit.allow():
                    session.errors += 1  # dropped unread; a sustained flood closes the connection
                    msgs: list[Any] = []
                else:
                    msgs = session.receive(frame)
                    if len(msgs) > 1:
                        limit.charge(len(msgs) - 1)
                for msg in msgs:
                    if isinstance(msg, Register):
                        try:
                            msg = self._admit(ident, msg)
                        except _Refused as refused:
                            closing = str(refused)
                            session.send(ErrorMsg(code=refused.code, message=closing))
                            break
                        accepted = self.orch.device_registered(msg, send)
                        if accepted is None:
                            closing = f"device {msg.device_id!r} already has a live connection"
                            session.send(ErrorMsg(code="identity", message=closing))
                            break
                        device_id, conn = msg.device_id, accepted
                        self._live[ws] = (ident, token, msg)
                    elif isinstance(msg, ErrorMsg):
                        log.warning("device %s reported error %s: %s", device_id, msg.code, msg.message)
                    elif device_id is not None:
                        self.orch.on_message(device_id, msg, conn)
                for out in session.data_to_send():
                    put(out)
                if closing or session.should_close:
                    closing = closing or ("message rate limit exceeded" if limit.tokens < 0
                                          else "too many protocol errors")
                    break
            await asyncio.wait_for(queue.queue.join(), 5.0)
            await ws.close(1008, closing[:100])
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
        finally:
            session.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if device_id is not None:
                self.orch.device_disconnected(device_id, conn)

    def _admit(self, ident: Identity, msg: Register) -> Register:
        """The REGISTER as accepted, or _Refused (logged and journaled)."""
        if ident.role == "device" and msg.device_id != ident.device_id:
            refused = _Refused("identity", f"this token belongs to device {ident.device_id!r}, not {msg.device_id!r}")
        elif (why := self.registry.refusal(msg)) is not None:
            refused = _Refused("registration", why)
        else:
            return self.registry.narrow(msg)
        self.refusals.warning(f"register:{msg.device_id}", "refused REGISTER: %s", refused)
        self.orch.journal.device_audit(self.orch.clock(), msg.device_id, f"register_refused:{refused.code}",
                                       str(refused))
        raise refused

    async def _watch_registry(self) -> None:
        """Reread the registry when its file changes; close the connections it no longer
        admits (a revoked token, a registration narrowed below what the device claimed)."""
        while True:
            await asyncio.sleep(self.registry_poll)
            try:
                if not self.registry.reload_if_changed():
                    continue
            except RegistryError as exc:
                self.refusals.warning("registry", "registry not reloaded (the previous one stays): %s", exc)
                continue
            for ws, (ident, token, reg) in list(self._live.items()):
                why = None
                if ident.role == "device" and self.identify(token, ident.device_id) is None:
                    why = "its credential was revoked"
                elif reg is not None and (refusal := self.registry.refusal(reg)) is not None:
                    why = refusal
                if why is not None:
                    device = reg.device_id if reg is not None else ident.device_id or "?"
                    log.warning("disconnecting device %s: %s", device, why)
                    self.orch.journal.device_audit(self.orch.clock(), device, "disconnected", why)
                    ws.transport.abort()

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
