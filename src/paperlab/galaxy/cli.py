"""``paperlab galaxy``: serve an orchestrator, run plans, run device agents, inspect runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paperlab.galaxy import defaults

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

TokenOpt = Annotated[str, typer.Option("--token", envvar="GALAXY_TOKEN",
                                       help="Shared secret; or set GALAXY_TOKEN.")]
JournalOpt = Annotated[Path, typer.Option("--journal", help="SQLite journal file.")]
DEFAULT_JOURNAL = Path("galaxy-journal.sqlite")


def _need_token(token: str) -> str:
    from paperlab.errors import ConfigError

    if not token:
        raise ConfigError("no token: pass --token SECRET or set GALAXY_TOKEN (devices need the same)")
    return token


@app.command()
def serve(
    token: TokenOpt = "",
    host: Annotated[str, typer.Option(help="Bind address (loopback unless told otherwise).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8765,
    journal: JournalOpt = DEFAULT_JOURNAL,
    plan: Annotated[Path | None, typer.Option(help="Submit this plan at start.")] = None,
    resume: Annotated[str | None, typer.Option(help="Resume this run id from the journal.")] = None,
    ui: Annotated[bool, typer.Option("--ui", help="Serve the live dashboard at /ui.")] = False,
    device_timeout: Annotated[float, typer.Option(help="Seconds of silence before a device is lost.")] = defaults.DEVICE_TIMEOUT,
    replan: Annotated[bool, typer.Option(help="Apply the rule-based replanner live.")] = False,
) -> None:
    """Run an orchestrator that devices dial in to; stays up until interrupted."""
    from paperlab.galaxy.service import ServiceOptions, run_service

    run_service(ServiceOptions(token=_need_token(token), host=host, port=port, journal=journal,
                               plan=plan, resume=resume, ui=ui, device_timeout=device_timeout,
                               exit_when_done=False, replan=replan))


@app.command()
def run(
    plan: Annotated[Path | None, typer.Argument(help="Plan file (YAML or JSON).")] = None,
    token: TokenOpt = "",
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port devices connect to.")] = 8765,
    journal: JournalOpt = DEFAULT_JOURNAL,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Id for the new run.")] = None,
    resume: Annotated[str | None, typer.Option(help="Resume this run id instead of PLAN.")] = None,
    device_timeout: Annotated[float, typer.Option(help="Seconds of silence before a device is lost.")] = defaults.DEVICE_TIMEOUT,
    unplaceable_timeout: Annotated[float, typer.Option(help="Seconds a ready task may wait for a capable device.")] = defaults.UNPLACEABLE_TIMEOUT,
    ui: Annotated[bool, typer.Option("--ui", help="Also serve the live dashboard at /ui.")] = False,
    replan: Annotated[bool, typer.Option(help="Apply the rule-based replanner live.")] = False,
    live: Annotated[bool, typer.Option(help="Show a live table (default: when on a terminal).")] = True,
) -> None:
    """Start an orchestrator, run PLAN (or --resume RUN_ID) to the end, print the result."""
    from paperlab.errors import ConfigError
    from paperlab.galaxy.service import ServiceOptions, run_service

    if (plan is None) == (resume is None):
        raise ConfigError("give exactly one of PLAN or --resume RUN_ID")
    state = run_service(ServiceOptions(
        token=_need_token(token), host=host, port=port, journal=journal, plan=plan, run_id=run_id,
        resume=resume, ui=ui, device_timeout=device_timeout, unplaceable_timeout=unplaceable_timeout,
        exit_when_done=True, live=live, replan=replan))
    raise typer.Exit(0 if state == "completed" else 1)


@app.command()
def device(
    connect: Annotated[str, typer.Option("--connect", help="Orchestrator URL, ws://HOST:PORT/aip.")],
    id: Annotated[str | None, typer.Option("--id", help="Device id.")] = None,
    capabilities: Annotated[str | None, typer.Option(help="Comma-separated capabilities.")] = None,
    config: Annotated[Path | None, typer.Option(help="Device YAML config (allow-lists).")] = None,
    allow_shell: Annotated[str | None, typer.Option(help="Comma-separated allowed programs.")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="Tasks run at once.")] = None,
    token: TokenOpt = "",
) -> None:
    """Run a device agent that dials in to an orchestrator and runs what its config allows."""
    import asyncio
    import logging
    import signal

    from paperlab.galaxy.agent import DeviceAgent
    from paperlab.galaxy.executors import load_device_config

    logging.getLogger("paperlab.galaxy").setLevel(logging.INFO)
    cfg = load_device_config(
        config, device_id=id,
        capabilities=capabilities.split(",") if capabilities else None,
        shell_allow=allow_shell.split(",") if allow_shell else None,
        max_concurrency=max_concurrency)
    agent = DeviceAgent(cfg, connect, _need_token(token))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    asyncio.run(main())


@app.command()
def ask(
    request: Annotated[str, typer.Argument(help="What to do, in plain words.")],
    llm: Annotated[str | None, typer.Option("--llm", help="LLM spec for the planner, e.g. smollm2.")] = None,
    plan: Annotated[Path | None, typer.Option(help="Use this plan file instead of an LLM.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Run without asking for confirmation.")] = False,
    token: TokenOpt = "",
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port devices connect to.")] = 8765,
    journal: JournalOpt = DEFAULT_JOURNAL,
    wait_devices: Annotated[int, typer.Option(help="Devices to wait for before planning.")] = 1,
    ui: Annotated[bool, typer.Option("--ui", help="Also serve the live dashboard at /ui.")] = False,
) -> None:
    """Plan REQUEST with an LLM over the connected devices, confirm, then run it with live
    rule-based replanning."""
    from paperlab.galaxy.ask import AskOptions, run_ask

    state = run_ask(AskOptions(request=request, token=_need_token(token), llm=llm, plan=plan,
                               host=host, port=port, journal=journal, wait_devices=wait_devices,
                               yes=yes, ui=ui), confirm=lambda q: typer.confirm(q, default=False))
    raise typer.Exit(0 if state == "completed" else 1)


@app.command()
def status(
    run_id: Annotated[str, typer.Argument(help="Run id (see the journal).")],
    journal: JournalOpt = DEFAULT_JOURNAL,
) -> None:
    """Show a run's tasks and state from the journal (works while it runs or after)."""
    from rich.console import Console

    from paperlab.galaxy.service import replay_run, task_table

    run = replay_run(journal, run_id)
    console = Console()
    console.print(task_table(run))
    state = run.finished.value if run.finished else "running (or interrupted: --resume it)"
    console.print(f"run {run_id}: {state}; metrics {run.constellation.metrics()}")
