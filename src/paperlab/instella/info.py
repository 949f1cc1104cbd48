"""What ``paperlab instella info`` shows: size and memory of a checkpoint, from its config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from paperlab.instella.configuration import InstellaConfig

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelSize:
    parameters: int
    kv_bytes_per_token: dict[str, int]  # dtype -> bytes of K and V cached per token, all layers
    weight_bytes: dict[str, int]  # dtype -> bytes of the weights


def count_parameters(config: InstellaConfig) -> int:
    """Exact parameter count, from the config alone (no weights allocated)."""
    c, f, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    d, h, kv = int(config.head_dim), config.num_attention_heads, int(config.num_key_value_heads)  # type: ignore[arg-type]
    attn = c * h * d * 2 + c * kv * d * 2 + h * d + kv * d  # q, o, k, v + the two QK-norms
    if config.attention_bias:
        attn += h * d + 2 * kv * d + c  # q, k, v and o biases
    layer = attn + 3 * c * f + 2 * c  # + SwiGLU + two pre-norms
    heads = 1 if config.tie_word_embeddings else 2
    return L * layer + heads * config.vocab_size * c + c  # + final norm


def model_size(config: InstellaConfig) -> ModelSize:
    n = count_parameters(config)
    kv_width = 2 * config.num_hidden_layers * int(config.num_key_value_heads) * int(config.head_dim)  # type: ignore[arg-type]
    return ModelSize(
        parameters=n,
        kv_bytes_per_token={k: kv_width * b for k, b in BYTES.items()},
        weight_bytes={k: n * b for k, b in BYTES.items()},
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"
