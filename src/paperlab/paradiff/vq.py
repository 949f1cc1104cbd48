"""A compact VQ-VAE image tokenizer: each 4x4 patch of a 32x32 image becomes one code.

The encoder and decoder act patch by patch (a strided conv and 1x1 convs), so an image is
exactly its grid of patch codes, which suits scenes drawn from a finite set of cell images.
Codebook collapse is the usual failure of small VQ models; two standard remedies keep every
code in play: the codebook starts from encoder outputs (k-means style), and codes unused for a
while are restarted on random encoder outputs.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from paperlab.io import cache_dir
from paperlab.paradiff.config import VQConfig, config_hash
from paperlab.paradiff.scene import CELL, GRID, IMAGE_SIZE, cell_templates, detect, render_batch
from paperlab.paradiff.store import load_checkpoint, save_checkpoint
from paperlab.paradiff.task import make_example

__all__ = ["VQ_VERSION", "VQModel", "VQReport", "ensure_vq", "load_vq", "patch_universe", "random_cell_images",
           "roundtrip_accuracy", "train_vq", "vq_hash"]

log = logging.getLogger(__name__)


class VQModel(nn.Module):
    """Patch encoder -> nearest codebook entry -> patch decoder."""

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p, h = cfg.patch, cfg.hidden
        self.encoder = nn.Sequential(nn.Conv2d(3, h, p, stride=p), nn.GELU(), nn.Conv2d(h, cfg.dim, 1))
        self.codebook = nn.Parameter(torch.randn(cfg.codebook, cfg.dim) * 0.1)
        self.decoder = nn.Sequential(nn.Conv2d(cfg.dim, h, 1), nn.GELU(), nn.ConvTranspose2d(h, 3, p, stride=p))
        # What the decoder reads for each code: the codebook at the end of training, then tuned
        # on its own, so two codes that encode look-alike patches (close in the encoder's space)
        # can still decode far apart.
        self.decode_table = nn.Parameter(torch.zeros(cfg.codebook, cfg.dim))

    @property
    def grid(self) -> int:
        return IMAGE_SIZE // self.cfg.patch

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid

    def _nearest(self, z: torch.Tensor) -> torch.Tensor:
        # z (B, D, g, g) -> codes (B, g, g)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        # exact distances: look-alike patches can sit closer than the matmul form's rounding
        d = torch.cdist(flat, self.codebook, compute_mode="donot_use_mm_for_euclid_dist")
        return d.argmin(-1).view(z.shape[0], z.shape[2], z.shape[3])

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) float in [0, 1] -> (B, 64) codes, row-major."""
        return self._nearest(self.encoder(images * 2 - 1)).flatten(1)

    def decode_raw(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, 64) codes -> (B, 3, 32, 32) decoder output mapped to [0, 1] but not clamped."""
        q = self.decode_table[codes].view(codes.shape[0], self.grid, self.grid, -1).permute(0, 3, 1, 2)
        return (self.decoder(q) + 1) / 2

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, 64) codes -> (B, 3, 32, 32) float images in [0, 1]."""
        return self.decode_raw(codes).clamp(0, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (reconstruction in [0, 1], loss, codes)."""
        z = self.encoder(images * 2 - 1)  # (B, D, g, g)
        codes = self._nearest(z)
        q = self.codebook[codes].permute(0, 3, 1, 2)
        vq_loss = F.mse_loss(q, z.detach()) + self.cfg.beta * F.mse_loss(z, q.detach())
        q = z + (q - z).detach()  # straight-through
        recon = (self.decoder(q) + 1) / 2
        return recon, F.mse_loss(recon, images) + vq_loss, codes


def random_cell_images(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, 32, 32) float images whose 16 cells are drawn uniformly from the 25 cell images.

    Uniform cells rather than task scenes: every patch the task can produce (and there are
    only about a hundred) then shows up equally often, so rare ones still get their own code.
    """
    templ, _ = cell_templates()
    t = torch.from_numpy(templ).float().view(-1, CELL, CELL, 3)  # (25, 8, 8, 3)
    idx = torch.randint(0, t.shape[0], (n, GRID, GRID), generator=gen)
    cells = t[idx]  # (n, G, G, 8, 8, 3)
    return cells.permute(0, 5, 1, 3, 2, 4).reshape(n, 3, IMAGE_SIZE, IMAGE_SIZE).contiguous()


@torch.no_grad()
def roundtrip_accuracy(vq: VQModel, n: int = 512, seed: int = 123) -> float:
    """Share of random scenes the detector reads exactly after encode -> decode."""
    rng = random.Random(seed)
    scenes = [make_example(rng).target for _ in range(n)]
    imgs = torch.from_numpy(render_batch(scenes)).permute(0, 3, 1, 2).float() / 255.0
    recon = vq.decode(vq.encode(imgs)).permute(0, 2, 3, 1).numpy()
    return sum(d.scene == s for d, s in zip(detect(recon), scenes, strict=True)) / n


@dataclass
class VQReport:
    path: Path
    cached: bool
    seconds: float
    roundtrip: float
    codes_used: int


def train_vq(cfg: VQConfig, on_step: Callable[[int, float], None] | None = None) -> VQModel:
    """Train a VQ model from scratch on random scene renders."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    vq = VQModel(cfg)
    opt = torch.optim.Adam(vq.parameters(), lr=cfg.lr)
    with torch.no_grad():  # codebook from encoder outputs, so no code starts out of reach
        z = vq.encoder(random_cell_images(64, gen) * 2 - 1).permute(0, 2, 3, 1).reshape(-1, cfg.dim)
        vq.codebook.copy_(z[torch.randint(0, z.shape[0], (cfg.codebook,))] + 0.01 * torch.randn(cfg.codebook, cfg.dim))
    usage = torch.zeros(cfg.codebook)
    for step in range(cfg.steps):
        imgs = random_cell_images(cfg.batch, gen)
        _, loss, codes = vq(imgs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        usage += torch.bincount(codes.flatten(), minlength=cfg.codebook).float()
        if (step + 1) % 50 == 0 and step + 1 < cfg.steps * 0.8:
            dead = (usage == 0).nonzero().flatten()
            if len(dead):
                with torch.no_grad():
                    z = vq.encoder(imgs * 2 - 1).permute(0, 2, 3, 1).reshape(-1, cfg.dim)
                    vq.codebook[dead] = z[torch.randint(0, z.shape[0], (len(dead),))]
            usage.zero_()
            _split_merged(vq)  # training goes on with the pair apart, so the encoder learns to separate it
        if on_step is not None:
            on_step(step, loss.item())
    _split_merged(vq)
    with torch.no_grad():
        vq.decode_table.copy_(vq.codebook)
    _tune_decoder(vq, cfg, gen)
    return vq.eval()


def patch_universe(patch: int) -> torch.Tensor:
    """(P, 3, patch, patch): every distinct patch a task image can hold (from the 25 cell images)."""
    templ, _ = cell_templates()
    t = torch.from_numpy(templ).float().view(-1, CELL, CELL, 3)
    k = CELL // patch
    pats = t.view(-1, k, patch, k, patch, 3).permute(0, 1, 3, 5, 2, 4).reshape(-1, 3, patch, patch)
    return torch.unique(pats, dim=0)


@torch.no_grad()
def _split_merged(vq: VQModel) -> int:
    """Give every distinct task patch its own code; returns how many codes were moved.

    Training can leave two look-alike patches on one code (a small circle and a small square
    differ in 4 of 64 pixels, a small share of the reconstruction loss). The patches a task
    image can hold are known and few, so after training each patch that shares its code is
    given an unused code placed exactly at its encoding (distance 0: it becomes the nearest).
    """
    pats = patch_universe(vq.cfg.patch)
    z = vq.encoder(pats * 2 - 1).flatten(1)  # (P, D): one position per patch
    codes = torch.cdist(z, vq.codebook, compute_mode="donot_use_mm_for_euclid_dist").argmin(-1)
    free = [c for c in range(vq.cfg.codebook) if c not in set(codes.tolist())]
    moved = 0
    for code in codes.unique().tolist():
        members = (codes == code).nonzero().flatten()
        if len(members) < 2:
            continue
        # the member nearest the code keeps it, the others get free codes, each code placed
        # exactly on its patch's encoding (the shared code may sit nearer the other patch)
        d = (z[members] - vq.codebook[code]).pow(2).sum(-1)
        order = members[d.argsort()].tolist()
        vq.codebook[code] = z[order[0]]
        for m in order[1:]:
            if not free:
                return moved
            vq.codebook[free.pop()] = z[m]
            moved += 1
    return moved


def _tune_decoder(vq: VQModel, cfg: VQConfig, gen: torch.Generator, steps: int = 200) -> None:
    """Train the decoder and its code table (encoder and codebook fixed): every code decodes to its patch."""
    opt = torch.optim.Adam([*vq.decoder.parameters(), vq.decode_table], lr=cfg.lr)
    for _ in range(steps):
        imgs = random_cell_images(cfg.batch, gen)
        with torch.no_grad():
            codes = vq.encode(imgs)
        loss = F.mse_loss(vq.decode_raw(codes), imgs)
        opt.zero_grad()
        loss.backward()
        opt.step()


# Bumped whenever training changes what a VQ checkpoint holds (2: merged patches split).
VQ_VERSION = 2


def vq_hash(cfg: VQConfig) -> str:
    """The cache key of a VQ: its config and the training code's version."""
    return config_hash({"vq": cfg.model_dump(), "version": VQ_VERSION})


def vq_cache_path(cfg: VQConfig) -> Path:
    return cache_dir("paradiff") / f"vq-{vq_hash(cfg)}"


def load_vq(path: Path, cfg: VQConfig | None = None) -> VQModel:
    """Load a VQ checkpoint; with ``cfg``, refuse one trained with another VQ config."""
    from paperlab.paradiff.config import VQConfig as _VQConfig

    tensors, meta = load_checkpoint(path, "vq", vq_hash(cfg) if cfg is not None else None)
    vq = VQModel(cfg or _VQConfig.model_validate(meta["config"]))
    try:
        vq.load_state_dict(tensors)
    except RuntimeError:
        from paperlab.paradiff.errors import CheckpointError

        raise CheckpointError(f"VQ checkpoint {path} does not match its config; delete it and retrain") from None
    return vq.eval()


def ensure_vq(cfg: VQConfig, *, retrain: bool = False,
              on_step: Callable[[int, float], None] | None = None) -> tuple[VQModel, VQReport]:
    """The cached VQ for ``cfg``, trained and cached first when absent (or ``retrain``)."""
    path = vq_cache_path(cfg)
    if path.exists() and not retrain:
        vq = load_vq(path, cfg)
        return vq, VQReport(path, True, 0.0, -1.0, -1)
    t0 = time.perf_counter()
    vq = train_vq(cfg, on_step)
    acc = roundtrip_accuracy(vq)
    used = int(len(torch.unique(vq.encode(random_cell_images(256, torch.Generator().manual_seed(7))))))
    secs = time.perf_counter() - t0
    save_checkpoint(path, vq.state_dict(), {"kind": "vq", "hash": vq_hash(cfg), "config": cfg.model_dump(),
                                            "roundtrip_scene_accuracy": acc, "codes_used": used,
                                            "train_seconds": round(secs, 1)})
    log.info("trained VQ in %.0f s: round trip %.3f, %d codes used", secs, acc, used)
    return vq, VQReport(path, False, secs, acc, used)
