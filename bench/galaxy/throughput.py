"""Galaxy throughput and speedup benchmark (issue 6).

1. A 1000-task layered DAG of no-op tasks (width 50, 20 layers, each task after 2 tasks of the
   previous layer) over 4 local device-agent processes: tasks/s and orchestration overhead.
2. The same DAG on Ray, installed by this script in a SEPARATE venv
   (~/.cache/paperlab/galaxy/ray-venv, `pip install ray`), on a local 4-CPU Ray instance, in
   the same run: the ratio galaxy/ray. (Ray removed `local_mode` in 2.x; `ray.init(num_cpus=4)`
   on one machine is its local mode now.)
3. Sleep DAGs of 32 tasks x 0.2 s with parallel width 1..16: measured speedup vs sequential.
4. The no-op DAG with 3 dashboard viewers connected (a separate process reading /ui/ws):
   tasks/s with viewers over tasks/s without, in the same run (goal >= 0.9).
The no-op measurements run --repeat times each, galaxy without viewers, galaxy with viewers and
Ray interleaved in rotating order (Ray's process stays up between its runs, warm after its
200-task warm-up), and report medians: the shared machine's load swings single runs by 2x, and
interleaving makes a change of load hit all three alike.

Usage: PYTHONPATH=src python bench/galaxy/throughput.py [--tasks 1000] [--skip-ray]
Writes bench/galaxy/results/throughput.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from paperlab.galaxy.constellation import Constellation
from paperlab.galaxy.local import spawn_device
from paperlab.galaxy.orchestrator import OrchestratorConfig
from paperlab.galaxy.runtime import Started, start_orchestrator
from paperlab.galaxy.timeline import run_metrics

RESULTS = Path(__file__).parent / "results"
RAY_VENV = Path(os.environ.get("PAPERLAB_CACHE", Path.home() / ".cache" / "paperlab")) / "galaxy" / "ray-venv"


def layered(n: int, width: int, fanin: int, seed: int = 0) -> list[list[int]]:
    """deps[i] = upstream indices of task i in a layered DAG."""
    rng = random.Random(seed)
    deps: list[list[int]] = []
    for i in range(n):
        layer = i // width
        prev = list(range((layer - 1) * width, layer * width)) if layer else []
        deps.append(sorted(rng.sample(prev, min(fanin, len(prev)))))
    return deps


def plan(deps: list[list[int]], executor: dict[str, Any], name: str) -> Constellation:
    tasks = [{"id": f"t{i}", "executor": executor, "after": [f"t{j}" for j in d]}
             for i, d in enumerate(deps)]
    return Constellation.from_plan({"name": name, "tasks": tasks})


VIEWERS = textwrap.dedent("""
    import asyncio, sys
    from websockets.asyncio.client import connect
    async def view(url, token):
        async with connect(url, additional_headers={"Authorization": "Bearer " + token}, max_size=None) as ws:
            async for _ in ws:
                pass
    async def main():
        await asyncio.gather(*(view(sys.argv[1], sys.argv[2]) for _ in range(int(sys.argv[3]))))
    asyncio.run(main())
""")


async def galaxy_runs(plans: list[Constellation], devices: int, conc: int, work: Path,
                      viewers: int = 3, repeat: int = 3, ray: RayPeer | None = None) -> dict[str, Any]:
    """The no-op DAG ``repeat`` times without and with ``viewers`` dashboard viewers, and on
    Ray (interleaved, so load changes on the machine hit all three), then each sleep plan once."""
    token = secrets.token_hex(8)
    async with start_orchestrator(work / "journal.sqlite", token, ui=True,
                                  config=OrchestratorConfig(device_timeout=30.0)) as g:
        return await _runs(g, token, plans, devices, conc, work, viewers, repeat, ray)


async def _one(g: Started, c: Constellation) -> dict[str, Any]:
    c = c.model_copy(deep=True)  # the bench's own bookkeeping, not orchestration: untimed
    cpu0 = _cpu()
    t0 = time.perf_counter()
    rid = g.orch.submit(c)
    state = await g.orch.wait(rid, 600)
    wall = time.perf_counter() - t0
    # CPU time of this process (the orchestrator, its server and the dashboard) during the run:
    # far less sensitive to the shared machine's load than the wall time.
    return {"state": state.value, "wall": wall, "orch_cpu": _cpu() - cpu0, **run_metrics(g.orch.runs[rid])}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


async def _viewed(g: Started, token: str, c: Constellation, work: Path, viewers: int) -> dict[str, Any]:
    (work / "viewers.py").write_text(VIEWERS)
    ui_url = f"ws://127.0.0.1:{g.server.port}/ui/ws"
    watch = subprocess.Popen([sys.executable, str(work / "viewers.py"), ui_url, token, str(viewers)])
    dash = g.ui
    dash.frames_sent = 0
    try:
        for _ in range(600):
            if len(dash._clients) >= viewers or watch.poll() is not None:
                break
            await asyncio.sleep(0.05)
        if len(dash._clients) < viewers:
            raise RuntimeError(f"the {viewers} dashboard viewers did not connect")
        # Each viewer's first frame (the whole page state) is the page load, not the cost of
        # watching a run: wait until all have it, so the timed run starts from a steady state.
        for _ in range(600):
            if dash.frames_sent >= viewers:
                break
            await asyncio.sleep(0.05)
        renders = dash.renders
        out = await _one(g, c)
        out["renders"] = dash.renders - renders
        return out
    finally:
        watch.terminate()
        watch.wait()
        while dash._clients:  # let the server see them go before the next no-viewer run
            await asyncio.sleep(0.05)


async def _runs(g: Started, token: str, plans: list[Constellation], devices: int, conc: int,
                work: Path, viewers: int, repeat: int, ray: RayPeer | None) -> dict[str, Any]:
    procs = [spawn_device(work / "dev", f"dev{i}", g.url, token, [], max_concurrency=conc,
                          heartbeat=1.0) for i in range(devices)]
    try:
        while sum(d.online for d in g.orch.devices.values()) < devices:
            await asyncio.sleep(0.05)
        await _one(g, plan([[]] * 20, {"kind": "echo"}, "warmup"))
        if ray is not None:
            await ray.ready()
        plain: list[dict[str, Any]] = []
        viewed: list[dict[str, Any]] = []
        ray_walls: list[float] = []
        steps = ["plain", "viewed"] + (["ray"] if ray is not None else [])
        for i in range(repeat):  # rotate the order, so a drift in the machine's load favours none
            for step in steps[i % len(steps):] + steps[: i % len(steps)]:
                if step == "plain":
                    plain.append(await _one(g, plans[0]))
                elif step == "viewed":
                    viewed.append(await _viewed(g, token, plans[0], work, viewers))
                elif ray is not None:
                    ray_walls.append(await ray.run())
        if ray is not None:
            await ray.close()
        return {"plain": plain, "viewed": viewed, "ray": ray_walls,
                "sleep": [await _one(g, c) for c in plans[1:]]}
    finally:
        await asyncio.gather(*(p.astop() for p in procs))


RAY_SCRIPT = textwrap.dedent("""
    import json, sys, time, ray
    deps = json.load(open(sys.argv[1]))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    @ray.remote
    def noop(*upstream):
        return None
    ray.get([noop.remote() for _ in range(200)])  # warm the worker pool
    print(json.dumps({"ray": ray.__version__}), flush=True)
    for line in sys.stdin:  # one DAG per "run" line, so the caller can interleave its own runs
        if line.strip() != "run":
            break
        t0 = time.perf_counter()
        refs = []
        for d in deps:
            refs.append(noop.remote(*[refs[j] for j in d]))
        ray.get(refs)
        print(json.dumps({"wall": time.perf_counter() - t0}), flush=True)
""")


def ensure_ray() -> Path:
    """Create the separate Ray venv once (cached); returns its python."""
    py = RAY_VENV / "bin" / "python"
    if not (RAY_VENV / ".ok").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(RAY_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "ray>=2.9"], check=True)
        (RAY_VENV / ".ok").touch()
    return py


class RayPeer:
    """Ray in its own venv and process, kept running between its DAG runs (its workers stay
    warm) so that they interleave with galaxy's runs."""

    def __init__(self, deps: list[list[int]], work: Path) -> None:
        self.deps, self.work = deps, work
        self.version = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._started: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin starting Ray (in the background; :meth:`ready` waits for it)."""
        self._started = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        py = await asyncio.to_thread(ensure_ray)
        (self.work / "deps.json").write_text(json.dumps(self.deps))
        (self.work / "ray_dag.py").write_text(RAY_SCRIPT)
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("PYTHONPATH", None)
        with open(self.work / "ray.log", "wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                str(py), str(self.work / "ray_dag.py"), str(self.work / "deps.json"),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, env=env)
        self.version = (await self._line(600))["ray"]

    async def ready(self) -> None:
        assert self._started is not None
        await self._started

    async def run(self) -> float:
        """One DAG on Ray; its wall time in seconds."""
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(b"run\n")
        await self._proc.stdin.drain()
        return float((await self._line(600))["wall"])

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), timeout)
        if not line:
            log = (self.work / "ray.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"ray run failed:\n{log}")
        return json.loads(line)  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()
            await asyncio.wait_for(self._proc.wait(), 120)


async def _bench(deps: list[list[int]], plans: list[Constellation], args: argparse.Namespace,
                 work: Path) -> dict[str, Any]:
    ray = None if args.skip_ray else RayPeer(deps, work)
    if ray is not None:
        ray.start()  # Ray starts (about 10 s) while galaxy's devices connect and warm up
    runs = await galaxy_runs(plans, args.devices, args.concurrency, work, repeat=args.repeat, ray=ray)
    runs["ray_version"] = ray.version if ray is not None else None
    return runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--width", type=int, default=50)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.2)
    ap.add_argument("--repeat", type=int, default=3, help="runs per no-op measurement (median)")
    args = ap.parse_args()
    deps = layered(args.tasks, args.width, fanin=2)
    sleep_widths = [1, 2, 4, 8, 16]
    plans = [plan(deps, {"kind": "echo"}, "noop-dag")]
    for w in sleep_widths:  # 32 tasks: w columns, each a chain of 32/w sleeps
        chains = [[i - w] if i >= w else [] for i in range(32)]
        plans.append(plan(chains, {"kind": "sleep", "args": {"seconds": args.sleep}}, f"sleep-w{w}"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = asyncio.run(_bench(deps, plans, args, work))
        plain = statistics.median(r["wall"] for r in runs["plain"])
        viewed = statistics.median(r["wall"] for r in runs["viewed"])
        result: dict[str, Any] = {
            "tasks": args.tasks, "width": args.width, "devices": args.devices, "repeat": args.repeat,
            "galaxy": {"wall_s": plain, "tasks_per_s": args.tasks / plain,
                       "overhead_ms_per_task": 1000 * plain / args.tasks,
                       "walls": [r["wall"] for r in runs["plain"]],
                       "orch_cpu_s": [r["orch_cpu"] for r in runs["plain"]],
                       "states": [r["state"] for r in runs["plain"]]},
            "galaxy_3_viewers": {"wall_s": viewed, "tasks_per_s": args.tasks / viewed,
                                 "walls": [r["wall"] for r in runs["viewed"]],
                                 "renders": [r["renders"] for r in runs["viewed"]],
                                 "orch_cpu_s": [r["orch_cpu"] for r in runs["viewed"]],
                                 "states": [r["state"] for r in runs["viewed"]]},
            "sleep": [],
        }
        result["ratio_viewers_over_none"] = plain / viewed
        # Each round runs plain and viewed next to each other: the median of the per-round
        # ratios cancels the slow swings of this machine's load that move single runs by 1.5-2x
        # (the same paired estimate bench/instella/train_throughput.py uses).
        result["ratio_viewers_paired_median"] = statistics.median(
            a["wall"] / b["wall"] for a, b in zip(runs["plain"], runs["viewed"], strict=True))
        if not args.skip_ray:
            ray_wall = statistics.median(runs["ray"])
            result["ray"] = {"wall_s": ray_wall, "tasks_per_s": args.tasks / ray_wall,
                             "walls": runs["ray"], "version": runs["ray_version"]}
            result["ratio_galaxy_over_ray"] = result["galaxy"]["tasks_per_s"] / result["ray"]["tasks_per_s"]
            # The measure this benchmark used before --repeat: each side's first run (Ray's
            # first DAG after its 200-task warm-up is much slower than its later ones).
            result["ratio_first_run"] = runs["ray"][0] / result["galaxy"]["walls"][0]
        for w, r in zip(sleep_widths, runs["sleep"], strict=True):
            sequential = 32 * args.sleep
            result["sleep"].append({"width": w, "parallel_width": r["parallel_width"],
                                    "makespan_s": r["wall"], "speedup": sequential / r["wall"],
                                    "state": r["state"]})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(result, indent=2))
    g = result["galaxy"]
    print("| system | wall (s) | tasks/s | overhead/task (ms) |\n|---|---|---|---|")
    print(f"| galaxy ({args.devices} device processes) | {g['wall_s']:.2f} | {g['tasks_per_s']:.0f} | {g['overhead_ms_per_task']:.2f} |")
    v = result["galaxy_3_viewers"]
    print(f"| galaxy with 3 dashboard viewers | {v['wall_s']:.2f} | {v['tasks_per_s']:.0f} | "
          f"{1000 * v['wall_s'] / args.tasks:.2f} |")
    if "ray" in result:
        r = result["ray"]
        print(f"| ray {r['version']} (local, 4 CPUs) | {r['wall_s']:.2f} | {r['tasks_per_s']:.0f} | {1000 * r['wall_s'] / args.tasks:.2f} |")
        print(f"\ngalaxy / ray tasks/s ratio (medians of {args.repeat}): {result['ratio_galaxy_over_ray']:.2f}; "
              f"first runs only: {result['ratio_first_run']:.2f}")
        print("ray walls (s): " + ", ".join(f"{w:.2f}" for w in r["walls"]) + "; galaxy walls (s): "
              + ", ".join(f"{w:.2f}" for w in g["walls"]))
    print(f"\nwith 3 viewers / without: {result['ratio_viewers_over_none']:.2f} "
          f"(medians of {args.repeat}; dashboard renders per run {v['renders']}); "
          f"median of the {args.repeat} per-round ratios: {result['ratio_viewers_paired_median']:.2f} (goal >= 0.9)")
    print("orchestrator process CPU per run (median s): without viewers "
          f"{statistics.median(g['orch_cpu_s']):.3f}, with 3 viewers {statistics.median(v['orch_cpu_s']):.3f}")
    print("\n| parallel width | makespan (s) | speedup vs sequential |\n|---|---|---|")
    for s in result["sleep"]:
        print(f"| {s['parallel_width']:.0f} | {s['makespan_s']:.2f} | {s['speedup']:.2f} |")


if __name__ == "__main__":
    main()
