"""Optional TLS: a server context from a cert/key pair, a client context trusting a CA file."""

from __future__ import annotations

import ssl
from pathlib import Path

from paperlab.galaxy.errors import DeviceConfigError

__all__ = ["client_context", "server_context"]


def server_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """None without a pair (plain ws/http); ConfigError naming the fix for half a pair."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise DeviceConfigError("TLS needs both --tls-cert and --tls-key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise DeviceConfigError(f"cannot load TLS pair {cert} / {key}: {exc}") from None
    return ctx


def client_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """A verifying client context; ``ca_file`` adds a (self-signed) certificate to trust."""
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise DeviceConfigError(f"cannot load CA file {ca_file}: {exc}") from None
