"""Galaxy's exceptions, all rooted in :class:`paperlab.errors.GalaxyError`.

    GalaxyError
    ├── PlanError          a constellation file or model is invalid (also a ConfigError)
    │   └── ConditionError     an edge condition is not a safe expression
    ├── EditError          an edit batch was rejected, DAG unchanged (also a ConfigError)
    ├── DeviceConfigError  a device config file or flag is invalid (also a ConfigError)
    ├── RegistryError      the device registry file or a change to it is invalid (also a ConfigError)
    ├── ProtocolError      an AIP message is malformed, oversized or out of order
    ├── JournalError       the SQLite journal is missing, locked or names no such run
    ├── ExecutorError      a device refused or failed to run a task
    └── PlannerError       a planner could not produce a valid constellation
"""

from __future__ import annotations

from paperlab.errors import ConfigError, GalaxyError

__all__ = [
    "ConditionError",
    "DeviceConfigError",
    "EditError",
    "ExecutorError",
    "GalaxyError",
    "JournalError",
    "PlanError",
    "PlannerError",
    "ProtocolError",
    "RegistryError",
]


class PlanError(GalaxyError, ConfigError):
    """A constellation (plan) is invalid: names the field and the fix."""


class ConditionError(PlanError):
    """A conditional edge's expression is not in the safe whitelist."""


class EditError(GalaxyError, ConfigError):
    """An edit batch broke an invariant and was rolled back as a whole."""


class DeviceConfigError(GalaxyError, ConfigError):
    """A device's YAML config or CLI flags are invalid."""


class RegistryError(GalaxyError, ConfigError):
    """The device registry (a file the admin writes) or an add/revoke is invalid."""


class ProtocolError(GalaxyError):
    """An AIP message could not be accepted; ``code`` goes into the ERROR reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class JournalError(GalaxyError):
    """The run journal cannot be used as asked."""


class ExecutorError(GalaxyError):
    """A task could not run on a device (refused by its allow-list, or failed)."""


class PlannerError(GalaxyError):
    """A planner gave up: the message shows the last invalid plan and why."""
