"""The galaxy part of ``paperlab demo``: three local device agents run a fan-out/fan-in plan.

An in-process orchestrator listens on a free 127.0.0.1 port; three real device-agent processes
with different capabilities dial in. The plan fans one preparation task out to eight analysis
tasks (some need ``gpu``, one runs an allow-listed shell command) and joins them. The report
gets the timeline (bars per device) and the run metrics; everything is shut down at the end.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from paperlab.demokit import DemoContext
from paperlab.report import Figure, Section, Table

DEVICES = [("laptop", ["cpu", "shell"]), ("server", ["cpu", "gpu"]), ("phone", ["cpu", "camera"])]


def demo_plan() -> dict[str, Any]:
    """Fan-out/fan-in: prepare -> 8 analyses (mixed capabilities and lengths) -> report."""
    tasks: list[dict[str, Any]] = [
        {"id": "prepare", "description": "split the job", "executor": {"kind": "echo", "args": {"value": {"parts": 8}}}},
    ]
    for i in range(8):
        caps = ["gpu"] if i % 3 == 0 else (["camera"] if i == 4 else [])
        tasks.append({"id": f"analyze{i}", "capabilities": caps, "after": ["prepare"],
                      "executor": {"kind": "sleep", "args": {"seconds": 0.6 + 0.15 * (i % 4)}}})
    tasks.append({"id": "hostname", "capabilities": ["shell"], "after": ["prepare"],
                  "executor": {"kind": "shell", "args": {"argv": ["echo", "report-ready"]}}})
    tasks.append({"id": "report", "after": [f"analyze{i}" for i in range(8)] + ["hostname", "prepare"],
                  "inputs": {"note": "hostname.stdout", "parts": "prepare.parts"},
                  "executor": {"kind": "echo"}})
    return {"name": "demo-fan-out-fan-in", "request": "analyse eight parts on three devices",
            "tasks": tasks}


async def _run(ctx: DemoContext) -> tuple[Any, float]:
    from paperlab.galaxy.control.runtime import start_orchestrator
    from paperlab.galaxy.device.local import spawn_device
    from paperlab.galaxy.plan.constellation import Constellation

    token = secrets.token_hex(16)
    async with start_orchestrator(ctx.work_dir / "journal.sqlite", token) as g:
        devices = [spawn_device(ctx.work_dir / "devices", name, g.url, token, caps,
                                max_concurrency=2, shell_allow=["echo"] if "shell" in caps else [])
                   for name, caps in DEVICES]
        try:
            for _ in range(600):  # wait for all three to register (process start-up)
                if sum(d.online for d in g.orch.devices.values()) == len(DEVICES):
                    break
                await asyncio.sleep(0.05)
            start = time.perf_counter()
            run_id = g.orch.submit(Constellation.from_plan(demo_plan()), "demo")
            state = await g.orch.wait(run_id, 120)
            wall = time.perf_counter() - start
            ctx.console.print(f"galaxy demo run finished: {state.value} in {wall:.2f}s")
            return g.orch.get_run(run_id), wall
        finally:
            await asyncio.gather(*(d.astop() for d in devices))


def run(ctx: DemoContext) -> Section:
    """Run the demo and return its report section."""
    from paperlab.galaxy.timeline import plot_timeline, run_metrics

    run_state, wall = asyncio.run(_run(ctx))
    png = plot_timeline(run_state, ctx.work_dir / "galaxy_timeline.png",
                        "fan-out/fan-in over three device agents")
    m = run_metrics(run_state)
    per_device: dict[str, int] = {}
    for s in run_state.timeline:
        if s["status"] == "completed":
            per_device[s["device"]] = per_device.get(s["device"], 0) + 1
    state = run_state.finished.value if run_state.finished else "unfinished"
    return Section(
        system="galaxy",
        title="Galaxy: cross-device task orchestration",
        paragraphs=[
            "An asyncio orchestrator (journaled in SQLite) and three device-agent processes "
            f"({', '.join(f'{n}: {c}' for n, c in DEVICES)}) talking AIP over WebSocket on "
            "127.0.0.1 ran a fan-out/fan-in constellation of "
            f"{int(m['tasks'])} tasks. Final state: {state}.",
            f"Makespan {m['makespan']:.2f}s for {m['work']:.2f}s of task time: a speedup of "
            f"{m['speedup']:.2f}x over running the same attempts one after another; the plan's "
            f"parallel width (work / critical path) is {m['parallel_width']:.2f}.",
        ],
        tables=[
            Table("Run metrics", ["metric", "value"], [
                ["state", state], ["tasks", int(m["tasks"])], ["attempts", int(m["attempts"])],
                ["makespan (s)", f"{m['makespan']:.2f}"], ["task time (s)", f"{m['work']:.2f}"],
                ["speedup vs serial", f"{m['speedup']:.2f}"],
                ["critical path (s)", f"{m['critical_path']:.2f}"],
                ["parallel width", f"{m['parallel_width']:.2f}"], ["wall incl. dispatch (s)", f"{wall:.2f}"]]),
            Table("Completed tasks per device", ["device", "tasks"],
                  [[dev, n] for dev, n in sorted(per_device.items())]),
        ],
        figures=[Figure(png, "Attempts per device over time (green: completed)")],
    )
