"""``InstellaConfig``: the released config.json keys as a transformers config, plus presets.

The released checkpoints (amd/Instella-3B*) carry Llama-style keys (``rope_theta``,
``rope_scaling``...). transformers 5 keeps RoPE settings in one ``rope_parameters`` dict and
converts those legacy keys on load; on save we write both forms, so a directory paperlab writes
still reads as a released one (``rope_theta`` / ``rope_scaling`` as the released config class
expects them).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig

# RoPE types the released config class accepts in ``rope_scaling``.
ROPE_TYPES = ("default", "linear", "dynamic")


class InstellaConfig(PreTrainedConfig):
    """Configuration of an Instella decoder (defaults: Instella-3B)."""

    model_type = "instella"
    keys_to_ignore_at_inference = ["cache"]
    default_theta = 10_000.0

    vocab_size: int = 50304
    hidden_size: int = 2560
    intermediate_size: int = 6912
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    use_cache: bool = True
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 0
    tie_word_embeddings: bool = False
    rope_parameters: dict[str, Any] | None = None
    attention_bias: bool = False
    attention_dropout: float = 0.0

    def __post_init__(self, **kwargs: Any) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        super().__post_init__(**kwargs)

    # -- RoPE, read by the model --------------------------------------------------------
    @property
    def rope_type(self) -> str:
        rp = self.rope_parameters or {}
        return str(rp.get("rope_type", rp.get("type", "default")))

    @property
    def rope_base(self) -> float:
        return float((self.rope_parameters or {}).get("rope_theta", self.default_theta))

    @property
    def rope_factor(self) -> float:
        return float((self.rope_parameters or {}).get("factor", 1.0))

    def set_rope_theta(self, theta: float) -> None:
        """Raise (or lower) the RoPE base, as Instella-Long does (no scaling factor)."""
        rp = dict(self.rope_parameters or {"rope_type": "default"})
        rp["rope_theta"] = float(theta)
        self.rope_parameters = rp

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        # Released-format keys beside transformers 5's rope_parameters (see module docstring).
        out["rope_theta"] = self.rope_base
        kind = self.rope_type
        out["rope_scaling"] = None if kind == "default" else {"type": kind, "factor": self.rope_factor}
        return out


def preset_config(name: str, **overrides: Any) -> InstellaConfig:
    """A named size: ``tiny`` (tests, 6.5M, nearly all embedding), ``small`` (104M, benchmarks), ``3b`` (released).

    Raises:
        InstellaConfigError: unknown preset name.
    """
    from paperlab.instella.errors import InstellaConfigError

    if name not in PRESETS:
        raise InstellaConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return InstellaConfig(**{**PRESETS[name], **overrides})


# The released tokenizer has 50,280 tokens; the model's embedding has 50,304 rows (a multiple
# of 128). Every preset keeps the real vocabulary so the real tokenizer works with all of them.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=256,
    ),
    "small": dict(
        hidden_size=640, intermediate_size=1728, num_hidden_layers=8, num_attention_heads=10,
        num_key_value_heads=10, max_position_embeddings=1024,
    ),
    "3b": dict(),
}


AutoConfig.register("instella", InstellaConfig, exist_ok=True)
