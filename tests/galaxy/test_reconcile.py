"""Reconciliation rules with a raw websockets client playing the device (the far side of the
protocol boundary): a capacity refusal uses no retry, an unknown running attempt is cancelled,
and a lost attempt that the device still runs is adopted back instead of run twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from paperlab.galaxy.control.runtime import start_orchestrator
from paperlab.galaxy.orchestrator.config import OrchestratorConfig
from paperlab.galaxy.plan.constellation import Constellation, ConstellationState, TaskStatus
from paperlab.galaxy.protocol.aip import Heartbeat, Register, TaskResult, encode

SECRET = "admin"


_unread: dict[int, list[dict[str, Any]]] = {}


async def recv(ws: ClientConnection, kind: str, tscale: float) -> dict[str, Any]:
    """The next message of ``kind``, unpacking BATCH frames (several replies to one of our
    messages, e.g. the heartbeat echo and a CANCEL, arrive in one)."""
    buf = _unread.setdefault(id(ws), [])
    while True:
        while buf:
            msg = buf.pop(0)
            if msg["type"] == kind:
                return msg
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10 * tscale))
        buf.extend(frame["messages"] if frame["type"] == "BATCH" else [frame])


def test_refusal_uses_no_retry_and_unknown_attempts_are_cancelled(tmp_path: Path, tscale: float) -> None:
    plan = Constellation.from_plan({"tasks": [{"id": "x", "max_retries": 0, "executor": {"kind": "echo"}}]})

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET) as g:  # noqa: SIM117 (the socket needs g.url)
            async with connect(g.url, additional_headers={"Authorization": f"Bearer {SECRET}"}) as ws:
                await ws.send(encode(Register(device_id="d", max_concurrency=1)))
                rid = g.orch.submit(plan, "r")
                first = await recv(ws, "TASK", tscale)
                await ws.send(encode(TaskResult(task_id="x", attempt_id=first["attempt_id"], status="refused",
                                                error="at capacity")))
                second = await recv(ws, "TASK", tscale)  # offered again, a new attempt id
                assert second["attempt_id"] != first["attempt_id"]
                # The device says it runs something we never sent it: cancelled explicitly.
                await ws.send(encode(Heartbeat(running=[second["attempt_id"], "r/ghost/1"])))
                cancel = await recv(ws, "CANCEL", tscale)
                assert cancel["attempt_id"] == "r/ghost/1"
                await ws.send(encode(TaskResult(task_id="x", attempt_id=second["attempt_id"],
                                                status="completed", result=1)))
                assert await g.orch.wait(rid, 10 * tscale) is ConstellationState.COMPLETED
                x = g.orch.runs[rid].constellation.tasks["x"]
                assert x.status is TaskStatus.COMPLETED and x.failures == 0
                assert g.orch.journal.count(rid, "refused") == 1

    asyncio.run(main())


def test_a_lost_attempt_still_running_is_adopted(tmp_path: Path, tscale: float) -> None:
    plan = Constellation.from_plan({"tasks": [{"id": "x", "max_retries": 0, "executor": {"kind": "echo"}}]})
    cfg = OrchestratorConfig(device_timeout=0.5 * tscale)

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, config=cfg) as g:  # noqa: SIM117 (the socket needs g.url)
            async with connect(g.url, additional_headers={"Authorization": f"Bearer {SECRET}"}) as ws:
                await ws.send(encode(Register(device_id="d")))
                rid = g.orch.submit(plan, "r")
                task = await recv(ws, "TASK", tscale)
                for _ in range(int(100 * tscale)):  # stay silent: declared lost
                    if g.orch.journal.count(rid, "lost"):
                        break
                    await asyncio.sleep(0.05)
                assert g.orch.runs[rid].constellation.tasks["x"].status is TaskStatus.PENDING
                await ws.send(encode(Heartbeat(running=[task["attempt_id"]])))  # back, still running it
                await asyncio.sleep(0.2)
                x = g.orch.runs[rid].constellation.tasks["x"]
                assert x.status is TaskStatus.RUNNING and x.attempt_id == task["attempt_id"]
                await ws.send(encode(TaskResult(task_id="x", attempt_id=task["attempt_id"], status="completed")))
                assert await g.orch.wait(rid, 10 * tscale) is ConstellationState.COMPLETED
                assert g.orch.journal.count(rid, "dispatched") == 1  # never run twice
                assert g.orch.journal.count(rid, "adopted") == 1

    asyncio.run(main())
