"""Credentials: one orchestrator secret, and per-device and viewer tokens derived from it.

* The **admin** token is the orchestrator's secret (``--token`` / ``GALAXY_TOKEN``): it may
  submit, edit and cancel runs, list devices, view the dashboard and connect as any device.
* A **device** token is ``dev-`` + HMAC-SHA256(secret, ``device:<id>``): it connects only as
  that id (the id travels in the ``X-Galaxy-Device`` header; REGISTER must repeat it). Leaking
  one device's token lets an attacker impersonate that device only, and only while the real one
  is not connected (a second live connection for an id is refused).
* The **viewer** token is ``view-`` + HMAC-SHA256(secret, ``viewer``): the dashboard, read-only.

Derived tokens need no registry file: ``paperlab galaxy token --device ID`` prints one.
Comparisons use :func:`hmac.compare_digest`, so timing does not leak how much matched.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

__all__ = ["COOKIE", "DEVICE_HEADER", "Identity", "device_token", "identify", "viewer_token"]

DEVICE_HEADER = "X-Galaxy-Device"
COOKIE = "galaxy_token"


def _derive(secret: str, purpose: str) -> str:
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()[:40]


def device_token(secret: str, device_id: str) -> str:
    """The credential of device ``device_id`` under orchestrator secret ``secret``."""
    return "dev-" + _derive(secret, f"device:{device_id}")


def viewer_token(secret: str) -> str:
    """The read-only dashboard credential under ``secret``."""
    return "view-" + _derive(secret, "viewer")


@dataclass(frozen=True)
class Identity:
    role: str  # "admin" | "device" | "viewer"
    device_id: str | None = None  # for a device token: the only id it may register as


def _eq(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def presented_token(headers: object, path: str) -> str:
    """The token a request carries: Bearer header, then the ``galaxy_token`` cookie, then
    ``?token=`` (the dashboard's first load only; the page then drops it from the URL)."""
    get = getattr(headers, "get", None)
    auth = str(get("Authorization", "") or "") if get else ""
    if auth.startswith("Bearer "):
        return auth[len("Bearer "):]
    cookie = str(get("Cookie", "") or "") if get else ""
    if cookie:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie)
        except Exception:  # a malformed cookie header is no credential
            jar = SimpleCookie()
        if COOKIE in jar:
            return jar[COOKIE].value
    return (parse_qs(urlsplit(path).query).get("token") or [""])[0]


def identify(secret: str, token: str, device_id: str | None = None) -> Identity | None:
    """Who holds ``token`` (None: nobody we know). ``device_id``: the id claimed with it."""
    if _eq(token, secret):
        return Identity("admin")
    if token.startswith("view-") and _eq(token, viewer_token(secret)):
        return Identity("viewer")
    if device_id and token.startswith("dev-") and _eq(token, device_token(secret, device_id)):
        return Identity("device", device_id)
    return None
