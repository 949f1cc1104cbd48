"""The dashboard's renderer: its own process, answering one frame per tick.

The orchestrator's scheduler does next to no dashboard work. A few times a second, while
someone watches, the orchestrator writes one *tick* line on this process's stdin: the run on
show, a key of its DAG's structure, the ``[status, device, error]`` of the tasks whose state
changed since the last tick (of all tasks when the structure changed), the run's state and
the devices table (device liveness is not journaled). Everything else comes from the SQLite
journal (WAL mode: a reader never blocks the writer): the plan of a new run (the ``created``
row, or the whole run replayed through :meth:`paperlab.galaxy.orchestrator.runstate.Run.apply` after an
edit), the newest events for the events panel, and task durations for the critical path once
the run has finished. This process lays out and draws the SVG, keeps the page state, computes
diffs and encodes them; it answers on stdout with the frame, or ``{"seq": null}`` when nothing
changed:

    {"seq": N, "base": B, "diff": LEN, "full": LEN}\n  <diff bytes><full bytes>

``diff`` is the JSON of what changed since frame ``B`` (the SVG only after a structure change,
else the tasks whose state changed and the small panels that changed; empty when nothing
did); ``full`` is the whole page state, encoded only when the tick asks for it (a viewer just
connected, or one skipped frames). Both are UTF-8 JSON text, encoded once for every viewer.

Run as ``python -m paperlab.galaxy.dashboard.render JOURNAL``; it exits when its stdin closes,
so an orchestrator that dies (even by SIGKILL) leaves no renderer behind. It lowers its own
CPU priority (``nice`` +19, or as GALAXY_RENDER_NICE says: another nice value, or ``idle`` for
SCHED_IDLE): where cores are scarce, the orchestrator and the devices come first and frames
come less often.
"""

from __future__ import annotations

import contextlib
import gc
import html
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:  # the renderer imports no pydantic model unless a run was edited
    from paperlab.galaxy.plan.constellation import Constellation

__all__ = ["STATUS_FILL", "PageState", "event_line", "render_svg", "svg"]

STATUS_FILL = {"pending": "#eceff1", "running": "#ffb300", "completed": "#43a047", "failed": "#e53935",
               "cancelled": "#8e24aa", "skipped": "#b0bec5"}


def event_line(kind: str, data: dict[str, Any], ts: float) -> str:
    """One line of the events panel, HTML-escaped."""
    if kind == "created":
        detail = f"{len(data.get('plan', {}).get('tasks', []))} tasks"
    elif kind == "edit":
        detail = f"accepted: {data.get('batch', {}).get('reason', '')}"
    else:
        detail = " ".join(f"{k}={v}" for k, v in data.items()
                          if k in ("task", "device", "status", "what", "reason", "state") and v)
    stamp = time.strftime("%H:%M:%S", time.localtime(ts))
    return html.escape(f"{stamp} {kind} {detail}"[:160])


def render_svg(c: Constellation) -> str:
    """:func:`svg` of a live constellation, coloured by its tasks' states."""
    states = {t: [x.status.value, tip(t, x.status.value, x.assigned_device, x.error)] for t, x in c.tasks.items()}
    return svg(list(c.tasks), [(e.source, e.target, e.kind.value) for e in c.edges], states)


def devices_table(devices: list[list[Any]]) -> str:
    """The devices panel from the tick's rows ``[id, status, capabilities, running, done]``."""
    rows = "".join(
        f'<tr id="dev-{html.escape(str(d))}" class="dev-{st}" data-status="{st}"><td>{html.escape(str(d))}</td>'
        f"<td>{st}</td><td>{html.escape(','.join(sorted(map(str, caps))))}</td><td>{int(running)}</td>"
        f"<td>{int(done)}</td></tr>"
        for d, st, caps, running, done in sorted(devices, key=lambda r: str(r[0])))
    return ("<table><tr><th>device</th><th>status</th><th>capabilities</th><th>running</th>"
            f"<th>done</th></tr>{rows}</table>")


def _structure(plan: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Task ids and ``(source, target, kind)`` edges of a plan as journaled in ``created``
    (explicit ``edges`` plus ``after`` shorthands), without building the pydantic models."""
    ids = [str(t["id"]) for t in plan.get("tasks", [])]
    edges = [(str(e["source"]), str(e["target"]), str(e.get("kind", "success_only")))
             for e in plan.get("edges", [])]
    seen = {(a, b) for a, b, _ in edges}
    for t in plan.get("tasks", []):
        for a in t.get("after", []) or []:
            if (a, t["id"]) not in seen:
                edges.append((str(a), str(t["id"]), "success_only"))
    return ids, edges


def _depths(ids: list[str], edges: list[tuple[str, str, str]]) -> dict[str, int]:
    """Longest path from a root, per task (Kahn's order; plan order among equals)."""
    preds: dict[str, list[str]] = {t: [] for t in ids}
    succs: dict[str, list[str]] = {t: [] for t in ids}
    for a, b, _ in edges:
        preds[b].append(a)
        succs[a].append(b)
    missing = {t: len(preds[t]) for t in ids}
    ready = [t for t in ids if not missing[t]]
    depth: dict[str, int] = {}
    for t in ready:  # grows while it is walked
        depth[t] = max((depth[p] + 1 for p in preds[t]), default=0)
        for n in succs[t]:
            missing[n] -= 1
            if not missing[n]:
                ready.append(n)
    return depth


def svg(ids: list[str], edges: list[tuple[str, str, str]], states: dict[str, list[str]],
        depth: dict[str, int] | None = None) -> str:
    """The DAG as SVG: columns by depth, one node per task, coloured by its state."""
    depth = _depths(ids, edges) if depth is None else depth
    columns: dict[int, list[str]] = {}
    for t in ids:
        columns.setdefault(depth.get(t, 0), []).append(t)
    w, h, gx, gy = 110, 26, 40, 10
    pos = {t: (12 + d * (w + gx), 12 + i * (h + gy)) for d, ts in sorted(columns.items()) for i, t in enumerate(ts)}
    width = 24 + len(columns) * (w + gx)
    height = 24 + max((len(ts) for ts in columns.values()), default=1) * (h + gy)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" id="dag-svg">']
    # All edges as two paths (solid: success_only, dashed: the others), not one element per
    # edge: a third of the bytes and of the time for a large DAG.
    solid: list[str] = []
    dashed: list[str] = []
    for a, b, kind in edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        (solid if kind == "success_only" else dashed).append(f"M{x1 + w} {y1 + h // 2}L{x2} {y2 + h // 2}")
    for d, extra in ((solid, ""), (dashed, ' stroke-dasharray="4 3"')):
        if d:
            parts.append(f'<path d="{"".join(d)}" stroke="#90a4ae" fill="none"{extra}/>')
    for tid, (x, y) in pos.items():
        st, tip = states.get(tid, ["pending", f"{tid}: pending "])
        # Task and device ids match ID_PATTERN (nothing to escape); the tip is escaped.
        parts.append(f'<g class="task" data-task="{tid}" data-status="{st}"><title>{tip}</title>'
                     f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="5" fill="{STATUS_FILL[st]}" '
                     f'stroke="#455a64"/><text x="{x + 6}" y="{y + 17}" font-size="11">{tid[:16]}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def tip(tid: str, status: str, device: str | None, error: str | None) -> str:
    """A task node's tooltip (HTML-escaped)."""
    text = f"{tid}: {status} {device or ''} "
    return text + html.escape(error) if error else text


def failures_table(failed: dict[str, tuple[str | None, str | None]], limit: int = 50) -> str:
    """The failed-tasks panel: each failed task, its device and its reason (HTML-escaped)."""
    if not failed:
        return "<p>none</p>"
    rows = "".join(f'<tr id="failed-{html.escape(t)}"><td>{html.escape(t)}</td><td>{html.escape(d or "")}</td>'
                   f"<td>{html.escape(e or 'failed')}</td></tr>" for t, (d, e) in sorted(failed.items())[:limit])
    more = f"<p>and {len(failed) - limit} more</p>" if len(failed) > limit else ""
    return f"<table><tr><th>task</th><th>device</th><th>reason</th></tr>{rows}</table>{more}"


class PageState:
    """The page of one orchestrator: the run on show, its tasks' states, the last frame."""

    def __init__(self, db: sqlite3.Connection, max_events: int = 40) -> None:
        self.db = db
        self.max_events = max_events
        self.seq = 0
        self.run_id: str | None = None
        self.dag_key = ""
        self.ids: list[str] = []
        self.edges: list[tuple[str, str, str]] = []
        self.depth: dict[str, int] = {}
        self.tasks: dict[str, list[str]] = {}
        self.panels: dict[str, str] = {"dag": "", "metrics": "", "devices": "", "events": "", "failures": ""}
        self.failed: dict[str, tuple[str | None, str | None]] = {}  # task -> (device, reason)
        self._dag_json = json.dumps("")
        self._events_seq = -1
        self._path: str = ""

    def _load_structure(self, run_id: str) -> None:
        """Ids and edges of the run's DAG as it is now, from the journal."""
        rows = self.db.execute("SELECT seq, ts, kind, data FROM events WHERE run_id=? AND kind IN ('created','edit') "
                               "ORDER BY seq", (run_id,)).fetchall()
        if not rows or rows[0][2] != "created":
            self.ids, self.edges = [], []
        elif len(rows) == 1:  # no edit: the plan as submitted (fast: no pydantic models)
            self.ids, self.edges = _structure(json.loads(rows[0][3])["plan"])
        else:  # edited: replay the whole run, exactly as a resume would
            from paperlab.galaxy.orchestrator.runstate import replay

            every = [{"seq": s, "ts": ts, "kind": k, "data": json.loads(d)} for s, ts, k, d in self.db.execute(
                "SELECT seq, ts, kind, data FROM events WHERE run_id=? ORDER BY seq", (run_id,))]
            c = replay(run_id, every).constellation
            self.ids = list(c.tasks)
            self.edges = [(e.source, e.target, e.kind.value) for e in c.edges]

    def _events(self, run_id: str) -> str:
        newest = self.db.execute("SELECT MAX(seq) FROM events WHERE run_id=?", (run_id,)).fetchone()[0]
        if newest == self._events_seq:
            return self.panels["events"]
        self._events_seq = newest
        rows = self.db.execute("SELECT ts, kind, data FROM events WHERE run_id=? ORDER BY seq DESC LIMIT ?",
                               (run_id, self.max_events)).fetchall()
        return "<br>".join(event_line(k, json.loads(d), ts) for ts, k, d in rows)

    def _critical_path(self, run_id: str) -> str:
        """Critical path (measured task durations) and parallel width = work / critical path,
        from the journal's timestamps, once the run has finished."""
        started: dict[str, float] = {}
        took: dict[str, float] = {}
        for task, kind, ts in self.db.execute(
                "SELECT task_id, kind, ts FROM events WHERE run_id=? AND kind IN ('dispatched','result') "
                "ORDER BY seq", (run_id,)):
            if kind == "dispatched":
                started[task] = ts
            elif task in started:
                took[task] = ts - started[task]
        preds: dict[str, list[str]] = {}
        for a, b, _ in self.edges:
            preds.setdefault(b, []).append(a)
        finish: dict[str, float] = {}
        for t in sorted(self.ids, key=self.depth.__getitem__):
            finish[t] = took.get(t, 0.0) + max((finish[p] for p in preds.get(t, ())), default=0.0)
        path, work = max(finish.values(), default=0.0), sum(took.values())
        return f"; critical path {path:.2f}s, parallel width {work / path if path else 0.0:.2f}"

    def tick(self, msg: dict[str, Any]) -> tuple[int, int, bytes, bytes] | None:
        """Fold one tick; the next frame as ``(seq, base, diff, full)`` (``full`` is b"" unless
        the tick asked for it), or None when nothing changed and no full state was asked for."""
        run_id, key = msg.get("run"), str(msg.get("dag", ""))
        changes: dict[str, Any] = {}
        changed_tasks: dict[str, list[str]] = {}
        if run_id != self.run_id:
            self.failed = {}
        for tid, (st, dev, err) in msg.get("states", {}).items():
            if st == "failed":
                self.failed[tid] = (dev, err)
            else:
                self.failed.pop(tid, None)
            v = [st, tip(tid, st, dev, err)]
            if self.tasks.get(tid) != v:
                self.tasks[tid] = changed_tasks[tid] = v
        if key != self.dag_key or run_id != self.run_id:
            new_run = run_id != self.run_id
            if new_run:
                self._events_seq, self._path = -1, ""
            self.run_id, self.dag_key = run_id, key
            if run_id is None:
                self.ids, self.edges = [], []
            else:
                self._load_structure(run_id)
            if new_run:  # the tick lists the tasks of a run new to us that are not pending
                listed = msg.get("states", {})
                self.tasks = {t: self.tasks[t] if t in listed else ["pending", tip(t, "pending", None, None)]
                              for t in self.ids}
            self.depth = _depths(self.ids, self.edges)
            dag = svg(self.ids, self.edges, self.tasks, self.depth) if run_id else "<p>no run yet</p>"
            self.panels["dag"] = dag
            self._dag_json = json.dumps(dag)
            changes["dag"], changes["tasks"] = dag, self.tasks
        elif changed_tasks:
            changes["tasks"] = changed_tasks
        panels = {"devices": devices_table(msg.get("devices", [])), "events": "", "metrics": "",
                  "failures": failures_table(self.failed) if run_id is not None else ""}
        if run_id is not None:
            state = str(msg.get("state") or "running")
            if state != "running" and not self._path:
                self._path = self._critical_path(run_id)
            counts = Counter(st for st, _ in self.tasks.values())
            panels["events"] = self._events(run_id)
            panels["metrics"] = (
                f'<p id="run-state" data-state="{state}" data-run="{html.escape(run_id)}">'
                f"run <b>{html.escape(run_id)}</b>: {state}; "
                + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + self._path + "</p>")
        for name, text in panels.items():
            if self.panels[name] != text:
                self.panels[name] = changes[name] = text
        want_full = bool(msg.get("full"))
        if not changes and not want_full:
            return None
        base, self.seq = self.seq, self.seq + 1
        full = b""
        if want_full:  # the SVG's JSON was encoded once, when it was drawn
            full = ('{"dag": ' + self._dag_json + ', "tasks": ' + json.dumps(self.tasks) + ", "
                    + json.dumps({k: self.panels[k] for k in ("metrics", "devices", "events", "failures")})[1:]).encode()
        diff_text = b""
        if "dag" in changes:  # the SVG's JSON was encoded once, when it was drawn
            del changes["dag"]
            diff_text = ('{"dag": ' + self._dag_json + ", " + json.dumps(changes)[1:]).encode()
        elif changes:
            diff_text = json.dumps(changes).encode()
        return self.seq, base, diff_text, full


def serve(journal: str | Path, inp: BinaryIO, out: BinaryIO) -> None:
    """Answer ticks from ``inp`` with frames on ``out`` until ``inp`` closes."""
    db = sqlite3.connect(f"file:{Path(journal).resolve()}?mode=ro", uri=True, isolation_level=None,
                         timeout=10.0)
    state = PageState(db)
    for line in inp:
        frame = state.tick(json.loads(line))
        if frame is None:
            out.write(b'{"seq": null}\n')
        else:
            seq, base, d, f = frame
            out.write(json.dumps({"seq": seq, "base": base, "diff": len(d), "full": len(f)}).encode()
                      + b"\n" + d + f)
        out.flush()
    db.close()


# The renderer's CPU priority below the orchestrator's: on a busy machine the scheduler and
# the devices come first, and frames come less often instead. By default nice +19, the lowest
# (it adds to the orchestrator's own nice value, up to 19). GALAXY_RENDER_NICE=N sets another
# nice value (0: the orchestrator's own priority), and GALAXY_RENDER_NICE=idle the SCHED_IDLE
# policy (Linux): a core only when nothing else wants one. Measured (docs/galaxy.md), with 3
# viewers of a 5000-task run, viewed over unviewed tasks/s, interleaved in one process:
# nice +10 0.87-0.89 (median of 16 rounds; paired 0.89-0.94), nice +19 0.91-1.00 (paired
# 0.91-1.00). At +10 the orchestrator's own CPU per run rose by about 0.1 s (5-10%) with its
# dashboard code unchanged, most likely from the renderer's slices on its core. With both
# cores busy with other work (two CPU burners, bench/galaxy/first_frame.py) the first frame of
# a 5000-task run took 0.56-0.60 s at +10, 0.61-7.3 s at +19 (medians of two runs) and 35 s
# under idle: +19 keeps the page alive on a saturated machine, idle does not.
NICE = 19


def lower_priority(env: dict[str, str]) -> str:
    """Lower the renderer's CPU priority as GALAXY_RENDER_NICE says; returns what was done.
    A value that is neither an integer nor ``idle`` counts as unset (the renderer must not die
    over it: the orchestrator would restart it every second)."""
    value = env.get("GALAXY_RENDER_NICE", "").strip().lower()
    if value == "idle" and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return "SCHED_IDLE"
        except OSError:
            pass  # not allowed here: fall back to nice
    try:
        n = int(value)
    except ValueError:
        n = NICE
    with contextlib.suppress(AttributeError, OSError):  # no os.nice (Windows) or not allowed
        os.nice(n)
        return f"nice {n:+d}"
    return "unchanged"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    lower_priority(dict(os.environ))
    # A new run's first frame allocates ~20 objects per task (its plan, layout, states); with
    # the default thresholds the collector ran over them several times per frame (half of a
    # 5000-task run's first frame: 156 -> 84 ms).
    gc.set_threshold(50_000, 20, gc.get_threshold()[2])
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):  # the orchestrator went away
        serve(args[0], sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
