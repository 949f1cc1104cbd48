"""The soup error tree (all are :class:`paperlab.errors.SoupError`, so the CLI shows one line).

    SoupError
    ├── CheckpointError     a checkpoint directory is missing, incomplete, corrupt or incompatible
    ├── MergeConfigError    a merge config (YAML or flags) is invalid  (also a ConfigError)
    ├── WeightsError        weights that do not fit the merge method
    ├── ScoresError         a score table cannot be read or does not fit the request
    ├── EvaluatorError      an evaluator or benchmark file is invalid
    └── SearchError         a weight search cannot run (bad grid, bad journal)
"""

from __future__ import annotations

from paperlab.errors import ConfigError, SoupError


class CheckpointError(SoupError):
    """A checkpoint directory cannot be merged (missing, corrupt, or incompatible with the others)."""


class MergeConfigError(SoupError, ConfigError):
    """A merge or SoCE config is invalid."""


class WeightsError(SoupError):
    """The weights do not fit the merge method (wrong count, negative, all zero)."""


class ScoresError(SoupError):
    """A per-model, per-category score table is malformed or does not contain what was asked."""


class EvaluatorError(SoupError):
    """An evaluator spec or benchmark file is invalid."""


class SearchError(SoupError):
    """A weight search cannot run as asked."""


__all__ = [
    "CheckpointError",
    "EvaluatorError",
    "MergeConfigError",
    "ScoresError",
    "SearchError",
    "SoupError",
    "WeightsError",
]
