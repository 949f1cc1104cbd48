"""Galaxy: cross-device task orchestration (UFO^3), built as a reliable distributed system.

A constellation (DAG of tasks) runs on device agents that dial in over AIP (JSON over
WebSocket); an asyncio orchestrator dispatches by capability, survives device and
orchestrator crashes through a SQLite journal, and accepts each result exactly once.
Heavy parts (websockets, the dashboard, planners) are imported from their modules.
"""

from paperlab.galaxy.constellation import (
    Constellation,
    ConstellationState,
    EdgeKind,
    ExecutorSpec,
    TaskStar,
    TaskStarLine,
    TaskStatus,
    load_constellation,
)
from paperlab.galaxy.edits import EditBatch, apply_batch

__all__ = [
    "Constellation",
    "ConstellationState",
    "EdgeKind",
    "EditBatch",
    "ExecutorSpec",
    "TaskStar",
    "TaskStarLine",
    "TaskStatus",
    "apply_batch",
    "load_constellation",
]
