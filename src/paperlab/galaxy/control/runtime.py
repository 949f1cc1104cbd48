"""One way to start an orchestrator: journal + orchestrator + server (+ dashboard, replanner).

``serve``, ``run``, ``ask``, the demo and the benchmarks all go through
:func:`start_orchestrator`, so they share defaults, start-up order and shutdown.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperlab.galaxy import defaults
from paperlab.galaxy.control.guard import Origins
from paperlab.galaxy.control.server import OrchestratorServer
from paperlab.galaxy.orchestrator.config import OrchestratorConfig
from paperlab.galaxy.orchestrator.core import Orchestrator
from paperlab.galaxy.orchestrator.gcpolicy import OrchestratorGC
from paperlab.galaxy.orchestrator.journal import Journal
from paperlab.galaxy.protocol.registry import DeviceRegistry

if TYPE_CHECKING:
    from paperlab.galaxy.planning.llmloop import LLMEditor
    from paperlab.galaxy.planning.replanner import RuleReplanner

__all__ = ["Started", "start_orchestrator"]


@dataclass
class Started:
    journal: Journal
    orch: Orchestrator
    server: OrchestratorServer
    ui: Any = None
    control: Any = None

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.asynccontextmanager
async def start_orchestrator(journal: str | Path, token: str, *, host: str = "127.0.0.1",
                             port: int = 0, config: OrchestratorConfig | None = None,
                             ui: bool = False, replanner: RuleReplanner | LLMEditor | None = None,
                             clock: Callable[[], float] = time.time, api_port: int | None = None,
                             ssl_context: ssl.SSLContext | None = None,
                             registry: DeviceRegistry | str | Path | None = None,
                             allow_origins: list[str] | None = None, max_viewers: int = defaults.MAX_VIEWERS,
                             **server_kw: Any) -> AsyncIterator[Started]:
    """Open the journal, start the orchestrator and its server (and, with ``api_port``, the
    control API on that port, 0 for any); close them all on exit.

    ``registry``: the device registry (a :class:`DeviceRegistry` or its file; None: no device
    tokens, only the admin secret connects devices). ``allow_origins``: browser origins besides
    our own that may open connections (``scheme://host[:port]``)."""
    origins = Origins(allow_origins)  # DeviceConfigError for a bad one, before anything starts
    if not isinstance(registry, DeviceRegistry):
        registry = DeviceRegistry(registry)
    j = Journal(journal)
    # (``orch`` is read when the collector asks, after it is made.)
    collector = OrchestratorGC(idle=lambda: not orch.active_runs())
    collector.start()
    try:
        orch = Orchestrator(j, config or OrchestratorConfig(), clock=clock)
        orch.on_finished.append(lambda _run_id: collector.run_finished())
        if replanner is not None:
            replanner.attach(orch)
        dash = None
        if ui:
            from paperlab.galaxy.dashboard.relay import Dashboard

            dash = Dashboard(orch, max_viewers=max_viewers)
        server = OrchestratorServer(orch, token, host, port, ui=dash, ssl_context=ssl_context,
                                    registry=registry, origins=origins, **server_kw)
        await server.start()
        control = None
        try:
            if api_port is not None:
                from paperlab.galaxy.control.api import ControlServer

                control = ControlServer(orch, token, host, api_port, ssl_context=ssl_context, origins=origins)
                await control.start()
            yield Started(j, orch, server, dash, control)
        finally:
            if control is not None:
                await control.close()
            await server.close()
            if dash is not None:
                await dash.close()
    finally:
        j.close()
        collector.stop()
