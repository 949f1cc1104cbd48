"""The packaged model (SmolLM2-135M-Instruct) as the LLM in the loop: what does it do?

A two-task run (``count`` a text's words, then ``report``) whose request says to add a summary
task before the report when the text is long. The count comes back with 1200 words; the
LLMEditor holds the run and asks the model for an edit through the schema-constrained door.
Printed and written to bench/galaxy/results-llm-loop.json: each reply, how long it took, what
the edit path did with it, and the final DAG.

Usage: PYTHONPATH=src python bench/galaxy/llm_loop.py [--llm smollm2] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from paperlab.galaxy.control.runtime import start_orchestrator
from paperlab.galaxy.device.agent import DeviceAgent
from paperlab.galaxy.device.executors import DeviceConfig
from paperlab.galaxy.plan.constellation import Constellation
from paperlab.galaxy.planning.llmloop import LLMEditor

OUT = Path(__file__).parent / "results-llm-loop.json"
REQUEST = ("Count the words of the article. If it has more than 1000 words, add a task 'summarize' "
           "(executor echo, after count) and make the report wait for it.")
PLAN = {"name": "article", "tasks": [
    {"id": "count", "capabilities": ["cpu"], "executor": {"kind": "echo", "args": {"value": {"words": 1200}}}},
    {"id": "report", "after": ["count"], "inputs": {"n": "count.words"}, "executor": {"kind": "echo"}}]}


class Recorder:
    """Wraps the model: records each reply and its time (the model itself is untouched)."""

    def __init__(self, llm: Any) -> None:
        self.llm, self.calls = llm, []  # type: ignore[var-annotated]

    async def agenerate(self, prompt: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        gen = await self.llm.agenerate(prompt, **kw)
        self.calls.append({"seconds": round(time.perf_counter() - t0, 1), "completion_tokens": gen.completion_tokens,
                           "prompt_tokens": gen.prompt_tokens, "finish": gen.finish_reason, "reply": gen.text})
        return gen


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from paperlab.llm import load_llm

    t0 = time.perf_counter()
    model = Recorder(load_llm(args.llm))
    load_s = time.perf_counter() - t0
    editor = LLMEditor(model, request=REQUEST, max_tokens=args.max_tokens, think_timeout=args.think_timeout,  # type: ignore[arg-type]
                       max_attempts=args.attempts)
    token = secrets.token_hex(8)
    with tempfile.TemporaryDirectory() as tmp:
        async with start_orchestrator(Path(tmp) / "j.sqlite", token, replanner=editor) as g:
            agent = DeviceAgent(DeviceConfig(device_id="pc", capabilities=["cpu"], executors=["echo"]), g.url, token)
            task = asyncio.create_task(agent.run())
            try:
                while not (g.orch.devices.get("pc") and g.orch.devices["pc"].online):
                    await asyncio.sleep(0.05)
                rid = g.orch.submit(Constellation.from_plan(PLAN), "article")
                state = await g.orch.wait(rid, args.think_timeout * args.attempts * 3)
                c = g.orch.runs[rid].constellation
                return {"llm": args.llm, "load_s": round(load_s, 1), "max_tokens": args.max_tokens,
                        "state": state.value, "calls": model.calls, "rounds": editor.log,
                        "final_tasks": {t: [e.source for e in c.predecessors(t)] for t in c.tasks},
                        "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
            finally:
                agent.stop()
                await task


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--llm", default="smollm2")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--attempts", type=int, default=2)
    ap.add_argument("--think-timeout", type=float, default=900.0)
    result = asyncio.run(main(ap.parse_args()))
    OUT.write_text(json.dumps(result, indent=2))
    for i, call in enumerate(result["calls"]):
        print(f"ask {i + 1}: {call['seconds']}s, {call['completion_tokens']} tokens, {call['finish']}: {call['reply'][:400]}")
    for r in result["rounds"]:
        print("round:", r)
    print("state:", result["state"], "final DAG (task: upstream):", result["final_tasks"])
