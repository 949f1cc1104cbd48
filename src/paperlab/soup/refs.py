"""Model references as mergekit reads them: a local directory or a Hugging Face Hub id, an
optional ``@revision``, and an optional ``+adapter`` (a PEFT LoRA applied before merging).

    path/to/model                     a local directory (relative to the config file)
    meta-llama/Llama-3.2-1B           a Hub id, read from the local Hugging Face cache
    meta-llama/Llama-3.2-1B@abc123    pinned to a revision (a commit, branch or tag)
    org/base+org/adapter@v2           a LoRA adapter (local or Hub) applied to the model

A Hub id is looked up in the Hugging Face cache first (``HF_HOME`` / ``HF_HUB_CACHE``, or
``--transformers-cache``); when it is not there and the hub is reachable (``HF_HUB_OFFLINE``
unset), it is downloaded with ``huggingface_hub.snapshot_download`` (configs, tokenizer files and
weights only). Offline and not cached is one error line that names the command to fetch it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from paperlab.soup.errors import CheckpointError, MergeConfigError

# What a merge needs from a model repository (mergekit fetches the same kinds of files).
_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja"]
_ADAPTER_PATTERNS = ["adapter_config.json", "adapter_model.safetensors"]


@dataclass(frozen=True)
class ModelRef:
    """One parsed reference: the model's path or Hub id and revision, and an optional adapter's."""

    path: str
    revision: str | None = None
    lora: str | None = None
    lora_revision: str | None = None


def _split_revision(part: str, whole: str) -> tuple[str, str | None]:
    if part.count("@") > 1:
        raise MergeConfigError(f"model reference {whole!r} has more than one '@'; write PATH@REVISION")
    path, _, rev = part.partition("@")
    if not path or (part.count("@") == 1 and not rev):
        raise MergeConfigError(f"model reference {whole!r} is malformed; write PATH, PATH@REVISION or PATH+ADAPTER")
    return path, rev or None


def parse_ref(ref: str) -> ModelRef:
    """``"org/name@rev+org/adapter"`` -> its parts (mergekit's syntax).

    Raises:
        MergeConfigError: more than one ``+`` or ``@`` in a part, or an empty part.
    """
    chunks = ref.split("+")
    if len(chunks) > 2:
        raise MergeConfigError(f"model reference {ref!r} has more than one '+'; write MODEL+ADAPTER")
    path, rev = _split_revision(chunks[0], ref)
    lora = lora_rev = None
    if len(chunks) == 2:
        lora, lora_rev = _split_revision(chunks[1], ref)
    return ModelRef(path, rev, lora, lora_rev)


def _hub_id(name: str, whole: str) -> str:
    """Check that ``name`` is a valid Hub repository id (it is not a local directory)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise CheckpointError(
            f"model {whole!r} is not a local directory and {name!r} is not a valid Hugging Face id "
            "(ORG/NAME of letters, digits, '-', '_' and '.'); check the path"
        ) from None
    return name


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _from_hub(repo: str, revision: str | None, *, cache_dir: str | None, patterns: list[str], whole: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    pinned = f"{repo}@{revision}" if revision else repo
    fix = f"`hf download {repo}{f' --revision {revision}' if revision else ''}`"
    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir, local_files_only=True,
                                      allow_patterns=patterns))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    if _offline():
        raise CheckpointError(
            f"model {pinned!r} is not a local directory and not in the Hugging Face cache, and the hub is offline "
            f"(HF_HUB_OFFLINE); fetch it once with {fix} while online, or give a local path"
        )
    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir, allow_patterns=patterns))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot download model {pinned!r} ({first}); check the id and revision, log in with `hf auth login` "
            f"for a gated model, or fetch it with {fix}"
        ) from None


def locate(path: str, revision: str | None = None, *, cache_dir: str | None = None,
           adapter: bool = False, whole: str | None = None) -> Path:
    """A local directory for a path or Hub id (see the module docstring).

    Raises:
        CheckpointError: a malformed Hub id, or one that is neither cached nor downloadable.
    """
    whole = whole or path
    local = Path(path).expanduser()
    if local.is_dir() and revision is None:
        return local
    if local.is_dir():
        raise MergeConfigError(f"model {whole!r}: a revision (@{revision}) only applies to Hub ids, and {path} is a "
                               "local directory; drop the @revision")
    if local.is_absolute() or path.startswith((".", "~")) or path.count("/") > 1:
        raise CheckpointError(f"model directory {path} does not exist; check the path")
    repo = _hub_id(path, whole)
    patterns = _ADAPTER_PATTERNS if adapter else _PATTERNS
    return _from_hub(repo, revision, cache_dir=cache_dir, patterns=patterns, whole=whole)


@dataclass(frozen=True)
class Located:
    """A reference resolved to directories: the model and, when given, its LoRA adapter."""

    ref: str
    model: Path
    lora: Path | None = None

    @property
    def key(self) -> str:
        """Identity for "is this the same input?" (mergekit compares references the same way)."""
        own = str(self.model.resolve())
        return own if self.lora is None else f"{own}+{self.lora.resolve()}"


def resolve_ref(ref: str, *, cache_dir: str | None = None) -> Located:
    """Parse and locate a reference (model and adapter).

    Raises:
        MergeConfigError / CheckpointError: a malformed reference or a model that cannot be found.
    """
    parsed = parse_ref(ref)
    model = locate(parsed.path, parsed.revision, cache_dir=cache_dir, whole=ref)
    lora = (locate(parsed.lora, parsed.lora_revision, cache_dir=cache_dir, adapter=True, whole=ref)
            if parsed.lora else None)
    return Located(ref, model, lora)


def relative_to(ref: str, base: Path) -> str:
    """``ref`` with its local parts made relative to ``base`` (a config file's directory), the
    way mergekit reads local paths; Hub ids and absolute paths are left alone."""
    parsed = parse_ref(ref)

    def fix(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() or not (base / q).exists() else base / q)

    out = fix(parsed.path) + (f"@{parsed.revision}" if parsed.revision else "")
    if parsed.lora:
        out += "+" + fix(parsed.lora) + (f"@{parsed.lora_revision}" if parsed.lora_revision else "")
    return out
