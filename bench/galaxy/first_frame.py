"""Benchmark: how long a dashboard viewer waits for its first frame while the cores are busy
with other work, at the renderer's default priority (nice +10) and under GALAXY_RENDER_NICE=idle
(SCHED_IDLE), in the same run.

A run of ``--tasks`` echo tasks (rows of 50, each task after the one 50 before it) is submitted
to an orchestrator with no device, so nothing changes while it is watched; ``--burners``
processes spin at the bench's own priority; one viewer connects and the time to its first
frame (the whole page) is measured, ``--repeat`` times per priority, alternating. With 0
burners it shows the cost of the frame itself.

    PYTHONPATH=src python bench/galaxy/first_frame.py --tasks 5000 --burners 2
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

from paperlab.galaxy.constellation import Constellation
from paperlab.galaxy.runtime import start_orchestrator

POLICIES = {"nice +10 (default)": None, "idle (SCHED_IDLE)": "idle"}


def _spin() -> None:
    while True:
        pass


async def _first_frame(plan: Constellation, work: Path, policy: str | None) -> float:
    if policy is None:
        os.environ.pop("GALAXY_RENDER_NICE", None)
    else:
        os.environ["GALAXY_RENDER_NICE"] = policy
    async with start_orchestrator(work / f"j-{time.monotonic_ns()}.sqlite", "bench", ui=True) as g:
        g.orch.submit(plan, "watched")
        url = f"ws://127.0.0.1:{g.server.port}/ui/ws"
        t0 = time.perf_counter()
        async with connect(url, additional_headers={"Authorization": "Bearer bench"}, max_size=None) as ws:
            await ws.recv()  # the role line
            await asyncio.wait_for(ws.recv(), 600)
            return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--burners", type=int, default=2, help="spinning processes (the machine's other work)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tasks = [{"id": f"t{i}", "executor": {"kind": "echo"}, "after": [f"t{i - 50}"] if i >= 50 else []}
             for i in range(args.tasks)]
    plan = Constellation.from_plan({"name": "first-frame", "tasks": tasks})
    burners = [mp.Process(target=_spin, daemon=True) for _ in range(args.burners)]
    for p in burners:
        p.start()
    waits: dict[str, list[float]] = {name: [] for name in POLICIES}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeat):
                for name, policy in POLICIES.items():
                    waits[name].append(asyncio.run(_first_frame(plan, Path(tmp), policy)))
    finally:
        for p in burners:
            p.terminate()
    print(f"first frame of a {args.tasks}-task run with {args.burners} CPU burners, median of {args.repeat} (s):")
    base = statistics.median(waits["nice +10 (default)"])
    for name, w in waits.items():
        print(f"  {name}: {statistics.median(w):.2f} ({', '.join(f'{x:.2f}' for x in w)}); "
              f"{statistics.median(w) / base:.1f}x the default")


if __name__ == "__main__":
    main()
