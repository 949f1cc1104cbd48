"""Memory per rank of a paradiff training run, from the model on the meta device
(``paperlab paradiff train --dry-run``): nothing is trained and no VQ is fitted."""

from __future__ import annotations

import torch

from paperlab.errors import TrainError
from paperlab.paradiff.config import ParadiffConfig
from paperlab.paradiff.model import Layout, ParaDiffModel
from paperlab.paradiff.scene import IMAGE_SIZE
from paperlab.train.estimate import MemoryEstimate, bidirectional_activation_bytes, estimate_memory


def layout_of(cfg: ParadiffConfig) -> Layout:
    """The sequence layout a config's VQ gives (one token per patch)."""
    return Layout(n_image=(IMAGE_SIZE // cfg.vq.patch) ** 2, codebook=cfg.vq.codebook)


def train_memory(cfg: ParadiffConfig, *, world_size: int, parallel: str) -> MemoryEstimate:
    """Memory per rank of training ``cfg``'s transformer on ``world_size`` processes.

    Raises:
        TrainError: the global batch does not split evenly over ``world_size``.
    """
    if cfg.train.batch % world_size:
        raise TrainError(f"the global batch of {cfg.train.batch} does not split evenly over {world_size} "
                         f"processes; use a multiple of {world_size}")
    layout = layout_of(cfg)
    with torch.device("meta"):
        model = ParaDiffModel(cfg.model, layout)
    m, bf16 = cfg.model, cfg.dtype == "bfloat16"
    act = bidirectional_activation_bytes(batch=cfg.train.batch // world_size, seq=layout.length, hidden=m.d_model,
                                         ffn=m.d_ff, layers=m.n_layers, vocab=layout.vocab, bf16=bf16)
    return estimate_memory(model, world_size=world_size, parallel=parallel, activations=act, bf16=bf16)
