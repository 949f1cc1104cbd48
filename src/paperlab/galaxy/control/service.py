"""Wiring for the CLI: journal + orchestrator + server (+ dashboard), a live table, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from paperlab.galaxy import defaults
from paperlab.galaxy.control.runtime import Started, start_orchestrator
from paperlab.galaxy.orchestrator.config import OrchestratorConfig
from paperlab.galaxy.orchestrator.journal import Journal
from paperlab.galaxy.orchestrator.runstate import Run, replay
from paperlab.galaxy.plan.constellation import Constellation, load_constellation

__all__ = ["ServiceOptions", "replay_run", "run_service", "task_table"]

log = logging.getLogger(__name__)
_COLOURS = {"pending": "white", "running": "yellow", "completed": "green", "failed": "red",
            "cancelled": "magenta", "skipped": "bright_black"}


@dataclass
class ServiceOptions:
    token: str
    host: str = "127.0.0.1"
    port: int = 8765
    journal: Path = Path("galaxy-journal.sqlite")
    plan: Path | None = None
    run_id: str | None = None
    resume: str | None = None
    ui: bool = False
    device_timeout: float = defaults.DEVICE_TIMEOUT
    unplaceable_timeout: float = defaults.UNPLACEABLE_TIMEOUT
    exit_when_done: bool = True
    live: bool = True
    replan: bool = False
    api_port: int | None = None  # the control API's port (None: no control API)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_send_mb: int = defaults.MAX_SEND_MB  # frames queued for a device that stops reading
    registry: Path | None = None  # the device registry file (None or absent: no device tokens)
    allow_origins: list[str] = field(default_factory=list)
    max_viewers: int = defaults.MAX_VIEWERS
    keep_finished: int = defaults.KEEP_FINISHED  # finished runs kept in memory: how many,
    keep_mb: float = defaults.KEEP_MB  # and how many MiB (estimated)


def replay_run(journal_path: Path, run_id: str) -> Run:
    """Rebuild a run's state from its journal without running anything."""
    from paperlab.galaxy.errors import JournalError

    if not Path(journal_path).is_file():
        raise JournalError(f"journal {journal_path} does not exist; pass --journal PATH")
    j = Journal(journal_path)
    try:
        j.run_info(run_id)
        return replay(run_id, j.events(run_id))
    finally:
        j.close()


def task_table(run: Run) -> Table:
    """A rich table of the run's tasks."""
    table = Table(title=f"{run.constellation.name} ({run.run_id})")
    for col in ("task", "status", "device", "attempts", "result / error"):
        table.add_column(col)
    for t in run.constellation.tasks.values():
        detail = t.error if t.error and t.status.value != "completed" else t.result
        text = str(detail)[:60] if detail is not None else ""
        table.add_row(t.id, f"[{_COLOURS[t.status.value]}]{t.status.value}", t.assigned_device or "",
                      str(t.attempts), text)
    return table


def run_service(opts: ServiceOptions) -> str | None:
    """Run the orchestrator service; returns the run's final state when ``exit_when_done``."""
    return asyncio.run(_main(opts))


async def _main(opts: ServiceOptions) -> str | None:
    replanner = None
    if opts.replan:
        from paperlab.galaxy.planning.replanner import RuleReplanner

        replanner = RuleReplanner()
    config = OrchestratorConfig(device_timeout=opts.device_timeout,
                                unplaceable_timeout=opts.unplaceable_timeout,
                                keep_finished=opts.keep_finished, keep_mb=opts.keep_mb)
    from paperlab.galaxy.protocol.registry import DeviceRegistry
    from paperlab.galaxy.protocol.tls import server_context

    # Every input is read and checked before a port is bound or the journal is opened: a bad
    # one is one line, and nothing is left behind.
    plan = load_constellation(opts.plan) if opts.plan is not None and not opts.resume else None
    registry = DeviceRegistry(opts.registry)
    ssl_context = server_context(opts.tls_cert, opts.tls_key)
    async with start_orchestrator(opts.journal, opts.token, host=opts.host, port=opts.port,
                                  config=config, ui=opts.ui, replanner=replanner,
                                  api_port=opts.api_port, ssl_context=ssl_context,
                                  max_send_bytes=opts.max_send_mb << 20, registry=registry,
                                  allow_origins=opts.allow_origins, max_viewers=opts.max_viewers) as g:
        return await _serve(opts, g, plan)


async def _serve(opts: ServiceOptions, g: Started, plan: Constellation | None) -> str | None:
    orch = g.orch
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    console = Console(stderr=True)
    print(f"listening {g.server.url}", flush=True)
    if g.control is not None:
        print(f"control api {g.control.url}", flush=True)
    if g.ui is not None:
        scheme = "https" if g.server.ssl_context else "http"
        print(f"dashboard {scheme}://{opts.host}:{g.server.port}/ui#token=<viewer or admin token> "
              "(`paperlab galaxy token --viewer` prints the read-only one; the part after # never "
              "leaves the browser)", flush=True)
    run_id = None
    if opts.resume:
        run_id = orch.resume(opts.resume)
    elif plan is not None:
        run_id = orch.submit(plan, opts.run_id)
    if run_id is not None:
        print(f"run {run_id}", flush=True)
    if not opts.exit_when_done or run_id is None:
        await stop.wait()
        return None
    done = asyncio.ensure_future(orch.wait(run_id))
    stopper = asyncio.ensure_future(stop.wait())
    live = opts.live and console.is_terminal
    with Live(task_table(orch.get_run(run_id)), console=console, refresh_per_second=4,
              transient=False) if live else contextlib.nullcontext() as view:
        while not done.done() and not stopper.done():
            await asyncio.wait({done, stopper}, timeout=0.25)
            if view is not None:
                view.update(task_table(orch.get_run(run_id)))
    stopper.cancel()
    if not done.done():
        done.cancel()
        return None
    state = done.result().value
    if not live:
        Console().print(task_table(orch.get_run(run_id)))
    m = orch.get_run(run_id).constellation.metrics()
    print(f"run {run_id} finished: {state}; critical path {m['critical_path']:.2f}s, "
          f"work {m['total_work']:.2f}s, parallel width {m['parallel_width']:.2f}", flush=True)
    return state
