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

Guidance needs an unconditional pass; it runs in the same model call as the conditional one
(2B rows), or from 8 rows in a call of its own that skips the text positions of the last
block (guidance reads only the image logits). The published code caches nothing between steps.
Here, for a model with prefix attention (the presets'), the condition's keys and values are
computed once per decode (the unconditional rows share one blank condition) and each step runs
over the output tokens only; a ``full``-attention model re-reads the whole sequence every step.

Batching: every row draws its random numbers from its own counter-based stream, keyed by
(row seed, step, position), so a row decodes the same whether it is sampled alone or in a
batch of any size (``seed`` + its index in the batch is its row seed). Categorical draws use
one uniform per position (inverse CDF) rather than one exponential per vocabulary entry. On a
CPU the model call is split into chunks of ``SampleConfig.chunk`` rows (32): with the whole
sequence in every step (86 tokens a row) 64-row calls overflowed the cache and cost more per
row than 16-row ones; with the condition cached a row is 34 tokens and 32-row chunks measured
as fast as or faster than 16 or the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from paperlab.paradiff.config import SampleConfig
from paperlab.paradiff.errors import ParadiffConfigError
from paperlab.paradiff.model import MASK, ConditionCache, ParaDiffModel
from paperlab.paradiff.tokens import drop_condition

__all__ = ["SAMPLERS", "SampleResult", "Trajectory", "sample", "uniforms"]

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


def _model_logits(model: ParaDiffModel, x: torch.Tensor, chunk: int, cache: ConditionCache | None = None, *,
                  text: bool = True, image: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.output_logits`` over ``x``, ``chunk`` rows at a time (0 or a GPU: all at once)."""
    if chunk <= 0 or x.shape[0] <= chunk or x.device.type != "cpu":
        return model.output_logits(x, cache, text=text, image=image)
    parts = [model.output_logits(x[i:i + chunk], None if cache is None else cache.rows(slice(i, i + chunk)),
                                 text=text, image=image)
             for i in range(0, x.shape[0], chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


_SPLIT_ROWS = 8  # from this batch size on, guidance's unconditional rows get their own model call


class _DecodeCaches:
    """The :class:`ConditionCache` objects of one decode: ``cond`` for the conditional
    rows and, with guidance, the unconditional rows' (one blank row's, repeated): in a buffer
    of their own (``uncond``) when they take their own call, else after the conditional rows
    in one buffer (``both``). Each call writes its rows' output keys and values in place."""

    def __init__(self, model: ParaDiffModel, x: torch.Tensor, guided: bool) -> None:
        self.cond = model.condition_cache(x)
        self.uncond: ConditionCache | None = None
        self.both: ConditionCache | None = None
        if guided:
            blank = model.condition_cache(drop_condition(model.layout, x[:1]))
            repeated = blank.expand(x.shape[0])
            if x.shape[0] >= _SPLIT_ROWS:
                self.uncond = repeated
            else:
                self.both = self.cond.cat(repeated)


def _logits(model: ParaDiffModel, x: torch.Tensor, guidance: float, need_image: bool,
            chunk: int = 0, cache: _DecodeCaches | None = None, need_text: bool = True,
            keep_image: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Text and (guided, when ``need_image``) image logits of one step over cond (+ uncond) rows.

    A modality the step does not need is not computed (its logits have length 0), except the
    image with ``keep_image`` (unguided: a recorded trajectory's guess during text steps).
    """
    b = x.shape[0]
    if guidance > 0 and need_image:
        xu = drop_condition(model.layout, x)
        if b >= _SPLIT_ROWS:
            # A call of its own for the unconditional rows (cheap at this many rows) lets them
            # skip the text positions of the last block, whose logits guidance never uses.
            text, img = _model_logits(model, x, chunk, None if cache is None else cache.cond, text=need_text)
            _, uimg = _model_logits(model, xu, chunk, None if cache is None else cache.uncond, text=False)
        else:
            both = None if cache is None else cache.both
            text, both_img = _model_logits(model, torch.cat([x, xu]), chunk, both, text=need_text)
            text, img, uimg = text[:b], both_img[:b], both_img[b:]
        return text, img + guidance * (img - uimg)
    return _model_logits(model, x, chunk, None if cache is None else cache.cond, text=need_text,
                         image=need_image or keep_image)


# --- per-row random streams -------------------------------------------------------------------
# splitmix64 on int64 tensors (torch integer arithmetic wraps), so every row's numbers depend
# only on (row seed, step, stream, position): batch composition cannot change them.


def _i64(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _MIX1, _MIX2 = _i64(0x9E3779B97F4A7C15), _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB)


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    z = z + _GOLDEN
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def uniforms(row_seeds: torch.Tensor, step: int, stream: int, width: int) -> torch.Tensor:
    """(B, width) float32 uniforms in (0, 1), a pure function of (row seed, step, stream, column)."""
    key = _mix(row_seeds.long() * 1_000_003 + (step * 16 + stream))  # (B,)
    cols = torch.arange(width, device=row_seeds.device, dtype=torch.long) * _GOLDEN
    z = _mix(key[:, None] ^ cols[None, :])
    return (_shr(z, 40).float() + 0.5) / float(1 << 24)


def _categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One draw per row of ``probs`` (..., V) by inverse CDF with the uniforms ``u`` (...)."""
    cdf = probs.cumsum(-1)
    target = (u * cdf[..., -1]).unsqueeze(-1).contiguous()
    return torch.searchsorted(cdf.contiguous(), target).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def _text_update(x_text: torch.Tensor, logits: torch.Tensor, steps_left: int, temperature: float = 0.0,
                 u: torch.Tensor | None = None) -> torch.Tensor:
    """Fix the most confident ceil(masked / steps_left) masked words of each row.

    Greedy (the published sampler) at temperature 0; otherwise each word is sampled (with the
    uniforms ``u``, one per position) and its confidence is the probability of the sampled word.
    """
    if temperature > 0:
        if u is None:
            raise ValueError("sampling words needs uniforms")
        probs = (logits / temperature).softmax(-1)
        pred = _categorical(probs, u)
        conf = torch.gather(probs, -1, pred[..., None])[..., 0]
    else:
        conf, pred = logits.softmax(-1).max(-1)  # (B, T)
    masked = x_text == MASK
    conf = conf.masked_fill(~masked, float("-inf"))
    k = torch.ceil(masked.sum(-1) / max(1, steps_left)).long()  # (B,)
    order = conf.argsort(-1, descending=True).argsort(-1)  # rank of each position
    pick = (order < k[:, None]) & masked
    return torch.where(pick, pred, x_text)


def _image_update(x_img: torch.Tensor, logits: torch.Tensor, progress: float, cfg: SampleConfig,
                  u_draw: torch.Tensor, u_noise: torch.Tensor) -> torch.Tensor:
    """One MaskGIT step on codes (B, N) with -1 for masked; returns the new codes.

    ``u_draw`` and ``u_noise`` are (B, N) uniforms: the code draws and the confidence noise.
    """
    masked = x_img < 0
    if cfg.temperature > 0:
        probs = (logits / cfg.temperature).softmax(-1)
        sampled = _categorical(probs, u_draw)
    else:
        probs = logits.softmax(-1)
        sampled = probs.argmax(-1)
    conf = torch.gather(probs, -1, sampled[..., None])[..., 0].clamp_min(1e-20).log()
    if cfg.noise > 0:
        conf = conf + cfg.noise * (1 - progress) * -torch.log(-torch.log(u_noise))
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
           seed: int | Sequence[int] | torch.Tensor = 0, record: bool = False,
           on_step: Callable[[int, int], None] | None = None, reuse_condition: bool = True) -> SampleResult:
    """Decode a batch of conditions.

    Args:
        model: the trained joint model (eval mode).
        cond: (B, L) sequences from :func:`paperlab.paradiff.tokens.condition_tokens`.
        sampler: "parallel", "sequential" or "image-only".
        cfg: steps, schedules, guidance, temperature, noise.
        seed: the rows' seeds: an int gives row ``i`` the seed ``seed + i``; or one per row. A
            row's draws depend only on its seed, so decoding ``cond[i:i+1]`` with ``seed + i``
            gives row ``i`` of the batch (same seed, same sample).
        record: keep every step in ``result.trajectory``.
        on_step: called as (step, total) after each model call.
        reuse_condition: compute the condition's keys and values once per decode (prefix-attention
            models only; the same samples up to float rounding). False re-reads the whole
            sequence every step, as the published code does (for comparison).

    Raises:
        ParadiffConfigError: unknown sampler.
    """
    if sampler not in SAMPLERS:
        raise ParadiffConfigError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    lay = model.layout
    device = next(model.parameters()).device
    if isinstance(seed, int):
        row_seeds = seed + torch.arange(cond.shape[0], device=device)
    else:
        row_seeds = torch.as_tensor(seed, dtype=torch.long).to(device)
        if row_seeds.shape != (cond.shape[0],):
            raise ParadiffConfigError(f"{row_seeds.numel()} seeds for {cond.shape[0]} rows; give one per row")
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
    cache = _DecodeCaches(model, x, cfg.guidance > 0) if model.cacheable and reuse_condition else None
    for step, (what, s) in enumerate(plan):
        need_img = what != "text"
        # A recorded trajectory keeps both modalities' guesses at every step.
        need_text = what != "image" or traj is not None
        tl, il = _logits(model, x, cfg.guidance, need_img, cfg.chunk, cache, need_text, keep_image=traj is not None)
        text = x[:, lay.text]
        if what in ("text", "both"):
            steps_left = (cfg.steps - s) if sampler == "parallel" else (cfg.text_steps - s)
            u = uniforms(row_seeds, step, 0, text.shape[1]) if cfg.text_temperature > 0 else None
            x[:, lay.text] = _text_update(text, tl, steps_left, cfg.text_temperature, u)
        if need_img:
            if sampler == "parallel":
                progress = (s - img_start + 1) / (cfg.steps - img_start)
            else:
                progress = (s + 1) / cfg.image_steps
            img = _image_update(img, il, progress, cfg, uniforms(row_seeds, step, 1, n),
                                uniforms(row_seeds, step, 2, n))
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
