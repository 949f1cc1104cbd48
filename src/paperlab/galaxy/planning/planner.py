"""Planners: turn a request and the registered devices into a constellation.

Two implementations behind one interface (:class:`Planner`), chosen from :data:`PLANNERS`:

* ``yaml`` (:class:`DeclarativePlanner`): a plan file, no LLM;
* ``llm`` (:class:`LLMPlanner`): asks a :mod:`paperlab.llm` model for JSON matching the
  constellation schema, validates it (schema, DAG, capabilities the devices offer, executors),
  and feeds the validation error back for a bounded number of retries. It then raises
  :class:`PlannerError` showing the last invalid plan.

Edits of a live run from its results are the job of :mod:`.llmloop`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from paperlab.galaxy.errors import PlanError, PlannerError
from paperlab.galaxy.plan.constellation import (
    EXECUTOR_KINDS,
    ID_PATTERN,
    Constellation,
    load_constellation,
)

if TYPE_CHECKING:
    from paperlab.llm import LLM, Message

__all__ = ["PLANNERS", "DeclarativePlanner", "DeviceSummary", "LLMPlanner", "Planner",
           "extract_json", "get_planner", "plan_schema"]

log = logging.getLogger(__name__)


@dataclass
class DeviceSummary:
    """What a planner may know about a device."""

    device_id: str
    capabilities: list[str]
    executors: list[str] = field(default_factory=lambda: sorted(EXECUTOR_KINDS))
    python_allow: list[str] = field(default_factory=list)


class Planner(Protocol):
    def plan(self, request: str, devices: list[DeviceSummary]) -> Constellation: ...


class DeclarativePlanner:
    """A YAML/JSON plan file; the request is recorded but not interpreted."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def plan(self, request: str, devices: list[DeviceSummary]) -> Constellation:
        c = load_constellation(self.path)
        if request:
            c.request = request
        check_placeable(c, devices)
        return c


def check_placeable(c: Constellation, devices: list[DeviceSummary]) -> None:
    """PlanError unless every task has a device offering its capabilities and executor."""
    if not devices:
        return  # nothing known yet: placement is the orchestrator's job at run time
    for t in c.tasks.values():
        ok = [d for d in devices if t.fits(d.device_id, d.capabilities, d.executors)]
        if not ok:
            raise PlanError(f"task {t.id!r} needs capabilities {t.capabilities} and executor "
                            f"{t.executor.kind!r}{' on ' + t.device if t.device else ''}; no device "
                            f"offers that (devices: {[(d.device_id, d.capabilities) for d in devices]})")
        if t.executor.kind == "python":
            fn = t.executor.args.get("function")
            if not any(fn in d.python_allow for d in ok):
                raise PlanError(f"task {t.id!r} calls python function {fn!r}, which no capable "
                                f"device allows; allowed: {sorted({f for d in ok for f in d.python_allow})}")


def extract_json(text: str) -> Any:
    """The first JSON object in ``text`` (models wrap it in prose or ``` fences)."""
    start = text.find("{")
    while start != -1:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(text)):
            ch = text[i]
            if in_str:
                esc = (ch == "\\") and not esc
                if ch == '"' and not esc:
                    in_str = False
                continue
            if ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    try:
                        return json.loads(text[start:i + 1])
                    except ValueError:
                        break
        start = text.find("{", start + 1)
    raise PlanError("the reply contains no JSON object; answer with one JSON object only")


_SCHEMA_HINT = """Answer with ONE JSON object, no prose:
{"name": str, "tasks": [{"id": str, "description": str, "capabilities": [str],
  "executor": {"kind": one of %(kinds)s, "args": {...}}, "after": [task ids],
  "inputs": {"arg": "upstream_id.field"}, "timeout": seconds, "max_retries": int}]}
Executor args: echo {"value": any}; sleep {"seconds": float}; shell {"argv": [program, args...]};
python {"function": name, "kwargs": {...}}; llm {"prompt": str}.
Independent tasks must not depend on each other, so they run in parallel."""


def plan_schema(devices: list[DeviceSummary]) -> dict[str, Any]:
    """The JSON schema of a plan reply, narrowed to what ``devices`` offer.

    Given as ``schema=`` to the LLM, it holds a local model's decoding to a plan object whose
    executor kinds and capabilities exist on some device (an HTTP server gets it as
    ``response_format``). What a schema cannot say (no cycles, a python function a capable
    device allows, inputs naming upstream tasks) is still checked after parsing and fed back.
    """
    kinds = sorted({k for d in devices for k in d.executors}) if devices else sorted(EXECUTOR_KINDS)
    caps = sorted({c for d in devices for c in d.capabilities})
    task_id = {"type": "string", "pattern": ID_PATTERN}
    task: dict[str, Any] = {
        "type": "object",
        "properties": {
            "id": task_id,
            "description": {"type": "string"},
            "capabilities": {"type": "array", "items": {"enum": caps} if caps else {"type": "string"}},
            "executor": {"type": "object",
                         "properties": {"kind": {"enum": kinds}, "args": {"type": "object"}},
                         "required": ["kind", "args"], "additionalProperties": False},
            "after": {"type": "array", "items": task_id},
            "inputs": {"type": "object", "additionalProperties": {"type": "string"}},
            # no timeout / max_retries: a grammar cannot bound a number's digits, and a small
            # model held to one wrote a 100-digit timeout until its budget ran out
        },
        "required": ["id", "executor"],
        "additionalProperties": False,
    }
    return {"type": "object",
            "properties": {"name": {"type": "string"}, "tasks": {"type": "array", "items": task, "minItems": 1}},
            "required": ["name", "tasks"], "additionalProperties": False}


class LLMPlanner:
    """Plans with a :class:`paperlab.llm.LLM`.

    Args:
        llm: the model.
        max_attempts: asks per plan (each invalid plan's error is fed back).
        max_tokens: completion budget per ask.
        structured: pass the plan's JSON schema as ``schema=`` (constrained decoding on local
            backends, ``response_format`` over HTTP); off, the model writes freely and the
            reply is parsed.
    """

    def __init__(self, llm: LLM, max_attempts: int = 3, max_tokens: int = 768, structured: bool = True) -> None:
        self.llm = llm
        self.max_attempts = max_attempts
        self.max_tokens = max_tokens
        self.structured = structured
        self.transcript: list[dict[str, str]] = []

    def _ask(self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None) -> str:
        gen = self.llm.generate(cast("list[Message]", messages), max_tokens=self.max_tokens, temperature=0.0,
                                schema=schema if self.structured else None)
        return str(gen.text)

    def plan(self, request: str, devices: list[DeviceSummary]) -> Constellation:
        """Plan ``request``; PlannerError with the last invalid plan after max_attempts."""
        dev_text = "\n".join(f"- {d.device_id}: capabilities {d.capabilities}, executors "
                             f"{d.executors}, python functions {d.python_allow}" for d in devices)
        messages = [
            {"role": "system", "content": "You split a user request into a DAG of tasks for devices. "
                                          + _SCHEMA_HINT % {"kinds": sorted(EXECUTOR_KINDS)}},
            {"role": "user", "content": f"Devices:\n{dev_text or '- (none registered yet)'}\n\nRequest: {request}"},
        ]
        last, error = "", ""
        schema = plan_schema(devices)
        for attempt in range(1, self.max_attempts + 1):
            last = self._ask(messages, schema)
            try:
                c = Constellation.from_plan(extract_json(last))
                check_placeable(c, devices)
                c.request = request
                self.transcript = messages + [{"role": "assistant", "content": last}]
                return c
            except PlanError as exc:
                error = str(exc)
                log.info("plan attempt %d invalid: %s", attempt, error)
                messages = messages + [
                    {"role": "assistant", "content": last},
                    {"role": "user", "content": f"That plan is invalid: {error}. Reply with the "
                                                "corrected JSON object only."}]
        self.transcript = messages
        raise PlannerError(f"the LLM gave no valid plan in {self.max_attempts} attempts; last "
                           f"error: {error}; last plan: {last[:800]!r}")


PLANNERS = {"yaml": DeclarativePlanner, "llm": LLMPlanner}


def get_planner(name: str, arg: Any) -> Planner:
    """The planner registered under ``name`` built with its one argument (path or LLM)."""
    try:
        return PLANNERS[name](arg)  # type: ignore[no-any-return]
    except KeyError:
        raise PlannerError(f"unknown planner {name!r}; known: {', '.join(PLANNERS)}") from None
