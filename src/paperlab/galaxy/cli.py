"""``paperlab galaxy``: serve an orchestrator, run plans, run device agents, inspect runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from paperlab.galaxy import defaults

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

TokenOpt = Annotated[str, typer.Option("--token", envvar="GALAXY_TOKEN",
                                       help="Shared secret; or set GALAXY_TOKEN.")]
JournalOpt = Annotated[Path, typer.Option("--journal", help="SQLite journal file.")]
DEFAULT_JOURNAL = Path("galaxy-journal.sqlite")
ApiPortOpt = Annotated[int | None, typer.Option(help="Control API port (default: --port + 1).")]
TlsCertOpt = Annotated[Path | None, typer.Option(help="TLS certificate (PEM): serve wss:// and https://.")]
TlsKeyOpt = Annotated[Path | None, typer.Option(help="TLS private key (PEM) for --tls-cert.")]
ApiOpt = Annotated[str, typer.Option("--api", envvar="GALAXY_API", help="Control API URL of a running orchestrator.")]
DEFAULT_API = "http://127.0.0.1:8766/api"
MaxSendOpt = Annotated[int, typer.Option(
    "--max-send-mb", help="MiB of frames queued for a device that stops reading before it is disconnected.")]
CaOpt = Annotated[Path | None, typer.Option("--ca-file", envvar="GALAXY_CA_FILE",
                                            help="Certificate to trust for an https:// API (self-signed).")]
DEFAULT_REGISTRY = Path("galaxy-devices.yaml")
RegistryOpt = Annotated[Path, typer.Option(
    "--registry", envvar="GALAXY_REGISTRY",
    help="Device registry file (`paperlab galaxy devices add`); absent: only the admin secret connects devices.")]
OriginOpt = Annotated[list[str] | None, typer.Option(
    "--allow-origin", help="A browser origin (scheme://host[:port]) besides our own that may connect; repeatable.")]
MaxViewersOpt = Annotated[int, typer.Option("--max-viewers", help="Dashboard viewers at once.")]
KeepMbOpt = Annotated[float, typer.Option("--keep-mb", help="MiB of finished runs kept in memory (estimated); "
                                          "older ones are read back from the journal.")]
KeepOpt = Annotated[int, typer.Option("--keep-finished", help="Finished runs kept in memory.")]


def _positive_mb(mb: int) -> int:
    from paperlab.errors import ConfigError

    if mb < 1:
        raise ConfigError(f"--max-send-mb {mb}: give at least 1 (MiB queued for a device that stops reading)")
    return mb


def _keep(count: int, mb: float) -> dict[str, Any]:
    from paperlab.errors import ConfigError

    if count < 0:
        raise ConfigError(f"--keep-finished {count}: give 0 or more (finished runs kept in memory)")
    if not mb > 0:
        raise ConfigError(f"--keep-mb {mb:g}: give a size above 0 (MiB of finished runs kept in memory)")
    return {"keep_finished": count, "keep_mb": mb}


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
    api_port: ApiPortOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    max_send_mb: MaxSendOpt = defaults.MAX_SEND_MB,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    allow_origin: OriginOpt = None,
    max_viewers: MaxViewersOpt = defaults.MAX_VIEWERS,
    keep_mb: KeepMbOpt = defaults.KEEP_MB,
    keep_finished: KeepOpt = defaults.KEEP_FINISHED,
) -> None:
    """Run an orchestrator that devices dial in to; stays up until interrupted.

    The control API (submit, status, edit, cancel, devices) listens on --api-port, by default
    the next port after --port."""
    from paperlab.galaxy.control.service import ServiceOptions, run_service

    run_service(ServiceOptions(token=_need_token(token), host=host, port=port, journal=journal,
                               plan=plan, resume=resume, ui=ui, device_timeout=device_timeout,
                               exit_when_done=False, replan=replan,
                               api_port=api_port if api_port is not None else (port + 1 if port else 0),
                               tls_cert=tls_cert, tls_key=tls_key, max_send_mb=_positive_mb(max_send_mb),
                               registry=registry, allow_origins=allow_origin or [], max_viewers=max_viewers,
                               **_keep(keep_finished, keep_mb)))


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
    api_port: Annotated[int | None, typer.Option(help="Also serve the control API on this port (0: any).")] = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    max_send_mb: MaxSendOpt = defaults.MAX_SEND_MB,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    allow_origin: OriginOpt = None,
    max_viewers: MaxViewersOpt = defaults.MAX_VIEWERS,
    keep_mb: KeepMbOpt = defaults.KEEP_MB,
    keep_finished: KeepOpt = defaults.KEEP_FINISHED,
) -> None:
    """Start an orchestrator, run PLAN (or --resume RUN_ID) to the end, print the result."""
    from paperlab.errors import ConfigError
    from paperlab.galaxy.control.service import ServiceOptions, run_service

    if (plan is None) == (resume is None):
        raise ConfigError("give exactly one of PLAN or --resume RUN_ID")
    state = run_service(ServiceOptions(
        token=_need_token(token), host=host, port=port, journal=journal, plan=plan, run_id=run_id,
        resume=resume, ui=ui, device_timeout=device_timeout, unplaceable_timeout=unplaceable_timeout,
        exit_when_done=True, live=live, replan=replan, api_port=api_port, tls_cert=tls_cert,
        tls_key=tls_key, max_send_mb=_positive_mb(max_send_mb), registry=registry,
        allow_origins=allow_origin or [], max_viewers=max_viewers, **_keep(keep_finished, keep_mb)))
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
    log_file: Annotated[Path | None, typer.Option(help="Log file (default: the cache's galaxy/devices/ID.log).")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    ca_file: Annotated[Path | None, typer.Option(help="CA/cert file to trust for wss:// (self-signed).")] = None,
) -> None:
    """Run a device agent that dials in to an orchestrator and runs what its config allows.

    TOKEN is this device's own credential (printed by `paperlab galaxy devices add` on the
    orchestrator's machine, or `paperlab galaxy token --device ID`) or the admin secret."""
    import asyncio
    import signal

    from paperlab.galaxy.device.agent import DeviceAgent
    from paperlab.galaxy.device.executors import load_device_config
    from paperlab.galaxy.protocol.tls import client_context

    cfg = load_device_config(
        config, device_id=id,
        capabilities=capabilities.split(",") if capabilities else None,
        shell_allow=allow_shell.split(",") if allow_shell else None,
        max_concurrency=max_concurrency)
    _device_logging(cfg.device_id, log_file, log_level)
    agent = DeviceAgent(cfg, connect, _need_token(token), ssl_context=client_context(ca_file))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    asyncio.run(main())


def _device_logging(device_id: str, log_file: Path | None, level: str) -> None:
    """Device logs with levels, to stderr and to a file."""
    import logging

    from paperlab.errors import ConfigError
    from paperlab.io import cache_dir

    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        raise ConfigError(f"--log-level {level!r} unknown; use DEBUG, INFO, WARNING or ERROR")
    path = log_file or cache_dir("galaxy") / "devices" / f"{device_id}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter(f"%(asctime)s %(levelname)s {device_id} %(name)s: %(message)s")
    logger = logging.getLogger("paperlab.galaxy")
    logger.setLevel(lvl)
    for handler in (logging.StreamHandler(), logging.FileHandler(path, encoding="utf-8")):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    logger.propagate = False


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
    registry: RegistryOpt = DEFAULT_REGISTRY,
    llm_edits: Annotated[bool, typer.Option("--llm-edits", help="The --llm model also edits the run from "
                                            "its task results (instead of the rule-based replanner).")] = False,
) -> None:
    """Plan REQUEST with an LLM (or --plan) over the connected devices, confirm, then run it
    with live replanning: rule-based, or by the same LLM reading task results (--llm-edits)."""
    from paperlab.galaxy.control.ask import AskOptions, run_ask

    state = run_ask(AskOptions(request=request, token=_need_token(token), llm=llm, plan=plan,
                               host=host, port=port, journal=journal, wait_devices=wait_devices,
                               yes=yes, ui=ui, registry=registry, llm_edits=llm_edits), confirm=lambda q: typer.confirm(q, default=False))
    raise typer.Exit(0 if state == "completed" else 1)


@app.command()
def status(
    run_id: Annotated[str, typer.Argument(help="Run id (see the journal).")],
    journal: JournalOpt = DEFAULT_JOURNAL,
    api: Annotated[str | None, typer.Option("--api", envvar="GALAXY_API", help="Ask a running orchestrator's control API instead of reading the journal.")] = None,
    token: TokenOpt = "",
    ca_file: CaOpt = None,
) -> None:
    """Show a run's tasks and state: from a running orchestrator (--api) or the journal."""
    from rich.console import Console

    from paperlab.galaxy.control.service import replay_run, task_table

    if api:
        from paperlab.galaxy.control.client import call, print_run

        print_run(call(api, _need_token(token), "GET", f"/runs/{run_id}", ca_file=ca_file))
        return
    run = replay_run(journal, run_id)
    console = Console()
    console.print(task_table(run))
    state = run.finished.value if run.finished else "running (or interrupted: --resume it)"
    m = run.constellation.metrics()
    console.print(f"run {run_id}: {state}; {m['tasks']:.0f} tasks, critical path {m['critical_path']:.2f}s, "
                  f"work {m['total_work']:.2f}s, parallel width {m['parallel_width']:.2f}")


@app.command()
def submit(
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML or JSON).")],
    api: ApiOpt = DEFAULT_API,
    token: TokenOpt = "",
    ca_file: CaOpt = None,
) -> None:
    """Submit PLAN as a new run to a running orchestrator (admin token); prints the run id."""
    from paperlab.galaxy.control.client import call, read_body

    print(call(api, _need_token(token), "POST", "/runs", read_body(plan), ca_file=ca_file)["run_id"])


@app.command()
def edit(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    edits: Annotated[Path, typer.Argument(help="Edit batch (YAML or JSON): {edits: [...], reason: ...}.")],
    api: ApiOpt = DEFAULT_API,
    token: TokenOpt = "",
    ca_file: CaOpt = None,
) -> None:
    """Apply an edit batch to a live run, all or nothing (exit 1 when rejected)."""
    from paperlab.galaxy.control.client import call, read_body

    res = call(api, _need_token(token), "POST", f"/runs/{run_id}/edits", read_body(edits), ca_file=ca_file)
    print(("accepted" if res["accepted"] else "rejected") + f": {res['reason']}")
    raise typer.Exit(0 if res["accepted"] else 1)


@app.command()
def undo(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    api: ApiOpt = DEFAULT_API,
    token: TokenOpt = "",
    ca_file: CaOpt = None,
) -> None:
    """Undo the newest edit of a live run (refused if a task it touches has started; exit 1)."""
    _undo_redo("undo", run_id, api, token, ca_file)


@app.command()
def redo(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    api: ApiOpt = DEFAULT_API,
    token: TokenOpt = "",
    ca_file: CaOpt = None,
) -> None:
    """Redo the newest undone edit of a live run (exit 1 when refused)."""
    _undo_redo("redo", run_id, api, token, ca_file)


def _undo_redo(action: str, run_id: str, api: str, token: str, ca_file: Path | None) -> None:
    from paperlab.galaxy.control.client import call

    res = call(api, _need_token(token), "POST", f"/runs/{run_id}/{action}", b"{}", ca_file=ca_file)
    print(("accepted" if res["accepted"] else "rejected") + f": {res['reason']}")
    raise typer.Exit(0 if res["accepted"] else 1)


@app.command()
def cancel(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    task: Annotated[str | None, typer.Argument(help="Cancel only this task.")] = None,
    api: ApiOpt = DEFAULT_API,
    token: TokenOpt = "",
    ca_file: CaOpt = None,
) -> None:
    """Cancel a live run, or one task of it."""
    import json

    from paperlab.galaxy.control.client import call

    body = json.dumps({"task": task} if task else {}).encode()
    print(f"cancelled {call(api, _need_token(token), 'POST', f'/runs/{run_id}/cancel', body, ca_file=ca_file)['cancelled']}")


@app.command()
def token(
    device: Annotated[str | None, typer.Option("--device", help="Print this registered device's token.")] = None,
    viewer: Annotated[bool, typer.Option("--viewer", help="Print the read-only dashboard token.")] = False,
    secret: TokenOpt = "",
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Derive a registered device's or the dashboard viewer's token from the orchestrator's secret."""
    from paperlab.errors import ConfigError

    if (device is None) == (not viewer):
        raise ConfigError("give exactly one of --device ID or --viewer")
    from paperlab.galaxy.control.registry_cli import device_credential
    from paperlab.galaxy.protocol.auth import viewer_token

    print(device_credential(registry, device, _need_token(secret)) if device else viewer_token(_need_token(secret)))


def _mount_devices() -> None:
    from paperlab.galaxy.control.registry_cli import app as devices_app

    app.add_typer(devices_app, name="devices", help="Register, revoke and list devices (the registry file); "
                                                    "`devices online` asks a running orchestrator.")


_mount_devices()
