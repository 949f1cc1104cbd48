"""``paperlab galaxy devices``: the admin's device registry (add, revoke, list) and the
devices a running orchestrator sees (online). Light to import: typer only, the rest on use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

RegistryOpt = Annotated[Path, typer.Option("--registry", envvar="GALAXY_REGISTRY", help="Device registry file.")]
TokenOpt = Annotated[str, typer.Option("--token", envvar="GALAXY_TOKEN", help="The orchestrator's secret; or set GALAXY_TOKEN.")]
DEFAULT_REGISTRY = Path("galaxy-devices.yaml")


def _split(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text is not None else None


def _secret(token: str) -> str:
    from paperlab.errors import ConfigError

    if not token:
        raise ConfigError("no token: pass --token SECRET or set GALAXY_TOKEN (the orchestrator's secret)")
    return token


def device_credential(registry: Path, device_id: str, secret: str) -> str:
    """The token of registered device ``device_id``; RegistryError naming the fix if it is not."""
    from paperlab.galaxy.errors import RegistryError
    from paperlab.galaxy.protocol.auth import device_token
    from paperlab.galaxy.protocol.registry import DeviceRegistry

    reg = DeviceRegistry(registry).get(device_id)
    if reg is None:
        raise RegistryError(f"device {device_id!r} is not in the registry {registry}; register it with "
                            f"`paperlab galaxy devices add {device_id} --capabilities ...`")
    return device_token(secret, reg.id, reg.key)


@app.command()
def add(
    device_id: Annotated[str, typer.Argument(help="The device id.")],
    capabilities: Annotated[str, typer.Option(help="Comma-separated capabilities it may claim.")] = "",
    executors: Annotated[str | None, typer.Option(help="Comma-separated executor kinds it may run (default: all).")] = None,
    max_concurrency: Annotated[int, typer.Option(help="Most tasks it may run at once.")] = 1,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    token: TokenOpt = "",
) -> None:
    """Register a device; prints its token (give it to the device as GALAXY_TOKEN)."""
    from paperlab.galaxy.protocol.auth import device_token
    from paperlab.galaxy.protocol.registry import DeviceRegistry

    secret = _secret(token)
    reg = DeviceRegistry(registry).add(device_id, _split(capabilities), _split(executors), max_concurrency)
    print(device_token(secret, reg.id, reg.key))


@app.command()
def revoke(
    device_id: Annotated[str, typer.Argument(help="The device id.")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Remove a device: its token stops working (a running orchestrator drops its connection
    within a second); every other credential stays valid."""
    from paperlab.galaxy.protocol.registry import DeviceRegistry

    DeviceRegistry(registry).revoke(device_id)
    print(f"revoked {device_id}")


@app.command("list")
def list_devices(registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """The registered devices and what each may claim."""
    from rich.console import Console
    from rich.table import Table

    from paperlab.galaxy.protocol.registry import DeviceRegistry

    table = Table(title=f"registered devices ({registry})")
    for col in ("device", "capabilities", "executors", "max concurrency"):
        table.add_column(col)
    for r in DeviceRegistry(registry):
        table.add_row(r.id, ",".join(r.capabilities), ",".join(r.executors), str(r.max_concurrency))
    Console(soft_wrap=True).print(table)


@app.command()
def online(
    api: Annotated[str, typer.Option("--api", envvar="GALAXY_API", help="Control API URL.")] = "http://127.0.0.1:8766/api",
    token: TokenOpt = "",
    ca_file: Annotated[Path | None, typer.Option("--ca-file", envvar="GALAXY_CA_FILE",
                                                 help="Certificate to trust for an https:// API.")] = None,
) -> None:
    """The devices a running orchestrator knows, and their state."""
    from paperlab.galaxy.control.client import call, print_devices

    print_devices(call(api, _secret(token), "GET", "/devices", ca_file=ca_file))
