"""The control API: a small JSON-over-HTTP server beside the device port, for the admin token.

    GET  /api/devices                 the device registry
    GET  /api/runs                    runs known to this orchestrator
    POST /api/runs                    body: a plan (JSON or YAML)      -> {"run_id"}
    GET  /api/runs/RUN                a run's state and tasks
    POST /api/runs/RUN/edits          body: an edit batch (JSON/YAML)  -> {"accepted", "reason"}
    POST /api/runs/RUN/cancel         body: {} or {"task": ID}
    POST /api/runs/RUN/undo           undo the newest edit             -> {"accepted", "reason"}
    POST /api/runs/RUN/redo           redo the newest undone edit      -> {"accepted", "reason"}

Every request needs ``Authorization: Bearer ADMIN_TOKEN`` (never a token in the URL); a
request that carries an ``Origin`` must come from an allowed one (a browser page on another
site gets 403, see :mod:`.guard`). (The device port's WebSocket library reads no request
bodies, hence a second port.) Bodies are capped at ``max_body`` bytes, one request per
connection, at most ``max_conns`` connections at once (429 beyond), and each connection has
a read deadline, so a slow or hostile client cannot hold memory. Refusals are logged at a
bounded rate. Errors are ``{"error": one line}`` with 4xx codes; an
invalid plan or edit gets the same one-line message as on the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from http import HTTPStatus
from typing import Any

import yaml

from paperlab.errors import PaperlabError
from paperlab.galaxy.control.guard import Origins, warn_if_plaintext
from paperlab.galaxy.orchestrator.core import Orchestrator
from paperlab.galaxy.orchestrator.runstate import Run
from paperlab.galaxy.plan.constellation import Constellation
from paperlab.galaxy.plan.edits import parse_batch
from paperlab.galaxy.protocol.auth import bearer_token, identify
from paperlab.galaxy.ratelog import RateLimitedLog

__all__ = ["ControlServer", "run_summary"]

log = logging.getLogger(__name__)


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def run_summary(run: Run) -> dict[str, Any]:
    """A run as the API and ``paperlab galaxy status`` show it."""
    c = run.constellation
    return {
        "run_id": run.run_id, "name": c.name,
        "state": run.finished.value if run.finished else "running",
        "tasks": [{"id": t.id, "status": t.status.value, "device": t.assigned_device,
                   "attempts": t.attempts, "result": t.result, "error": t.error}
                  for t in c.tasks.values()],
    }


class ControlServer:
    def __init__(self, orch: Orchestrator, token: str, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None, max_body: int = 1 << 20,
                 deadline: float = 10.0, origins: Origins | None = None, max_conns: int = 64) -> None:
        self.orch, self.token, self.host, self.port = orch, token, host, port
        self.ssl_context, self.max_body, self.deadline = ssl_context, max_body, deadline
        self.origins = origins or Origins()
        self.max_conns = max_conns
        self.refusals = RateLimitedLog(log)
        self._open = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}/api"

    async def start(self) -> int:
        warn_if_plaintext(self.host, self.ssl_context is not None, "the control API")
        self._server = await asyncio.start_server(self._conn, self.host, self.port, ssl=self.ssl_context,
                                                  limit=16_384)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            status, body = await self._answer(reader, writer)
            writer.write(f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._open -= 1
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[HTTPStatus, bytes]:
        try:
            if self._open > self.max_conns:
                raise _HTTPError(HTTPStatus.TOO_MANY_REQUESTS, f"more than {self.max_conns} connections at once")
            method, path, headers, data = await asyncio.wait_for(self._read(reader), self.deadline)
            if not self.origins.allows(headers.get("Origin"), headers.get("Host"), self.ssl_context is not None):
                raise _HTTPError(HTTPStatus.FORBIDDEN, f"origin {headers.get('Origin')!r} is not allowed")
            ident = identify(self.token, bearer_token(headers))
            if ident is None or ident.role != "admin":
                raise _HTTPError(HTTPStatus.UNAUTHORIZED, "missing or wrong admin token")
            return HTTPStatus.OK, json.dumps(self._route(method, path, data), default=str).encode()
        except _HTTPError as exc:
            if exc.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN, HTTPStatus.TOO_MANY_REQUESTS):
                peer = writer.get_extra_info("peername")
                self.refusals.warning(str(exc.status.value), "control API refused a request from %s: %s",
                                      peer[0] if peer else "?", exc)
            return exc.status, json.dumps({"error": str(exc)}).encode()
        except PaperlabError as exc:
            return HTTPStatus.BAD_REQUEST, json.dumps({"error": str(exc)}).encode()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError):
            return HTTPStatus.BAD_REQUEST, b'{"error": "bad or incomplete request"}'

    async def _read(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
        line = (await reader.readline()).decode("latin-1").split()
        if len(line) != 3:
            raise ValueError("bad request line")
        headers: dict[str, str] = {}
        while True:
            h = (await reader.readline()).decode("latin-1")
            if h in ("\r\n", "\n", ""):
                break
            if len(headers) > 64:
                raise ValueError("too many headers")
            k, _, v = h.partition(":")
            headers[k.strip().title()] = v.strip()
        size = int(headers.get("Content-Length", "0") or 0)
        if size > self.max_body:
            raise _HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {self.max_body} bytes")
        data = await reader.readexactly(size) if size else b""
        return line[0].upper(), line[1].split("?", 1)[0], headers, data

    def _route(self, method: str, path: str, data: bytes) -> Any:
        parts = [p for p in path.split("/") if p][1:] if path.startswith("/api") else None
        if parts is None:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"no endpoint {path}; see /api/runs, /api/devices")
        if parts == ["devices"] and method == "GET":
            return [{"device": d.device_id, "status": d.status(), "capabilities": sorted(d.capabilities),
                     "running": len(d.running), "completed": d.completed, "max_concurrency": d.max_concurrency}
                    for d in sorted(self.orch.devices.values(), key=lambda d: d.device_id)]
        if parts == ["runs"] and method == "GET":
            return self.orch.journal.runs()
        if parts == ["runs"] and method == "POST":
            return {"run_id": self.orch.submit(Constellation.from_plan(_parse(data)))}
        if len(parts) == 2 and parts[0] == "runs" and method == "GET":
            return run_summary(self.orch.get_run(parts[1]))  # JournalError (400) naming the known runs
        if len(parts) == 3 and parts[0] == "runs" and method == "POST":
            run = self.orch.runs.get(parts[1])
            if run is None or run.finished is not None:
                raise _HTTPError(HTTPStatus.CONFLICT, f"run {parts[1]!r} is not running here")
            if parts[2] == "edits":
                ok, reason = self.orch.apply_edits(run.run_id, parse_batch(_parse(data)))
                return {"accepted": ok, "reason": reason}
            if parts[2] in ("undo", "redo"):
                ok, reason = getattr(self.orch, parts[2])(run.run_id)
                return {"accepted": ok, "reason": reason}
            if parts[2] == "cancel":
                task = (_parse(data) or {}).get("task") if data.strip() else None
                if task is None:
                    self.orch.cancel_run(run.run_id)
                elif task in run.constellation.tasks:
                    self.orch.cancel_task(run.run_id, str(task))
                else:
                    raise _HTTPError(HTTPStatus.NOT_FOUND, f"run {run.run_id} has no task {task!r}")
                return {"cancelled": task or run.run_id}
        raise _HTTPError(HTTPStatus.NOT_FOUND, f"no endpoint {method} {path}")


def _parse(data: bytes) -> Any:
    try:
        return yaml.safe_load(data.decode("utf-8")) if data.strip() else None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _HTTPError(HTTPStatus.BAD_REQUEST, f"body is not JSON/YAML: {str(exc)[:200]}") from None
