"""Galaxy throughput and speedup benchmark.

1. A 1000-task layered DAG of no-op tasks (width 50, 20 layers, each task after 2 tasks of the
   previous layer) over 4 local device-agent processes: tasks/s and orchestration overhead.
2. The same DAG on Ray, installed by this script in a SEPARATE venv
   (~/.cache/paperlab/galaxy/ray-venv, `pip install ray`), on a local 4-CPU Ray instance, in
   the same run: the ratio galaxy/ray. (Ray removed `local_mode` in 2.x; `ray.init(num_cpus=4)`
   on one machine is its local mode now.)
3. Sleep DAGs of 32 tasks x 0.2 s with parallel width 1..16: measured speedup vs sequential.
4. A longer no-op DAG (--viewer-tasks, 5000: about 1 s, so that frames flow during it; the
   dashboard draws at most 4 frames/s) without viewers and with 3 dashboard viewers: tasks/s
   with over tasks/s without, in the same run (goal >= 0.9). The viewers are 3 /ui/ws sockets
   of ONE process started with the benchmark (no interpreter starts next to a timed run); for
   a viewed run they connect, get their first frame (the whole page: the page load is not
   what is measured), then --settle seconds pass before the timed run. Printed: the frames
   the renderer drew and the orchestrator sent inside the timed runs, and the CPU seconds of
   the orchestrator, the devices, the renderer and the viewers process per run (from /proc).
The no-op measurements run --repeat times each, interleaved in rotating order with Ray (Ray's
process stays up between its runs, warm after its 200-task warm-up), and report medians and
the median of the per-round ratios: the shared machine's load swings single runs by 2x, and
interleaving makes a change of load hit all sides alike. --burners N (default 1) keeps N
processes spinning on the CPU at the bench's own priority for the whole measurement, so the
machine is busy by construction; the 1-minute load average is recorded before and after every
timed run.

Usage: PYTHONPATH=src python bench/galaxy/throughput.py [--repeat 15] [--burners 1] [--viewers-only]
       [--skip-ray] [--out bench/galaxy/results-throughput.json]
Writes the JSON (--out) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from paperlab.galaxy.control.runtime import Started, start_orchestrator
from paperlab.galaxy.device.local import spawn_device
from paperlab.galaxy.orchestrator.config import OrchestratorConfig
from paperlab.galaxy.plan.constellation import Constellation
from paperlab.galaxy.timeline import run_metrics

OUT = Path(__file__).parent / "results-throughput.json"
BURNER = "while True: pass"
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
    # Dashboard viewers, one process for the whole benchmark (so no interpreter starts next to
    # a timed run). stdin: "connect N" opens N /ui/ws sockets and answers once each has its
    # first frame; "close" closes them. Every frame is read as it arrives.
    import asyncio, json, sys
    from websockets.asyncio.client import connect

    async def main():
        url, token = sys.argv[1], sys.argv[2]
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        socks, pumps, got = [], [], [0, 0]

        async def pump(ws):
            async for m in ws:
                got[0] += 1
                got[1] += len(m)

        while line := (await stdin.readline()).decode().split():
            if line[0] == "connect":
                for _ in range(int(line[1])):
                    ws = await connect(url, additional_headers={"Authorization": "Bearer " + token},
                                       max_size=None)
                    await ws.recv()  # role
                    await ws.recv()  # the whole page
                    socks.append(ws)
                    pumps.append(asyncio.create_task(pump(ws)))
            elif line[0] == "close":
                for ws in socks:
                    await ws.close()
                socks.clear()
                pumps.clear()
            print(json.dumps({"frames": got[0], "bytes": got[1]}), flush=True)

    asyncio.run(main())
""")


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Viewers:
    """The viewers process (see VIEWERS), driven over its stdin."""

    def __init__(self, g: Started, token: str, work: Path) -> None:
        self.g, self.token, self.work = g, token, work
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        (self.work / "viewers.py").write_text(VIEWERS)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, str(self.work / "viewers.py"), f"ws://127.0.0.1:{self.g.server.port}/ui/ws",
            self.token, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def command(self, line: str) -> dict[str, int]:
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(line.encode() + b"\n")
        await self._proc.stdin.drain()
        answer = await asyncio.wait_for(self._proc.stdout.readline(), 120)
        if not answer:
            raise RuntimeError("the dashboard viewers process exited")
        return json.loads(answer)  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()
            await asyncio.wait_for(self._proc.wait(), 30)


async def galaxy_runs(plans: list[Constellation], viewer_plan: Constellation | None, devices: int, conc: int,
                      work: Path, viewers: int = 3, repeat: int = 3, settle: float = 1.0,
                      ray: RayPeer | None = None, viewers_only: bool = False) -> dict[str, Any]:
    """The no-op DAG ``repeat`` times without and with ``viewers`` dashboard viewers, and on
    Ray (interleaved, so load changes on the machine hit all three), then each sleep plan once."""
    token = secrets.token_hex(8)
    async with start_orchestrator(work / "journal.sqlite", token, ui=True,
                                  config=OrchestratorConfig(device_timeout=30.0)) as g:
        return await _runs(g, token, plans, viewer_plan, devices, conc, work, viewers, repeat, settle, ray,
                           viewers_only)


async def _one(g: Started, c: Constellation, pids: dict[str, list[int]] | None = None) -> dict[str, Any]:
    c = c.model_copy(deep=True)  # the bench's own bookkeeping, not orchestration: untimed
    pids = pids or {}
    cpu0, wait0 = _cpu(), _runqueue_wait()
    other0 = {k: sum(map(_proc_cpu, v)) for k, v in pids.items()}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    rid = g.orch.submit(c)
    state = await g.orch.wait(rid, 600)
    wall = time.perf_counter() - t0
    # CPU time of this process (the orchestrator, its server and the dashboard relay) during
    # the run: far less sensitive to the shared machine's load than the wall time; and of the
    # other processes named in ``pids`` (devices, renderer, viewers), from /proc.
    out = {"state": state.value, "wall": wall, "orch_cpu": _cpu() - cpu0, "orch_wait": _runqueue_wait() - wait0,
           "load": [load0, os.getloadavg()[0]], **run_metrics(g.orch.runs[rid])}
    for k, v in pids.items():
        out[f"{k}_cpu"] = sum(map(_proc_cpu, v)) - other0[k]
    return out


def _runqueue_wait() -> float:
    """Seconds this process's threads spent runnable but waiting for a core (Linux
    schedstat; 0 elsewhere): how much other processes (devices, renderer, viewers) took the
    orchestrator's core, as opposed to the orchestrator doing more work itself."""
    total = 0
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(Path(f"/proc/self/task/{task}/schedstat").read_text().split()[1])
    return total / 1e9


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


async def _viewed(g: Started, c: Constellation, watch: Viewers, viewers: int, settle: float,
                  pids: dict[str, list[int]]) -> dict[str, Any]:
    """One run with ``viewers`` viewers connected, each past its first frame (the page load
    is not what is measured), and ``settle`` seconds after that for the renderer to go quiet."""
    dash = g.ui
    await watch.command(f"connect {viewers}")
    try:
        await asyncio.sleep(settle)
        proc = getattr(dash, "_proc", None)  # (getattr: the bench also runs older code)
        renderer = proc.pid if proc is not None else 0
        sent, renders, dropped = dash.frames_sent, dash.renders, getattr(dash, "frames_dropped", 0)
        fulls = getattr(dash, "fulls", 0)
        out = await _one(g, c, {**pids, "renderer": [renderer], "viewers": [watch.pid]})
        out["frames_sent"] = dash.frames_sent - sent
        out["renders"] = dash.renders - renders
        out["frames_dropped"] = getattr(dash, "frames_dropped", 0) - dropped
        out["frames_full"] = getattr(dash, "fulls", 0) - fulls
        return out
    finally:
        await watch.command("close")
        while dash._clients:  # let the server see them go before the next no-viewer run
            await asyncio.sleep(0.05)


async def _runs(g: Started, token: str, plans: list[Constellation], viewer_plan: Constellation | None,
                devices: int, conc: int, work: Path, viewers: int, repeat: int, settle: float,
                ray: RayPeer | None, viewers_only: bool = False) -> dict[str, Any]:
    procs = [spawn_device(work / "dev", f"dev{i}", g.url, token, [], max_concurrency=conc,
                          heartbeat=1.0) for i in range(devices)]
    watch = Viewers(g, token, work)
    await watch.start()
    pids = {"devices": [p.proc.pid for p in procs]}
    try:
        while sum(d.online for d in g.orch.devices.values()) < devices:
            await asyncio.sleep(0.05)
        await _one(g, plan([[]] * 20, {"kind": "echo"}, "warmup"))
        await watch.command("noop")  # the viewers process has imported websockets
        if ray is not None:
            await ray.ready()
        plain: list[dict[str, Any]] = []
        vplain: list[dict[str, Any]] = []
        viewed: list[dict[str, Any]] = []
        ray_walls: list[float] = []
        big = viewer_plan or plans[0]
        # The viewed run and its no-viewer peer run back to back (in alternating order), so a
        # swing of the machine's load between rounds hits both; the other steps rotate.
        steps = ["pair"] if viewers_only else ["plain", "pair"] + (["ray"] if ray is not None else [])
        for i in range(repeat):  # rotate the order, so a drift in the machine's load favours none
            for step in steps[i % len(steps):] + steps[: i % len(steps)]:
                if step == "plain":
                    plain.append(await _one(g, plans[0], pids))
                elif step == "pair":
                    for side in (("vplain", "viewed") if i % 2 == 0 else ("viewed", "vplain")):
                        if side == "viewed":
                            viewed.append(await _viewed(g, big, watch, viewers, settle, pids))
                        elif viewer_plan is not None:
                            vplain.append(await _one(g, big, pids))
                elif ray is not None:
                    ray_walls.append(await ray.run())
        if ray is not None:
            await ray.close()
        return {"plain": plain, "viewed": viewed, "vplain": vplain if viewer_plan is not None else plain,
                "ray": ray_walls, "sleep": [] if viewers_only else [await _one(g, c) for c in plans[1:]]}
    finally:
        await watch.close()
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


async def _bench(deps: list[list[int]], plans: list[Constellation], viewer_plan: Constellation | None,
                 args: argparse.Namespace, work: Path) -> dict[str, Any]:
    ray = None if args.skip_ray else RayPeer(deps, work)
    if ray is not None:
        ray.start()  # Ray starts (about 10 s) while galaxy's devices connect and warm up
    runs = await galaxy_runs(plans, viewer_plan, args.devices, args.concurrency, work, repeat=args.repeat,
                             settle=args.settle, ray=ray, viewers_only=args.viewers_only)
    runs["ray_version"] = ray.version if ray is not None else None
    return runs


def _median_ci(values: list[float]) -> list[float]:
    """95% bootstrap (BCa) confidence interval of the median of ``values``."""
    import numpy as np
    from scipy.stats import bootstrap

    if len(set(values)) < 3:
        return [min(values), max(values)]
    ci = bootstrap((np.asarray(values),), np.median, confidence_level=0.95, n_resamples=5000,
                   rng=np.random.default_rng(0)).confidence_interval
    return [float(ci.low), float(ci.high)]


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _side(runs: list[dict[str, Any]], tasks: int) -> dict[str, Any]:
    wall = _med(runs, "wall")
    out = {"wall_s": wall, "tasks_per_s": tasks / wall, "overhead_ms_per_task": 1000 * wall / tasks,
           "walls": [r["wall"] for r in runs], "states": [r["state"] for r in runs]}
    for key in ("orch_cpu", "orch_wait", "devices_cpu", "renderer_cpu", "viewers_cpu", "frames_sent", "renders",
                "frames_dropped", "frames_full"):
        if key in runs[0]:
            out[key if key.startswith("frames") or key == "renders" else key + "_s"] = [r[key] for r in runs]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--viewer-tasks", type=int, default=5000,
                    help="tasks of the DAG the viewers row runs (with and without viewers): long enough "
                         "that frames flow during it (4 frames/s at most)")
    ap.add_argument("--width", type=int, default=50)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.2)
    ap.add_argument("--settle", type=float, default=0.5,
                    help="seconds between the viewers' first frames and the timed run")
    # 15 rounds (was 3): this VM's speed flips between two states about 1.6x apart for seconds
    # at a time, so a single round's viewer ratio lands anywhere in 0.7-1.4; the 95% interval
    # of the median of 15, printed with it, was 0.13-0.30 wide in six runs.
    ap.add_argument("--repeat", type=int, default=15, help="runs per no-op measurement (median)")
    ap.add_argument("--burners", type=int, default=1, help="processes spinning on the CPU throughout (a busy machine)")
    ap.add_argument("--viewers-only", action="store_true",
                    help="only the viewer pairs (5000-task DAG with and without viewers): no Ray, no sleep DAGs")
    ap.add_argument("--out", type=Path, default=OUT, help="the JSON results file")
    args = ap.parse_args()
    if args.viewers_only:
        args.skip_ray = True
    deps = layered(args.tasks, args.width, fanin=2)
    sleep_widths = [1, 2, 4, 8, 16]
    plans = [plan(deps, {"kind": "echo"}, "noop-dag")]
    viewer_plan = None
    if args.viewer_tasks != args.tasks:
        viewer_plan = plan(layered(args.viewer_tasks, args.width, fanin=2), {"kind": "echo"}, "noop-dag-viewed")
    for w in sleep_widths:  # 32 tasks: w columns, each a chain of 32/w sleeps
        chains = [[i - w] if i >= w else [] for i in range(32)]
        plans.append(plan(chains, {"kind": "sleep", "args": {"seconds": args.sleep}}, f"sleep-w{w}"))
    load = os.getloadavg()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the burners are stopped below
    burners = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(args.burners)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runs = asyncio.run(_bench(deps, plans, viewer_plan, args, Path(tmp)))
    finally:
        for b in burners:
            b.kill()
            b.wait()
    result = _results(runs, args, load, sleep_widths)
    args.out.write_text(json.dumps(result, indent=2))
    _report(result, args)


def _results(runs: dict[str, Any], args: argparse.Namespace, load: tuple[float, ...],
             sleep_widths: list[int]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "tasks": args.tasks, "viewer_tasks": args.viewer_tasks, "width": args.width,
        "devices": args.devices, "repeat": args.repeat, "settle_s": args.settle, "burners": args.burners,
        "cpus": os.cpu_count(), "load_average_before": load, "load_average_after": os.getloadavg(),
        "galaxy_no_viewers_viewer_dag": _side(runs["vplain"], args.viewer_tasks),
        "galaxy_3_viewers": _side(runs["viewed"], args.viewer_tasks),
        "sleep": [],
    }
    if runs["plain"] and not args.viewers_only:
        result["galaxy"] = _side(runs["plain"], args.tasks)
    result["ratio_viewers_over_none"] = _med(runs["vplain"], "wall") / _med(runs["viewed"], "wall")
    # Each round runs plain and viewed close to each other: the median of the per-round
    # ratios cancels the slow swings of this machine's load that move single runs by 1.5-2x
    # (the same paired estimate bench/instella/train_throughput.py uses).
    paired = [a["wall"] / b["wall"] for a, b in zip(runs["vplain"], runs["viewed"], strict=True)]
    result["ratio_viewers_paired_median"] = statistics.median(paired)
    result["ratio_viewers_paired_ci95"] = _median_ci(paired)
    result["ratio_viewers_paired"] = paired
    result["load_per_round"] = [[a["load"], b["load"]] for a, b in zip(runs["vplain"], runs["viewed"], strict=True)]
    if not args.skip_ray:
        ray_wall = statistics.median(runs["ray"])
        result["ray"] = {"wall_s": ray_wall, "tasks_per_s": args.tasks / ray_wall,
                         "walls": runs["ray"], "version": runs["ray_version"]}
        result["ratio_galaxy_over_ray"] = result["galaxy"]["tasks_per_s"] / result["ray"]["tasks_per_s"]
        result["ratio_galaxy_over_ray_paired_median"] = statistics.median(
            r / a["wall"] for a, r in zip(runs["plain"], runs["ray"], strict=True))
        # The measure this benchmark used before --repeat: each side's first run (Ray's
        # first DAG after its 200-task warm-up is much slower than its later ones).
        result["ratio_first_run"] = runs["ray"][0] / result["galaxy"]["walls"][0]
    for w, r in zip(sleep_widths if runs["sleep"] else [], runs["sleep"], strict=True):
        sequential = 32 * args.sleep
        result["sleep"].append({"width": w, "parallel_width": r["parallel_width"],
                                "makespan_s": r["wall"], "speedup": sequential / r["wall"],
                                "state": r["state"]})
    return result


def _report(result: dict[str, Any], args: argparse.Namespace) -> None:
    g, n, v = result.get("galaxy"), result["galaxy_no_viewers_viewer_dag"], result["galaxy_3_viewers"]
    loads = [x for pair in result["load_per_round"] for run in pair for x in run]
    print(f"load average before {result['load_average_before'][0]:.2f}, after {result['load_average_after'][0]:.2f}; "
          f"during the timed runs {min(loads):.2f}-{max(loads):.2f} (1 min; {os.cpu_count()} CPUs; "
          f"{args.burners} CPU burner(s) spinning)")
    print("| system | DAG tasks | wall (s) | tasks/s | overhead/task (ms) |\n|---|---|---|---|---|")
    if g is not None:
        print(f"| galaxy ({args.devices} device processes) | {args.tasks} | {g['wall_s']:.2f} | {g['tasks_per_s']:.0f} | "
              f"{g['overhead_ms_per_task']:.2f} |")
    if "ray" in result:
        r = result["ray"]
        print(f"| ray {r['version']} (local, 4 CPUs) | {args.tasks} | {r['wall_s']:.2f} | {r['tasks_per_s']:.0f} | "
              f"{1000 * r['wall_s'] / args.tasks:.2f} |")
    if args.viewer_tasks != args.tasks:
        print(f"| galaxy, no viewers | {args.viewer_tasks} | {n['wall_s']:.2f} | {n['tasks_per_s']:.0f} | "
              f"{n['overhead_ms_per_task']:.2f} |")
    print(f"| galaxy with 3 dashboard viewers | {args.viewer_tasks} | {v['wall_s']:.2f} | {v['tasks_per_s']:.0f} | "
          f"{v['overhead_ms_per_task']:.2f} |")
    if "ray" in result:
        print(f"\ngalaxy / ray tasks/s (ratio of medians of {args.repeat}): {result['ratio_galaxy_over_ray']:.2f}; "
              f"median of per-round ratios: {result['ratio_galaxy_over_ray_paired_median']:.2f}; "
              f"first runs only: {result['ratio_first_run']:.2f} (goal >= 1.3)")
        print("ray walls (s): " + ", ".join(f"{w:.2f}" for w in result["ray"]["walls"]) + "; galaxy walls (s): "
              + ", ".join(f"{w:.2f}" for w in g["walls"]))
    p = sorted(result["ratio_viewers_paired"])
    print("\nper-round ratios (viewers / none), sorted: " + ", ".join(f"{x:.2f}" for x in p))
    print(f"with 3 viewers / without ({args.viewer_tasks}-task DAG): ratio of medians of {args.repeat}: "
          f"{result['ratio_viewers_over_none']:.2f}; median of the {args.repeat} per-round ratios: "
          f"{result['ratio_viewers_paired_median']:.2f}, 95% CI [{result['ratio_viewers_paired_ci95'][0]:.2f}, "
          f"{result['ratio_viewers_paired_ci95'][1]:.2f}] (goal >= 0.9)")
    print(f"inside the timed viewed runs: frames drawn by the renderer {v['renders']}, frames sent to "
          f"viewers {v['frames_sent']}, dropped for a busy viewer {v['frames_dropped']}, carrying the whole page "
          f"{v['frames_full']}")
    print("CPU per run (median s), without / with viewers: orchestrator "
          f"{statistics.median(n['orch_cpu_s']):.3f} / {statistics.median(v['orch_cpu_s']):.3f}, "
          f"4 devices {statistics.median(n['devices_cpu_s']):.3f} / {statistics.median(v['devices_cpu_s']):.3f}, "
          f"renderer - / {statistics.median(v['renderer_cpu_s']):.3f}, "
          f"viewers process - / {statistics.median(v['viewers_cpu_s']):.3f}; the orchestrator runnable but "
          f"waiting for a core {statistics.median(n['orch_wait_s']):.3f} / {statistics.median(v['orch_wait_s']):.3f}")
    print("\n| parallel width | makespan (s) | speedup vs sequential |\n|---|---|---|")
    for s in result["sleep"]:
        print(f"| {s['parallel_width']:.0f} | {s['makespan_s']:.2f} | {s['speedup']:.2f} |")


if __name__ == "__main__":
    main()
