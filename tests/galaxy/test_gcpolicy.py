"""The orchestrator process's collector policy: finished runs are frozen out of the GC's
scans, yet the runs dropped beyond ``keep_finished`` are still freed, cycles made by other
code are still collected once the frozen set doubles, and the process's own policy comes back
when the orchestrator stops."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import pytest

from paperlab.galaxy.control.runtime import start_orchestrator
from paperlab.galaxy.device.agent import DeviceAgent
from paperlab.galaxy.device.executors import DeviceConfig
from paperlab.galaxy.orchestrator import gcpolicy
from paperlab.galaxy.orchestrator.config import OrchestratorConfig
from paperlab.galaxy.plan.constellation import Constellation, ConstellationState


class Node:
    """A plain object that can sit in a reference cycle."""

    other: Node | None = None


@pytest.fixture
def restore_gc():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_runs_are_frozen_while_it_runs_and_the_dropped_ones_are_still_freed(tmp_path: Path, tscale: float,
                                                                            restore_gc: None) -> None:
    plan = Constellation.from_plan({"tasks": [{"id": f"t{i}", "executor": {"kind": "echo"}} for i in range(50)]})
    before = gc.get_threshold()

    async def main() -> None:
        async with start_orchestrator(tmp_path / "j.sqlite", "tok",
                                      config=OrchestratorConfig(keep_finished=2)) as g:
            assert gc.get_threshold()[0] == gcpolicy.YOUNG_THRESHOLD
            agent = DeviceAgent(DeviceConfig(device_id="d", capabilities=[], max_concurrency=4,
                                             heartbeat_interval=0.2), g.url, "tok", seed=1)
            running = asyncio.create_task(agent.run())
            try:
                refs = []
                for _ in range(6):
                    rid = g.orch.submit(plan)
                    assert await g.orch.wait(rid, 30 * tscale) is ConstellationState.COMPLETED
                    refs.append(weakref.ref(g.orch.runs[rid]))
                    assert gc.get_freeze_count() > 0  # frozen at the run's end
                # Four runs were dropped from memory after being frozen: reference counting
                # freed them all the same (no gc.collect() here).
                assert [r() is None for r in refs] == [True] * 4 + [False] * 2
            finally:
                agent.stop()
                await running

    asyncio.run(main())
    assert gc.get_freeze_count() == 0  # unfrozen on the way out
    assert gc.get_threshold() == before


def test_cycles_made_by_other_code_are_collected_once_memory_grows_fourfold(restore_gc: None) -> None:
    mem = [gcpolicy.FLOOR]  # the process's memory as the policy reads it (the far side)
    policy = gcpolicy.OrchestratorGC(idle=lambda: False, idle_after=0.01, size=lambda: mem[0])

    async def main() -> None:  # (run_finished is called on the orchestrator's loop)
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: reference counting alone never frees it
        cycle = weakref.ref(a)
        policy.run_finished()  # frozen with it
        del a, b
        assert gc.get_freeze_count() > 0 and cycle() is not None and policy.full_collections == 0
        mem[0] = 3 * gcpolicy.FLOOR  # doubled, and the orchestrator is busy: not yet
        policy.run_finished()
        await asyncio.sleep(0.05)
        assert cycle() is not None and policy.full_collections == 0
        mem[0] = 5 * gcpolicy.FLOOR  # fourfold: now, busy or not
        policy.run_finished()
        assert policy.full_collections == 1 and policy.baseline == 5 * gcpolicy.FLOOR
        assert cycle() is None  # the full collection found it
        assert gc.get_freeze_count() > 0  # the live objects are frozen again

    policy.start()
    try:
        asyncio.run(main())
    finally:
        policy.stop()
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("idle", [True, False])
def test_doubled_memory_is_collected_only_when_the_orchestrator_is_idle(restore_gc: None, idle: bool) -> None:
    async def main() -> int:
        mem = [gcpolicy.FLOOR]
        policy = gcpolicy.OrchestratorGC(idle=lambda: idle, idle_after=0.05, size=lambda: mem[0])
        policy.start()
        try:
            policy.run_finished()
            mem[0] = 3 * gcpolicy.FLOOR
            policy.run_finished()
            assert policy.full_collections == 0  # not while the run's loop step is running
            await asyncio.sleep(0.2)
            return policy.full_collections
        finally:
            policy.stop()

    assert asyncio.run(main()) == (1 if idle else 0)


def test_where_memory_cannot_be_measured_nothing_is_frozen(restore_gc: None) -> None:
    policy = gcpolicy.OrchestratorGC(idle=lambda: True, size=lambda: 0)
    policy.run_finished()
    assert gc.get_freeze_count() == 0
    assert gcpolicy.resident_bytes() > 0  # here it can


def test_a_process_that_turned_the_collector_off_is_left_alone(restore_gc: None) -> None:
    policy = gcpolicy.OrchestratorGC(idle=lambda: True, size=lambda: 5 * gcpolicy.FLOOR)
    gc.disable()
    try:
        policy.run_finished()
        assert gc.get_freeze_count() == 0
    finally:
        gc.enable()
