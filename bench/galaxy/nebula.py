"""NebulaBench-style cross-device scenarios, CI-sized.

Each scenario in bench/galaxy/scenarios/ is a request, a declarative plan over simulated device
tools (paperlab.galaxy.device.tools: python executors with realistic delays, some with injected
first-call faults) and a checker (a safe expression over the final results). A fleet of five
real device-agent processes (phone, laptop, server, tablet, watch) with overlapping
capabilities runs every scenario through the orchestrator with the rule-based replanner.

Modes: ``clean`` (tool faults only, one retry), ``device-faults`` (also SIGKILL the device
running the first task 0.15 s into the run; it restarts 1 s later), ``no-retries+faults`` (the
same with max_retries=0, so the replanner must recover tool faults). With ``--llm smollm2`` a smoke run asks
the packaged 135M model to plan a few scenarios and reports how many plans were valid.

Metrics as in the paper: subtask completion rate (tasks completed, or recovered by a
replacement, over planned tasks), task success rate (run completed and checker true), mean
parallel width (work / critical path, measured durations), and latency vs a sequential
baseline (the sum of the completed attempts' durations: one device doing them one by one).

Usage: PYTHONPATH=src python bench/galaxy/nebula.py [--only s01] [--llm smollm2]
Writes bench/galaxy/results-nebula.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from paperlab.galaxy.control.server import OrchestratorServer
from paperlab.galaxy.device.local import LocalDevice, spawn_device
from paperlab.galaxy.device.tools import allow
from paperlab.galaxy.orchestrator.config import OrchestratorConfig, RunSettings
from paperlab.galaxy.orchestrator.core import Orchestrator
from paperlab.galaxy.orchestrator.journal import Journal
from paperlab.galaxy.plan.conditions import evaluate
from paperlab.galaxy.plan.constellation import Constellation, TaskStatus
from paperlab.galaxy.planning.planner import DeviceSummary, LLMPlanner
from paperlab.galaxy.planning.replanner import RuleReplanner
from paperlab.galaxy.timeline import run_metrics

HERE = Path(__file__).parent
OUT = HERE / "results-nebula.json"
FLEET: dict[str, tuple[list[str], list[str]]] = {
    "phone": (["camera", "sensor", "notify"], ["capture", "measure", "notify"]),
    "laptop": (["browser", "office", "cpu"], ["fetch", "count_words", "write_report", "aggregate"]),
    "server": (["gpu", "db", "cpu"], ["enhance", "query_db", "count_words", "aggregate"]),
    "tablet": (["camera", "browser", "office", "cpu"], ["capture", "fetch", "count_words", "aggregate", "write_report"]),
    "watch": (["sensor", "notify"], ["measure", "notify"]),
}


# (name, kill a device mid-run, max_retries): "no-retries" turns every tool fault into a final
# failure, so recovery is the rule-based replanner's job (retry elsewhere).
MODES = [("clean", False, 1), ("device-faults", True, 1), ("no-retries+faults", True, 0)]


def load_scenarios(only: str | None) -> list[dict[str, Any]]:
    out = []
    for p in sorted((HERE / "scenarios").glob("s*.yaml")):
        if only and not p.name.startswith(only):
            continue
        out.append(yaml.safe_load(p.read_text()))
    return out


def to_plan(sc: dict[str, Any], max_retries: int = 1) -> Constellation:
    """The scenario's shorthand tasks as a constellation of python-executor tasks."""
    tasks, edges = [], []
    for t in sc["tasks"]:
        tasks.append({"id": t["id"], "capabilities": t.get("caps", []), "max_retries": max_retries, "timeout": 10,
                      "description": t["tool"], "inputs": t.get("inputs", {}),
                      "executor": {"kind": "python", "args": {"function": t["tool"], "kwargs": t.get("kwargs", {})}}})
        edges += [{"source": a, "target": t["id"]} for a in t.get("after", [])]
        edges += [{"source": a, "target": t["id"], "kind": "conditional", "condition": c}
                  for a, c in t.get("cond_after", {}).items()]
        edges += [{"source": a, "target": t["id"], "kind": "completion_only"} for a in t.get("done_after", [])]
    return Constellation.from_plan({"name": sc["name"], "request": sc["request"], "tasks": tasks, "edges": edges})


def score(sc: dict[str, Any], c: Constellation, state: str, run: Any) -> dict[str, Any]:
    original = [t["id"] for t in sc["tasks"]]
    recovered = c.recovered()
    done = [t for t in original if c.tasks[t].status is TaskStatus.COMPLETED or t in recovered]
    results: dict[str, Any] = {}
    for t in c.tasks.values():
        if t.status is TaskStatus.COMPLETED:
            root = t.id
            while c.tasks[root].replaces:
                root = c.tasks[root].replaces  # type: ignore[assignment]
            results[root] = t.result
    ok = state == "completed" and evaluate(sc["check"], results)
    m = run_metrics(run)
    durations = {t.id: (t.ended_at - t.started_at) if t.status is TaskStatus.COMPLETED and t.started_at
                 and t.ended_at else 0.0 for t in c.tasks.values()}
    width = c.metrics(durations)["parallel_width"]
    sequential = sum(s["end"] - s["start"] for s in run.timeline if s["status"] == "completed")
    return {"scenario": sc["name"], "state": state, "success": bool(ok), "subtasks": len(original),
            "completed": len(done), "parallel_width": width, "makespan": m["makespan"],
            "sequential": sequential, "attempts": len(run.timeline),
            "replans": sum(1 for t in c.tasks.values() if t.replaces)}


class Fleet:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.token = secrets.token_hex(8)
        self.journal = Journal(work / "journal.sqlite")
        self.orch = Orchestrator(self.journal, OrchestratorConfig(
            device_timeout=1.0, unplaceable_timeout=3.0,
            settings=RunSettings(backoff_base=0.05, backoff_max=0.5)))
        RuleReplanner().attach(self.orch)
        self.server = OrchestratorServer(self.orch, self.token)
        self.devices: dict[str, LocalDevice] = {}

    def spawn(self, name: str) -> None:
        caps, tools = FLEET[name]
        self.devices[name] = spawn_device(self.work / "dev", name, self.server.url, self.token, caps,
                                          max_concurrency=2, python_allow=allow(tools), heartbeat=0.25)

    async def __aenter__(self) -> Fleet:
        await self.server.start()
        for name in FLEET:
            self.spawn(name)
        await self.online(len(FLEET))
        return self

    async def online(self, n: int) -> None:
        while sum(d.online for d in self.orch.devices.values()) < n:
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(d.astop() for d in self.devices.values()))
        await self.server.close()
        self.journal.close()

    async def run(self, sc: dict[str, Any], c: Constellation, kill: bool) -> dict[str, Any]:
        rid = self.orch.submit(c)
        if kill:
            await asyncio.sleep(0.15)
            victims = [d for _, d in self.orch.runs[rid].running_attempts().values()]
            if victims:
                self.devices[victims[0]].kill()
                await asyncio.sleep(1.0)
                self.spawn(victims[0])
        state = await self.orch.wait(rid, 120)
        await self.online(len(FLEET))
        run = self.orch.runs[rid]
        return score(sc, run.constellation, state.value, run)


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    subtasks = sum(r["subtasks"] for r in rows)
    return {
        "scenarios": len(rows),
        "subtask_completion": sum(r["completed"] for r in rows) / subtasks,
        "task_success": sum(r["success"] for r in rows) / len(rows),
        "mean_parallel_width": sum(r["parallel_width"] for r in rows) / len(rows),
        "latency_reduction": 1 - sum(r["makespan"] for r in rows) / sum(r["sequential"] for r in rows),
        "replans": sum(r["replans"] for r in rows),
    }


async def bench(scenarios: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, kill, retries in MODES:
        (work / mode).mkdir()
        async with Fleet(work / mode) as fleet:
            rows = []
            for sc in scenarios:
                rows.append(await fleet.run(sc, to_plan(sc, retries), kill))
                print(f"{mode:14s} {rows[-1]['scenario']:22s} {rows[-1]['state']:17s} "
                      f"success={rows[-1]['success']} {rows[-1]['completed']}/{rows[-1]['subtasks']}",
                      file=sys.stderr, flush=True)
        out[mode] = {"rows": rows, "summary": summarise(rows)}
    return out


def llm_smoke(spec: str, scenarios: list[dict[str, Any]], attempts: int = 2,
              max_tokens: int = 384) -> dict[str, Any]:
    """Ask a real model to plan each request; count valid plans (no run: the plans are tiny)."""
    from paperlab.errors import PaperlabError
    from paperlab.llm import load_llm

    llm = load_llm(spec)
    devices = [DeviceSummary(n, caps, ["python"], tools) for n, (caps, tools) in FLEET.items()]
    rows = []
    for sc in scenarios:
        t0 = time.perf_counter()
        try:
            c = LLMPlanner(llm, max_attempts=attempts, max_tokens=max_tokens).plan(sc["request"], devices)
            rows.append({"scenario": sc["name"], "valid": True, "tasks": len(c.tasks),
                         "seconds": time.perf_counter() - t0})
        except PaperlabError as exc:
            rows.append({"scenario": sc["name"], "valid": False, "error": str(exc)[:300],
                         "seconds": time.perf_counter() - t0})
    return {"spec": spec, "rows": rows, "valid_rate": sum(r["valid"] for r in rows) / len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None, help="scenario file prefix, e.g. s01")
    ap.add_argument("--llm", default=None, help="also run an LLM planning smoke test, e.g. smollm2")
    ap.add_argument("--llm-scenarios", type=int, default=3)
    ap.add_argument("--llm-attempts", type=int, default=2)
    ap.add_argument("--llm-max-tokens", type=int, default=384)
    ap.add_argument("--llm-only", action="store_true", help="skip the fleet runs, keep their JSON")
    args = ap.parse_args()
    scenarios = load_scenarios(args.only)
    if args.llm_only:
        result = json.loads(OUT.read_text())
        result.pop("llm_smoke", None)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = asyncio.run(bench(scenarios, Path(tmp)))
    OUT.write_text(json.dumps(result, indent=2))  # before the slow part
    if args.llm:
        result["llm_smoke"] = llm_smoke(args.llm, scenarios[: args.llm_scenarios],
                                        args.llm_attempts, args.llm_max_tokens)
        OUT.write_text(json.dumps(result, indent=2))
    print("| mode | scenarios | subtask completion | task success | mean parallel width | "
          "latency vs sequential | replans |\n|---|---|---|---|---|---|---|")
    for mode, _, _ in MODES:
        s = result[mode]["summary"]
        print(f"| {mode} | {s['scenarios']} | {100 * s['subtask_completion']:.1f}% | "
              f"{100 * s['task_success']:.1f}% | {s['mean_parallel_width']:.2f} | "
              f"{-100 * s['latency_reduction']:+.0f}% | {s['replans']} |")
    if "llm_smoke" in result:
        ls = result["llm_smoke"]
        print(f"\nLLM planner smoke ({ls['spec']}): {sum(r['valid'] for r in ls['rows'])}/"
              f"{len(ls['rows'])} valid plans")
        for r in ls["rows"]:
            print(f"  {r['scenario']}: {'valid' if r['valid'] else 'invalid: ' + r.get('error', '')[:160]}")


if __name__ == "__main__":
    main()
