"""Memory per rank of a training run, computed from the model built on the meta device.

For P parameters trained with AdamW in float32 master weights, on N ranks:

    weights      4 P               (DDP)     4 P / N   (FSDP)
    gradients    4 P               (DDP)     4 P / N   (FSDP)
    DDP buckets  4 P               (DDP: gradients are copied into reduction buckets)
    optimiser    8 P               (DDP)     8 P / N   (FSDP: Adam's two moments, sharded)
    gathered     0                 (DDP)     4 (R + 2 U) (FSDP: the root's own parameters R,
                                              such as embeddings and head, whole through the
                                              step, and the largest block, U parameters, whole
                                              while it computes and while the next is
                                              prefetched; 2 bytes instead of 4 under bf16)
    activations  given by the system for its micro-batch (:func:`activation_bytes` helpers)

A single process is DDP's figure without the buckets. These are the tensors the run must
hold; the allocator's slack and the framework's workspace come on top (typically 10-20%).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from paperlab.train.parallel import shard_units

GiB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per rank by kind (see the module docstring for the formulas)."""

    parameters: int
    world_size: int
    parallel: str
    largest_unit: int
    weights: float
    gradients: float
    buckets: float
    optimizer: float
    gathered: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.buckets + self.optimizer + self.gathered + self.activations

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}

    def rows(self) -> list[tuple[str, str]]:
        """(what, GiB per rank) for a table."""
        kinds = ("weights", "gradients", "buckets", "optimizer", "gathered", "activations")
        return [(k, f"{getattr(self, k) / GiB:.2f}") for k in kinds] + [("total", f"{self.total / GiB:.2f}")]


def estimate_memory(model: nn.Module, *, world_size: int, parallel: str, activations: float,
                    bf16: bool = False) -> MemoryEstimate:
    """The per-rank memory of training ``model`` (built on the meta device: no memory used).

    Args:
        model: the model; its ``_no_split_modules`` name the FSDP units.
        world_size: ranks in the run.
        parallel: none, ddp or fsdp.
        activations: bytes of activations one rank keeps for backward (system-specific).
        bf16: FSDP gathers bfloat16 copies of the weights for compute.
    """
    p = sum(t.numel() for t in model.parameters() if t.requires_grad)
    sizes = [sum(t.numel() for t in u.parameters()) for u in shard_units(model)]
    largest = max(sizes, default=0)
    root = p - sum(sizes)
    n = max(1, world_size)
    if parallel == "fsdp":
        share = 1.0 / n
        return MemoryEstimate(p, n, parallel, largest, 4 * p * share, 4 * p * share, 0.0, 8 * p * share,
                              (2 if bf16 else 4) * (root + 2 * largest), activations)
    buckets = 4.0 * p if parallel == "ddp" else 0.0
    return MemoryEstimate(p, n, parallel, largest, 4.0 * p, 4.0 * p, buckets, 8.0 * p, 0.0, activations)


def decoder_activation_bytes(*, batch: int, seq: int, hidden: int, ffn: int, layers: int, heads: int,
                             vocab: int, bf16: bool, eager_attention: bool = False) -> float:
    """Activations a pre-norm SwiGLU decoder keeps for backward, per rank.

    Per layer and token: the two norm inputs and outputs (4C), q, k, v and the attention output
    (4C, plus the q/k-norm inputs 2C), the o_proj output (C), gate, up, silu(gate) and their
    product (4F); eager attention adds the H x T score and probability matrices. The logits and
    their float32 log-softmax add 6V per token (2 bytes + 4 bytes).
    """
    a = 2 if bf16 else 4
    per_token = (11 * hidden + 4 * ffn) * a
    if eager_attention:
        per_token += 2 * heads * seq * a
    return float(batch * seq * (layers * per_token + vocab * (a + 4)))


def bidirectional_activation_bytes(*, batch: int, seq: int, hidden: int, ffn: int, layers: int,
                                   vocab: int, bf16: bool) -> float:
    """The same count for paradiff's pre-LayerNorm GELU blocks: per layer and token 2 norms (4C),
    q, k, v, attention output and projection (5C), the MLP's two linears and GELU (2F + C); the
    head's logits in float32 (4V + aV)."""
    a = 2 if bf16 else 4
    return float(batch * seq * (layers * (10 * hidden + 2 * ffn) * a + vocab * (a + 4)))
