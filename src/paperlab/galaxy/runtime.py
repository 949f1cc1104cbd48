"""One way to start an orchestrator: journal + orchestrator + server (+ dashboard, replanner).

``serve``, ``run``, ``ask``, the demo and the benchmarks all go through
:func:`start_orchestrator`, so they share defaults, start-up order and shutdown.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperlab.galaxy.journal import Journal
from paperlab.galaxy.orchestrator import Orchestrator, OrchestratorConfig
from paperlab.galaxy.server import OrchestratorServer

if TYPE_CHECKING:
    from paperlab.galaxy.replanner import RuleReplanner

__all__ = ["Started", "start_orchestrator"]


@dataclass
class Started:
    journal: Journal
    orch: Orchestrator
    server: OrchestratorServer
    ui: Any = None

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.asynccontextmanager
async def start_orchestrator(journal: str | Path, token: str, *, host: str = "127.0.0.1",
                             port: int = 0, config: OrchestratorConfig | None = None,
                             ui: bool = False, replanner: RuleReplanner | None = None,
                             clock: Callable[[], float] = time.time,
                             **server_kw: Any) -> AsyncIterator[Started]:
    """Open the journal, start the orchestrator and its server; close all three on exit."""
    j = Journal(journal)
    try:
        orch = Orchestrator(j, config or OrchestratorConfig(), clock=clock)
        if replanner is not None:
            replanner.attach(orch)
        dash = None
        if ui:
            from paperlab.galaxy.dashboard import Dashboard

            dash = Dashboard(orch)
        server = OrchestratorServer(orch, token, host, port, ui=dash, **server_kw)
        await server.start()
        try:
            yield Started(j, orch, server, dash)
        finally:
            await server.close()
    finally:
        j.close()
