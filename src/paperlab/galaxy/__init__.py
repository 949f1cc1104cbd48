"""Galaxy: cross-device task orchestration (UFO^3), built as a reliable distributed system.

A constellation (DAG of tasks) runs on device agents that dial in over AIP (JSON over
WebSocket); an asyncio orchestrator dispatches by capability, survives device and
orchestrator crashes through a SQLite journal, and accepts each result exactly once.
The public names below are loaded on first use, so ``import paperlab.galaxy`` (and the CLI)
stays light: no pydantic or yaml until a constellation is touched.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Constellation": "plan.constellation",
    "ConstellationState": "plan.constellation",
    "EdgeKind": "plan.constellation",
    "ExecutorSpec": "plan.constellation",
    "TaskPlan": "plan.constellation",
    "TaskStar": "plan.constellation",
    "TaskStarLine": "plan.constellation",
    "TaskState": "plan.constellation",
    "TaskStatus": "plan.constellation",
    "load_constellation": "plan.constellation",
    "EditBatch": "plan.edits",
    "apply_batch": "plan.edits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'paperlab.galaxy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"paperlab.galaxy.{module}"), name)
    globals()[name] = value
    return value
