"""Planners: validation and bounded retry with a scripted LLM at the boundary, and YAML plans."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from paperlab.galaxy.errors import PlanError, PlannerError
from paperlab.galaxy.planning.planner import (
    DeclarativePlanner,
    DeviceSummary,
    LLMPlanner,
    extract_json,
    get_planner,
)


@dataclass
class Gen:
    text: str


class ScriptedLLM:
    """The far side of the paperlab.llm boundary: replies from a script, records prompts."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.prompts: list[list[dict[str, str]]] = []
        self.schemas: list[object] = []

    def generate(self, prompt, max_tokens=64, temperature=0.0, stop=None, seed=None, schema=None):  # type: ignore[no-untyped-def]
        self.prompts.append(list(prompt))
        self.schemas.append(schema)
        return Gen(self.replies.pop(0))


DEVICES = [DeviceSummary("pc", ["cpu"], ["echo", "sleep"]), DeviceSummary("phone", ["camera"], ["echo"])]
GOOD = {"name": "photo", "tasks": [
    {"id": "shoot", "capabilities": ["camera"], "executor": {"kind": "echo", "args": {"value": "img"}}},
    {"id": "edit", "capabilities": ["cpu"], "executor": {"kind": "echo"}, "after": ["shoot"],
     "inputs": {"image": "shoot"}}]}


def test_llm_planner_feeds_errors_back_until_valid() -> None:
    cyclic = json.loads(json.dumps(GOOD))
    cyclic["tasks"][0]["after"] = ["edit"]
    no_device = json.loads(json.dumps(GOOD))
    no_device["tasks"][0]["capabilities"] = ["gpu"]
    llm = ScriptedLLM(["I think you should take a photo.", json.dumps(cyclic),
                       "```json\n" + json.dumps(no_device) + "\n```", "Sure! " + json.dumps(GOOD)])
    planner = LLMPlanner(llm, max_attempts=4)
    c = planner.plan("take a photo and edit it", DEVICES)
    assert list(c.tasks) == ["shoot", "edit"] and c.request == "take a photo and edit it"
    assert len(llm.prompts) == 4
    feedback = [m["content"] for m in llm.prompts[-1] if m["role"] == "user"][1:]
    assert "no JSON object" in feedback[0] and "cycle" in feedback[1] and "gpu" in feedback[2]
    assert "pc: capabilities ['cpu']" in llm.prompts[0][1]["content"]


def test_llm_planner_gives_up_showing_last_plan() -> None:
    llm = ScriptedLLM(['{"tasks": []}', '{"tasks": [{"id": "x"}]}'])
    with pytest.raises(PlannerError, match=r"2 attempts.*executor.*last plan: .*\"id\": \"x\""):
        LLMPlanner(llm, max_attempts=2).plan("anything", DEVICES)


def test_declarative_planner_and_registry(tmp_path: Path) -> None:
    import yaml

    p = tmp_path / "plan.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    c = get_planner("yaml", p).plan("req", DEVICES)
    assert c.request == "req" and len(c.tasks) == 2
    with pytest.raises(PlanError, match="no device"):
        DeclarativePlanner(p).plan("req", [DeviceSummary("pc", ["cpu"], ["echo"])])
    with pytest.raises(PlannerError, match="known: yaml, llm"):
        get_planner("magic", None)


def test_extract_json_skips_braces_in_prose() -> None:
    assert extract_json('use {curly} braces; then {"a": "}"}') == {"a": "}"}


def test_plan_asks_with_a_schema_narrowed_to_the_devices() -> None:
    llm = ScriptedLLM([json.dumps(GOOD)])
    LLMPlanner(llm).plan("take a photo and edit it", DEVICES)
    schema = llm.schemas[0]
    assert isinstance(schema, dict)
    task = schema["properties"]["tasks"]["items"]
    assert task["properties"]["executor"]["properties"]["kind"]["enum"] == ["echo", "sleep"]
    assert task["properties"]["capabilities"]["items"]["enum"] == ["camera", "cpu"]
    assert LLMPlanner(ScriptedLLM([]), structured=False).structured is False

