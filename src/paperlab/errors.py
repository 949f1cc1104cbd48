"""The paperlab exception hierarchy.

Every error a user can cause (a bad path, a bad config, a server that does not answer) is a
``PaperlabError``. The CLI prints its message as one line on stderr and exits with code 2;
``--debug`` shows the traceback. A message says what went wrong *and* what to do about it.

    PaperlabError
    ├── ConfigError          a config file or flag value is invalid
    ├── LLMError             paperlab.llm: model access
    │   ├── BackendSpecError     unknown or malformed backend spec
    │   ├── LLMConnectionError   server down, hanging, or refusing (after bounded retries)
    │   └── LLMResponseError     the server answered something we cannot use
    │       └── LLMRefusedError      ... a 4xx refusal that sending again will not change
    ├── SoupError            paperlab.soup: merges and SoCE
    ├── RerankError          paperlab.rerank: GroupRank
    ├── GalaxyError          paperlab.galaxy: constellations, orchestrator, devices
    ├── ICLError             paperlab.icl: genomic in-context learning probes
    ├── AlignError           paperlab.align: representation alignment
    ├── InstellaError        paperlab.instella
    ├── ParadiffError        paperlab.paradiff: MMaDA-Parallel
    └── TrainError           paperlab.train: the training loop, torchrun, checkpoints
"""

from __future__ import annotations


class PaperlabError(Exception):
    """Root of every error a user can cause; the CLI shows it as one line, exit code 2."""


class ConfigError(PaperlabError):
    """A config file or a command-line value is invalid."""


class LLMError(PaperlabError):
    """Failure in shared model access (paperlab.llm)."""


class BackendSpecError(LLMError):
    """An LLM spec string names no known backend or is malformed."""


class LLMConnectionError(LLMError):
    """The model server could not be reached in time, after bounded retries."""


class LLMResponseError(LLMError):
    """The model server answered, but with something that cannot be used."""


class LLMRefusedError(LLMResponseError):
    """The server refused the request as invalid (a 4xx status other than 408/409/429):
    sending the same request again will not change the answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class SoupError(PaperlabError):
    """Failure in model souping (paperlab.soup)."""


class RerankError(PaperlabError):
    """Failure in reranking (paperlab.rerank)."""


class GalaxyError(PaperlabError):
    """Failure in the Galaxy orchestrator, protocol or devices (paperlab.galaxy)."""


class ICLError(PaperlabError):
    """Failure in the genomic ICL probes (paperlab.icl)."""


class AlignError(PaperlabError):
    """Failure in the alignment probes (paperlab.align)."""


class InstellaError(PaperlabError):
    """Failure in the Instella model code (paperlab.instella)."""


class ParadiffError(PaperlabError):
    """Failure in MMaDA-Parallel (paperlab.paradiff)."""


class TrainError(PaperlabError):
    """Failure in the shared training loop (paperlab.train): launch, sharding, checkpoints."""


def validation_message(exc: Exception, what: str = "config") -> str:
    """One line for a pydantic ``ValidationError``: the first failing field, the problem, the fix.

    ``what`` names the thing being validated ("merge config", "plan file x.yaml", ...). Kept
    free of a pydantic import so that ``paperlab.errors`` stays light.
    """
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return f"{what}: {exc}"
    items = errors()
    if not items:
        return f"{what}: {exc}"
    err = items[0]
    loc = ".".join(str(x) for x in err.get("loc", ())) or "(root)"
    msg = str(err.get("msg", "invalid value"))
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f"; got {got!r}"
    return f"{what} field {loc!r}: {msg}{shown}{more}; fix that field and retry"


def config_error(
    exc: Exception, what: str = "config", error: type[ConfigError] = ConfigError
) -> ConfigError:
    """Map a pydantic ``ValidationError`` to a one-line ``ConfigError`` (or subclass).

    Use as ``except ValidationError as exc: raise config_error(exc, "merge config",
    MergeConfigError) from None``; every system routes validation failures through here.
    """
    return error(validation_message(exc, what))
