"""Instella (AMD, arXiv 2511.10628): a native, Hugging Face-compatible model and its recipe.

    >>> import paperlab.instella                       # registers model_type "instella"
    >>> from transformers import AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_pretrained("Instella-3B-Instruct")  # no remote code

Public API (imported lazily): :class:`InstellaConfig`, :class:`InstellaForCausalLM`,
:func:`load_model`, :func:`check_checkpoint`, :func:`save_checkpoint`, :func:`init_checkpoint`,
:func:`convert_checkpoint`, :func:`load_tokenizer`, :func:`preset_config`, :func:`register`,
:class:`ChatSession`, :func:`read_chat_file`, :func:`batch_replies`.

Importing this package must stay cheap (``paperlab --help`` imports every system's CLI, and
importing the model classes costs torch + transformers, several seconds). So the Auto classes
are registered the moment transformers itself is imported: now, if it already is, or else by a
one-shot import hook that runs right after ``import transformers`` completes.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_EXPORTS = {
    "InstellaConfig": "paperlab.instella.configuration",
    "preset_config": "paperlab.instella.configuration",
    "PRESETS": "paperlab.instella.configuration",
    "InstellaForCausalLM": "paperlab.instella.modeling",
    "InstellaModel": "paperlab.instella.modeling",
    "register": "paperlab.instella.modeling",
    "load_model": "paperlab.instella.checkpoint",
    "check_checkpoint": "paperlab.instella.checkpoint",
    "save_checkpoint": "paperlab.instella.checkpoint",
    "init_checkpoint": "paperlab.instella.checkpoint",
    "convert_checkpoint": "paperlab.instella.checkpoint",
    "load_tokenizer_for": "paperlab.instella.checkpoint",
    "load_tokenizer": "paperlab.instella.tokenizer",
    "CHAT_TEMPLATE": "paperlab.instella.tokenizer",
    "ChatSession": "paperlab.instella.chat",
    "read_chat_file": "paperlab.instella.chat",
    "batch_replies": "paperlab.instella.chat",
    "InstellaError": "paperlab.instella.errors",
    "InstellaConfigError": "paperlab.instella.errors",
    "CheckpointError": "paperlab.instella.errors",
    "WeightsMismatchError": "paperlab.instella.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'paperlab.instella' has no attribute {name!r}")


# transformers module -> our module that registers with it when imported (at its bottom).
_HOOKS = {
    "transformers.models.auto.configuration_auto": "paperlab.instella.configuration",
    "transformers.models.auto.modeling_auto": "paperlab.instella.modeling",
}


def _register_with(ours: str) -> None:
    if ours in sys.modules:
        return  # imported already, or being imported right now: it registers itself
    importlib.import_module(ours)


class _RegisterWithTransformers(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps transformers' own loaders so that, right after its Auto
    modules have run, ours are imported (and register themselves)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        ours = _HOOKS.get(fullname)
        if ours is None:
            return None
        sys.meta_path.remove(self)  # keep the lookup below from finding ourselves again
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            if any(name not in sys.modules for name in _HOOKS if name != fullname):
                sys.meta_path.insert(0, self)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            run(module)
            _register_with(ours)

        loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


if any(name in sys.modules for name in _HOOKS):
    for _theirs, _ours in _HOOKS.items():
        if _theirs in sys.modules:
            _register_with(_ours)
if not all(name in sys.modules for name in _HOOKS) and not any(
    isinstance(f, _RegisterWithTransformers) for f in sys.meta_path
):
    sys.meta_path.insert(0, _RegisterWithTransformers())
