"""Run timelines: one bar per attempt, one row per device, coloured by outcome (a PNG)."""

from __future__ import annotations

from pathlib import Path

from paperlab.galaxy.runstate import Run
from paperlab.io.atomic import atomic_write_bytes

__all__ = ["plot_timeline", "run_metrics"]

_COLOURS = {"completed": "#2e7d32", "failed": "#c62828", "lost": "#ef6c00", "cancelled": "#6a1b9a"}


def run_metrics(run: Run) -> dict[str, float]:
    """Makespan, total busy time, parallel width (work / critical path) and speedup vs serial."""
    spans = [s for s in run.timeline if s["status"] == "completed"]
    if not spans:
        return {"makespan": 0.0, "work": 0.0, "speedup": 0.0, "parallel_width": 0.0}
    t0 = min(s["start"] for s in run.timeline)
    t1 = max(s["end"] for s in run.timeline)
    work = sum(s["end"] - s["start"] for s in run.timeline)
    m = run.constellation.metrics()
    return {"makespan": t1 - t0, "work": work, "speedup": work / (t1 - t0) if t1 > t0 else 0.0,
            "parallel_width": m["parallel_width"], "critical_path": m["critical_path"],
            "attempts": float(len(run.timeline)), "tasks": m["tasks"]}


def plot_timeline(run: Run, path: str | Path, title: str | None = None) -> Path:
    """Draw the run's attempts as bars per device and write a PNG atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spans = run.timeline
    devices = sorted({s["device"] or "?" for s in spans})
    t0 = min((s["start"] for s in spans), default=0.0)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * max(len(devices), 1)))
    for s in spans:
        y = devices.index(s["device"] or "?")
        ax.barh(y, s["end"] - s["start"], left=s["start"] - t0, height=0.6,
                color=_COLOURS.get(s["status"], "#607d8b"), edgecolor="white")
        if s["end"] - s["start"] > 0.05 * max((x["end"] - t0 for x in spans), default=1):
            ax.text(s["start"] - t0 + 0.01, y, s["task"], va="center", fontsize=7, color="white")
    ax.set_yticks(range(len(devices)), devices)
    ax.set_xlabel("seconds since first dispatch")
    ax.set_title(title or f"{run.constellation.name}: tasks per device")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _COLOURS.values()]
    ax.legend(handles, list(_COLOURS), loc="lower right", fontsize=7, ncol=4)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
