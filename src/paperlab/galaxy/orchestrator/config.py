"""The orchestrator's knobs, in one dataclass shared by the core, the device link and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from paperlab.galaxy import defaults
from paperlab.galaxy.orchestrator.runstate import RunSettings

__all__ = ["OrchestratorConfig", "RunSettings"]


@dataclass
class OrchestratorConfig:
    """Knobs of the orchestrator (all times in seconds; defaults in :mod:`paperlab.galaxy.defaults`).

    ``keep_finished`` and ``keep_mb`` bound the finished runs kept in memory: the oldest are
    dropped once there are more than ``keep_finished`` of them or their estimated size passes
    ``keep_mb`` MiB (their journals stay; :meth:`Orchestrator.get_run` replays them).
    """

    global_cap: int = 256
    per_device_cap: int | None = None  # None: each device's own max_concurrency
    device_timeout: float = defaults.DEVICE_TIMEOUT
    unplaceable_timeout: float = defaults.UNPLACEABLE_TIMEOUT
    evict_after: float = defaults.EVICT_AFTER
    max_info_bytes: int = defaults.MAX_INFO_BYTES
    keep_finished: int = defaults.KEEP_FINISHED
    keep_mb: float = defaults.KEEP_MB
    tick: float = defaults.TICK
    settings: RunSettings = field(default_factory=RunSettings)
