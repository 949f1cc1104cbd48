"""paradiff errors, one tree under ``paperlab.errors.ParadiffError``.

    ParadiffError
    ├── ParadiffConfigError   a preset, config field or flag is invalid (also a ConfigError)
    ├── PromptError           a prompt has unknown words or does not follow the grammar
    ├── ImageInputError       an input image has the wrong size, mode or format
    └── CheckpointError       a checkpoint or cache entry is corrupt or from another config
"""

from __future__ import annotations

from paperlab.errors import ConfigError, ParadiffError

__all__ = ["CheckpointError", "ImageInputError", "ParadiffConfigError", "ParadiffError", "PromptError"]


class ParadiffConfigError(ParadiffError, ConfigError):
    """A paradiff preset, config field or command-line value is invalid."""


class PromptError(ParadiffError):
    """A prompt uses words outside the task vocabulary or breaks the prompt grammar."""


class ImageInputError(ParadiffError):
    """An input image cannot be used (wrong size, mode or file format)."""


class CheckpointError(ParadiffError):
    """A checkpoint or cached artifact is unreadable or was trained with another config."""
