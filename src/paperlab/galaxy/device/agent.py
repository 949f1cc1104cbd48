"""The device agent: dials in to the orchestrator, runs tasks under its own policy, reconnects.

The agent keeps running tasks across a lost connection. When it reconnects it sends REGISTER
with the attempts still running and the results of recent attempts (the orchestrator may have
crashed before it journaled them); the orchestrator drops any it already applied. Reconnects
back off exponentially with full jitter so many devices do not stampede a restarted
orchestrator.

No network fault stops the agent: a refused or reset connection, a peer that closes before it
answers (a ``ws://`` URL against a TLS port, a server that accepts and hangs up), a TLS
mismatch, an HTTP error status or a timeout are each one log line (at a bounded rate: one per
reason every few seconds, then how many were suppressed) and a retry. The agent stops only
when told to, or for what retrying cannot fix: its token refused (HTTP 401), its claim beyond
its registration, or a malformed URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import sys
import time
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from paperlab.galaxy.device.executors import DeviceConfig, run_executor
from paperlab.galaxy.errors import ExecutorError, GalaxyError
from paperlab.galaxy.protocol.aip import (
    Cancel,
    ErrorMsg,
    Heartbeat,
    Register,
    Session,
    Task,
    TaskResult,
    batch_frames,
)
from paperlab.galaxy.protocol.auth import DEVICE_HEADER
from paperlab.galaxy.ratelog import RateLimitedLog

__all__ = ["AuthRefused", "DeviceAgent", "RegistrationRefused", "backoff_delay"]

log = logging.getLogger(__name__)
_RECENT = 256


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(cap, base * (2 ** attempt)))


async def _within(coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
    """``await coro`` with a timeout (asyncio.TimeoutError), in the calling task."""
    if sys.version_info >= (3, 11):  # runs the coroutine in this task; wait_for starts another
        async with asyncio.timeout(timeout):
            return await coro
    return await asyncio.wait_for(coro, timeout)


class AuthRefused(GalaxyError):
    """The orchestrator refused our token (HTTP 401); retrying would not help."""


class RegistrationRefused(GalaxyError):
    """The orchestrator refused what this device claims (beyond its registration)."""


def _why(exc: BaseException) -> str:
    """One line for a failed connection attempt: the error and, when it has one, its cause."""
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {cause})"
    return text[:300]


class DeviceAgent:
    """One device. ``run()`` returns only when stopped or when the token is refused."""

    def __init__(self, cfg: DeviceConfig, url: str, token: str, backoff_base: float = 0.1,
                 backoff_cap: float = 3.0, seed: int | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.cfg = cfg
        self.ssl_context = ssl_context
        self.url = url
        self.token = token
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rng = random.Random(seed)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.recent: OrderedDict[str, TaskResult] = OrderedDict()
        self.connections = 0
        self.failed_attempts = 0  # connection attempts that failed (each followed by a retry)
        self._failures_log = RateLimitedLog(log)
        self._refused: str | None = None  # set when the orchestrator refused our REGISTER claim
        self._send_queue: asyncio.Queue[str] | None = None
        self._session: Session | None = None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until stopped."""
        failures = 0
        while not self._stop.is_set():
            why = ""
            try:
                headers = {"Authorization": f"Bearer {self.token}", DEVICE_HEADER: self.cfg.device_id}
                async with connect(self.url, additional_headers=headers, max_size=None,
                                   ping_interval=None, open_timeout=5, close_timeout=2,
                                   ssl=self.ssl_context if self.url.startswith("wss:") else None) as ws:
                    failures = 0
                    self.connections += 1
                    log.info("connected to %s as %s", self.url, self.cfg.device_id)
                    await self._serve(ws)
            except InvalidStatus as exc:
                if exc.response.status_code == 401:
                    raise AuthRefused(f"orchestrator at {self.url} refused the token (HTTP 401); pass this "
                                      "device's token (`paperlab galaxy devices add`) or the admin secret "
                                      "with --token or GALAXY_TOKEN") from None
                why = f"HTTP {exc.response.status_code}: {exc.response.body.decode(errors='replace').strip()[:120]}"
            except InvalidURI as exc:
                raise GalaxyError(f"bad orchestrator URL {self.url!r}: {exc}") from None
            except (OSError, EOFError, asyncio.TimeoutError, WebSocketException) as exc:
                # OSError: refused, reset, unreachable, TLS errors; WebSocketException: a peer that
                # closed before answering, or answered something that is not a WebSocket handshake.
                why = _why(exc)
            if self._refused is not None:
                raise RegistrationRefused(f"the orchestrator refused device {self.cfg.device_id}: {self._refused}")
            if self._stop.is_set():
                break
            delay = backoff_delay(failures, self.backoff_base, self.backoff_cap, self.rng)
            failures += 1
            if why:
                self.failed_attempts += 1
                self._failures_log.warning(why.split(":", 1)[0], "connecting to %s failed (attempt %d): %s; "
                                           "retrying in %.1fs", self.url, failures, why, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        for t in list(self.running.values()):
            t.cancel()

    async def _serve(self, ws: ClientConnection) -> None:
        session = Session("device")
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._session, self._send_queue = session, queue
        session.send(Register(
            device_id=self.cfg.device_id, capabilities=self.cfg.capabilities,
            max_concurrency=self.cfg.max_concurrency, running=list(self.running),
            results=list(self.recent.values()),
            info={"executors": self.cfg.executors, "shell_allow": self.cfg.shell_allow,
                  "python_allow": sorted(self.cfg.python_allow)}))
        self._flush()
        writer = asyncio.create_task(self._writer(ws, queue))
        beat = asyncio.create_task(self._heartbeats())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            reader = asyncio.create_task(self._reader(ws, session))
            done, _ = await asyncio.wait({reader, writer, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    exc = t.exception()
                    if not isinstance(exc, ConnectionClosed):
                        raise exc  # type: ignore[misc]
            reader.cancel()
        finally:
            self._session, self._send_queue = None, None
            for t in (writer, beat, stopper):
                t.cancel()
            if self._stop.is_set():
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _reader(self, ws: ClientConnection, session: Session) -> None:
        async for frame in ws:
            for msg in session.receive(frame):
                if isinstance(msg, Task):
                    self._start(msg)
                elif isinstance(msg, Cancel):
                    t = self.running.get(msg.attempt_id)
                    if t is not None:
                        log.info("cancel %s: %s", msg.attempt_id, msg.reason)
                        t.cancel()
                elif isinstance(msg, ErrorMsg):
                    if msg.code == "registration":
                        self._refused = msg.message  # claims beyond the registration: retrying won't help
                    (log.error if msg.code in ("identity", "registration") else log.warning)(
                        "orchestrator error %s: %s", msg.code, msg.message)
            self._flush()

    async def _writer(self, ws: ClientConnection, queue: asyncio.Queue[str]) -> None:
        # What piled up while the last frame was written (results that finished in one loop
        # turn) leaves as one BATCH frame.
        while True:
            frames = [await queue.get()]
            while not queue.empty():
                frames.append(queue.get_nowait())
            for frame in batch_frames(frames):
                await ws.send(frame)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.heartbeat_interval)
            self._send(Heartbeat(running=list(self.running), sent_at=time.time()))

    def _send(self, msg: Any) -> None:
        if self._session is not None:
            self._session.send(msg)
            self._flush()

    def _flush(self) -> None:
        if self._session is not None and self._send_queue is not None:
            for frame in self._session.data_to_send():
                self._send_queue.put_nowait(frame)

    def _start(self, msg: Task) -> None:
        if msg.attempt_id in self.running or msg.attempt_id in self.recent:
            return  # a repeated TASK for the same attempt runs once
        if len(self.running) >= self.cfg.max_concurrency:
            log.warning("refused %s: at capacity (%d running)", msg.attempt_id, len(self.running))
            self._finish(msg, "refused", None, f"device {self.cfg.device_id} is at capacity", time.time())
            return
        log.debug("start %s (%s)", msg.attempt_id, msg.executor.kind)
        self.running[msg.attempt_id] = asyncio.create_task(self._execute(msg))

    async def _execute(self, msg: Task) -> None:
        started = time.time()
        status, result, error = "completed", None, None
        try:
            result = await _within(run_executor(msg.executor.kind, msg.executor.args, msg.inputs,
                                                self.cfg, attempt_id=msg.attempt_id), msg.timeout)
        except asyncio.CancelledError:
            status, error = "cancelled", "cancelled by the orchestrator"
        except asyncio.TimeoutError:
            status, error = "failed", f"timed out on the device after {msg.timeout:g}s"
        except ExecutorError as exc:
            status, error = "failed", str(exc)
        except Exception as exc:  # a task's bug is the task's failure, not the agent's
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        self.running.pop(msg.attempt_id, None)
        # A completion is DEBUG: at INFO a busy device would write a log line per task (half
        # its CPU time on no-op tasks); failures and cancellations stay WARNING.
        if status == "completed":
            log.debug("completed %s in %.3fs", msg.attempt_id, time.time() - started)
        else:
            log.warning("%s %s in %.2fs: %s", status, msg.attempt_id, time.time() - started, error)
        self._finish(msg, status, result, error, started)

    def _finish(self, msg: Task, status: str, result: Any, error: str | None, started: float) -> None:
        try:
            json.dumps(result)
        except (TypeError, ValueError):
            status, result, error = "failed", None, f"result of type {type(result).__name__} is not JSON"
        res = TaskResult(task_id=msg.task_id, attempt_id=msg.attempt_id, status=status,  # type: ignore[arg-type]
                         result=result, error=error, started_at=started, ended_at=time.time())
        self.recent[msg.attempt_id] = res
        while len(self.recent) > _RECENT:
            self.recent.popitem(last=False)
        self._send(res)
