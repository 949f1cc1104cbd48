"""The dashboard's renderer: its own process, fed by the journal, answering one frame per tick.

The orchestrator's scheduler loop does no dashboard work per event: every state change is in
the SQLite journal already (WAL mode: a reader never blocks the writer), so this process reads
the newest committed rows of the run on show and folds them with the same
:meth:`paperlab.galaxy.runstate.Run.apply` the orchestrator and ``--resume`` use. A few times a
second the orchestrator writes one *tick* line on this process's stdin: the run to show and
the devices table (device liveness is not journaled). This process answers on stdout with
the frame for that tick, or with ``{"seq": null}`` when nothing changed:

    {"seq": N, "base": B, "diff": LEN, "full": LEN}\\n  <diff bytes><full bytes>

``diff`` is the JSON of what changed since frame ``B`` (the SVG only after a structure change,
else the tasks whose state changed and the small panels that changed); ``full`` is the whole
page state, for a viewer that was not sent frame ``B`` (it just connected, or it was too slow
and skipped frames). Both are UTF-8 JSON text, encoded once here for every viewer.

Run as ``python -m paperlab.galaxy.dashboard_render JOURNAL``; it exits when its stdin closes,
so an orchestrator that dies (even by SIGKILL) leaves no renderer behind.
"""

from __future__ import annotations

import contextlib
import html
import json
import sqlite3
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from paperlab.galaxy.constellation import Constellation, TaskStar
from paperlab.galaxy.events import decode_event
from paperlab.galaxy.runstate import Run, replay

__all__ = ["STATUS_FILL", "PageState", "diff", "event_line", "render_svg", "task_states"]

STATUS_FILL = {"pending": "#eceff1", "running": "#ffb300", "completed": "#43a047", "failed": "#e53935",
               "cancelled": "#8e24aa", "skipped": "#b0bec5"}


def _layout(c: Constellation) -> tuple[dict[str, tuple[int, int]], int, int]:
    """Node positions: one column per depth, tasks stacked in plan order."""
    depth = c.depths()
    columns: dict[int, list[str]] = {}
    for t, d in depth.items():
        columns.setdefault(d, []).append(t)
    w, h, gx, gy = 110, 26, 40, 10
    pos = {t: (12 + d * (w + gx), 12 + i * (h + gy)) for d, ts in columns.items() for i, t in enumerate(ts)}
    width = 24 + len(columns) * (w + gx)
    height = 24 + max((len(ts) for ts in columns.values()), default=1) * (h + gy)
    return pos, width, height


def render_svg(c: Constellation) -> str:
    """The DAG as SVG: columns by depth, one node per task, coloured by status."""
    return "".join(_svg_parts(c))


def _svg_parts(c: Constellation) -> Iterator[str]:
    pos, width, height = _layout(c)
    w, h = 110, 26
    yield f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" id="dag-svg">'
    # All edges as two paths (solid: success_only, dashed: the others), not one element per
    # edge: a third of the bytes and of the time for a large DAG.
    solid: list[str] = []
    dashed: list[str] = []
    for e in c.edges:
        (x1, y1), (x2, y2) = pos[e.source], pos[e.target]
        (solid if e.kind.value == "success_only" else dashed).append(
            f"M{x1 + w} {y1 + h // 2}L{x2} {y2 + h // 2}")
    for d, extra in ((solid, ""), (dashed, ' stroke-dasharray="4 3"')):
        if d:
            yield f'<path d="{"".join(d)}" stroke="#90a4ae" fill="none"{extra}/>'
    for tid, (x, y) in pos.items():
        task = c.tasks[tid]
        st = task.status.value
        # Task and device ids match ID_PATTERN (nothing to escape); the error is free text.
        yield (f'<g class="task" data-task="{tid}" data-status="{st}"><title>{_tip(tid, task)}</title>'
               f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="5" fill="{STATUS_FILL[st]}" '
               f'stroke="#455a64"/><text x="{x + 6}" y="{y + 17}" font-size="11">{tid[:16]}</text></g>')
    yield "</svg>"


def _tip(tid: str, task: TaskStar) -> str:
    tip = f"{tid}: {task.status.value} {task.assigned_device or ''} "
    return tip + html.escape(task.error) if task.error else tip


def task_states(c: Constellation) -> dict[str, list[str]]:
    """task id -> [status, tooltip]: what a redraw changes once the layout is drawn."""
    return {tid: [t.status.value, _tip(tid, t)] for tid, t in c.tasks.items()}


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


def devices_table(devices: list[list[Any]]) -> str:
    """The devices panel from the tick's rows ``[id, status, capabilities, running, done]``."""
    rows = "".join(
        f'<tr id="dev-{html.escape(str(d))}" class="dev-{st}" data-status="{st}"><td>{html.escape(str(d))}</td>'
        f"<td>{st}</td><td>{html.escape(','.join(sorted(map(str, caps))))}</td><td>{int(running)}</td>"
        f"<td>{int(done)}</td></tr>"
        for d, st, caps, running, done in sorted(devices, key=lambda r: str(r[0])))
    return ("<table><tr><th>device</th><th>status</th><th>capabilities</th><th>running</th>"
            f"<th>done</th></tr>{rows}</table>")


def diff(sent: dict[str, Any], frame: dict[str, Any]) -> dict[str, Any]:
    """What a viewer that was sent ``sent`` has not seen of ``frame``: the SVG only after a
    structure change, else the tasks whose status changed, and the small panels that changed."""
    out: dict[str, Any] = {k: frame[k] for k in ("metrics", "devices", "events") if sent.get(k) != frame[k]}
    if sent.get("dag_key") != frame["dag_key"]:
        out["dag"], out["tasks"] = frame["dag"], frame["tasks"]
    elif sent.get("tasks") is not frame["tasks"]:  # the same object: nothing changed
        old = sent.get("tasks", {})
        changed = {t: v for t, v in frame["tasks"].items() if old.get(t) != v}
        if changed:
            out["tasks"] = changed
    return out


class PageState:
    """The page of one orchestrator, mirrored from its journal: the run on show (folded from
    its rows), the newest events, the last frame drawn."""

    def __init__(self, db: sqlite3.Connection, max_events: int = 40) -> None:
        self.db = db
        self.run: Run | None = None
        self.run_id: str | None = None
        self.last_seq = 0
        self.events: deque[tuple[str, dict[str, Any], float]] = deque(maxlen=max_events)
        self.frame: dict[str, Any] = {}
        self.seq = 0
        self._dirty = True
        self._dag_key = ""
        self._dag_svg = ""
        self._metrics: dict[str, float] | None = None
        self._metrics_at = 0.0
        self._metrics_done = False

    def follow(self, run_id: str | None) -> None:
        """Read the run's rows committed since the last call (all of them for a new run)."""
        if run_id != self.run_id or self.run is None:
            self.run, self.run_id, self.last_seq, self._dirty = None, run_id, 0, True
            self.events.clear()
            self._metrics, self._metrics_at, self._metrics_done = None, time.monotonic(), False
            if run_id is None:
                return
        rows = [{"seq": s, "ts": ts, "kind": k, "data": json.loads(d)} for s, ts, k, d in self.db.execute(
            "SELECT seq, ts, kind, data FROM events WHERE run_id=? AND seq>? ORDER BY seq",
            (run_id, self.last_seq))]
        if not rows:
            return
        if self.run is None:
            if rows[0]["kind"] != "created":
                return  # not committed yet as a whole; the next tick reads it again
            self.run = replay(run_id, rows)  # type: ignore[arg-type]
        else:
            for row in rows:
                ev = decode_event(row["kind"], row["data"], row["ts"])
                if ev is not None:
                    self.run.apply(ev)
        self.events.extend((r["kind"], r["data"], r["ts"]) for r in rows)
        self.last_seq = rows[-1]["seq"]
        self._dirty = True

    def build(self, devices: list[list[Any]]) -> dict[str, Any]:
        """The whole page state. The SVG is drawn only when the DAG's structure changed (a new
        run, an edit); the task panel only when rows arrived since the last frame."""
        run = self.run
        key = (f"{run.run_id}:{id(run.constellation)}:{len(run.constellation.tasks)}:"
               f"{len(run.constellation.edges)}" if run else "")
        if key != self._dag_key:
            self._dag_svg = render_svg(run.constellation) if run else "<p>no run yet</p>"
            self._dag_key = key
        prev = self.frame
        if prev.get("dag_key") == key and not self._dirty:
            tasks, metrics, events = prev["tasks"], prev["metrics"], prev["events"]
        else:
            self._dirty = False
            tasks = task_states(run.constellation) if run else {}
            metrics = self._run_line(run, tasks) if run else ""
            events = "<br>".join(event_line(k, d, ts) for k, d, ts in reversed(self.events))
        return {"dag_key": key, "dag": self._dag_svg, "tasks": tasks, "metrics": metrics,
                "devices": devices_table(devices), "events": events}

    def _run_line(self, run: Run, tasks: dict[str, list[str]]) -> str:
        counts = Counter(state for state, _ in tasks.values())
        # The critical path walks the whole DAG: while the run goes on, at most once a second
        # and not in its first second; once when it has finished.
        now = time.monotonic()
        if run.finished is not None and not self._metrics_done:
            self._metrics, self._metrics_done = run.constellation.metrics(), True
        elif run.finished is None and now - self._metrics_at > 1.0:
            self._metrics, self._metrics_at = run.constellation.metrics(), now
        m = self._metrics
        state = run.finished.value if run.finished else "running"
        path = (f"; critical path {m['critical_path']:.2f}s, parallel width {m['parallel_width']:.2f}"
                if m is not None else "")
        return (f'<p id="run-state" data-state="{state}" data-run="{html.escape(run.run_id)}">'
                f"run <b>{html.escape(run.run_id)}</b>: "
                f"{state}; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + path + "</p>")

    def tick(self, run_id: str | None, devices: list[list[Any]]) -> tuple[int, int, bytes, bytes] | None:
        """The next frame as ``(seq, base, diff, full)``, or None when nothing changed."""
        self.follow(run_id)
        frame = self.build(devices)
        changes = diff(self.frame, frame)
        if not changes:
            return None
        base, self.seq, self.frame = self.seq, self.seq + 1, frame
        full = {k: v for k, v in frame.items() if k != "dag_key"}
        return self.seq, base, json.dumps(changes).encode(), json.dumps(full).encode()


def serve(journal: str | Path, inp: BinaryIO, out: BinaryIO) -> None:
    """Answer ticks from ``inp`` with frames on ``out`` until ``inp`` closes."""
    db = sqlite3.connect(f"file:{Path(journal).resolve()}?mode=ro", uri=True, isolation_level=None,
                         timeout=10.0)
    state = PageState(db)
    for line in inp:
        tick = json.loads(line)
        frame = state.tick(tick.get("run"), tick.get("devices", []))
        if frame is None:
            out.write(b'{"seq": null}\n')
        else:
            seq, base, d, f = frame
            out.write(json.dumps({"seq": seq, "base": base, "diff": len(d), "full": len(f)}).encode()
                      + b"\n" + d + f)
        out.flush()
    db.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):  # the orchestrator went away
        serve(args[0], sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
