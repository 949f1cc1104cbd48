"""The live dashboard, served by the orchestrator's own port under ``/ui`` (same token).

No front-end library and no CDN: the server renders the DAG as SVG (tasks laid out by depth,
filled by status) and the page replaces its panels with each snapshot pushed over the
``/ui/ws`` WebSocket. Snapshots are sent at most every 0.2 s and only when something changed.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from paperlab.galaxy.constellation import Constellation

if TYPE_CHECKING:
    from paperlab.galaxy.orchestrator import Orchestrator

__all__ = ["Dashboard", "render_svg"]

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
<h1>Galaxy dashboard <span id="conn">connecting...</span></h1>
<div class="grid">
 <div class="panel"><h2>Constellation</h2><div id="dag"></div><div id="metrics"></div></div>
 <div><div class="panel"><h2>Devices</h2><div id="devices"></div></div>
      <div class="panel"><h2>Events</h2><div id="events"></div></div></div>
</div>
<script>
(function(){
  function connect(){
    var ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ui/ws" + location.search);
    ws.onopen = function(){ document.getElementById("conn").textContent = "live"; };
    ws.onmessage = function(m){
      var s = JSON.parse(m.data);
      for (var k of ["dag", "metrics", "devices", "events"]) document.getElementById(k).innerHTML = s[k];
    };
    ws.onclose = function(){ document.getElementById("conn").textContent = "reconnecting...";
                             setTimeout(connect, 1000); };
  }
  connect();
})();
</script></body></html>
"""


def render_svg(c: Constellation) -> str:
    """The DAG as SVG: columns by depth, one node per task, coloured by status."""
    depth: dict[str, int] = {}
    for t in c.topological_order():
        depth[t] = max((depth[e.source] + 1 for e in c.predecessors(t)), default=0)
    columns: dict[int, list[str]] = {}
    for t, d in depth.items():
        columns.setdefault(d, []).append(t)
    w, h, gx, gy = 110, 26, 40, 10
    pos = {t: (12 + d * (w + gx), 12 + i * (h + gy)) for d, ts in columns.items() for i, t in enumerate(ts)}
    width = 24 + len(columns) * (w + gx)
    height = 24 + max((len(ts) for ts in columns.values()), default=1) * (h + gy)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" id="dag-svg">']
    for e in c.edges:
        (x1, y1), (x2, y2) = pos[e.source], pos[e.target]
        dash = ' stroke-dasharray="4 3"' if e.kind.value != "success_only" else ""
        parts.append(f'<line x1="{x1 + w}" y1="{y1 + h / 2}" x2="{x2}" y2="{y2 + h / 2}" '
                     f'stroke="#90a4ae"{dash}/>')
    for tid, (x, y) in pos.items():
        task = c.tasks[tid]
        st = task.status.value
        tip = html.escape(f"{tid}: {st} {task.assigned_device or ''} {task.error or ''}")
        parts.append(f'<g class="task" data-task="{html.escape(tid)}" data-status="{st}"><title>{tip}</title>'
                     f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="5" fill="{STATUS_FILL[st]}" '
                     f'stroke="#455a64"/><text x="{x + 6}" y="{y + 17}" font-size="11">'
                     f'{html.escape(tid[:16])}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


class Dashboard:
    """Implements the server's UI hook: the page over HTTP, snapshots over WebSocket."""

    def __init__(self, orch: Orchestrator, max_events: int = 40) -> None:
        self.orch = orch
        self.version = 0
        self.events: list[str] = []
        self.max_events = max_events
        orch.listeners.append(self._on_event)

    def _on_event(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        self.version += 1
        if kind == "created":
            detail = f"{len(data.get('plan', {}).get('tasks', []))} tasks"
        else:
            detail = " ".join(f"{k}={v}" for k, v in data.items()
                              if k in ("task", "device", "status", "what", "reason", "state") and v)
        stamp = time.strftime("%H:%M:%S", time.localtime(data.get("ts", time.time())))
        self.events.append(html.escape(f"{stamp} {kind} {detail}"[:160]))
        del self.events[: -self.max_events]

    def http(self, path: str, query: dict[str, list[str]]) -> Response | None:
        if path in ("/ui", "/ui/"):
            body = PAGE.encode()
            headers = Headers([("Content-Type", "text/html; charset=utf-8"),
                               ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
            return Response(HTTPStatus.OK.value, "OK", headers, body)
        if path == "/ui/ws":
            return None
        body = b"not found\n"
        return Response(404, "Not Found", Headers([("Content-Length", str(len(body)))]), body)

    def snapshot(self) -> dict[str, str]:
        runs = list(self.orch.runs.values())
        run = runs[-1] if runs else None
        devices = "".join(
            f'<tr id="dev-{html.escape(d.device_id)}" class="dev-{d.status()}" data-status="{d.status()}">'
            f"<td>{html.escape(d.device_id)}</td><td>{d.status()}</td>"
            f"<td>{html.escape(','.join(sorted(d.capabilities)))}</td><td>{len(d.running)}</td>"
            f"<td>{d.completed}</td></tr>"
            for d in sorted(self.orch.devices.values(), key=lambda d: d.device_id))
        metrics = ""
        if run is not None:
            c = run.constellation
            counts: dict[str, int] = {}
            for t in c.tasks.values():
                counts[t.status.value] = counts.get(t.status.value, 0) + 1
            m = c.metrics()
            state = run.finished.value if run.finished else "running"
            metrics = (f'<p id="run-state" data-state="{state}">run <b>{html.escape(run.run_id)}</b>: '
                       f"{state}; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                       + f"; critical path {m['critical_path']:.2f}s, parallel width "
                       f"{m['parallel_width']:.2f}</p>")
        return {
            "dag": render_svg(run.constellation) if run else "<p>no run yet</p>",
            "metrics": metrics,
            "devices": "<table><tr><th>device</th><th>status</th><th>capabilities</th><th>running</th>"
                       f"<th>done</th></tr>{devices}</table>",
            "events": "<br>".join(reversed(self.events)),
        }

    async def websocket(self, conn: ServerConnection) -> None:
        sent, sent_at = -1, 0.0
        try:
            while True:
                # Device status can change without an event (staleness), so resend every
                # second even when nothing was journaled.
                if self.version != sent or time.monotonic() - sent_at > 1.0:
                    sent, sent_at = self.version, time.monotonic()
                    await conn.send(json.dumps(self.snapshot()))
                await asyncio.sleep(0.2)
        except ConnectionClosed:
            pass
