"""The device registry: what the admin says each device is, and each device's credential.

A device is only what its registration says. The admin registers each device id with its
capabilities, executor kinds and maximum concurrency (``paperlab galaxy devices add``); the
registry file keeps them with a per-device ``key``. A device token is derived from the
orchestrator's secret and that key (:func:`paperlab.galaxy.protocol.auth.device_token`), so
revoking one device (its entry goes) invalidates that token alone: every other device token,
the viewer token and the admin secret stay valid. At REGISTER a device may claim less than
its registration, never more (:meth:`DeviceRegistry.refusal`).

The file (YAML; written atomically, reread by a running orchestrator when it changes)::

    devices:
      - id: laptop
        capabilities: [cpu, office]
        executors: [echo, shell, python]
        max_concurrency: 4
        key: 5c1e...   # written by `devices add`; part of the credential, not a secret alone
"""

from __future__ import annotations

import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from paperlab.errors import config_error
from paperlab.galaxy.errors import RegistryError
from paperlab.galaxy.plan.constellation import EXECUTOR_KINDS, ID_PATTERN
from paperlab.galaxy.protocol.aip import Register
from paperlab.io.atomic import atomic_write_text

__all__ = ["DeviceRegistry", "Registration"]


class Registration(BaseModel):
    """One registered device: the most it may claim."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=ID_PATTERN)
    capabilities: list[str] = Field(default_factory=list)
    executors: list[str] = Field(default_factory=lambda: list(EXECUTOR_KINDS))
    max_concurrency: int = Field(default=1, ge=1, le=1024)
    key: str = Field(pattern=r"^[0-9a-f]{32}$")

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, v: list[str]) -> list[str]:
        return sorted({c.strip() for c in v if c.strip()})

    @field_validator("executors")
    @classmethod
    def _kinds(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(EXECUTOR_KINDS))
        if unknown:
            raise ValueError(f"unknown executor kinds {unknown}; known: {list(EXECUTOR_KINDS)}")
        return sorted(set(v))


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    devices: list[Registration] = Field(default_factory=list)


class DeviceRegistry:
    """The registrations of one orchestrator, from a file (absent: none registered)."""

    def __init__(self, path: str | Path | None = None, entries: list[Registration] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._by_id: dict[str, Registration] = {}
        self._stamp: tuple[int, int] | None = None
        if entries is not None:
            self._by_id = _index(entries, "registry")
        elif self.path is not None:
            self.reload()

    # ---- reading ------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the file again (RegistryError, registry unchanged, if it is invalid)."""
        if self.path is None:
            return
        stamp = _stamp(self.path)
        self._by_id = _read(self.path) if stamp is not None else {}
        self._stamp = stamp

    def reload_if_changed(self) -> bool:
        """Reread the file if it changed since it was read; True if it did. A file that became
        invalid keeps the registrations read before (and raises RegistryError)."""
        if self.path is None or _stamp(self.path) == self._stamp:
            return False
        self.reload()
        return True

    def get(self, device_id: str) -> Registration | None:
        return self._by_id.get(device_id)

    def __iter__(self) -> Any:
        return iter(sorted(self._by_id.values(), key=lambda r: r.id))

    def __len__(self) -> int:
        return len(self._by_id)

    # ---- what a device may claim -----------------------------------------------------------
    def refusal(self, msg: Register) -> str | None:
        """Why this REGISTER claims more than the device's registration (None: it does not,
        or the id is not registered, which only the admin secret may connect as)."""
        reg = self._by_id.get(msg.device_id)
        if reg is None:
            return None
        over: list[str] = []
        extra = sorted(set(msg.capabilities) - set(reg.capabilities))
        if extra:
            over.append(f"capabilities {extra}")
        kinds = msg.info.get("executors")
        extra_kinds = sorted(set(kinds) - set(reg.executors)) if isinstance(kinds, list) else []
        if extra_kinds:
            over.append(f"executors {extra_kinds}")
        if msg.max_concurrency > reg.max_concurrency:
            over.append(f"max_concurrency {msg.max_concurrency} > {reg.max_concurrency}")
        if not over:
            return None
        return (f"device {msg.device_id!r} claims {'; '.join(over)} beyond its registration "
                f"(capabilities {reg.capabilities}, executors {reg.executors}, max_concurrency "
                f"{reg.max_concurrency}); claim less, or have the admin register more")

    def narrow(self, msg: Register) -> Register:
        """The REGISTER as the orchestrator takes it: a device that names no executor kinds
        gets its registration's (never 'any')."""
        reg = self._by_id.get(msg.device_id)
        if reg is None or isinstance(msg.info.get("executors"), list):
            return msg
        return msg.model_copy(update={"info": {**msg.info, "executors": list(reg.executors)}})

    # ---- the admin's changes (each written atomically) -------------------------------------
    def add(self, device_id: str, capabilities: list[str] | None = None, executors: list[str] | None = None,
            max_concurrency: int = 1) -> Registration:
        """Register a device with a new key; RegistryError if the id is taken or a value is bad."""
        if device_id in self._by_id:
            raise RegistryError(f"device {device_id!r} is already registered; revoke it first "
                                f"(`paperlab galaxy devices revoke {device_id}`) to change it")
        data: dict[str, Any] = {"id": device_id, "capabilities": capabilities or [],
                                "max_concurrency": max_concurrency, "key": secrets.token_hex(16)}
        if executors is not None:
            data["executors"] = executors
        try:
            reg = Registration.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, f"device {device_id!r}", RegistryError) from None
        self._by_id[device_id] = reg
        self.save()
        return reg

    def revoke(self, device_id: str) -> Registration:
        """Remove a device (its token stops working at once); RegistryError if unknown."""
        reg = self._by_id.get(device_id)
        if reg is None:
            raise RegistryError(f"no device {device_id!r} in the registry {self.path}; registered: "
                                f"{sorted(self._by_id) or 'none'}")
        del self._by_id[device_id]
        self.save()
        return reg

    def save(self) -> None:
        if self.path is None:
            return
        data = {"devices": [r.model_dump() for r in self]}
        header = "# galaxy device registry: written by `paperlab galaxy devices add/revoke`\n"
        atomic_write_text(self.path, header + yaml.safe_dump(data, sort_keys=False))
        self._stamp = _stamp(self.path)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _read(path: Path) -> dict[str, Registration]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RegistryError(f"registry {path} cannot be read: {str(exc)[:200]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RegistryError(f"registry {path} must be a mapping with 'devices' (a list)")
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, f"registry {path}", RegistryError) from None
    return _index(parsed.devices, f"registry {path}")


def _index(entries: list[Registration], where: str) -> dict[str, Registration]:
    twice = sorted(i for i, n in Counter(r.id for r in entries).items() if n > 1)
    if twice:
        raise RegistryError(f"{where}: device id {twice[0]!r} appears more than once; keep one entry per device")
    return {r.id: r for r in entries}
