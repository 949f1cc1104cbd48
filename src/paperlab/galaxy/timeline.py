"""Run timelines: one bar per attempt, one row per device, coloured by outcome (a PNG)."""

from __future__ import annotations

from pathlib import Path

from paperlab.galaxy.orchestrator.runstate import Run
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
    # Concurrent attempts on one device go to separate lanes inside the device's row.
    lanes: dict[int, int] = {}
    lane_count: dict[str, int] = {}
    for dev in devices:
        ends: list[float] = []
        for i, s in sorted(((i, s) for i, s in enumerate(spans) if (s["device"] or "?") == dev),
                           key=lambda x: x[1]["start"]):
            lane = next((k for k, end in enumerate(ends) if end <= s["start"] + 1e-9), len(ends))
            if lane == len(ends):
                ends.append(0.0)
            ends[lane] = s["end"]
            lanes[i] = lane
        lane_count[dev] = max(len(ends), 1)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.7 * max(len(devices), 1)))
    horizon = max((x["end"] - t0 for x in spans), default=1.0)
    for i, s in enumerate(spans):
        dev = s["device"] or "?"
        n = lane_count[dev]
        height = 0.8 / n
        y = devices.index(dev) - 0.4 + height * (lanes[i] + 0.5)
        ax.barh(y, s["end"] - s["start"], left=s["start"] - t0, height=height * 0.9,
                color=_COLOURS.get(s["status"], "#607d8b"), edgecolor="white")
        if s["end"] - s["start"] > 0.06 * horizon:
            ax.text(s["start"] - t0 + 0.01 * horizon, y, s["task"], va="center", fontsize=7, color="white")
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
