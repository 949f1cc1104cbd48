"""Tiny real Hugging Face checkpoints for the soup tests (2-layer Llamas, a few KB each)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

VOCAB = 96


def make_tokenizer(out: Path) -> None:
    """A real (word-level) fast tokenizer saved beside the model, so side files get copied."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # One token per id: two tokens sharing an id would be saved in either order, so two saves of
    # "the same" tokenizer could differ.
    vocab = {"<unk>": 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(out)


def make_llama(
    out: Path,
    seed: int,
    *,
    tied: bool = False,
    dtype: str = "float32",
    shard: str | None = None,
    vocab: int = VOCAB,
    hidden: int = 32,
    tokenizer: bool = True,
    layers: int = 2,
) -> Path:
    """Save a random Llama (2 layers unless told) with ``seed`` into ``out`` (optionally sharded)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
    )
    model = LlamaForCausalLM(cfg).to(getattr(torch, dtype))
    with torch.no_grad():
        for p in model.parameters():  # non-trivial norms too, so every tensor differs by seed
            p.add_(torch.randn_like(p) * 0.05)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(out, **kwargs)
    if tokenizer:
        make_tokenizer(out)
    return out


@pytest.fixture
def llama_factory(tmp_path: Path) -> Callable[..., Path]:
    """``llama_factory(name, seed, **kw)`` -> a fresh checkpoint dir under tmp_path."""

    def make(name: str, seed: int, **kw: object) -> Path:
        return make_llama(tmp_path / name, seed, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="module")
def three_llamas(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three float32 2-layer Llamas, the second sharded differently from the others."""
    root = tmp_path_factory.mktemp("llamas")
    return [
        make_llama(root / "a", 1),
        make_llama(root / "b", 2, shard="20KB"),
        make_llama(root / "c", 3, shard="50KB"),
    ]


@pytest.fixture(scope="session")
def make_llama_fn() -> Callable[..., Path]:
    """The :func:`make_llama` function itself (test modules cannot import conftest)."""
    return make_llama


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def soup_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``paperlab soup ARGS`` run in this process through the real entry point (its one-line
    errors and exit codes included), without starting an interpreter."""
    from paperlab.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(["soup", *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run
