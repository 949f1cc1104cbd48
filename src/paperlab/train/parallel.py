"""Wrapping a model for its parallel mode: as it is, DDP, or FSDP2 (``fully_shard``).

- ``none``: one process; the model is used as it is.
- ``ddp``: every rank holds the whole model; gradients are averaged across ranks in backward,
  except those of input embeddings (see :func:`row_sparse_params`), whose few touched rows are
  averaged after backward by :func:`sync_row_sparse`.
- ``fsdp``: FSDP2. Each block named by the model's ``_no_split_modules`` (transformers' own
  list of the layers that must not be cut) is sharded as a unit, then the root; parameters,
  gradients and optimiser state live 1/N on each rank and are gathered per block for compute.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

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
    #: under DDP, parameters left out of its buckets and averaged by :func:`sync_row_sparse`
    row_sparse: list[nn.Parameter] = field(default_factory=list)


def row_sparse_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """Input embedding tables (``nn.Embedding`` weights used by no other module): their gradient
    is zero outside the rows of the tokens in the batch, a few thousand of 50k rows, so averaging
    the whole table moves mostly zeros. In the Instella small preset the input embedding is 12.9M
    of 30.9M parameters, 42% of a step's all-reduce. A weight tied to an output head is dense and
    stays with DDP."""
    owners = Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
    out: dict[str, nn.Parameter] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Embedding) and m.weight.requires_grad and owners[id(m.weight)] == 1:
            out[f"{name}.weight" if name else "weight"] = m.weight  # type: ignore[assignment]
    return out


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
        sparse = row_sparse_params(model)
        if sparse:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, list(sparse))
            with torch.no_grad():  # DDP broadcasts rank 0's values of the parameters it holds only
                for table in sparse.values():
                    torch.distributed.broadcast(table.data, src=0)
        return Wrapped(model, DistributedDataParallel(model, device_ids=ids), "ddp", list(sparse.values()))
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


def sync_row_sparse(w: Wrapped, world_size: int) -> None:
    """Average the row-sparse gradients of :attr:`Wrapped.row_sparse` across ranks, as DDP
    averages the others (divided by the world size, then summed), but only over the rows that
    are non-zero on some rank: one small all-reduce of a row mask, one of those rows. Rows that
    are zero on every rank stay zero, so the result equals averaging the whole table."""
    for p in w.row_sparse:
        if p.grad is None:  # this rank's batch did not reach the table: its share is zero
            p.grad = torch.zeros_like(p)
        g = p.grad
        touched = g.ne(0).any(dim=1).to(torch.int32)
        torch.distributed.all_reduce(touched)
        rows = touched.nonzero().squeeze(1)
        part = g.index_select(0, rows).div_(world_size)
        torch.distributed.all_reduce(part)
        g.index_copy_(0, rows, part)


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
