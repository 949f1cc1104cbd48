"""The control surface's guards: allowed Origins, connections per credential, plain-text warnings.

* **Origins.** A browser names the page that opened a connection in ``Origin``. A request
  that carries one is accepted only from the orchestrator's own origin (the scheme, host and
  port the request was sent to) or one listed with ``--allow-origin``; anything else (a page
  on another site driving the dashboard with the admin's browser) gets HTTP 403. Devices and
  scripts send no ``Origin`` and are judged by their token alone.
* **Connections per credential.** Each credential may hold a bounded number of live
  connections (a device token: ``device`` of them, enough for a reconnect overlapping the old
  connection; the admin secret: ``admin``, since local fleets share it; viewers are bounded by
  the dashboard). Past the cap a handshake gets HTTP 429.
* **Plain text.** Serving a non-loopback address without TLS logs a warning.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from paperlab.galaxy.errors import DeviceConfigError

__all__ = ["ConnectionCaps", "Origins", "is_loopback", "parse_origin", "warn_if_plaintext"]

log = logging.getLogger(__name__)


def parse_origin(text: str) -> str:
    """``scheme://host[:port]`` normalised (lower case, no path); DeviceConfigError naming the
    fix for anything else."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username:
        raise DeviceConfigError(f"--allow-origin {text!r} is not an origin; give scheme://host[:port], "
                                "e.g. https://dash.example.org:8443")
    try:
        port = parts.port
    except ValueError:
        raise DeviceConfigError(f"--allow-origin {text!r} has a bad port") from None
    default = 443 if parts.scheme == "https" else 80
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


class Origins:
    """Which ``Origin`` headers may open connections."""

    def __init__(self, allowed: list[str] | None = None) -> None:
        self.allowed = {parse_origin(o) for o in allowed or []}

    def allows(self, origin: str | None, host: str | None, tls: bool) -> bool:
        """True when there is no Origin (not a browser), it is our own origin (the ``Host``
        the request was sent to, with our scheme) or an allowed one."""
        if origin is None:
            return True
        try:
            o = parse_origin(origin)
        except DeviceConfigError:
            return False  # "null" (a sandboxed page or a file://) and other oddities
        if o in self.allowed:
            return True
        if not host:
            return False
        try:
            return o == parse_origin(f"{'https' if tls else 'http'}://{host}")
        except DeviceConfigError:
            return False


class ConnectionCaps:
    """Live connections per credential key (see :attr:`Identity.key`), with a cap per role."""

    def __init__(self, device: int = 2, admin: int = 256, viewer: int = 64) -> None:
        self.caps = {"device": device, "admin": admin, "viewer": viewer}
        self.live: dict[str, int] = {}

    def cap(self, key: str) -> int:
        return self.caps[key.split(":", 1)[0]]

    def full(self, key: str) -> bool:
        return self.live.get(key, 0) >= self.cap(key)

    def open(self, key: str) -> bool:
        """Count a connection of ``key``; False (nothing counted) when it is at its cap."""
        if self.full(key):
            return False
        self.live[key] = self.live.get(key, 0) + 1
        return True

    def close(self, key: str) -> None:
        n = self.live.get(key, 0) - 1
        if n > 0:
            self.live[key] = n
        else:
            self.live.pop(key, None)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only ("" and 0.0.0.0 serve every interface)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def warn_if_plaintext(host: str, tls: bool, what: str) -> bool:
    """Log a warning when ``what`` serves a non-loopback ``host`` without TLS; True if it did."""
    if tls or is_loopback(host):
        return False
    log.warning("%s listens on %s without TLS: tokens, plans and results cross the network in clear "
                "text; pass --tls-cert and --tls-key (or bind 127.0.0.1)", what, host or "every interface")
    return True
