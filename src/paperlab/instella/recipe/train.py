"""One training loop for every stage: AdamW (0.9, 0.95), weight decay, grad clip, a warm-up then
cosine or linear schedule, a rich progress bar with tokens/s and loss, and resumable state.

Every ``save_every`` steps (and on Ctrl-C) the model, optimizer, scheduler and step are written
atomically to ``state_dir``; a rerun picks up from there. Batches depend only on (seed, step), so
a resumed run sees the same data it would have seen.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from paperlab.instella.recipe.config import StageSettings

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
LossFn = Callable[[torch.nn.Module, Batch], tuple[torch.Tensor, int]]  # (loss, tokens seen)


@dataclass
class TrainStats:
    steps: int
    resumed_from: int
    seconds: float
    tokens: int
    tokens_per_s: float
    first_loss: float
    last_loss: float


def make_scheduler(opt: torch.optim.Optimizer, s: StageSettings, kind: str) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up, then cosine to 0.1x (stage 1, as released) or linear to 0 (the others)."""
    warm = max(0, min(s.warmup, s.steps - 1))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, s.steps - warm)
        if kind == "cosine":
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        return max(0.0, 1.0 - frac)

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _save_state(state_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                sched: Any, step: int, tokens: int, first_loss: float) -> None:
    from paperlab.io.atomic import atomic_write_bytes

    state_dir.mkdir(parents=True, exist_ok=True)
    import io

    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    atomic_write_bytes(state_dir / "state.pt", buf.getvalue())
    atomic_write_bytes(state_dir / "state.json", json.dumps(
        {"step": step, "tokens": tokens, "first_loss": first_loss}).encode())


def train(
    model: torch.nn.Module,
    make_batch: Callable[[int], Batch],
    loss_fn: LossFn,
    settings: StageSettings,
    *,
    schedule: str,
    state_dir: Path,
    save_every: int,
    weight_decay: float,
    grad_clip: float,
    label: str,
    console: Any = None,
    autocast: bool = False,
) -> TrainStats:
    """Train ``model`` in place for ``settings.steps`` steps, resuming from ``state_dir``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=settings.lr, betas=(0.9, 0.95), eps=1e-8)
    sched = make_scheduler(opt, settings, schedule)
    start, tokens, first_loss = 0, 0, float("nan")
    if (state_dir / "state.json").is_file() and (state_dir / "state.pt").is_file():
        meta = json.loads((state_dir / "state.json").read_text())
        saved = torch.load(state_dir / "state.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        start, tokens, first_loss = int(meta["step"]), int(meta["tokens"]), float(meta["first_loss"])
        log.info("%s: resuming at step %d", label, start)
    device = next(model.parameters()).device
    model.train()
    t0, tok0, loss_v = time.perf_counter(), tokens, first_loss
    step = start
    last_line = t0
    progress = Progress(TextColumn(f"[bold]{label}[/bold]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[tps]:.0f} tok/s"),
                        TimeRemainingColumn(), console=console, transient=True, refresh_per_second=2)
    try:
        with progress:
            task = progress.add_task(label, total=settings.steps, completed=start, loss=float("nan"), tps=0.0)
            for step in range(start, settings.steps):
                batch = {k: v.to(device) for k, v in make_batch(step).items()}
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss, n_tok = loss_fn(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                sched.step()
                loss_v = float(loss.detach())
                if math.isnan(first_loss):
                    first_loss = loss_v
                tokens += n_tok
                tps = (tokens - tok0) / max(1e-9, time.perf_counter() - t0)
                progress.update(task, completed=step + 1, loss=loss_v, tps=tps)
                if not progress.console.is_terminal and (time.perf_counter() - last_line > 30
                                                         or step + 1 == settings.steps):
                    # piped or under nohup the bar draws nothing: a plain line every 30 s instead
                    last_line = time.perf_counter()
                    print(f"{label}: step {step + 1}/{settings.steps}, loss {loss_v:.3f}, {tps:.0f} tok/s",
                          file=sys.stderr, flush=True)
                if (step + 1) % save_every == 0 and step + 1 < settings.steps:
                    _save_state(state_dir, model, opt, sched, step + 1, tokens, first_loss)
    except KeyboardInterrupt:
        _save_state(state_dir, model, opt, sched, step, tokens, first_loss)
        raise
    model.eval()
    secs = time.perf_counter() - t0
    return TrainStats(settings.steps, start, secs, tokens, (tokens - tok0) / max(1e-9, secs), first_loss, loss_v)
