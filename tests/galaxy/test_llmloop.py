"""The LLM in the loop: a model reads task results and edits the live DAG through the
validated edit path. The model is scripted (the far side of the paperlab.llm boundary); the
orchestrator, its server and the device agent are real, in this process."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paperlab.galaxy.control.runtime import start_orchestrator
from paperlab.galaxy.device.agent import DeviceAgent
from paperlab.galaxy.device.executors import DeviceConfig
from paperlab.galaxy.plan.constellation import Constellation, ConstellationState
from paperlab.galaxy.planning.llmloop import LLMEditor, edits_schema
from paperlab.galaxy.planning.planner import DeviceSummary

SECRET = "admin-secret-xyz"


@dataclass
class Gen:
    text: str


class ScriptedModel:
    """Replies in order (after ``delay`` seconds each), recording prompts and schemas."""

    def __init__(self, replies: list[Any], delay: float = 0.0) -> None:
        self.replies = [r if isinstance(r, str) else json.dumps(r) for r in replies]
        self.delay = delay
        self.prompts: list[dict[str, Any]] = []
        self.feedback: list[str] = []
        self.schemas: list[Any] = []

    async def agenerate(self, prompt: list[dict[str, str]], **kw: Any) -> Gen:
        await asyncio.sleep(self.delay)
        self.prompts.append(json.loads(prompt[1]["content"]))
        self.feedback.append(prompt[2]["content"] if len(prompt) > 2 else "")
        self.schemas.append(kw.get("schema"))
        return Gen(self.replies.pop(0) if self.replies else '{"edits": []}')


async def run_with(tmp: Path, tscale: float, plan: dict[str, Any], model: ScriptedModel,
                   **editor: Any) -> tuple[Any, LLMEditor]:
    ed = LLMEditor(model, request="count the words, summarise if long, then report", **editor)  # type: ignore[arg-type]
    async with start_orchestrator(tmp / "j.sqlite", SECRET, replanner=ed) as g:  # type: ignore[arg-type]
        agent = DeviceAgent(DeviceConfig(device_id="pc", capabilities=["cpu"], executors=["echo", "sleep"],
                                         heartbeat_interval=0.2), g.url, SECRET, seed=1)
        task = asyncio.create_task(agent.run())
        try:
            for _ in range(int(200 * tscale)):
                if g.orch.devices.get("pc") and g.orch.devices["pc"].online:
                    break
                await asyncio.sleep(0.05)
            rid = g.orch.submit(Constellation.from_plan(plan), "r")
            assert await g.orch.wait(rid, 30 * tscale) is ConstellationState.COMPLETED
            return g.orch.runs[rid], ed
        finally:
            agent.stop()
            await task


def test_the_model_sees_results_and_its_edit_lands_before_the_successor_starts(tmp_path: Path, tscale: float) -> None:
    plan = {"tasks": [{"id": "count", "capabilities": ["cpu"], "executor": {"kind": "echo", "args": {"value": {"words": 120}}}},
                      {"id": "report", "after": ["count"], "inputs": {"n": "count.words"}, "executor": {"kind": "echo"}}]}
    summarize = {"op": "add_task", "task": {"id": "summarize", "executor": {"kind": "echo"},
                                            "inputs": {"words": "count.words"}}}
    model = ScriptedModel([
        {"reason": "long text", "edits": [summarize]},  # no edge from count: rejected, said back
        {"reason": "long text: summarise before the report",
         "edits": [{**summarize, "after": ["count"]}, {"op": "add_edge", "source": "summarize", "target": "report"}]},
    ])
    run, ed = asyncio.run(run_with(tmp_path, tscale, plan, model))
    first = model.prompts[0]
    assert first["new_results"] == [{"task": "count", "status": "completed", "error": None, "result": {"words": 120}}]
    assert {"id": "count", "status": "completed", "executor": "echo", "capabilities": ["cpu"], "after": [],
            "result": '{"words": 120}'} in first["tasks"]
    assert "not a direct upstream" in model.feedback[1]
    c = run.constellation
    assert c.tasks["summarize"].result == {"args": {}, "inputs": {"words": 120}, "device": "pc"}
    # the report waited for the edit (the run was held), so it now runs after the summary
    assert {e.source for e in c.predecessors("report")} == {"count", "summarize"}
    assert c.tasks["report"].started_at >= c.tasks["summarize"].ended_at
    assert ed.log[0]["outcome"] == "applied" and ed.log[0]["attempts"] == 2
    assert len(run.undo_stack) == 1  # the model's edit is undoable like any other
    schema = model.schemas[0]
    add = schema["properties"]["edits"]["items"]["anyOf"][0]
    assert add["properties"]["task"]["properties"]["executor"]["properties"]["kind"]["enum"] == ["echo", "sleep"]


def test_results_that_come_while_the_model_thinks_are_batched(tmp_path: Path, tscale: float) -> None:
    plan = {"tasks": [{"id": f"p{i}", "executor": {"kind": "sleep", "args": {"seconds": 0.05 * i}}} for i in range(4)]}
    model = ScriptedModel([], delay=0.25 * tscale)
    asyncio.run(run_with(tmp_path, tscale, plan, model, hold="finish"))
    seen = [r["task"] for p in model.prompts for r in p["new_results"]]
    assert sorted(seen) == ["p0", "p1", "p2", "p3"]  # each result shown once
    assert len(model.prompts) < 4  # some in one round


def test_the_schema_names_only_what_exists() -> None:
    c = Constellation.from_plan({"tasks": [{"id": "a", "executor": {"kind": "echo"}},
                                           {"id": "b", "executor": {"kind": "echo"}, "after": ["a"]}]})
    c.tasks["a"].attempts = 1
    devices = [DeviceSummary("pc", ["cpu", "gpu"], ["echo"])]
    add, remove, update, add_edge, remove_edge = edits_schema(c, devices)["properties"]["edits"]["items"]["anyOf"]
    assert remove["properties"]["task_id"]["enum"] == ["b"]  # a has started
    assert add_edge["properties"]["source"]["enum"] == ["a", "b"]
    assert add["properties"]["task"]["properties"]["capabilities"]["items"]["enum"] == ["cpu", "gpu"]
    changes = update["properties"]["changes"]
    assert changes["additionalProperties"] is False and changes["properties"]["device"] == {"enum": ["pc"]}
    c.tasks["b"].attempts = 1  # nothing pending: only adding a task is left
    assert [o["properties"]["op"]["const"] for o in edits_schema(c, devices)["properties"]["edits"]["items"]["anyOf"]] == ["add_task"]
