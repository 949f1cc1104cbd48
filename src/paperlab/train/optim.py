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
    if spec.kind == "adam":
        # Adam's weight decay is an L2 term in the gradient, AdamW's is decoupled
        return torch.optim.Adam(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)
    return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)


def make_scheduler(opt: torch.optim.Optimizer, schedule: Schedule, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following ``schedule`` over ``total`` steps."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: schedule.factor(step, total))
