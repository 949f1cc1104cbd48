"""Checkpoint directories: ``weights.safetensors`` + ``meta.json``, written atomically.

``meta.json`` records what the weights were trained with (the config part and its hash), so a
load can refuse a checkpoint from another config with one clear line instead of a shape error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paperlab.io import atomic_directory
from paperlab.paradiff.errors import CheckpointError

if TYPE_CHECKING:
    import torch

__all__ = ["load_checkpoint", "read_meta", "save_checkpoint"]

WEIGHTS = "weights.safetensors"
META = "meta.json"


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``path`` atomically (an existing checkpoint is replaced only once the new one is whole)."""
    from safetensors.torch import save_file

    with atomic_directory(path, force=True, error=CheckpointError) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def load_checkpoint(path: Path, kind: str, expect_hash: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint directory.
        kind: "vq" or "model"; a checkpoint of the other kind is refused.
        expect_hash: the config hash the caller needs; another one is refused.

    Raises:
        CheckpointError: missing, corrupt, of the wrong kind, or from another config.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not (path / META).is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path} is not a paradiff {kind} checkpoint (no {META} / {WEIGHTS}); "
                              "train one with `paperlab paradiff train`")
    try:
        meta = json.loads((path / META).read_text())
        tensors = load_file(str(path / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"{kind} checkpoint {path} is corrupt ({type(exc).__name__}); delete it "
                              "or retrain with `paperlab paradiff train --retrain`") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {meta.get('kind') if isinstance(meta, dict) else '?'} "
                              f"checkpoint, not a {kind} one")
    if expect_hash is not None and meta.get("hash") != expect_hash:
        raise CheckpointError(f"{kind} checkpoint {path} was trained with another config (hash "
                              f"{meta.get('hash')}, this config needs {expect_hash}); use the matching "
                              "--preset or retrain")
    return tensors, meta


def read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's ``meta.json`` ({} when it is missing or unreadable)."""
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}
