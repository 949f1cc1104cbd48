"""The optimiser and the learning-rate schedule of a run, as plain values.

Schedules: a linear warm-up over ``warmup`` steps to the peak rate, then constant, linear or
cosine decay to ``final_ratio`` x the peak at the last step (Instella's stage 1 decays by
cosine to 0.1x; its later stages linearly to 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from paperlab.errors import TrainError

NoDecay = Callable[[str, nn.Parameter], bool]


def no_decay_for_vectors(name: str, p: nn.Parameter) -> bool:
    """The common rule: no weight decay on vectors (norm weights, biases)."""
    return p.ndim < 2


@dataclass(frozen=True)
class OptimSpec:
    """AdamW or Adam with its hyper-parameters; ``no_decay(name, param)`` exempts parameters."""

    lr: float
    kind: Literal["adamw", "adam"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.0
    no_decay: NoDecay | None = None


@dataclass(frozen=True)
class Schedule:
    """Warm-up, then ``kind`` decay to ``final_ratio`` of the peak rate."""

    kind: Literal["constant", "linear", "cosine"] = "constant"
    warmup: int = 0
    final_ratio: float = 0.0

    def factor(self, step: int, total: int) -> float:
        """The multiplier of the peak rate at ``step`` (0-based) of ``total`` steps."""
        warm = max(0, min(self.warmup, total - 1))
        if step < warm:
            return (step + 1) / warm
        if self.kind == "constant":
            return 1.0
        frac = min(1.0, (step - warm) / max(1, total - warm))
        shape = 0.5 * (1 + math.cos(math.pi * frac)) if self.kind == "cosine" else 1.0 - frac
        return self.final_ratio + (1.0 - self.final_ratio) * shape


def make_optimizer(model: nn.Module, spec: OptimSpec) -> torch.optim.Optimizer:
    """The optimiser over ``model``'s trainable parameters, decay and no-decay groups split.

    Build it after the model is wrapped for FSDP (its parameters become sharded tensors then).
    """
    if spec.lr <= 0 or not math.isfinite(spec.lr):
        raise TrainError(f"learning rate {spec.lr} must be a positive number")
    decay: list[nn.Parameter] = []
    exempt: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (exempt if spec.no_decay is not None and spec.no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": spec.weight_decay}]
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0})
    # foreach: one multi-tensor pass per update instead of a loop over tensors (an AdamW step over
    # the Instella small preset's 31M parameters took 0.21 s against 0.28 s on one CPU thread;
    # under DDP every rank repeats that step). The fused kernel was faster still (0.03 s) but its
    # rounding made 1-process and 2-process losses drift apart 17x faster (6e-4 against 3.5e-5
    # relative over 50 paradiff steps), so it is not used.
    kind = torch.optim.Adam if spec.kind == "adam" else torch.optim.AdamW  # Adam: L2 decay; AdamW: decoupled
    return kind(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps, foreach=True)
