"""Errors of paperlab.instella, each a one-line message that names the fix.

    InstellaError                 (paperlab.errors.InstellaError)
    ├── InstellaConfigError       a config.json, preset or flag value is invalid (also a ConfigError)
    └── CheckpointError           a checkpoint directory cannot be loaded as written
        └── WeightsMismatchError  a tensor is missing, unexpected, or has the wrong shape
"""

from __future__ import annotations

from paperlab.errors import ConfigError, InstellaError


class InstellaConfigError(ConfigError, InstellaError):
    """An Instella config (config.json, a preset name, a recipe file or a flag) is invalid."""


class CheckpointError(InstellaError):
    """A checkpoint directory is not a loadable Instella checkpoint."""


class WeightsMismatchError(CheckpointError):
    """The weights do not match the config: a tensor is missing, unexpected or mis-shaped."""


__all__ = ["CheckpointError", "InstellaConfigError", "InstellaError", "WeightsMismatchError"]
