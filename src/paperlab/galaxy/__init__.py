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
    "Constellation": "constellation",
    "ConstellationState": "constellation",
    "EdgeKind": "constellation",
    "ExecutorSpec": "constellation",
    "TaskPlan": "constellation",
    "TaskStar": "constellation",
    "TaskStarLine": "constellation",
    "TaskState": "constellation",
    "TaskStatus": "constellation",
    "load_constellation": "constellation",
    "EditBatch": "edits",
    "apply_batch": "edits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'paperlab.galaxy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"paperlab.galaxy.{module}"), name)
    globals()[name] = value
    return value
