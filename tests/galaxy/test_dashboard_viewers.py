"""Dashboard viewers over a real /ui/ws socket: what they are sent, and that one who leaves
while nothing changes is forgotten (it used to stay registered until the next change)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from websockets.asyncio.client import connect

from paperlab.galaxy.constellation import Constellation
from paperlab.galaxy.runtime import start_orchestrator

SECRET = "admin"


def test_viewers_share_frames_and_one_that_leaves_quietly_is_forgotten(tmp_path: Path, tscale: float) -> None:
    # No device: the run stays pending, so after the first frame nothing changes at all.
    plan = Constellation.from_plan({"tasks": [{"id": "a", "executor": {"kind": "echo"}},
                                              {"id": "b", "executor": {"kind": "echo"}, "after": ["a"]}]})

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", SECRET, ui=True) as g:
            rid = g.orch.submit(plan, "quiet")
            url = f"ws://127.0.0.1:{g.server.port}/ui/ws"
            hdr = {"Authorization": f"Bearer {SECRET}"}
            async with connect(url, additional_headers=hdr) as v1, connect(url, additional_headers=hdr) as v2:
                first = []
                for ws in (v1, v2):
                    assert json.loads(await ws.recv()) == {"role": "admin"}
                    first.append(await asyncio.wait_for(ws.recv(), 10 * tscale))
                frame = json.loads(first[0])
                assert 'data-task="b"' in frame["dag"] and frame["tasks"]["b"][0] == "pending"
                assert f'data-run="{rid}"' in frame["metrics"]
                assert len(g.ui._clients) == 2
            for _ in range(int(200 * tscale)):  # both left; no frame is due to tell us
                if not g.ui._clients:
                    break
                await asyncio.sleep(0.05)
            assert not g.ui._clients, "a viewer that left is still registered"

    asyncio.run(main())
