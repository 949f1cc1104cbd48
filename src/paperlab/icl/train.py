"""Training the DNA model: random windows of real genomes, next-base cross-entropy, AdamW.

Each step draws ``batch_size`` windows of ``context`` bases at random offsets of the training
genomes, each reverse-complemented with probability 1/2 (DNA has no preferred strand). The
held-out report scores the model and the k-mer baselines on the same windows of the held-out
species, from position :data:`SCORE_FROM` on (so every Markov order up to 12 has full context).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from paperlab.icl.dna import DNASplit, load_split
from paperlab.icl.dnamodel import (
    DNAModelConfig,
    build_model,
    cached_model_dir,
    read_meta,
    save_model,
)
from paperlab.icl.markov import bits, eval_windows, markov_table

log = logging.getLogger(__name__)
SCORE_FROM = 16
StepCallback = Callable[[int, float], None]




@dataclass
class TrainReport:
    """What training produced: where the model is and how good it is."""

    path: Path
    config: dict[str, Any]
    heldout_nats: float
    markov_nats: dict[int, float]
    seconds: float
    losses: list[float] = field(default_factory=list)
    cached: bool = False

    @property
    def best_markov(self) -> tuple[int, float]:
        k = min(self.markov_nats, key=lambda o: self.markov_nats[o])
        return k, self.markov_nats[k]

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "heldout_nats_per_base": self.heldout_nats,
            "heldout_bits_per_base": bits(self.heldout_nats),
            "markov_nats_per_base": {str(k): v for k, v in self.markov_nats.items()},
            "train_seconds": self.seconds,
            "losses": self.losses,
        }


def _batch(codes: np.ndarray, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    starts = rng.integers(0, len(codes) - length, size=batch)
    out = np.stack([codes[s : s + length] for s in starts])
    flip = rng.random(batch) < 0.5
    out[flip] = 3 - out[flip, ::-1]  # reverse complement
    return out


def heldout_loss(model: Any, windows: list[np.ndarray], start: int = SCORE_FROM) -> float:
    """Mean next-base NLL (nats) of the model on positions ``start:`` of each window."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(windows), 8):
            x = torch.as_tensor(np.stack(windows[i : i + 8]).astype(np.int64))
            logits = model(input_ids=x).logits[:, :-1, :4].float()  # (B, T-1, 4): bases only
            logp = torch.log_softmax(logits, dim=-1)
            tgt = x[:, 1:]
            nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)[:, start - 1 :]
            total += float(nll.sum())
            count += nll.numel()
    return total / count


def train_dna(
    cfg: DNAModelConfig,
    out_dir: Path,
    on_step: StepCallback | None = None,
    split: DNASplit | None = None,
    time_budget_s: float | None = None,
    init_from: Path | None = None,
) -> TrainReport:
    """Train a DNA model with ``cfg`` and save it (safetensors) to ``out_dir``.

    Args:
        cfg: architecture and recipe.
        out_dir: the model directory (replaced atomically).
        on_step: called after every step with (step, loss), e.g. to drive a progress bar.
        split: pre-loaded DNA (loaded from the packages when omitted).
        time_budget_s: stop after this many seconds of training even if ``cfg.steps`` are not
            done; the learning-rate schedule then follows the elapsed fraction of the budget
            (whichever of steps and time is further along), so a run cut short by a busy machine
            still ends its cosine decay. The steps actually run are recorded as ``steps_done``.
        init_from: continue from the weights of a model saved by an earlier run with the same
            architecture (a fresh optimizer and schedule; the record adds up the steps).
    """
    import torch

    threads = torch.get_num_threads()  # sized by the command (paperlab.threads), not here
    split = split or load_split(tuple(cfg.sources))
    t0 = time.perf_counter()
    model = build_model(cfg)
    before = {}
    if init_from is not None:
        before = _load_weights(model, Path(init_from))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            betas=(0.9, 0.95))

    def lr_at(step: int, elapsed: float) -> float:  # linear warmup, cosine decay to 10%
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        if time_budget_s:
            p = max(p, elapsed / time_budget_s)
        return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, p))))

    rng = np.random.default_rng(cfg.seed)
    losses: list[float] = []
    t_train = time.perf_counter()
    for step in range(cfg.steps):
        elapsed = time.perf_counter() - t_train
        if time_budget_s is not None and elapsed >= time_budget_s:
            log.info("time budget of %.0f s reached after %d steps", time_budget_s, step)
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, elapsed)
        x = torch.as_tensor(_batch(split.train, rng, cfg.batch_size, cfg.context).astype(np.int64))
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if on_step:
            on_step(step, losses[-1])
    seconds = time.perf_counter() - t0
    windows = eval_windows(split.held_out, cfg.eval_windows, cfg.context)
    nats = heldout_loss(model, windows)
    if before.get("markov_nats_per_base") and before.get("config", {}).get("eval_windows") == cfg.eval_windows \
            and before.get("config", {}).get("sources") in (list(cfg.sources), tuple(cfg.sources)):
        # same data and held-out windows as the run we continue: its baselines stand (and on
        # 136 Mb of training DNA they cost minutes to recount)
        mk = {int(k): float(v) for k, v in before["markov_nats_per_base"].items()}
    else:
        mk = markov_table(split.train, windows, SCORE_FROM)
    log.info("trained DNA model in %.0fs on %d threads: held-out %.4f nats/base", seconds, threads, nats)
    report = TrainReport(out_dir, cfg.model_dump(), nats, mk, seconds, losses)
    meta = report.as_dict() | {
        "train_files": split.train_files,
        "held_out_files": split.held_out_files,
        "steps_done": len(losses),
        "train_bases": len(losses) * cfg.batch_size * cfg.context,
        "parameters": sum(p.numel() for p in model.parameters()),
        "time_budget_s": time_budget_s,
    }
    if init_from is not None:
        meta["init_from"] = str(init_from)
        meta["steps_total"] = int(before.get("steps_total", before.get("steps_done", 0))) + len(losses)
        meta["train_bases_total"] = int(
            before.get("train_bases_total", before.get("train_bases", 0))
        ) + len(losses) * cfg.batch_size * cfg.context
    save_model(model, out_dir, meta)
    return report


def _load_weights(model: Any, path: Path) -> dict[str, Any]:
    """Copy the weights saved at ``path`` into ``model``; return that run's training record.

    Raises:
        ICLError: no model there, or one of another architecture.
    """
    from safetensors.torch import load_file

    from paperlab.errors import ICLError

    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ICLError(f"no saved DNA model to continue from at {path}")
    state = load_file(str(weights))
    own = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if any(k in own and tuple(own[k].shape) != shp for k, shp in shapes.items()):
        raise ICLError(f"the model at {path} has another architecture than this preset; "
                       "continue it with the preset it was trained with")
    missing, _ = model.load_state_dict(state, strict=False)
    if [m for m in missing if not m.endswith("lm_head.weight")]:  # tied to the embeddings
        raise ICLError(f"the model at {path} lacks weights {missing[:3]}; it is not a DNA model of this preset")
    return read_meta(path)


def ensure_dna_model(
    cfg: DNAModelConfig, on_step: StepCallback | None = None, retrain: bool = False
) -> TrainReport:
    """Load the cached model for ``cfg`` or train and cache it."""
    path = cached_model_dir(cfg)
    meta = read_meta(path)
    if meta and not retrain:
        return TrainReport(
            path, meta["config"], meta["heldout_nats_per_base"],
            {int(k): v for k, v in meta["markov_nats_per_base"].items()},
            meta["train_seconds"], meta.get("losses", []), cached=True,
        )
    return train_dna(cfg, path, on_step=on_step)
