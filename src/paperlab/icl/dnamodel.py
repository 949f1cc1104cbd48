"""The small genomic LM: a character-level causal transformer over A/C/G/T.

It is a plain ``transformers`` ``LlamaForCausalLM`` with a tiny config and a one-character-per-
token tokenizer, saved as a safetensors directory, so it loads with ``AutoModelForCausalLM`` /
``AutoTokenizer`` and through ``paperlab.llm``'s ``hf:`` backend like any other model. Token ids
0..3 are A/C/G/T (the same codes as :mod:`paperlab.icl.dna`), 4 is N (also the unknown token),
5 is the end/padding token.

Trained models are cached under ``$PAPERLAB_CACHE/icl`` (default ``~/.cache/paperlab/icl``) in a
directory named by a hash of the full training config, written atomically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from paperlab.errors import ConfigError, ICLError, config_error
from paperlab.icl.dna import LARGE_SOURCES, SOURCES
from paperlab.io.cache import cache_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

VOCAB = {"A": 0, "C": 1, "G": 2, "T": 3, "N": 4, "<eos>": 5}
VOCAB_SIZE = 8  # padded to a multiple of 8; ids 6 and 7 never occur


class ICLConfigError(ConfigError, ICLError):
    """An invalid DNA model config or override (a bad --steps, an unknown preset)."""


class DNAModelConfig(BaseModel):
    """Architecture and training recipe of the DNA model (all of it keys the cache)."""

    d_model: int = Field(128, ge=8, description="hidden size")
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1)
    d_ff: int = Field(384, ge=8, description="MLP intermediate size")
    context: int = Field(640, ge=32, description="training window = max positions")
    steps: int = Field(300, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup: int = Field(20, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    seed: int = 0
    eval_windows: int = Field(64, ge=1, description="held-out windows for the loss report")
    sources: tuple[str, ...] = Field(SOURCES, min_length=1, description="DNA packages to train on")

    def key(self) -> str:
        """A short stable hash of the config, naming its cache directory."""
        fields = self.model_dump()
        if tuple(fields["sources"]) == SOURCES:  # keeps the keys of models cached before `sources`
            del fields["sources"]
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


TINY = DNAModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=256, context=320, steps=150,
                      batch_size=8, lr=3e-3, warmup=10, eval_windows=32)
#: Context 1280 fits 64 shots (18k + 17 tokens); trained on all three DNA packages.
LONG = DNAModelConfig(context=1280, steps=3000, warmup=50, sources=LARGE_SOURCES)
#: 2.9 M parameters, the largest that trains for a few thousand steps in ~40 CPU minutes here.
LARGE = DNAModelConfig(d_model=192, n_layers=6, n_heads=6, d_ff=576, context=1280, steps=3000,
                       lr=2e-3, warmup=50, sources=LARGE_SOURCES)
PRESETS: dict[str, DNAModelConfig] = {"default": DNAModelConfig(), "tiny": TINY, "long": LONG,
                                      "large": LARGE}


def preset_config(name: str, **overrides: Any) -> DNAModelConfig:
    """The preset called ``name`` with ``overrides`` (None values ignored), validated.

    Raises:
        ICLConfigError: an unknown preset, or an override the config rejects (one line).
    """
    from pydantic import ValidationError

    if name not in PRESETS:
        raise ICLConfigError(f"unknown preset {name!r}; choose from: {', '.join(PRESETS)}")
    fields = PRESETS[name].model_dump() | {k: v for k, v in overrides.items() if v is not None}
    try:
        return DNAModelConfig.model_validate(fields)
    except ValidationError as exc:
        raise config_error(exc, f"DNA model preset {name!r}", ICLConfigError) from None


def cache_root() -> Path:
    """``$PAPERLAB_CACHE/icl`` or ``~/.cache/paperlab/icl``."""
    return cache_dir("icl")


def cached_model_dir(cfg: DNAModelConfig) -> Path:
    """Where a model trained with ``cfg`` lives (it may not exist yet)."""
    return cache_root() / f"dna-{cfg.key()}"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer: every base is one token; no special tokens are added."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token="N"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()  # "ACGT", not WordLevel's default "A C G T"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="N", eos_token="<eos>", pad_token="<eos>",
        clean_up_tokenization_spaces=False,
    )


def build_model(cfg: DNAModelConfig) -> PreTrainedModel:
    """A randomly initialised ``LlamaForCausalLM`` of the given size (seeded by ``cfg.seed``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if cfg.d_model % cfg.n_heads:
        raise ICLError(f"d_model ({cfg.d_model}) must be divisible by n_heads ({cfg.n_heads})")
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.context,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=VOCAB["<eos>"],
        pad_token_id=VOCAB["<eos>"],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    return LlamaForCausalLM(config)


def save_model(model: PreTrainedModel, out_dir: Path, meta: dict[str, Any], force: bool = True) -> Path:
    """Save model (safetensors), tokenizer and a ``paperlab_icl.json`` record atomically."""
    from paperlab.io.atomic import atomic_directory

    with atomic_directory(out_dir, force=force, error=ICLError) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        build_tokenizer().save_pretrained(tmp)
        (tmp / "paperlab_icl.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return Path(out_dir)


def load_model(path: Path) -> tuple[PreTrainedModel, Any]:
    """Load a saved DNA model and its tokenizer with the Auto classes.

    Raises:
        ICLError: ``path`` holds no saved model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(path) / "config.json").is_file():
        raise ICLError(f"no DNA model in {path}; train one with `paperlab icl train-dna`")
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


def read_meta(path: Path) -> dict[str, Any]:
    """The training record saved beside a model (empty if absent)."""
    p = Path(path) / "paperlab_icl.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
