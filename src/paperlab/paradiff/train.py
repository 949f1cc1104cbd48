"""Masked-diffusion training of the joint model, and the cache of trained models.

As published: only the outputs are masked; the image and the text each draw their own ratio
r ~ U(0, 1) and mask floor(len * cos(pi r / 2)) of their tokens (at least one, so every row
teaches something); cross-entropy on the masked positions only; a share of rows (10%) loses
its condition so the same model also predicts unconditionally, for classifier-free guidance.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperlab.io import cache_dir
from paperlab.paradiff.config import ParadiffConfig, config_hash
from paperlab.paradiff.errors import CheckpointError
from paperlab.paradiff.model import MASK, Layout, ParaDiffModel
from paperlab.paradiff.store import load_checkpoint, save_checkpoint
from paperlab.paradiff.task import Example, make_example, make_examples
from paperlab.paradiff.tokens import drop_condition, target_tokens
from paperlab.paradiff.vq import VQModel, ensure_vq, vq_hash
from paperlab.train import (
    DistContext,
    LossParts,
    OptimSpec,
    Schedule,
    TrainResult,
    TrainSpec,
    full_state_dict,
    row_seeds,
    run_training,
    sample_generator,
    sample_seed,
    single_process,
)

__all__ = ["DiffusionTask", "Trained", "bench_examples", "ensure_model", "load_model", "mask_outputs",
           "train_model"]

log = logging.getLogger(__name__)




@dataclass
class Trained:
    """A ready model: config, tokenizer, transformer, and where it came from."""

    cfg: ParadiffConfig
    vq: VQModel
    model: ParaDiffModel
    path: Path
    cached: bool = True
    seconds: float = 0.0
    vq_roundtrip: float = -1.0
    train: dict[str, Any] | None = None  # losses per step, world size ... (train.json)

    @property
    def layout(self) -> Layout:
        return self.model.layout


# Bumped whenever the model code changes what a checkpoint means, so old caches are not reused.
ARCH_VERSION = 5  # 5: per-sample randomness (the same batches on any number of processes)


def model_hash(cfg: ParadiffConfig) -> str:
    """What the transformer's weights depend on: VQ, architecture and training (not sampling)."""
    train = cfg.train.model_dump(exclude={"threads", "save_every"})  # how, not what, is trained
    return config_hash({"vq": vq_hash(cfg.vq), "model": cfg.model.model_dump(), "train": train,
                        "arch": ARCH_VERSION})


def bench_examples(cfg: ParadiffConfig, n: int | None = None) -> list[Example]:
    """The held-out benchmark prompts: 2/3 editing, 1/3 generation, from the bench seed."""
    n = n or cfg.bench.n_prompts
    return make_examples(n, cfg.bench.seed, n_edit=round(n * 2 / 3))


def mask_outputs(layout: Layout, x0: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """A copy of clean sequences with each row's image and text masked at their own cosine ratio.

    Row i draws its ratios and which positions to mask from ``gens[i]`` alone, so a row is
    masked the same whichever batch (or process) it is in.
    """
    x = x0.clone()
    for i, g in enumerate(gens):
        for seg in (layout.out_image, layout.text):
            n = seg.stop - seg.start
            r = float(torch.rand(1, generator=g))
            k = max(1, math.floor(n * math.cos(math.pi * r / 2)))
            rank = torch.rand(n, generator=g).argsort().argsort()  # a random rank per position
            x[i, seg] = torch.where(rank < k, MASK, x[i, seg])
    return x


class DiffusionTask:
    """Masked-diffusion training as a task of the shared loop (paperlab.train).

    Sample i of step s is a fresh task example (never a benchmark prompt), masked and maybe
    stripped of its condition, all drawn from (training seed, s, i): the same samples and masks
    on one process or many.
    """

    def __init__(self, cfg: ParadiffConfig, vq: VQModel, layout: Layout, device: torch.device) -> None:
        self.cfg, self.vq, self.layout, self.device = cfg, vq, layout, device
        self.held_out = {e.key for e in bench_examples(cfg)}

    def _example(self, step: int, i: int) -> Example:
        rng = random.Random(sample_seed(self.cfg.train.seed, step, i))
        while True:
            ex = make_example(rng)
            if ex.key not in self.held_out:
                return ex

    def batch(self, step: int, rows: range) -> dict[str, Any]:
        tc = self.cfg.train
        x0 = target_tokens(self.layout, self.vq, [self._example(step, i) for i in rows])
        gens = [sample_generator(tc.seed, step, i, 1) for i in rows]
        x = mask_outputs(self.layout, x0, gens)
        drop = torch.tensor([float(torch.rand(1, generator=g)) < tc.cond_dropout for g in gens])
        x = drop_condition(self.layout, x, drop)
        return {"x": x, "x0": x0, "seeds": [sample_seed(tc.seed, step, i, 2) for i in rows]}

    def loss(self, model: nn.Module, b: dict[str, Any]) -> LossParts:
        x, x0 = b["x"].to(self.device), b["x0"].to(self.device)
        with row_seeds(b["seeds"]):  # dropout masks per sample, when the model has dropout
            logits = model(x)
        masked = x == MASK
        total = F.cross_entropy(logits[masked].float(), x0[masked], reduction="sum")
        return LossParts(total, int(masked.sum()), tokens=int(x.numel()))


def train_spec(cfg: ParadiffConfig) -> TrainSpec:
    """The paradiff run: AdamW (0.9, 0.98), warm-up then cosine decay to 0, clipping at 1."""
    tc = cfg.train
    return TrainSpec(steps=tc.steps, global_batch=tc.batch,
                     optim=OptimSpec(lr=tc.lr, betas=(0.9, 0.98), weight_decay=tc.weight_decay),
                     schedule=Schedule("cosine", warmup=tc.warmup, final_ratio=0.0), grad_clip=1.0,
                     bf16=cfg.dtype == "bfloat16", save_every=tc.save_every, label=f"{cfg.name} model")


def train_model(cfg: ParadiffConfig, vq: VQModel, on_step: Callable[[int, float, dict[str, float]], None] | None = None, *,
                ctx: DistContext | None = None, state_dir: Path | None = None,
                console: Any = None) -> tuple[ParaDiffModel, TrainResult]:
    """Train the joint model from scratch (one process, or sharded over a torchrun launch).

    Returns the trained model whole (on every rank) and the run's record (losses per step).
    """
    ctx = ctx or single_process(cfg.device)
    torch.manual_seed(cfg.train.seed)
    layout = Layout(n_image=vq.n_tokens, codebook=vq.cfg.codebook)
    model = ParaDiffModel(cfg.model, layout)
    spec = train_spec(cfg)
    w, result = run_training(model, DiffusionTask(cfg, vq, layout, ctx.device), spec, ctx, state_dir=state_dir,
                             fingerprint={"model_hash": model_hash(cfg)}, on_step=on_step,
                             console=console)
    if w.mode == "fsdp":
        full = full_state_dict(w)  # gathered on rank 0, then sent to every rank
        whole = ParaDiffModel(cfg.model, layout)
        whole.load_state_dict(ctx.broadcast(full))
        return whole.to(ctx.device).eval(), result
    return w.module.eval(), result  # type: ignore[return-value]


def model_cache_path(cfg: ParadiffConfig) -> Path:
    return cache_dir("paradiff") / f"model-{model_hash(cfg)}"


def load_model(path: Path, cfg: ParadiffConfig, vq: VQModel) -> ParaDiffModel:
    """Load a model checkpoint trained with ``cfg``'s VQ, architecture and training config."""
    tensors, _ = load_checkpoint(path, "model", model_hash(cfg))
    model = ParaDiffModel(cfg.model, Layout(n_image=vq.n_tokens, codebook=vq.cfg.codebook))
    try:
        model.load_state_dict(tensors)
    except RuntimeError:
        raise CheckpointError(f"model checkpoint {path} does not match its config; delete it and retrain") from None
    return model.to(cfg.device).eval()


def ensure_model(cfg: ParadiffConfig, *, retrain: bool = False,
                 on_step: Callable[[str, int, float], None] | None = None,
                 ctx: DistContext | None = None, console: Any = None) -> Trained:
    """The cached VQ + model for ``cfg``; whatever is missing (or everything, with ``retrain``) is trained.

    Under torchrun (``ctx`` from :func:`paperlab.train.init_distributed`) rank 0 fits the VQ
    tokenizer (seconds, one process) while the others wait, then every rank trains its share of
    the transformer's batches and rank 0 writes the cache. An interrupted training resumes from
    its saved state on the next call. ``on_step(stage, step, loss)`` reports progress, stage
    "vq" or "model" (rank 0).
    """
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        from paperlab.paradiff.errors import ParadiffConfigError

        raise ParadiffConfigError(f"preset {cfg.name!r} needs CUDA, which this machine lacks; use --preset tiny or small")
    ctx = ctx or single_process(cfg.device)
    t0 = time.perf_counter()
    vq_step = None if on_step is None else (lambda s, v: on_step("vq", s, v))
    if ctx.is_main:
        vq, vrep = ensure_vq(cfg.vq, retrain=retrain, on_step=vq_step)
    ctx.barrier()
    if not ctx.is_main:
        vq, _ = ensure_vq(cfg.vq)  # rank 0 has just cached it
    vrep = ctx.broadcast(vrep if ctx.is_main else None)
    vq = vq.to("cpu")
    path = model_cache_path(cfg)
    if path.exists() and not retrain and vrep.cached:
        return Trained(cfg, vq, load_model(path, cfg, vq), path, True, 0.0, vrep.roundtrip, _saved_train(path))
    state = cache_dir("paradiff") / f".state-{model_hash(cfg)}"
    if retrain and ctx.is_main:
        shutil.rmtree(state, ignore_errors=True)  # --retrain starts over
    ctx.barrier()
    model, result = train_model(cfg, vq, None if on_step is None else (lambda s, v, _: on_step("model", s, v)),
                                ctx=ctx, state_dir=state, console=console)
    secs = time.perf_counter() - t0
    record = _train_record(result)
    if ctx.is_main:
        save_checkpoint(path, model.state_dict(), {"kind": "model", "hash": model_hash(cfg), "preset": cfg.name,
                                                   "config": cfg.model_dump(), "train_seconds": round(secs, 1),
                                                   "train": record})
        log.info("trained the %s model in %.0f s", cfg.name, secs)
    ctx.barrier()
    return Trained(cfg, vq, model, path, False, secs, vrep.roundtrip, record)


def _train_record(result: TrainResult) -> dict[str, Any]:
    """What train.json and the checkpoint's metadata keep of a training run."""
    return {"steps": result.steps, "losses": result.losses, "world_size": result.world_size,
            "parallel": result.parallel, "seconds": round(result.seconds, 2),
            "tokens_per_s": round(result.tokens_per_s, 1), "resumed_from": result.resumed_from}


def _saved_train(path: Path) -> dict[str, Any] | None:
    from paperlab.paradiff.store import read_meta

    train = read_meta(path).get("train")
    return train if isinstance(train, dict) else None


def export_trained(trained: Trained, out: Path) -> Path:
    """Copy the VQ and the model into ``out/vq`` and ``out/model`` (a portable checkpoint)."""
    from paperlab.paradiff.vq import vq_cache_path

    out.mkdir(parents=True, exist_ok=True)
    tensors, meta = load_checkpoint(vq_cache_path(trained.cfg.vq), "vq", vq_hash(trained.cfg.vq))
    save_checkpoint(out / "vq", tensors, meta)
    tensors, meta = load_checkpoint(trained.path, "model", model_hash(trained.cfg))
    save_checkpoint(out / "model", tensors, meta)
    return out


def load_trained(cfg: ParadiffConfig, checkpoint: Path) -> Trained:
    """A model exported by :func:`export_trained`, refused unless trained with ``cfg``.

    Raises:
        CheckpointError: missing, corrupt, or trained with another config.
    """
    from paperlab.paradiff.vq import load_vq

    if not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint {checkpoint} is not a directory; pass the --out of `paperlab paradiff train`")
    vq = load_vq(checkpoint / "vq", cfg.vq)
    return Trained(cfg, vq, load_model(checkpoint / "model", cfg, vq), checkpoint / "model")
