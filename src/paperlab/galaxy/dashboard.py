"""The live dashboard, served by the orchestrator's own port under ``/ui``.

No front-end library and no CDN: the server renders the DAG as SVG (tasks laid out by depth,
filled by status) and the page replaces the panels that changed with each frame pushed over
the ``/ui/ws`` WebSocket: the SVG when the DAG's structure changes, otherwise only the tasks
whose status changed (the page recolours those nodes).

Access: the viewer token (read-only) or the admin token (may also cancel). The first load may
carry ``?token=``; the response sets an HttpOnly, SameSite=Strict cookie and the page removes
the token from the address bar, so later requests and the WebSocket use the cookie.

Isolation from the scheduler: ONE renderer task draws a snapshot at most ``max_fps`` times a
second, and only when an event arrived since the last one, however many viewers there are.
Each viewer gets only the panels that changed since its last frame (a diff), through a queue
of one slot: a slow viewer skips frames instead of holding memory or the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import time
from collections import Counter, deque
from collections.abc import Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from paperlab.galaxy.auth import COOKIE, Identity
from paperlab.galaxy.constellation import Constellation, ConstellationState, TaskStar

if TYPE_CHECKING:
    from paperlab.galaxy.orchestrator import Orchestrator
    from paperlab.galaxy.runstate import Run

__all__ = ["Dashboard", "render_svg", "render_svg_async"]

STATUS_FILL = {"pending": "#eceff1", "running": "#ffb300", "completed": "#43a047", "failed": "#e53935",
               "cancelled": "#8e24aa", "skipped": "#b0bec5"}

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Galaxy dashboard</title>
<style>
body{font-family:system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:20px;margin:0 0 8px} h2{font-size:15px;margin:12px 0 4px}
.grid{display:grid;grid-template-columns:2fr 1fr;gap:16px}
.panel{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;overflow:auto}
table{border-collapse:collapse;font-size:13px} td,th{padding:2px 8px;text-align:left}
.dev-online{color:#2e7d32}.dev-busy{color:#ef6c00}.dev-lost{color:#c62828;font-weight:bold}
.dev-offline{color:#757575} #events{font-family:monospace;font-size:12px;max-height:260px}
#conn{font-size:12px;color:#757575}
</style></head><body>
<h1>Galaxy dashboard <span id="conn">connecting...</span>
 <button id="cancel-run" hidden>cancel run</button></h1>
<div class="grid">
 <div class="panel"><h2>Constellation</h2><div id="dag"></div><div id="metrics"></div></div>
 <div><div class="panel"><h2>Devices</h2><div id="devices"></div></div>
      <div class="panel"><h2>Events</h2><div id="events"></div></div></div>
</div>
<script>
(function(){
  var FILL = %FILL%;
  if (location.search) history.replaceState(null, "", location.pathname);  // the cookie has it now
  var ws = null;
  document.getElementById("dag").addEventListener("click", function(e){
    var g = e.target.closest ? e.target.closest("g.task") : null;
    var run = document.getElementById("run-state");
    if (!g || !ws || !run || document.body.dataset.role !== "admin") return;
    if (confirm("cancel task " + g.dataset.task + "?"))
      ws.send(JSON.stringify({op: "cancel", run: run.dataset.run, task: g.dataset.task}));
  });
  document.getElementById("cancel-run").addEventListener("click", function(){
    var run = document.getElementById("run-state");
    if (ws && run && confirm("cancel run " + run.dataset.run + "?"))
      ws.send(JSON.stringify({op: "cancel", run: run.dataset.run}));
  });
  function connect(){
    ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ui/ws");
    ws.onopen = function(){ document.getElementById("conn").textContent = "live"; };
    ws.onmessage = function(m){
      var s = JSON.parse(m.data);
      if (s.role) { document.body.dataset.role = s.role;
                    document.getElementById("cancel-run").hidden = s.role !== "admin"; }
      for (var k of ["dag", "metrics", "devices", "events"])
        if (k in s) document.getElementById(k).innerHTML = s[k];
      if (s.tasks) for (var id in s.tasks) {
        var g = document.querySelector('g.task[data-task="' + CSS.escape(id) + '"]');
        if (!g) continue;
        g.dataset.status = s.tasks[id][0];
        g.querySelector("rect").setAttribute("fill", FILL[s.tasks[id][0]]);
        g.querySelector("title").textContent = s.tasks[id][1];
      }
    };
    ws.onclose = function(){ document.getElementById("conn").textContent = "reconnecting...";
                             setTimeout(connect, 1000); };
  }
  connect();
})();
</script></body></html>
"""


_LAYOUT: dict[int, tuple[int, dict[str, tuple[int, int]], int, int]] = {}


def _layout(c: Constellation) -> tuple[dict[str, tuple[int, int]], int, int]:
    """Node positions by depth. Cached per constellation object and edge count: the structure
    only changes through an edit, which swaps in a new object, so a redraw recolours only."""
    key = id(c)
    hit = _LAYOUT.get(key)
    if hit is not None and hit[0] == len(c.edges) + 100_000 * len(c.tasks):
        return hit[1], hit[2], hit[3]
    depth = c.depths()
    columns: dict[int, list[str]] = {}
    for t, d in depth.items():
        columns.setdefault(d, []).append(t)
    w, h, gx, gy = 110, 26, 40, 10
    pos = {t: (12 + d * (w + gx), 12 + i * (h + gy)) for d, ts in columns.items() for i, t in enumerate(ts)}
    width = 24 + len(columns) * (w + gx)
    height = 24 + max((len(ts) for ts in columns.values()), default=1) * (h + gy)
    if len(_LAYOUT) > 8:
        _LAYOUT.clear()
    _LAYOUT[key] = (len(c.edges) + 100_000 * len(c.tasks), pos, width, height)
    return pos, width, height


def render_svg(c: Constellation) -> str:
    """The DAG as SVG: columns by depth, one node per task, coloured by status."""
    return "".join(part for chunk in _svg_chunks(c) for part in chunk)


async def render_svg_async(c: Constellation) -> str:
    """:func:`render_svg`, yielding to the event loop between chunks of a few hundred
    elements, so the scheduler's steps (which share the loop) never wait for a whole DAG."""
    parts: list[str] = []
    for chunk in _svg_chunks(c):
        parts.extend(chunk)
        await asyncio.sleep(0)
    return "".join(parts)


def _svg_chunks(c: Constellation, size: int = 250) -> Iterator[list[str]]:
    pos, width, height = _layout(c)
    w, h = 110, 26
    yield [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" id="dag-svg">']
    # All edges as two paths (solid: success_only, dashed: the others), not one element per
    # edge: a third of the bytes and of the time for a large DAG.
    solid: list[str] = []
    dashed: list[str] = []
    for e in c.edges:
        (x1, y1), (x2, y2) = pos[e.source], pos[e.target]
        (solid if e.kind.value == "success_only" else dashed).append(
            f"M{x1 + w} {y1 + h // 2}L{x2} {y2 + h // 2}")
    yield [f'<path d="{"".join(d)}" stroke="#90a4ae" fill="none"{extra}/>'
           for d, extra in ((solid, ""), (dashed, ' stroke-dasharray="4 3"')) if d]
    nodes = list(pos.items())
    for i in range(0, len(nodes), size):
        chunk = []
        for tid, (x, y) in nodes[i:i + size]:
            task = c.tasks[tid]
            st = task.status.value
            # Task and device ids match ID_PATTERN (nothing to escape); the error is free text.
            chunk.append(f'<g class="task" data-task="{tid}" data-status="{st}"><title>{_tip(tid, task)}</title>'
                         f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="5" fill="{STATUS_FILL[st]}" '
                         f'stroke="#455a64"/><text x="{x + 6}" y="{y + 17}" font-size="11">'
                         f'{tid[:16]}</text></g>')
        yield chunk
    yield ["</svg>"]


def _tip(tid: str, task: TaskStar) -> str:
    tip = f"{tid}: {task.status.value} {task.assigned_device or ''} "
    return tip + html.escape(task.error) if task.error else tip


def task_states(c: Constellation) -> dict[str, list[str]]:
    """task id -> [status, tooltip]: what a redraw changes once the layout is drawn."""
    return {tid: [t.status.value, _tip(tid, t)] for tid, t in c.tasks.items()}


class Dashboard:
    """Implements the server's UI hook: the page over HTTP, diffs over WebSocket."""

    def __init__(self, orch: Orchestrator, max_events: int = 40, max_fps: float = 2.0) -> None:
        self.orch = orch
        self.version = 0
        # The newest events, raw: formatted only when a frame is drawn (most never are).
        self._events: deque[tuple[str, dict[str, Any]]] = deque(maxlen=max_events)
        self.max_events = max_events
        self.min_interval = 1.0 / max_fps
        self.renders = 0
        self._frame: dict[str, Any] = {}
        self._dag_key = "-"
        self._dag_svg = ""
        self._frame_version = -1
        self._clients: set[asyncio.Queue[dict[str, Any]]] = set()
        # (id(sent), id(frame)) -> (sent, frame, encoded diff): viewers in step with each other
        # share one diff and one json.dumps per frame. Only the newest frame's entries are kept.
        self._diffs: dict[tuple[int, int], tuple[dict[str, Any], dict[str, Any], str]] = {}
        self.frames_sent = 0
        self._renderer: asyncio.Task[None] | None = None
        self._metrics: dict[str, float] | None = None
        self._metrics_at = 0.0
        self._metrics_for: tuple[str, ConstellationState | None] = ("", None)
        self._snap_version = -1
        orch.listeners.append(self._on_event)

    def _on_event(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        # Called on the scheduler's path for every event: O(1), no formatting or rendering.
        self.version += 1
        self._events.append((kind, data))

    @property
    def events(self) -> list[str]:
        """The newest events as HTML-escaped lines, oldest first."""
        return [self._event_line(kind, data) for kind, data in self._events]

    @staticmethod
    def _event_line(kind: str, data: dict[str, Any]) -> str:
        if kind == "created":
            detail = f"{len(data.get('plan', {}).get('tasks', []))} tasks"
        elif kind == "edit":
            detail = f"accepted: {data.get('batch', {}).get('reason', '')}"
        else:
            detail = " ".join(f"{k}={v}" for k, v in data.items()
                              if k in ("task", "device", "status", "what", "reason", "state") and v)
        stamp = time.strftime("%H:%M:%S", time.localtime(data.get("ts", time.time())))
        return html.escape(f"{stamp} {kind} {detail}"[:160])

    def http(self, path: str, query: dict[str, list[str]], identity: Identity,
             token: str) -> Response | None:
        if path in ("/ui", "/ui/"):
            body = PAGE.replace("%FILL%", json.dumps(STATUS_FILL)).encode()
            headers = Headers([("Content-Type", "text/html; charset=utf-8"),
                               ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
                               ("Referrer-Policy", "no-referrer")])
            if query.get("token"):  # first load: move the token into a cookie
                headers["Set-Cookie"] = f"{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict"
            return Response(HTTPStatus.OK.value, "OK", headers, body)
        if path == "/ui/ws":
            return None
        body = b"not found\n"
        return Response(404, "Not Found", Headers([("Content-Length", str(len(body)))]), body)

    async def snapshot(self) -> dict[str, Any]:
        """The whole dashboard state. The SVG is drawn only when the DAG's structure changed
        (a new run, an edit); the task panel, O(tasks), only when an event arrived since the
        last snapshot; the critical path, which walks the DAG, at most once a second while the
        run goes on and once when it has finished. The devices table is always fresh (a device
        can go stale without an event)."""
        self.renders += 1
        runs = list(self.orch.runs.values())
        run = runs[-1] if runs else None
        key = f"{run.run_id}:{id(run.constellation)}:{len(run.constellation.tasks)}:" \
              f"{len(run.constellation.edges)}" if run else ""
        if key != self._dag_key:
            self._dag_svg = await render_svg_async(run.constellation) if run else "<p>no run yet</p>"
            self._dag_key = key
            await asyncio.sleep(0)
        devices = "".join(
            f'<tr id="dev-{html.escape(d.device_id)}" class="dev-{d.status()}" data-status="{d.status()}">'
            f"<td>{html.escape(d.device_id)}</td><td>{d.status()}</td>"
            f"<td>{html.escape(','.join(sorted(d.capabilities)))}</td><td>{len(d.running)}</td>"
            f"<td>{d.completed}</td></tr>"
            for d in sorted(self.orch.devices.values(), key=lambda d: d.device_id))
        prev = self._frame
        if prev.get("dag_key") == key and self._snap_version == self.version:
            tasks, metrics, events = prev["tasks"], prev["metrics"], prev["events"]
        else:
            self._snap_version = self.version
            tasks = task_states(run.constellation) if run else {}
            metrics = self._run_line(run, tasks) if run else ""
            events = "<br>".join(reversed(self.events))
        return {
            "dag_key": key,
            "dag": self._dag_svg,
            "tasks": tasks,
            "metrics": metrics,
            "devices": "<table><tr><th>device</th><th>status</th><th>capabilities</th><th>running</th>"
                       f"<th>done</th></tr>{devices}</table>",
            "events": events,
        }

    def _run_line(self, run: Run, tasks: dict[str, list[str]]) -> str:
        c = run.constellation
        # counted from the task panel just built (one C-level pass), not from the models again
        counts = Counter(state for state, _ in tasks.values())
        # The critical path walks the whole DAG: while the run goes on, at most once a second
        # and not in its first second (a short run gets it once, when it has finished, after
        # which it no longer changes).
        now, done = time.monotonic(), (run.run_id, run.finished)
        if self._metrics_for[0] != run.run_id and run.finished is None:
            self._metrics, self._metrics_at, self._metrics_for = None, now, (run.run_id, None)
        elif done != self._metrics_for if run.finished is not None else now - self._metrics_at > 1.0:
            self._metrics, self._metrics_at, self._metrics_for = c.metrics(), now, done
        m = self._metrics
        state = run.finished.value if run.finished else "running"
        path = (f"; critical path {m['critical_path']:.2f}s, parallel width {m['parallel_width']:.2f}"
                if m is not None else "")
        return (f'<p id="run-state" data-state="{state}" data-run="{html.escape(run.run_id)}">'
                f"run <b>{html.escape(run.run_id)}</b>: "
                f"{state}; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + path + "</p>")

    async def _render_loop(self) -> None:
        last_full = 0.0
        while self._clients:
            # Device status can change without an event (staleness): redraw each second anyway.
            if self.version != self._frame_version or time.monotonic() - last_full > 1.0:
                self._frame_version = self.version
                self._frame = await self.snapshot()
                last_full = time.monotonic()
                for q in list(self._clients):
                    if q.full():  # a slow viewer: drop its unsent frame, keep the newest
                        with contextlib.suppress(asyncio.QueueEmpty):
                            q.get_nowait()
                    q.put_nowait(self._frame)
            await asyncio.sleep(self.min_interval)
        self._renderer = None

    async def websocket(self, conn: ServerConnection, identity: Identity) -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1)
        if self._frame and self._renderer is not None:  # fresh: at once; else the renderer's first
            queue.put_nowait(self._frame)
        self._clients.add(queue)
        if self._renderer is None:
            self._renderer = asyncio.get_running_loop().create_task(self._render_loop())
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._commands(conn, identity))
        sent: dict[str, Any] = {}
        get: asyncio.Task[dict[str, Any]] | None = None
        try:
            await conn.send(json.dumps({"role": identity.role}))
            while True:
                # Wait for a frame or for the viewer to leave (its reader ends): with nothing
                # new to send, a closed connection would otherwise never be noticed.
                get = loop.create_task(queue.get())
                await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    break
                frame = get.result()
                text = self._diff_text(sent, frame)
                if text:
                    await conn.send(text)
                self.frames_sent += 1
                sent = frame
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(queue)
            reader.cancel()
            if get is not None:
                get.cancel()

    def _diff_text(self, sent: dict[str, Any], frame: dict[str, Any]) -> str:
        """The encoded diff from ``sent`` to ``frame`` ("" if nothing changed), computed once for
        every viewer that was sent the same frame."""
        key = (id(sent), id(frame))
        hit = self._diffs.get(key)
        if hit is not None and hit[0] is sent and hit[1] is frame:
            return hit[2]
        if any(f is not frame for _, f, _ in self._diffs.values()):
            self._diffs.clear()
        diff = self.diff(sent, frame)
        text = json.dumps(diff) if diff else ""
        self._diffs[key] = (sent, frame, text)
        return text

    @staticmethod
    def diff(sent: dict[str, Any], frame: dict[str, Any]) -> dict[str, Any]:
        """What a viewer that was sent ``sent`` has not seen of ``frame``: the SVG only after a
        structure change, else the tasks whose status changed, and the small panels that changed."""
        diff: dict[str, Any] = {k: frame[k] for k in ("metrics", "devices", "events") if sent.get(k) != frame[k]}
        if sent.get("dag_key") != frame["dag_key"]:
            diff["dag"], diff["tasks"] = frame["dag"], frame["tasks"]
        elif sent.get("tasks") is not frame["tasks"]:  # the same object: nothing changed
            old = sent.get("tasks", {})
            changed = {t: v for t, v in frame["tasks"].items() if old.get(t) != v}
            if changed:
                diff["tasks"] = changed
        return diff

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
