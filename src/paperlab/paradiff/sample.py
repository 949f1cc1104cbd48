"""The three samplers over one trained model, batched, with an optional trajectory recorder.

- ``parallel`` (MMaDA-Parallel): text and image start fully masked and are denoised together,
  one joint forward pass per step. Text: greedy low-confidence remasking on a linear schedule
  (each step fixes the ceil(masked / steps left) most confident masked words). Image:
  MaskGIT-style from ``image_start`` of the way through: sample every masked code, keep
  floor(N cos(pi/2 progress)) of them masked, the least confident ones (confidence plus
  annealed Gumbel noise); classifier-free guidance on the image logits only.
- ``sequential`` (think, then draw): the same text updates with the image fully masked, then
  the same image updates with the finished text in the context.
- ``image-only`` (no reasoning): the image updates with the text left fully masked.

Guidance needs an unconditional pass; it runs in the same batch as the conditional one
(2B rows), so a step is still one model call. Nothing is cached between steps, as in the
published code: every step re-reads the whole sequence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from paperlab.paradiff.config import SampleConfig
from paperlab.paradiff.errors import ParadiffConfigError
from paperlab.paradiff.model import MASK, ParaDiffModel
from paperlab.paradiff.tokens import drop_condition

__all__ = ["SAMPLERS", "SampleResult", "Trajectory", "sample"]

SAMPLERS = ("parallel", "sequential", "image-only")


@dataclass
class Trajectory:
    """Every step's state. Text: (B, T) word ids with ``<mask>``; image: (B, N) codes, -1 = masked.

    ``pred_*`` hold the model's full guess at that step (argmax of every position, the
    committed tokens kept), i.e. what the sample would be if decoding stopped there.
    """

    texts: list[torch.Tensor] = field(default_factory=list)
    images: list[torch.Tensor] = field(default_factory=list)
    pred_texts: list[torch.Tensor] = field(default_factory=list)
    pred_images: list[torch.Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class SampleResult:
    text: torch.Tensor  # (B, T) word ids (all <mask> for image-only)
    image: torch.Tensor  # (B, N) codes
    steps: int  # model calls per sample
    trajectory: Trajectory | None = None


def _logits(model: ParaDiffModel, x: torch.Tensor, guidance: float, need_image: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Text and (guided) image logits of one step: one model call over cond (+ uncond) rows."""
    b = x.shape[0]
    if guidance > 0 and need_image:
        text, img = model.output_logits(torch.cat([x, drop_condition(model.layout, x)]))
        img = img[:b] + guidance * (img[:b] - img[b:])
        return text[:b], img
    return model.output_logits(x)


def _text_update(x_text: torch.Tensor, logits: torch.Tensor, steps_left: int) -> torch.Tensor:
    """Fix the most confident ceil(masked / steps_left) masked words of each row (greedy)."""
    probs = logits.softmax(-1)
    conf, pred = probs.max(-1)  # (B, T)
    masked = x_text == MASK
    conf = conf.masked_fill(~masked, float("-inf"))
    k = torch.ceil(masked.sum(-1) / max(1, steps_left)).long()  # (B,)
    order = conf.argsort(-1, descending=True).argsort(-1)  # rank of each position
    pick = (order < k[:, None]) & masked
    return torch.where(pick, pred, x_text)


def _image_update(x_img: torch.Tensor, logits: torch.Tensor, progress: float, cfg: SampleConfig,
                  gen: torch.Generator | None) -> torch.Tensor:
    """One MaskGIT step on codes (B, N) with -1 for masked; returns the new codes."""
    masked = x_img < 0
    if cfg.temperature > 0:
        probs = (logits / cfg.temperature).softmax(-1)
        flat = probs.view(-1, probs.shape[-1])
        sampled = torch.multinomial(flat, 1, generator=gen).view(x_img.shape)
    else:
        probs = logits.softmax(-1)
        sampled = probs.argmax(-1)
    conf = torch.gather(probs, -1, sampled[..., None])[..., 0].clamp_min(1e-20).log()
    if cfg.noise > 0:
        u = torch.rand(conf.shape, generator=gen, device=conf.device).clamp(1e-20, 1 - 1e-7)
        conf = conf + cfg.noise * (1 - progress) * -torch.log(-torch.log(u))
    conf = conf.masked_fill(~masked, float("inf"))
    n = x_img.shape[1]
    keep_masked = int(math.floor(n * math.cos(math.pi / 2 * progress)))
    n_masked = masked.sum(-1)  # (B,)
    # Unmask at least one code per step while any remain, and everything at the end.
    keep = torch.clamp(torch.full_like(n_masked, keep_masked), max=(n_masked - 1).clamp(min=0))
    if progress >= 1.0:
        keep = torch.zeros_like(keep)
    order = conf.argsort(-1).argsort(-1)  # 0 = least confident
    stay = order < keep[:, None]
    new = torch.where(masked, sampled, x_img)
    return torch.where(stay, torch.full_like(new, -1), new)


def _pred(text: torch.Tensor, tl: torch.Tensor, img: torch.Tensor, il: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.where(text == MASK, tl.argmax(-1), text), torch.where(img < 0, il.argmax(-1), img))


@torch.no_grad()
def sample(model: ParaDiffModel, cond: torch.Tensor, sampler: str, cfg: SampleConfig, *,
           seed: int = 0, record: bool = False,
           on_step: Callable[[int, int], None] | None = None) -> SampleResult:
    """Decode a batch of conditions.

    Args:
        model: the trained joint model (eval mode).
        cond: (B, L) sequences from :func:`paperlab.paradiff.tokens.condition_tokens`.
        sampler: "parallel", "sequential" or "image-only".
        cfg: steps, schedules, guidance, temperature, noise.
        seed: seeds the image sampling noise (same seed, same samples).
        record: keep every step in ``result.trajectory``.
        on_step: called as (step, total) after each model call.

    Raises:
        ParadiffConfigError: unknown sampler.
    """
    if sampler not in SAMPLERS:
        raise ParadiffConfigError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    lay = model.layout
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    x = cond.to(device).clone()
    x[:, lay.out_image] = MASK
    x[:, lay.text] = MASK
    traj = Trajectory() if record else None
    b, n = x.shape[0], lay.n_image
    img = torch.full((b, n), -1, dtype=torch.long, device=device)

    def sync() -> None:
        x[:, lay.out_image] = torch.where(img < 0, MASK, img + lay.n_words)

    if sampler == "parallel":
        plan = [("both" if s >= int(cfg.steps * cfg.image_start) else "text", s) for s in range(cfg.steps)]
        img_start = int(cfg.steps * cfg.image_start)
    elif sampler == "sequential":
        plan = [("text", s) for s in range(cfg.text_steps)] + [("image", s) for s in range(cfg.image_steps)]
    else:
        plan = [("image", s) for s in range(cfg.image_steps)]
    total = len(plan)
    for step, (what, s) in enumerate(plan):
        need_img = what != "text"
        tl, il = _logits(model, x, cfg.guidance, need_img)
        text = x[:, lay.text]
        if what in ("text", "both"):
            steps_left = (cfg.steps - s) if sampler == "parallel" else (cfg.text_steps - s)
            x[:, lay.text] = _text_update(text, tl, steps_left)
        if need_img:
            if sampler == "parallel":
                progress = (s - img_start + 1) / (cfg.steps - img_start)
            else:
                progress = (s + 1) / cfg.image_steps
            img = _image_update(img, il, progress, cfg, gen)
            sync()
        if traj is not None:
            pt, pi = _pred(text, tl, img, il)
            traj.texts.append(x[:, lay.text].detach().clone().cpu())
            traj.images.append(img.detach().clone().cpu())
            traj.pred_texts.append(pt.cpu())
            traj.pred_images.append(pi.cpu())
        if on_step is not None:
            on_step(step + 1, total)
    return SampleResult(x[:, lay.text].clone().cpu(), img.clamp(min=0).cpu(), total, traj)
