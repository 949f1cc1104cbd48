"""Memory per rank of a paradiff training or ParaRL run, from the model on the meta device
(``paperlab paradiff train|rl --dry-run``): nothing is trained and no VQ is fitted."""

from __future__ import annotations

from dataclasses import replace

import torch

from paperlab.paradiff.config import ParadiffConfig
from paperlab.paradiff.model import Layout, ParaDiffModel
from paperlab.paradiff.rl import RLConfig, rollout_config
from paperlab.paradiff.scene import IMAGE_SIZE
from paperlab.train.dist import per_rank
from paperlab.train.estimate import MemoryEstimate, bidirectional_activation_bytes, estimate_memory


def layout_of(cfg: ParadiffConfig) -> Layout:
    """The sequence layout a config's VQ gives (one token per patch)."""
    return Layout(n_image=(IMAGE_SIZE // cfg.vq.patch) ** 2, codebook=cfg.vq.codebook)


def train_memory(cfg: ParadiffConfig, *, world_size: int, parallel: str) -> MemoryEstimate:
    """Memory per rank of training ``cfg``'s transformer on ``world_size`` processes.

    Raises:
        TrainError: the global batch does not split evenly over ``world_size``.
    """
    batch = per_rank(cfg.train.batch, world_size, "the global batch")
    layout = layout_of(cfg)
    with torch.device("meta"):
        model = ParaDiffModel(cfg.model, layout)
    m, bf16 = cfg.model, cfg.dtype == "bfloat16"
    act = bidirectional_activation_bytes(batch=batch, seq=layout.length, hidden=m.d_model,
                                         ffn=m.d_ff, layers=m.n_layers, vocab=layout.vocab, bf16=bf16)
    return estimate_memory(model, world_size=world_size, parallel=parallel, activations=act, bf16=bf16)


def rl_memory(cfg: ParadiffConfig, rl: RLConfig, *, world_size: int, parallel: str) -> MemoryEstimate:
    """Memory per rank of ParaRL on ``world_size`` processes: the policy trained as above, on
    the update's sequences (this rank's prompts x group x scored steps, one forward; twice that
    when rollouts are guided: each sequence's unconditional copy rides along), plus the frozen
    reference model, whole on every rank (counted with the gathered weights).

    Raises:
        TrainError: the update's prompts do not split evenly over ``world_size``.
    """
    prompts = per_rank(rl.prompts, world_size, "an update's prompt count")
    layout = layout_of(cfg)
    with torch.device("meta"):
        model = ParaDiffModel(cfg.model, layout)
    m, bf16 = cfg.model, rl.dtype == "bfloat16"
    roll = rollout_config(cfg.sample, rl.rollout)
    guided = roll.guidance > 0 or roll.text_guidance > 0
    rows = prompts * rl.group * rl.loss_steps * (2 if guided else 1)
    act = bidirectional_activation_bytes(batch=rows, seq=layout.length, hidden=m.d_model, ffn=m.d_ff,
                                         layers=m.n_layers, vocab=layout.vocab, bf16=bf16)
    est = estimate_memory(model, world_size=world_size, parallel=parallel, activations=act, bf16=bf16)
    return replace(est, gathered=est.gathered + 4.0 * est.parameters)  # + the reference model
