"""The one training loop: one process or every rank of a torchrun launch, unchanged.

A run trains ``steps`` optimiser steps over a global batch of ``global_batch`` samples. Rank r
of W owns the samples ``r*B/W .. (r+1)*B/W - 1`` of each step (see :mod:`paperlab.train.seeds`);
a task turns its rows into a batch and a batch into a loss. The loss is a SUM over the units it
averages (tokens, masked positions, pairs) and their COUNT; the loop divides by the count over
all ranks, so each step's gradient and reported loss are those of the whole global batch,
whatever the number of processes:

    grad = d(sum over all ranks of the summed losses) / (count over all ranks)

Rank 0 alone draws progress and logs. Every ``save_every`` steps all ranks save their shard of
the model and optimiser (:mod:`paperlab.train.state`); a rerun of the same command resumes there,
on any number of processes.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from paperlab.errors import TrainError
from paperlab.train.dist import DistContext, per_rank
from paperlab.train.optim import OptimSpec, Schedule, make_optimizer
from paperlab.train.parallel import Wrapped, no_grad_sync, sync_row_sparse, wrap_model
from paperlab.train.state import check_fingerprint, clear_state, load_state, read_latest, save_state

log = logging.getLogger(__name__)


@dataclass
class LossParts:
    """What a task's loss returns for this rank's rows.

    ``total``: the SUM of the per-unit losses (a scalar that carries gradients); ``count``: the
    number of units summed (tokens, masked positions, pairs); ``tokens``: input tokens processed
    (throughput); ``stats``: name -> (sum, n) of other figures to average over the whole batch.
    """

    total: torch.Tensor
    count: float
    tokens: int = 0
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)


class TrainTask(Protocol):
    """A training job as the loop sees it."""

    def batch(self, step: int, rows: range) -> Any:
        """The batch of the global sample indices ``rows`` at ``step`` (this rank's share)."""

    def loss(self, model: nn.Module, batch: Any) -> LossParts:
        """The summed loss of ``batch``; call ``model`` (not its methods) so gradients sync."""


@dataclass
class FnTask:
    """A task from two functions: ``make_batch(step, rows)`` and ``make_loss(model, batch)``."""

    make_batch: Callable[[int, range], Any]
    make_loss: Callable[[nn.Module, Any], LossParts]

    def batch(self, step: int, rows: range) -> Any:
        return self.make_batch(step, rows)

    def loss(self, model: nn.Module, batch: Any) -> LossParts:
        return self.make_loss(model, batch)


@dataclass(frozen=True)
class TrainSpec:
    """How to train: length, global batch, optimiser, schedule, clipping, saving."""

    steps: int
    global_batch: int
    optim: OptimSpec
    schedule: Schedule = Schedule()
    grad_clip: float | None = 1.0
    micro_batch: int | None = None  # rows per forward on a rank (gradient accumulation)
    bf16: bool = False  # autocast to bfloat16 (CUDA); FSDP then computes in bfloat16
    save_every: int = 0  # 0: only on Ctrl-C in a single process
    save_on_interrupt: bool = True  # False: Ctrl-C keeps the last periodic save (steps that share data)
    label: str = "train"


@dataclass
class TrainResult:
    """What a run did; ``losses`` holds one float per optimiser step (the global batch's loss)."""

    steps: int
    resumed_from: int
    seconds: float
    tokens: int
    tokens_per_s: float
    first_loss: float
    last_loss: float
    losses: list[float]
    world_size: int
    parallel: str
    stats: dict[str, list[float]] = field(default_factory=dict)


def local_rows(global_batch: int, ctx: DistContext) -> range:
    """This rank's share of the global sample indices ``0 .. global_batch - 1``.

    Raises:
        TrainError: the world size does not divide the global batch.
    """
    per = per_rank(global_batch, ctx.world_size, "the global batch")
    return range(ctx.rank * per, (ctx.rank + 1) * per)


def _micro(rows: range, size: int | None) -> list[range]:
    if not size or size >= len(rows):
        return [rows]
    return [rows[i : i + size] for i in range(0, len(rows), size)]


class _Progress:
    """A rich bar on rank 0 in a terminal; a plain line every 30 s when piped; nothing elsewhere."""

    def __init__(self, spec: TrainSpec, start: int, ctx: DistContext, console: Any) -> None:
        self.active = ctx.is_main
        self.spec, self.last_line = spec, time.perf_counter()
        self.bar: Any = None
        if not self.active:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn(f"[bold]{spec.label}[/bold]"), BarColumn(),
                            TextColumn("{task.completed}/{task.total}"), TextColumn("loss {task.fields[loss]:.3f}"),
                            TextColumn("{task.fields[tps]:.0f} tok/s"), TimeRemainingColumn(),
                            console=console, transient=True, refresh_per_second=2)
        self.task = self.bar.add_task(spec.label, total=spec.steps, completed=start, loss=float("nan"), tps=0.0)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def update(self, step: int, loss: float, tps: float) -> None:
        if self.bar is None:
            return
        self.bar.update(self.task, completed=step + 1, loss=loss, tps=tps)
        now = time.perf_counter()
        if not self.bar.console.is_terminal and (now - self.last_line > 30 or step + 1 == self.spec.steps):
            # piped or under nohup the bar draws nothing: a plain line every 30 s instead
            self.last_line = now
            print(f"{self.spec.label}: step {step + 1}/{self.spec.steps}, loss {loss:.4f}, {tps:.0f} tok/s",
                  file=sys.stderr, flush=True)


def run_training(
    model: nn.Module,
    task: TrainTask,
    spec: TrainSpec,
    ctx: DistContext,
    *,
    state_dir: Path | None = None,
    fingerprint: dict[str, Any] | None = None,
    console: Any = None,
    on_step: Callable[[int, float, dict[str, float]], None] | None = None,
    wrapped: Wrapped | None = None,
    stop_after: int | None = None,
    keep_final: bool = False,
) -> tuple[Wrapped, TrainResult]:
    """Train ``model`` for ``spec.steps`` steps (resuming from ``state_dir``) and return it wrapped.

    Args:
        model: the model, identical on every rank (same seed or the same checkpoint).
        task: makes this rank's batches and their summed losses.
        spec: the run's length, batch, optimiser and schedule.
        ctx: from :func:`paperlab.train.init_distributed` (or :func:`single_process`).
        state_dir: where resumable state goes; a complete state there is resumed.
        fingerprint: what must match for a resume (model and training config); refused otherwise.
        on_step: called on rank 0 after each step with (step, loss, the step's averaged stats).
        wrapped: an already wrapped model to keep training (``model`` is then ignored).
        stop_after: stop after this many steps in this call (tests of resuming).
        keep_final: keep the finished run's state in ``state_dir`` (a rerun then trains nothing
            and returns the same model) instead of removing it.

    Returns:
        The wrapped model (``.module`` is the model; sharded under FSDP, see
        :func:`paperlab.train.full_state_dict`) and the run's :class:`TrainResult`.

    Raises:
        TrainError: uneven global batch, a state of another config, a state that does not load.
    """
    rows = local_rows(spec.global_batch, ctx)
    fingerprint = dict(fingerprint or {})
    fingerprint.setdefault("global_batch", spec.global_batch)
    fingerprint.setdefault("steps", spec.steps)
    found = read_latest(state_dir) if state_dir is not None else None
    if found is not None:
        check_fingerprint(found[0].parent, found[1], fingerprint)  # before anything is written
    w = wrapped or wrap_model(model, ctx, bf16=spec.bf16)
    if hasattr(task, "bind"):  # a task that samples with the model it trains (RL) gets it here
        task.bind(w)
    opt = make_optimizer(w.module, spec.optim)
    peaks = [g["lr"] for g in opt.param_groups]
    start, tokens, losses = 0, 0, []
    stats: dict[str, list[float]] = {}
    if found is not None:
        load_state(found[0], w, opt)
        saved = found[1]
        start, tokens, losses = int(saved["step"]), int(saved["tokens"]), list(saved["losses"])
        stats = {k: list(v) for k, v in saved.get("stats", {}).items()}
        if hasattr(task, "load_state_dict"):
            task.load_state_dict(saved.get("task", {}))
        if ctx.is_main:
            log.info("%s: resuming at step %d (saved by %d processes, now %d)", spec.label, start,
                     saved.get("world_size", 1), ctx.world_size)

    def meta(step: int) -> dict[str, Any]:
        out: dict[str, Any] = {"fingerprint": fingerprint, "tokens": tokens, "losses": losses, "stats": stats}
        if hasattr(task, "state_dict"):
            out["task"] = task.state_dict()
        return out

    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=spec.bf16 and ctx.device.type == "cuda")
    params = [p for p in w.module.parameters() if p.requires_grad]
    tok0, t0 = tokens, time.perf_counter()
    done = start  # optimiser steps applied to the weights (what a save records)
    w.module.train()
    try:
        with _Progress(spec, start, ctx, console) as progress:
            for step in range(start, spec.steps):
                if stop_after is not None and done - start >= stop_after:
                    break
                factor = spec.schedule.factor(step, spec.steps)
                for g, peak in zip(opt.param_groups, peaks, strict=True):
                    g["lr"] = peak * factor
                parts = _accumulate(w, task, step, rows, spec, autocast)
                if w.row_sparse:
                    sync_row_sparse(w, ctx.world_size)
                # one all-reduce carries the loss sum, its count, the tokens and every stat
                names = sorted(parts[3])
                packed = torch.tensor([parts[0], parts[1], float(parts[2])]
                                      + [v for n in names for v in parts[3][n]], dtype=torch.float64)
                ctx.all_reduce_sum(packed)
                total, count, n_tok = float(packed[0]), float(packed[1]), int(packed[2])
                if count <= 0:
                    raise TrainError(f"{spec.label}: step {step} has no loss units on any rank (empty batch)")
                # gradients hold d(local sum); DDP/FSDP averaged them over ranks: rescale so they are
                # d(global sum) / global count, the gradient of the global batch's mean loss
                scale = ctx.world_size / count if w.mode != "none" else 1.0 / count
                if spec.grad_clip:  # the rescaling rides on the clipping pass
                    clip_gradients(params, spec.grad_clip, ctx, mode=w.mode, scale=scale)
                else:
                    for p in params:
                        if p.grad is not None:
                            p.grad.mul_(scale)
                loss_v = total / count
                if not math.isfinite(loss_v):
                    raise TrainError(f"{spec.label}: the loss is {loss_v} at step {step}; lower the learning "
                                     "rate or check the data")
                opt.step()
                done, tokens = step + 1, tokens + n_tok
                losses.append(loss_v)  # as close to the step as it goes: a Ctrl-C save needs both
                opt.zero_grad(set_to_none=True)
                for i, n in enumerate(names):
                    s, k = float(packed[3 + 2 * i]), float(packed[4 + 2 * i])
                    stats.setdefault(n, []).append(s / k if k else float("nan"))
                tps = (tokens - tok0) / max(1e-9, time.perf_counter() - t0)
                progress.update(step, loss_v, tps)
                if on_step is not None and ctx.is_main:
                    on_step(step, loss_v, {n: v[-1] for n, v in stats.items()})
                if state_dir is not None and spec.save_every and done % spec.save_every == 0 and done < spec.steps:
                    save_state(state_dir, done, w, opt, meta(done), ctx)
    except KeyboardInterrupt:
        # one process only: ranks of a launch may stop at different points, and a save is a collective
        if state_dir is not None and spec.save_on_interrupt and ctx.world_size == 1 and done > start:
            if len(losses) < done:  # stopped between the optimiser step and its record
                losses.append(loss_v)
            save_state(state_dir, done, w, opt, meta(done), ctx)
        raise
    w.module.eval()
    secs = time.perf_counter() - t0
    finished = done >= spec.steps
    if finished and state_dir is not None and not keep_final:
        clear_state(state_dir, ctx)
    elif finished and state_dir is not None and done > start:
        save_state(state_dir, done, w, opt, meta(done), ctx)
    result = TrainResult(
        steps=spec.steps, resumed_from=start, seconds=secs, tokens=tokens,
        tokens_per_s=(tokens - tok0) / max(1e-9, secs), first_loss=losses[0] if losses else float("nan"),
        last_loss=losses[-1] if losses else float("nan"), losses=losses, world_size=ctx.world_size,
        parallel=w.mode, stats=stats,
    )
    if not finished and state_dir is not None:
        save_state(state_dir, done, w, opt, meta(done), ctx)
    return w, result


def clip_gradients(params: list[nn.Parameter], max_norm: float, ctx: DistContext, *, mode: str,
                   scale: float = 1.0) -> float:
    """Multiply gradients by ``scale``, then scale them so their global L2 norm is at most
    ``max_norm``, in one pass over them; returns the norm of ``scale`` x the gradients.

    The squares are summed in float64 (``vector_norm`` accumulates in float64 without copying the
    gradients), so the norm, and so the clipping factor, comes out the same whichever way the
    gradients are split over processes; torch's float32 norm of per-tensor norms differs in its
    last bits between a whole tensor and its shards, and that difference, fed back through the
    optimiser, grew to 1e-3 of the loss in 50 steps of the paradiff tiny preset. Under FSDP each
    rank sums its own shards; under DDP, where every rank holds the same whole gradients, each
    sums every world-size-th tensor; the partial sums are then added across ranks.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if mode == "ddp" and ctx.world_size > 1:
        grads = grads[ctx.rank :: ctx.world_size]
    sq = torch.zeros((), dtype=torch.float64)
    for g in grads:
        local = g.to_local() if mode == "fsdp" and hasattr(g, "to_local") else g
        sq += torch.linalg.vector_norm(local.detach(), dtype=torch.float64).square().cpu()
    if mode in ("ddp", "fsdp"):
        ctx.all_reduce_sum(sq)
    norm = float(sq.sqrt()) * abs(scale)
    factor = scale * min(1.0, max_norm / (norm + 1e-6))
    if factor != 1.0:
        for p in params:
            if p.grad is not None:
                p.grad.mul_(factor)
    return norm


def _accumulate(w: Wrapped, task: TrainTask, step: int, rows: range, spec: TrainSpec,
                autocast: Any) -> tuple[float, float, int, dict[str, list[float]]]:
    """Forward and backward over this rank's rows in micro-batches; returns (loss sum, count,
    tokens, stats) of the rank. Gradients are reduced across ranks in the last backward only."""
    chunks = _micro(rows, spec.micro_batch)
    total, count, n_tok = 0.0, 0.0, 0
    stats: dict[str, list[float]] = {}
    for i, chunk in enumerate(chunks):
        batch = task.batch(step, chunk)
        with no_grad_sync(w, skip=i < len(chunks) - 1):
            with autocast:
                parts = task.loss(w.runner, batch)
            parts.total.backward()
        total += float(parts.total.detach())
        count += float(parts.count)
        n_tok += int(parts.tokens)
        for k, (s, n) in parts.stats.items():
            acc = stats.setdefault(k, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(n)
    return total, count, n_tok, stats
