"""The live dashboard, served by the orchestrator's own port under ``/ui``.

No front-end library and no CDN: the DAG is drawn as SVG (tasks laid out by depth, filled by
status) and the page replaces the panels that changed with each frame pushed over the
``/ui/ws`` WebSocket: the SVG when the DAG's structure changes, otherwise only the tasks whose
status changed (the page recolours those nodes).

Access: the viewer token (read-only) or the admin token (may also cancel), given in the
``Authorization`` header of the ``/ui/ws`` handshake or as the connection's first message
within ``login_timeout`` seconds (the page, see :mod:`.page`). At most ``max_viewers`` viewers
at once (the page shows one run, so this caps the viewers of the run on show).

Isolation from the scheduler: the scheduler does no dashboard work at all. Frames are drawn
by a separate renderer process (:mod:`paperlab.galaxy.dashboard.render`) that reads the run's
events from the journal; this side only sends it a tick at most ``max_fps`` times a second
(once every ``busy_interval`` seconds while the scheduler is busy: more than ``busy_changes``
tasks changed since the last tick, so a burst of work is not slowed by frames drawn for it)
while someone watches (the run on show and the devices table) and relays the frame it answers
with, encoded once for every viewer. Each viewer has ONE slot: a frame that arrives while the
viewer's previous send is still in progress replaces the unsent one (it is dropped), and the
viewer then gets the whole page state instead of a diff. A viewer stalled for longer than
``send_timeout`` is disconnected. The renderer starts with the first viewer and stops after
``idle_stop`` seconds without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from paperlab.galaxy import defaults
from paperlab.galaxy.dashboard.page import page
from paperlab.galaxy.dashboard.render import render_svg
from paperlab.galaxy.protocol.auth import Identity

if TYPE_CHECKING:
    from paperlab.galaxy.orchestrator.core import Orchestrator
    from paperlab.galaxy.orchestrator.runstate import Run

__all__ = ["Dashboard", "render_svg"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Frame:
    """One frame from the renderer: the diff from frame ``base`` and, when a viewer needed
    it, the whole page state (else b"")."""

    seq: int
    base: int
    diff: bytes
    full: bytes


@dataclass(eq=False)
class Viewer:
    """One /ui/ws connection: the frame waiting to be sent (one slot) and the last one sent."""

    conn: ServerConnection
    pending: Frame | None = None
    last: int = -1
    dropped: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, frame: Frame) -> bool:
        """Put ``frame`` in the slot; True if it replaced an unsent frame (one dropped)."""
        replaced = self.pending is not None
        self.pending = frame
        self.ready.set()
        if replaced:
            self.dropped += 1
        return replaced


class Dashboard:
    """Implements the server's UI hook: the page over HTTP, frames over WebSocket."""

    def __init__(self, orch: Orchestrator, max_fps: float = 4.0, busy_changes: int = 500,
                 busy_interval: float = 1.0, idle_stop: float = 30.0,
                 send_timeout: float = 60.0, sndbuf: int = 256 * 1024,
                 max_viewers: int = defaults.MAX_VIEWERS, login_timeout: float = defaults.REGISTER_TIMEOUT) -> None:
        self.orch = orch
        self.max_viewers = max_viewers
        self.login_timeout = login_timeout
        self.interval = 1.0 / max_fps
        self.busy_changes, self.busy_interval = busy_changes, busy_interval
        self._last_changes = 0  # tasks the last tick carried
        self.idle_stop = idle_stop
        self.send_timeout = send_timeout
        self.sndbuf = sndbuf  # kernel send buffer per viewer: bounds what a stalled one holds
        self._clients: set[Viewer] = set()
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._seq = 0  # the renderer's newest frame
        # The run on show, whose Run.changed collects the tasks that changed since the last
        # tick while someone watches; None when nobody does or the renderer is new.
        self._shown: Run | None = None
        self._dag_key = ""
        self._renderer_run: str | None = None  # the run the renderer last heard of
        self.renders = 0  # frames received from the renderer
        self.frames_sent = 0  # frames sent to viewers, all together
        self.frames_dropped = 0  # frames a slow viewer skipped
        self.fulls = 0  # frames that carried the whole page (a viewer was out of step)

    def http(self, path: str) -> Response | None:
        """The page (``/ui``); ``/ui/ws`` goes on to :meth:`websocket`."""
        if path in ("/ui", "/ui/"):
            body = page()
            headers = Headers([("Content-Type", "text/html; charset=utf-8"),
                               ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
                               ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY"),
                               ("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; "
                                "script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'")])
            return Response(HTTPStatus.OK.value, "OK", headers, body)
        if path == "/ui/ws":
            return None
        body = b"not found\n"
        return Response(404, "Not Found", Headers([("Content-Length", str(len(body)))]), body)

    # ---- viewers -----------------------------------------------------------------------
    async def websocket(self, conn: ServerConnection, identity: Identity | None,
                        identify: Callable[[str], Identity | None]) -> None:
        """Serve one viewer: logged in by its handshake (``identity``) or its first message."""
        if identity is None:
            identity = await self._login(conn, identify)
            if identity is None:
                return
        if len(self._clients) >= self.max_viewers:
            log.warning("dashboard: refused a viewer, %d already watch (max_viewers)", len(self._clients))
            await conn.close(1013, f"at most {self.max_viewers} viewers at once; try again later")
            return
        sock = conn.transport.get_extra_info("socket")
        if sock is not None and self.sndbuf:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        viewer = Viewer(conn)  # the next tick asks the renderer for the whole page for it
        self._clients.add(viewer)
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._pump_frames())
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._commands(conn, identity))
        wait: asyncio.Task[Any] | None = None
        try:
            await conn.send(json.dumps({"role": identity.role}))
            while True:
                # Wait for a frame or for the viewer to leave (its reader ends): with nothing
                # new to send, a closed connection would otherwise never be noticed.
                wait = loop.create_task(viewer.ready.wait())
                await asyncio.wait({wait, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not wait.done():
                    break
                viewer.ready.clear()
                frame, viewer.pending = viewer.pending, None
                if frame is None:
                    continue
                # In step: the diff; after a skipped frame (or none yet): the whole state,
                # which the next tick asks for if this frame does not carry it.
                data = frame.diff if viewer.last == frame.base else frame.full
                if viewer.last != frame.base and not data:
                    continue
                if data:
                    try:
                        await asyncio.wait_for(conn.send(data, text=True), self.send_timeout)
                    except TimeoutError:
                        log.warning("dashboard viewer %s stalled for %.0fs: disconnected",
                                    conn.remote_address, self.send_timeout)
                        conn.transport.abort()
                        break
                    self.frames_sent += 1
                viewer.last = frame.seq
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(viewer)
            reader.cancel()
            if wait is not None:
                wait.cancel()

    async def _login(self, conn: ServerConnection, identify: Callable[[str], Identity | None]) -> Identity | None:
        """The identity of the first message ``{"op": "auth", "token": ...}`` (a viewer or the
        admin), or None with the connection closed (1008)."""
        with contextlib.suppress(ConnectionClosed):
            try:
                raw = await asyncio.wait_for(conn.recv(), self.login_timeout)
                msg = json.loads(raw) if len(raw) < 4096 else {}
                token = str(msg.get("token", "")) if isinstance(msg, dict) and msg.get("op") == "auth" else ""
            except (asyncio.TimeoutError, ValueError):
                token = ""
            ident = identify(token) if token else None
            if ident is not None and ident.role != "device":
                return ident
            await conn.close(1008, "log in with a viewer or admin token")
        return None

    async def _commands(self, conn: ServerConnection, identity: Identity) -> None:
        """Cancel requests from an admin's page (a viewer's are ignored)."""
        with contextlib.suppress(ConnectionClosed):
            async for raw in conn:
                if identity.role != "admin" or len(raw) > 4096:
                    continue
                try:
                    cmd = json.loads(raw)
                    run = self.orch.runs.get(str(cmd.get("run")))
                    if cmd.get("op") != "cancel" or run is None or run.finished is not None:
                        continue
                    if cmd.get("task"):
                        if str(cmd["task"]) in run.constellation.tasks:
                            self.orch.cancel_task(run.run_id, str(cmd["task"]))
                    else:
                        self.orch.cancel_run(run.run_id)
                except (ValueError, AttributeError, KeyError):
                    continue

    # ---- the renderer process ------------------------------------------------------------
    def _tick(self) -> bytes:
        """What the renderer needs from this process: the run on show (the newest), its
        structure's key, the ``[status, device, error]`` of the tasks that changed since the
        last tick, and the devices table (liveness is not journaled). O(changed tasks +
        devices); when the run on show is new to the renderer, O(tasks) once, and only the
        tasks that are not pending are sent (the renderer takes the others as pending)."""
        run_id = next(reversed(self.orch.runs), None)
        run = self.orch.runs[run_id] if run_id is not None else None
        states: dict[str, list[Any]] = {}
        key = ""
        if run is not None:
            c = run.constellation
            key = f"{run_id}:{id(c)}:{len(c.tasks)}:{len(c.edges)}"
            tasks = c.tasks
            if run is not self._shown and run_id != self._renderer_run:
                self._show(run)  # new to the renderer: it takes unlisted tasks as pending
                pending = run.pending
                todo: Any = (tid for tid in tasks if tid not in pending)
            elif run is not self._shown or key != self._dag_key:
                # Shown again after nobody watched (the renderer holds states that may be
                # stale), or edited (the renderer keeps its states): all of them.
                self._show(run)
                todo = tasks
            else:
                todo = run.changed or ()
            for tid in todo:
                t = tasks.get(tid)
                if t is not None:
                    # The status is a str enum: json writes its value (``.value`` is a slow
                    # property, and this runs for every task that changed).
                    states[tid] = [t.status, t.assigned_device, t.error]
            if run.changed is not None:
                run.changed.clear()
        else:
            self._show(None)
        self._dag_key, self._renderer_run = key, run_id
        devices = [[d.device_id, d.status(), sorted(d.capabilities), len(d.running), d.completed]
                   for d in self.orch.devices.values()]
        self._last_changes = len(states)
        return json.dumps({
            "run": run_id, "dag": key, "states": states, "devices": devices,
            "state": run.finished.value if run is not None and run.finished is not None else "running",
            # A viewer out of step (new, or it skipped a frame) needs the whole page. One with
            # a frame still in its slot is not counted: it sends that frame long before this
            # tick's answer comes (if not, it skips a frame and the next tick asks for it).
            "full": any(v.pending is None and v.last != self._seq for v in self._clients),
        }).encode() + b"\n"

    def pause(self) -> float:
        """Seconds between ticks: ``1/max_fps``, or ``busy_interval`` after a tick that carried
        more than ``busy_changes`` tasks (the scheduler is busy; fewer frames cost it less)."""
        return self.busy_interval if self._last_changes > self.busy_changes else self.interval

    def _show(self, run: Run | None) -> None:
        """Collect the changes of ``run`` (None: of no run) from now on."""
        if self._shown is not None:
            self._shown.changed = None
        self._shown = run
        if run is not None:
            run.changed = set()

    async def _pump_frames(self) -> None:
        """While someone watches: one tick per interval, the answer fanned out to the viewers'
        slots. A tick waits for its answer before the next is sent, so a busy renderer slows
        the frame rate, never this loop, and nothing piles up in the pipe."""
        idle_since: float | None = None
        try:
            while True:
                started = time.monotonic()
                if not self._clients:
                    self._show(None)  # nobody watches: no cost per event
                    idle_since = idle_since or started
                    if started - idle_since > self.idle_stop:
                        return
                else:
                    idle_since = None
                    try:
                        frame = await self._render()
                    except (OSError, EOFError, ValueError, asyncio.IncompleteReadError) as exc:
                        log.warning("dashboard renderer failed (%s); restarting it", exc)
                        await self._stop_renderer()
                        await asyncio.sleep(1.0)
                        continue
                    if frame is not None:
                        self.renders += 1
                        self.fulls += bool(frame.full)
                        self._seq = frame.seq
                        for viewer in self._clients:
                            if viewer.offer(frame):
                                self.frames_dropped += 1
                await asyncio.sleep(max(0.0, self.pause() - (time.monotonic() - started)))
        finally:
            self._pump = None
            self._show(None)
            await self._stop_renderer()

    async def _render(self) -> Frame | None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            proc = self._proc = await self._start_renderer()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(self._tick())
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if not line:
            raise EOFError(f"renderer exited with {await proc.wait()}")
        head = json.loads(line)
        if head["seq"] is None:
            return None
        d = await proc.stdout.readexactly(int(head["diff"]))
        f = await proc.stdout.readexactly(int(head["full"]))
        return Frame(int(head["seq"]), int(head["base"]), d, f)

    async def _start_renderer(self) -> asyncio.subprocess.Process:
        self._seq, self._dag_key, self._renderer_run = 0, "", None  # a new renderer knows nothing
        self._show(None)
        for viewer in self._clients:
            viewer.last = -1
        src = str(Path(__file__).resolve().parents[3])  # the paperlab this process runs
        env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "paperlab.galaxy.dashboard.render", str(self.orch.journal.path),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)

    async def _stop_renderer(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # it exits at the end of its input
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def close(self) -> None:
        """Stop the renderer (the server closes the viewers' connections)."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        await self._stop_renderer()
