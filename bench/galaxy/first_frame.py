"""Benchmark: how long a dashboard viewer waits for its first frame while the cores are busy
with other work, at the renderer's priorities (GALAXY_RENDER_NICE: nice +10, nice +19, and idle
for SCHED_IDLE; the default is marked), in the same run.

A run of ``--tasks`` echo tasks (rows of 50, each task after the one 50 before it) is submitted
to an orchestrator with no device, so nothing changes while it is watched; ``--burners``
processes spin at the bench's own priority; one viewer connects and the time to its first
frame (the whole page) is measured, ``--repeat`` times per priority, alternating. With 0
burners it shows the cost of the frame itself.

    PYTHONPATH=src python bench/galaxy/first_frame.py --tasks 5000 --burners 2 [--policies 10,19,idle]
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

from paperlab.galaxy.control.runtime import start_orchestrator
from paperlab.galaxy.dashboard.render import NICE
from paperlab.galaxy.plan.constellation import Constellation


def _name(policy: str) -> str:
    name = "idle (SCHED_IDLE)" if policy == "idle" else f"nice +{int(policy)}"
    return name + (" (default)" if policy == str(NICE) else "")


def _spin() -> None:
    while True:
        pass


async def _first_frame(plan: Constellation, work: Path, policy: str) -> float:
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
    ap.add_argument("--policies", default=f"{NICE},19,idle" if NICE != 19 else "10,19,idle",
                    help="GALAXY_RENDER_NICE values to compare, comma-separated")
    args = ap.parse_args()
    policies = args.policies.split(",")
    tasks = [{"id": f"t{i}", "executor": {"kind": "echo"}, "after": [f"t{i - 50}"] if i >= 50 else []}
             for i in range(args.tasks)]
    plan = Constellation.from_plan({"name": "first-frame", "tasks": tasks})
    burners = [mp.Process(target=_spin, daemon=True) for _ in range(args.burners)]
    for p in burners:
        p.start()
    waits: dict[str, list[float]] = {_name(p): [] for p in policies}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeat):
                for policy in policies:
                    waits[_name(policy)].append(asyncio.run(_first_frame(plan, Path(tmp), policy)))
    finally:
        for p in burners:
            p.terminate()
    print(f"first frame of a {args.tasks}-task run with {args.burners} CPU burners, median of {args.repeat} (s):")
    base = statistics.median(waits[_name(policies[0])])
    for name, w in waits.items():
        print(f"  {name}: {statistics.median(w):.2f} ({', '.join(f'{x:.2f}' for x in w)}); "
              f"{statistics.median(w) / base:.1f}x {_name(policies[0])}")


if __name__ == "__main__":
    main()
