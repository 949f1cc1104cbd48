"""The CLI's client of the control API (stdlib urllib: nothing to install)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from paperlab.errors import ConfigError
from paperlab.galaxy.errors import GalaxyError

__all__ = ["call", "print_devices", "print_run", "read_body"]


def read_body(path: Path) -> bytes:
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass the path of a YAML or JSON file")
    return path.read_bytes()


def call(api: str, token: str, method: str, path: str, body: bytes | None = None,
         timeout: float = 30.0, ca_file: Path | None = None) -> Any:
    """One request; the API's one-line error becomes a GalaxyError (exit 2)."""
    url = api.rstrip("/") + path
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    ctx = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            msg = exc.reason
        finally:
            exc.close()
        raise GalaxyError(f"{method} {url}: {msg}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise GalaxyError(f"cannot reach the control API at {api}: {exc}; is `paperlab galaxy "
                          "serve` running, and is --api (or GALAXY_API) its 'control api' URL?") from None


def print_run(run: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{run['name']} ({run['run_id']}): {run['state']}")
    for col in ("task", "status", "device", "attempts", "result / error"):
        table.add_column(col)
    for t in run["tasks"]:
        detail = t["error"] if t["error"] and t["status"] != "completed" else t["result"]
        table.add_row(t["id"], t["status"], t["device"] or "", str(t["attempts"]),
                      "" if detail is None else str(detail)[:60])
    Console().print(table)


def print_devices(devices: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="devices")
    for col in ("device", "status", "capabilities", "running", "completed"):
        table.add_column(col)
    for d in devices:
        table.add_row(d["device"], d["status"], ",".join(d["capabilities"]), str(d["running"]),
                      str(d["completed"]))
    Console().print(table)
