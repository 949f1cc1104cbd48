"""A local tokenizer whose chat template renders prompts for an HTTP server.

Some servers take raw text on ``/completions`` but do not continue a final assistant message on
``/chat/completions`` (llama-cpp-python's server renders it as a closed turn). For those,
:class:`~paperlab.llm.openai_backend.OpenAICompatibleLLM` renders chat prompts itself with the
template of the model the server runs, named by ``chat_template``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from paperlab.errors import LLMError


def load_renderer(source: str) -> Any:
    """A transformers tokenizer holding the chat template named by ``source``.

    Args:
        source: ``smollm2`` (the packaged model), ``hf:<dir>`` or a directory holding a
            tokenizer with a chat template, or a ``.gguf`` file.

    Raises:
        LLMError: the source does not exist or has no chat template.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    kw: dict[str, str] = {}
    if source == "smollm2":
        from paperlab.llm.packaged import smollm2_dir

        path = smollm2_dir()
    else:
        p = Path(source.removeprefix("hf:")).expanduser()
        if not p.exists():
            raise LLMError(f"chat template source {p} does not exist; give smollm2, a model "
                           "directory or a .gguf file")
        path = p.parent if p.suffix == ".gguf" else p
        if p.suffix == ".gguf":
            kw["gguf_file"] = p.name
    try:
        tok = AutoTokenizer.from_pretrained(path, **kw)
    except (OSError, ValueError) as exc:
        raise LLMError(f"could not load a tokenizer from {path}: {exc}") from None
    if not getattr(tok, "chat_template", None):
        raise LLMError(f"{path} has no chat template; name the model the server runs")
    return tok
