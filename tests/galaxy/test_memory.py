"""Finished runs are kept by a memory budget (keep_mb) as well as by count (keep_finished)."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from pathlib import Path

from paperlab.galaxy.orchestrator.config import OrchestratorConfig
from paperlab.galaxy.orchestrator.core import Orchestrator
from paperlab.galaxy.orchestrator.events import Created, Dispatched, Result
from paperlab.galaxy.orchestrator.journal import Journal
from paperlab.galaxy.orchestrator.memory import estimate_bytes
from paperlab.galaxy.orchestrator.runstate import Run
from paperlab.galaxy.plan.constellation import Constellation, ConstellationState


def plan(n: int, name: str = "p") -> Constellation:
    return Constellation.from_plan({"name": name, "tasks": [
        {"id": f"t{i}", "executor": {"kind": "echo"}, "after": [f"t{i - 1}"] if i % 50 else []} for i in range(n)]})


def test_the_estimate_is_within_a_factor_of_two_of_what_a_run_holds() -> None:
    for n, result in ((600, None), (200, "x" * 3000)):
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        c = plan(n)
        run = Run.from_created("r", Created(plan=c.plan_dict(), settings={}), prepared=c.plan_copy())
        del c
        for i in range(n):
            run.apply(Dispatched(task=f"t{i}", attempt=f"r/t{i}/1", device="d", ts=1.0))
            value = None if result is None else {"text": result + str(i), "n": i}
            run.apply(Result(task=f"t{i}", attempt=f"r/t{i}/1", device="d", status="completed", result=value, ts=2.0))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        estimate = estimate_bytes(run)
        assert held / 2 < estimate < held * 2, (n, estimate, held)


def test_old_finished_runs_leave_memory_by_size_not_only_by_count(tmp_path: Path, tscale: float) -> None:
    async def main() -> None:
        # Each cancelled 800-task run is estimated at about 4 MiB: a 10 MiB budget keeps two.
        orch = Orchestrator(Journal(tmp_path / "j.sqlite"),
                            OrchestratorConfig(keep_finished=32, keep_mb=10, unplaceable_timeout=3600))
        ids = []
        for k in range(4):
            rid = orch.submit(plan(800, f"run{k}"), f"r{k}")
            orch.cancel_run(rid)
            orch.step()
            assert await orch.wait(rid, 5 * tscale) is ConstellationState.CANCELLED
            ids.append(rid)
        assert list(orch.runs) == ["r2", "r3"]
        assert sum(estimate_bytes(r) for r in orch.runs.values()) <= 10 * 2**20
        old = orch.get_run("r0")  # read back from the journal
        assert old.finished is ConstellationState.CANCELLED and len(old.constellation.tasks) == 800
        orch.journal.close()

    asyncio.run(main())
