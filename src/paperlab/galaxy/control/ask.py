"""``paperlab galaxy ask``: plan a request with an LLM (or a plan file), confirm, run with replanning."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from paperlab.galaxy.control.runtime import start_orchestrator
from paperlab.galaxy.control.service import task_table
from paperlab.galaxy.errors import PlannerError
from paperlab.galaxy.orchestrator.core import Orchestrator
from paperlab.galaxy.plan.constellation import Constellation
from paperlab.galaxy.planning.llmloop import LLMEditor
from paperlab.galaxy.planning.planner import DeclarativePlanner, DeviceSummary, LLMPlanner, Planner
from paperlab.galaxy.planning.replanner import RuleReplanner

__all__ = ["AskOptions", "plan_table", "run_ask"]


@dataclass
class AskOptions:
    request: str
    token: str
    llm: str | None = None
    plan: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    journal: Path = Path("galaxy-journal.sqlite")
    wait_devices: int = 1
    wait_seconds: float = 60.0
    yes: bool = False
    ui: bool = False
    registry: Path | None = None
    llm_edits: bool = False  # the planning LLM also edits the run from its results (llmloop)


def plan_table(c: Constellation) -> Table:
    table = Table(title=f"plan: {c.name}")
    for col in ("task", "capabilities", "executor", "after", "inputs"):
        table.add_column(col)
    for t in c.tasks.values():
        table.add_row(t.id, ",".join(t.capabilities), f"{t.executor.kind} {t.executor.args}"[:50],
                      ",".join(e.source for e in c.predecessors(t.id)),
                      ", ".join(f"{k}<-{v}" for k, v in t.inputs.items()))
    return table


def summaries(orch: Orchestrator) -> list[DeviceSummary]:
    """What the planner is told about the online devices."""
    return [DeviceSummary(d.device_id, sorted(d.capabilities), sorted(d.executors or []),
                          sorted(d.info.get("python_allow", [])))
            for d in orch.devices.values() if d.online and not d.lost]


def run_ask(opts: AskOptions, confirm: Callable[[str], bool]) -> str:
    """Plan, show, confirm, run; returns the final state (or ``declined``)."""
    console = Console(stderr=True)
    planner: Planner
    if opts.llm_edits and not opts.llm:
        raise PlannerError("--llm-edits needs --llm SPEC: the model that edits the run from its results")
    llm = None
    if opts.llm:
        from paperlab.llm import load_llm
        from paperlab.threads import set_threads

        set_threads()  # this is the ask command's edge: an in-process planner model runs next
        llm = load_llm(opts.llm)
    if opts.plan is not None:
        planner = DeclarativePlanner(opts.plan)
    elif llm is not None:
        planner = LLMPlanner(llm)
    else:
        raise PlannerError("give --llm SPEC (e.g. smollm2) or --plan PLAN.yaml")
    replanner: RuleReplanner | LLMEditor = (LLMEditor(llm, request=opts.request) if opts.llm_edits and llm
                                            else RuleReplanner())
    return asyncio.run(_main(opts, planner, replanner, console, confirm))


async def _main(opts: AskOptions, planner: Planner, replanner: RuleReplanner | LLMEditor, console: Console,
                confirm: Callable[[str], bool]) -> str:
    async with start_orchestrator(opts.journal, opts.token, host=opts.host, port=opts.port,
                                  ui=opts.ui, replanner=replanner, registry=opts.registry) as g:
        orch = g.orch
        print(f"listening ws://{opts.host}:{g.server.port}/aip", flush=True)
        end = time.monotonic() + opts.wait_seconds
        while sum(d.online for d in orch.devices.values()) < opts.wait_devices and time.monotonic() < end:
            await asyncio.sleep(0.1)
        devices = summaries(orch)
        console.print(f"devices: {[(d.device_id, d.capabilities) for d in devices]}")
        c = await asyncio.to_thread(planner.plan, opts.request, devices)
        console.print(plan_table(c))
        if not opts.yes and not await asyncio.to_thread(confirm, "run this plan?"):
            return "declined"
        run_id = orch.submit(c)
        state = await orch.wait(run_id)
        Console().print(task_table(orch.get_run(run_id)))
        for entry in replanner.log:
            console.print(f"replan: {entry.get('reason', '')} -> {entry.get('outcome', '')}")
        print(f"run {run_id} finished: {state.value}", flush=True)
        return state.value
