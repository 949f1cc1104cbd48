"""Errors of paperlab.rerank, all rooted in :class:`paperlab.errors.RerankError`.

    RerankError
    ├── RerankConfigError    a method name, parameter or template is invalid (also a
    │                        paperlab.errors.ConfigError, like every system's config error)
    ├── RerankDataError      a BEIR directory, docs file or index is missing or malformed
    └── RerankLLMError       the model failed for good (after bounded retries) and the
                             run was told not to fall back
"""

from __future__ import annotations

from paperlab.errors import ConfigError, RerankError


class RerankConfigError(RerankError, ConfigError):
    """A method name, a parameter or a prompt template is invalid."""


class RerankDataError(RerankError):
    """Input data (BEIR directory, docs file, index) is missing or malformed."""


class RerankLLMError(RerankError):
    """The LLM could not be used after bounded retries, and fallbacks were not allowed."""
