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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from paperlab.io import cache_dir
from paperlab.paradiff.config import ParadiffConfig, config_hash
from paperlab.paradiff.errors import CheckpointError
from paperlab.paradiff.model import MASK, Layout, ParaDiffModel
from paperlab.paradiff.store import load_checkpoint, save_checkpoint
from paperlab.paradiff.task import Example, make_example, make_examples
from paperlab.paradiff.tokens import drop_condition, target_tokens
from paperlab.paradiff.vq import VQModel, ensure_vq, vq_hash
from paperlab.threads import one_thread, set_threads

__all__ = ["Trained", "bench_examples", "ensure_model", "load_model", "mask_outputs", "set_threads", "train_model"]

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

    @property
    def layout(self) -> Layout:
        return self.model.layout


# Bumped whenever the model code changes what a checkpoint means, so old caches are not reused.
ARCH_VERSION = 4


def model_hash(cfg: ParadiffConfig) -> str:
    """What the transformer's weights depend on: VQ, architecture and training (not sampling)."""
    return config_hash({"vq": vq_hash(cfg.vq), "model": cfg.model.model_dump(), "train": cfg.train.model_dump(),
                        "arch": ARCH_VERSION})


def bench_examples(cfg: ParadiffConfig, n: int | None = None) -> list[Example]:
    """The held-out benchmark prompts: 2/3 editing, 1/3 generation, from the bench seed."""
    n = n or cfg.bench.n_prompts
    return make_examples(n, cfg.bench.seed, n_edit=round(n * 2 / 3))


def mask_outputs(layout: Layout, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A copy of clean sequences with each row's image and text masked at their own cosine ratio."""
    x = x0.clone()
    b = x.shape[0]
    for seg in (layout.out_image, layout.text):
        n = seg.stop - seg.start
        r = torch.rand(b, generator=gen)
        k = torch.floor(n * torch.cos(math.pi * r / 2)).long().clamp(min=1)  # (B,)
        rank = torch.rand(b, n, generator=gen).argsort(-1).argsort(-1)  # a random rank per position
        x[:, seg] = torch.where(rank < k[:, None], MASK, x[:, seg])
    return x


def train_model(cfg: ParadiffConfig, vq: VQModel,
                on_step: Callable[[int, float], None] | None = None) -> ParaDiffModel:
    """Train the joint model from scratch on fresh examples (never the benchmark's prompts)."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)
    rng = random.Random(tc.seed)
    device = torch.device(cfg.device)
    layout = Layout(n_image=vq.n_tokens, codebook=vq.cfg.codebook)
    model = ParaDiffModel(cfg.model, layout).to(device)
    held_out = {e.key for e in bench_examples(cfg)}
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, tc.warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / tc.steps))))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
    model.train()
    for step in range(tc.steps):
        batch: list[Example] = []
        while len(batch) < tc.batch:
            ex = make_example(rng)
            if ex.key not in held_out:
                batch.append(ex)
        x0 = target_tokens(layout, vq, batch)
        x = mask_outputs(layout, x0, gen)
        drop = torch.rand(tc.batch, generator=gen) < tc.cond_dropout
        x = drop_condition(layout, x, drop)
        x, x0 = x.to(device), x0.to(device)
        with autocast:
            logits = model(x)
        masked = x == MASK
        loss = F.cross_entropy(logits[masked], x0[masked])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step, loss.item())
    return model.eval()


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
                 on_step: Callable[[str, int, float], None] | None = None) -> Trained:
    """The cached VQ + model for ``cfg``; whatever is missing (or everything, with ``retrain``) is trained.

    ``on_step(stage, step, loss)`` reports progress, stage "vq" or "model".
    """
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        from paperlab.paradiff.errors import ParadiffConfigError

        raise ParadiffConfigError(f"preset {cfg.name!r} needs CUDA, which this machine lacks; use --preset tiny or small")
    t0 = time.perf_counter()
    with one_thread():
        vq, vrep = ensure_vq(cfg.vq, retrain=retrain,
                             on_step=None if on_step is None else (lambda s, v: on_step("vq", s, v)))
    vq = vq.to("cpu")
    path = model_cache_path(cfg)
    if path.exists() and not retrain and vrep.cached:
        return Trained(cfg, vq, load_model(path, cfg, vq), path, True, 0.0, vrep.roundtrip)
    with one_thread():  # the same weights on every machine of a kind (tests measure them)
        model = train_model(cfg, vq, None if on_step is None else (lambda s, v: on_step("model", s, v)))
    secs = time.perf_counter() - t0
    save_checkpoint(path, model.state_dict(), {"kind": "model", "hash": model_hash(cfg), "preset": cfg.name,
                                               "config": cfg.model_dump(), "train_seconds": round(secs, 1)})
    log.info("trained the %s model in %.0f s", cfg.name, secs)
    return Trained(cfg, vq, model, path, False, secs, vrep.roundtrip)


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
