"""``chat_template:`` as mergekit reads it: ``auto`` (the template most of the input models
use), a built-in name (alpaca, chatml, exaone, llama3, mistral), or a Jinja template string.

The built-in templates are written here from each format's public description; the chosen
template is set on the output tokenizer, so it lands where transformers reads it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from paperlab.soup.errors import MergeConfigError

BUILTIN = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ message['content'] + eos_token }}{% else %}{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
    ),
    "alpaca": (
        "{% for message in messages %}{% if message['role'] == 'user' %}{{ '### Instruction:\\n' + "
        "message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + "
        "message['content'] + eos_token + '\\n\\n' }}{% else %}{{ message['content'] + '\\n\\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
    ),
    "exaone": (
        "{% for message in messages %}{% if message['role'] == 'system' %}{{ '[|system|]' + message['content'] + "
        "'[|endofturn|]\\n' }}{% elif message['role'] == 'user' %}{{ '[|user|]' + message['content'] + '\\n' }}"
        "{% else %}{{ '[|assistant|]' + message['content'] + '[|endofturn|]\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"
    ),
}


def check_template(value: str) -> str:
    """Accept ``auto``, a built-in name or a Jinja template that parses.

    Raises:
        ValueError: anything else (pydantic turns it into one config-error line).
    """
    if value == "auto" or value in BUILTIN:
        return value
    if len(value) < 20 or "{" not in value:
        raise ValueError(f"chat_template {value!r} is not auto, a built-in ({', '.join(sorted(BUILTIN))}) "
                         "or a Jinja template")
    import jinja2

    try:
        jinja2.Environment().parse(value)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"chat_template is not a valid Jinja template ({exc.message}, line {exc.lineno})") from None
    return value


def model_template(model_dir: Path) -> str | None:
    """The chat template a model directory ships (chat_template.jinja or tokenizer_config.json)."""
    f = model_dir / "chat_template.jinja"
    if f.is_file():
        return f.read_text().strip() or None
    cfg = model_dir / "tokenizer_config.json"
    if not cfg.is_file():
        return None
    try:
        t = json.loads(cfg.read_text()).get("chat_template")
    except ValueError:
        return None
    if isinstance(t, list):  # named templates: the default one
        t = next((e.get("template") for e in t if isinstance(e, dict) and e.get("name") == "default"), None)
    return t.strip() if isinstance(t, str) and t.strip() else None


def choose(value: str, model_dirs: Iterable[Path]) -> str | None:
    """The template to write: the built-in's text, the user's, or for ``auto`` the most common
    among the models (None when no model has one: the output keeps what its tokenizer has)."""
    if value == "auto":
        found = [t for t in (model_template(d) for d in model_dirs) if t]
        return Counter(found).most_common(1)[0][0] if found else None
    return BUILTIN.get(value, value)


def apply(out_dir: Path, template: str) -> None:
    """Set ``template`` on the tokenizer saved in ``out_dir`` and save it again.

    Raises:
        MergeConfigError: the output has no tokenizer to carry the template.
    """
    from transformers import AutoTokenizer

    if not any((out_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise MergeConfigError("chat_template needs a tokenizer in the output; the donor model has none (drop "
                               "chat_template or give tokenizer_source)")
    tok = AutoTokenizer.from_pretrained(str(out_dir))
    tok.chat_template = template
    tok.save_pretrained(str(out_dir))
