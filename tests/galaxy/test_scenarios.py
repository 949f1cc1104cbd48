"""The NebulaBench-style scenario files are valid plans that the benchmark fleet can run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from paperlab.galaxy.device.tools import TOOLS
from paperlab.galaxy.plan.conditions import check_condition
from paperlab.galaxy.planning.planner import DeviceSummary, check_placeable

BENCH = Path(__file__).resolve().parents[2] / "bench" / "galaxy" / "nebula.py"


def test_twenty_scenarios_validate_and_are_placeable() -> None:
    spec = importlib.util.spec_from_file_location("galaxy_nebula", BENCH)
    assert spec is not None and spec.loader is not None
    nebula = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nebula)
    scenarios = nebula.load_scenarios(None)
    assert len(scenarios) == 20
    devices = [DeviceSummary(n, caps, ["python"], tools) for n, (caps, tools) in nebula.FLEET.items()]
    for sc in scenarios:
        c = nebula.to_plan(sc)
        check_placeable(c, devices)
        check_condition(sc["check"])
        assert {t["tool"] for t in sc["tasks"]} <= set(TOOLS), sc["name"]
        assert sc["request"] and c.metrics()["parallel_width"] >= 1.0
