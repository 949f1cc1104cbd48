"""The dashboard's HTML page: static (it holds no data and no credential), so it is served
without a token; everything it shows arrives over ``/ui/ws`` after it logs in.

Login: the viewer or admin token is put in the address's fragment (``/ui#token=...``), which a
browser never sends to a server: the page moves it to ``sessionStorage``, removes it from the
address bar, and sends it as the first WebSocket message (``{"op": "auth", "token": ...}``).
No cookie, so another site's page cannot ride on a logged-in browser; and ``/ui/ws`` checks
``Origin`` as well.
"""

from __future__ import annotations

import html
import json

from paperlab.galaxy.dashboard.render import STATUS_FILL

__all__ = ["page"]

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Galaxy dashboard</title>
<style>
body{font-family:system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:20px;margin:0 0 8px} h2{font-size:15px;margin:12px 0 4px}
.grid{display:grid;grid-template-columns:2fr 1fr;gap:16px}
.panel{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;overflow:auto}
table{border-collapse:collapse;font-size:13px} td,th{padding:2px 8px;text-align:left;vertical-align:top}
.dev-online{color:#2e7d32}.dev-busy{color:#ef6c00}.dev-lost{color:#c62828;font-weight:bold}
.dev-offline{color:#757575} #events{font-family:monospace;font-size:12px;max-height:260px}
#conn{font-size:12px;color:#757575} #legend{font-size:12px;margin:4px 0}
#legend span{display:inline-block;margin-right:10px}
#legend i{display:inline-block;width:12px;height:12px;border:1px solid #455a64;border-radius:3px;
 vertical-align:-2px;margin-right:3px}
#failures td:last-child{color:#c62828;font-family:monospace;font-size:12px}
</style></head><body>
<h1>Galaxy dashboard <span id="conn">connecting...</span>
 <button id="cancel-run" hidden>cancel run</button></h1>
<div class="grid">
 <div class="panel"><h2>Constellation</h2><div id="legend">%LEGEND%</div><div id="dag"></div>
  <div id="metrics"></div><h2>Failed tasks</h2><div id="failures"></div></div>
 <div><div class="panel"><h2>Devices</h2><div id="devices"></div></div>
      <div class="panel"><h2>Events</h2><div id="events"></div></div></div>
</div>
<script>
(function(){
  var FILL = %FILL%;
  var m = /[#&]token=([^&]*)/.exec(location.hash);
  if (m) { sessionStorage.setItem("galaxy_token", decodeURIComponent(m[1]));
           history.replaceState(null, "", location.pathname); }  // out of the address bar
  var token = sessionStorage.getItem("galaxy_token") || "";
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
    ws.onopen = function(){ ws.send(JSON.stringify({op: "auth", token: token}));
                            document.getElementById("conn").textContent = "live"; };
    ws.onmessage = function(m){
      var s = JSON.parse(m.data);
      if (s.role) { document.body.dataset.role = s.role;
                    document.getElementById("cancel-run").hidden = s.role !== "admin"; }
      for (var k of ["dag", "metrics", "devices", "events", "failures"])
        if (k in s) document.getElementById(k).innerHTML = s[k];
      if (s.tasks) for (var id in s.tasks) {
        var g = document.querySelector('g.task[data-task="' + CSS.escape(id) + '"]');
        if (!g) continue;
        g.dataset.status = s.tasks[id][0];
        g.querySelector("rect").setAttribute("fill", FILL[s.tasks[id][0]]);
        g.querySelector("title").textContent = s.tasks[id][1];
      }
    };
    ws.onclose = function(e){
      var why = e.code === 1008 ? "refused: " + (e.reason || "wrong token") + " (open /ui#token=TOKEN)"
                                : "reconnecting...";
      document.getElementById("conn").textContent = why;
      if (e.code !== 1008) setTimeout(connect, 1000);
    };
  }
  connect();
})();
</script></body></html>
"""


def page() -> bytes:
    """The page, with the status colours (and their legend) filled in."""
    legend = "".join(f'<span><i style="background:{fill}"></i>{html.escape(status)}</span>'
                     for status, fill in STATUS_FILL.items())
    return _PAGE.replace("%FILL%", json.dumps(STATUS_FILL)).replace("%LEGEND%", legend).encode()
