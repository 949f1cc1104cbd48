"""Credentials: one orchestrator secret, and device and viewer tokens derived from it.

* The **admin** token is the orchestrator's secret (``--token`` / ``GALAXY_TOKEN``): it may
  submit, edit and cancel runs, list devices, view the dashboard and connect as any device id
  (a registered id still only within its registration).
* A **device** token is ``dev-`` + HMAC-SHA256(secret, ``device:<id>:<key>``), where ``key``
  is the device's entry in the registry (:mod:`.registry`): it connects only as that id (the
  id travels in the ``X-Galaxy-Device`` header; REGISTER must repeat it), and only while that
  entry exists. Revoking the entry invalidates this token alone.
* The **viewer** token is ``view-`` + HMAC-SHA256(secret, ``viewer``): the dashboard, read-only.

Credentials travel in the ``Authorization: Bearer`` header (or, for the dashboard page, in the
first WebSocket message); never in a URL, where logs, proxies and browser history keep them.
Comparisons use :func:`hmac.compare_digest`, so timing does not leak how much matched.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from paperlab.galaxy.protocol.registry import DeviceRegistry

__all__ = ["DEVICE_HEADER", "Identity", "bearer_token", "device_token", "identify", "viewer_token"]

DEVICE_HEADER = "X-Galaxy-Device"


def _derive(secret: str, purpose: str) -> str:
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()[:40]


def device_token(secret: str, device_id: str, key: str) -> str:
    """The credential of device ``device_id`` registered with ``key`` under ``secret``."""
    return "dev-" + _derive(secret, f"device:{device_id}:{key}")


def viewer_token(secret: str) -> str:
    """The read-only dashboard credential under ``secret``."""
    return "view-" + _derive(secret, "viewer")


@dataclass(frozen=True)
class Identity:
    role: str  # "admin" | "device" | "viewer"
    device_id: str | None = None  # for a device token: the only id it may register as

    @property
    def key(self) -> str:
        """Which credential this is, for counting connections per credential."""
        return f"device:{self.device_id}" if self.role == "device" else self.role


def _eq(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def bearer_token(headers: object) -> str:
    """The token of an ``Authorization: Bearer`` header ("" when there is none)."""
    get = getattr(headers, "get", None)
    auth = str(get("Authorization", "") or "") if get else ""
    return auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else ""


def identify(secret: str, token: str, device_id: str | None = None,
             registry: DeviceRegistry | None = None) -> Identity | None:
    """Who holds ``token`` (None: nobody we know). ``device_id``: the id claimed with it;
    a device token is known only for an id the ``registry`` holds."""
    if _eq(token, secret):
        return Identity("admin")
    if token.startswith("view-") and _eq(token, viewer_token(secret)):
        return Identity("viewer")
    reg = registry.get(device_id) if registry is not None and device_id else None
    if reg is not None and token.startswith("dev-") and _eq(token, device_token(secret, reg.id, reg.key)):
        return Identity("device", reg.id)
    return None
