"""Wrapping a model for its parallel mode: as it is, DDP, or FSDP2 (``fully_shard``).

- ``none``: one process; the model is used as it is.
- ``ddp``: every rank holds the whole model; gradients are averaged across ranks in backward.
- ``fsdp``: FSDP2. Each block named by the model's ``_no_split_modules`` (transformers' own
  list of the layers that must not be cut) is sharded as a unit, then the root; parameters,
  gradients and optimiser state live 1/N on each rank and are gathered per block for compute.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from paperlab.errors import TrainError
from paperlab.train.dist import DistContext


@dataclass
class Wrapped:
    """``module``: the model itself (sharded in place under FSDP). ``runner``: what a training
    step calls, so that gradient synchronisation happens (the DDP wrapper, or the module)."""

    module: nn.Module
    runner: nn.Module
    mode: str


def shard_units(model: nn.Module, names: Sequence[str] | None = None) -> list[nn.Module]:
    """The submodules FSDP shards one by one: instances of the classes in ``names`` (default:
    the model's ``_no_split_modules``)."""
    wanted = set(names if names is not None else getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in wanted and m is not model]


def wrap_model(model: nn.Module, ctx: DistContext, *, bf16: bool = False,
               units: Sequence[str] | None = None) -> Wrapped:
    """Move ``model`` to the context's device and wrap it for the context's parallel mode.

    Args:
        model: built identically on every rank (same seed) or loaded from the same checkpoint;
            rank 0's values are broadcast anyway, so the ranks start equal.
        ctx: the run's :class:`DistContext`.
        bf16: FSDP computes in bfloat16 (gradients reduced in float32), on CUDA.
        units: class names to shard as units under FSDP (default ``_no_split_modules``).
    """
    model.to(ctx.device)
    if ctx.parallel == "none":
        return Wrapped(model, model, "none")
    if ctx.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return Wrapped(model, DistributedDataParallel(model, device_ids=ids), "ddp")
    if ctx.parallel != "fsdp":
        raise TrainError(f"unknown parallel mode {ctx.parallel!r}")
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    with torch.no_grad():  # DDP does this itself; FSDP shards whatever each rank holds
        for t in [*model.parameters(), *model.buffers()]:
            torch.distributed.broadcast(t.data, src=0)
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if bf16 and ctx.device.type == "cuda" else MixedPrecisionPolicy())
    for unit in shard_units(model, units):
        fully_shard(unit, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return Wrapped(model, model, "fsdp")


@contextmanager
def no_grad_sync(w: Wrapped, skip: bool) -> Iterator[None]:
    """With ``skip``, the block's backward accumulates gradients without reducing them across
    ranks (every micro-batch but the last)."""
    if not skip or w.mode == "none":
        yield
        return
    if w.mode == "ddp":
        with w.runner.no_sync():  # type: ignore[operator]
            yield
        return
    w.module.set_requires_gradient_sync(False)  # type: ignore[operator]
    try:
        yield
    finally:
        w.module.set_requires_gradient_sync(True)  # type: ignore[operator]


def whole_weights(w: Wrapped, into: nn.Module) -> nn.Module:
    """``into`` (a model of the same shape) holding the trained model's whole weights, on every
    rank: for code that calls methods other than ``forward``, such as a sampler. Outside FSDP it
    is the module itself; under FSDP a collective that gathers every shard to every rank."""
    if w.mode != "fsdp":
        return w.module
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    into.load_state_dict(get_model_state_dict(w.module, options=StateDictOptions(full_state_dict=True)))
    return into


def full_state_dict(w: Wrapped) -> dict[str, torch.Tensor]:
    """The whole model's tensors on the CPU. Under FSDP this is a collective that every rank
    must call; rank 0 gets the tensors and the others an empty dict."""
    if w.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(w.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v for k, v in full.items() if isinstance(v, torch.Tensor)}
    return {k: v.detach().to("cpu", copy=True) for k, v in w.module.state_dict().items()}
