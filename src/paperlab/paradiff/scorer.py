"""A learned text-image consistency scorer (CLIP-like), trained here, for ParaRL rewards.

Two small encoders, one over the reasoning text's word ids and one over the image's VQ codes,
map each side to a unit vector; a symmetric InfoNCE loss pulls matching (text, image) pairs of
the task together. Both sides are trained partly masked (each draws its own cosine ratio, as in
the diffusion model), so the scorer can also judge the intermediate states of a decoding
trajectory. The exact scene checker never enters the reward: RL sees only this learned score.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from paperlab.io import cache_dir
from paperlab.paradiff.config import _Strict, config_hash
from paperlab.paradiff.model import MASK, PAD, Block
from paperlab.paradiff.store import load_checkpoint, save_checkpoint
from paperlab.paradiff.task import TEXT_LEN, WORDS, make_example
from paperlab.paradiff.tokens import image_codes, target_tokens

__all__ = ["Scorer", "ScorerConfig", "ensure_scorer", "retrieval_accuracy", "train_scorer"]


class ScorerConfig(_Strict):
    d_model: int = Field(64, ge=8)
    n_layers: int = Field(1, ge=1)
    n_heads: int = Field(4, ge=1)
    dim: int = Field(32, ge=4, description="shared embedding size")
    steps: int = Field(400, ge=1)
    batch: int = Field(64, ge=2)
    lr: float = Field(3e-3, gt=0)
    seed: int = 0


class _Encoder(nn.Module):
    """Tokens -> mean-pooled transformer features -> unit vector."""

    def __init__(self, vocab: int, length: int, cfg: ScorerConfig) -> None:
        super().__init__()
        from paperlab.paradiff.config import ModelConfig

        mc = ModelConfig(d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_ff=4 * cfg.d_model)
        self.tok = nn.Embedding(vocab, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(length, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(mc) for _ in range(cfg.n_layers))
        self.out = nn.Linear(cfg.d_model, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tok(x) + self.pos
        for blk in self.blocks:
            h = blk(h)[0]
        return F.normalize(self.out(h.mean(1)), dim=-1)


class Scorer(nn.Module):
    """Cosine similarity of a (partial) reasoning text and a (partial) image.

    Text: (B, T) word ids, ``<mask>`` allowed. Image: (B, N) codes, -1 for masked.
    """

    def __init__(self, cfg: ScorerConfig, n_image: int, codebook: int) -> None:
        super().__init__()
        self.cfg, self.codebook = cfg, codebook
        self.text = _Encoder(len(WORDS), TEXT_LEN, cfg)
        self.image = _Encoder(codebook + 1, n_image, cfg)  # the last id is "masked"
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def embed(self, text: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = torch.where(image < 0, self.codebook, image)
        return self.text(text), self.image(img)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """(B,) cosine similarity of each row's text and image."""
        t, i = self.embed(text, image)
        return (t * i).sum(-1)

    @torch.no_grad()
    def reward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Similarity mapped to [0, 1] (the normalised reward)."""
        return (self(text, image) + 1) / 2


def _mask_pairs(text: torch.Tensor, img: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a cosine-ratio share of each side (often none: half the rows stay clean)."""
    out = []
    for x, fill in ((text, MASK), (img, -1)):
        b, n = x.shape
        r = torch.rand(b, generator=gen)
        k = torch.floor(n * torch.cos(math.pi * r / 2)).long()
        k = torch.where(torch.rand(b, generator=gen) < 0.5, torch.zeros_like(k), k)
        rank = torch.rand(b, n, generator=gen).argsort(-1).argsort(-1)
        out.append(torch.where(rank < k[:, None], torch.full_like(x, fill), x))
    return out[0], out[1]


def _pairs(vq, examples):  # type: ignore[no-untyped-def]
    from paperlab.paradiff.model import Layout

    lay = Layout(n_image=vq.n_tokens, codebook=vq.cfg.codebook)
    x = target_tokens(lay, vq, examples)
    return x[:, lay.text], x[:, lay.out_image] - lay.n_words


def train_scorer(cfg: ScorerConfig, vq, on_step: Callable[[int, float], None] | None = None,  # type: ignore[no-untyped-def]
                 device: str = "cpu") -> Scorer:
    """Contrastive training on fresh task examples (targets), partly masked, on ``device``.

    Pairs and masks are drawn on the CPU (the same streams on any device), then moved.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed + 1)
    sc = Scorer(cfg, vq.n_tokens, vq.cfg.codebook).to(device)
    opt = torch.optim.AdamW(sc.parameters(), lr=cfg.lr)
    for step in range(cfg.steps):
        text, img = _pairs(vq, [make_example(rng) for _ in range(cfg.batch)])
        text, img = _mask_pairs(text, img, gen)
        t, i = sc.embed(text.to(device), img.to(device))
        logits = sc.logit_scale.exp().clamp(max=100) * t @ i.T
        labels = torch.arange(len(t), device=t.device)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step, loss.item())
    return sc.eval()


@torch.no_grad()
def retrieval_accuracy(sc: Scorer, vq, n: int = 256, seed: int = 99, masked: float = 0.0) -> float:  # type: ignore[no-untyped-def]
    """Top-1 text -> image retrieval among ``n`` held-out pairs (``masked`` share of each side masked)."""
    from paperlab.paradiff.task import make_examples

    text, img = _pairs(vq, make_examples(n, seed))
    if masked > 0:
        gen = torch.Generator().manual_seed(seed)
        k = int(masked * text.shape[1]), int(masked * img.shape[1])
        for x, fill, kk in ((text, MASK, k[0]), (img, -1, k[1])):
            rank = torch.rand(x.shape, generator=gen).argsort(-1).argsort(-1)
            x[rank < kk] = fill
    dev = sc.logit_scale.device
    t, i = sc.embed(text.to(dev), img.to(dev))
    return float(((t @ i.T).argmax(-1).cpu() == torch.arange(n)).float().mean())


@dataclass
class ScorerReport:
    path: Path
    cached: bool
    seconds: float
    retrieval: float
    retrieval_half_masked: float


def ensure_scorer(cfg: ScorerConfig, vq, *, retrain: bool = False,  # type: ignore[no-untyped-def]
                  device: str = "cpu") -> tuple[Scorer, ScorerReport]:
    """The cached scorer for (``cfg``, the VQ config) on ``device``, trained (there) first when absent."""
    from paperlab.paradiff.vq import vq_hash

    h = config_hash({"scorer": cfg.model_dump(), "vq": vq_hash(vq.cfg)})
    path = cache_dir("paradiff") / f"scorer-{h}"
    if path.exists() and not retrain:
        tensors, meta = load_checkpoint(path, "scorer", h)
        sc = Scorer(cfg, vq.n_tokens, vq.cfg.codebook)
        sc.load_state_dict(tensors)
        return sc.to(device).eval(), ScorerReport(path, True, 0.0, meta["retrieval_top1"], meta["retrieval_top1_half_masked"])
    t0 = time.perf_counter()
    sc = train_scorer(cfg, vq, device=device)
    r0, r5 = retrieval_accuracy(sc, vq), retrieval_accuracy(sc, vq, masked=0.5)
    secs = time.perf_counter() - t0
    save_checkpoint(path, sc.state_dict(), {"kind": "scorer", "hash": h, "retrieval_top1": r0,
                                            "retrieval_top1_half_masked": r5, "train_seconds": round(secs, 1)})
    return sc, ScorerReport(path, False, secs, r0, r5)


del PAD, image_codes
