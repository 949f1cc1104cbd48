"""The three samplers over one trained model, batched, with an optional trajectory recorder.

- ``parallel`` (MMaDA-Parallel): text and image start fully masked and are denoised together,
  one joint forward pass per step. Text: greedy low-confidence remasking (LLaDA), a linear
  number of words a step. Image: MaskGIT-style updates from a quarter of the way on: sample
  every masked code, keep the least confident masked (confidence plus annealed Gumbel noise)
  by the cosine schedule, counted from the first text step. Schedules: paperlab.paradiff.schedule.
- ``sequential`` (think, then draw): the text updates with the image fully masked, then the
  image updates (MaskGIT's own schedule) with the finished text in the context.
- ``image-only`` (no reasoning): the image updates with the text left fully masked.

Classifier-free guidance, as released: cond + g (cond - uncond) on the image logits (g =
``guidance``, 4) and optionally on the text logits (``text_guidance``, off), where uncond is the
same sequence with the condition dropped (prompt and input image), as in training. The
unconditional rows run in the same model call as the conditional ones (2B rows), or from 8 rows
in a call of their own that skips the positions whose logits guidance does not read.

Attention: a ``full``-attention model (the release's) re-reads the whole sequence every step.
A ``prefix``-attention model (the fast option) computes the condition's keys and values once per
decode (the unconditional rows share one blank condition) and each step runs over the output
tokens only.

Batching: every row draws its random numbers from its own counter-based stream, keyed by
(row seed, step, position), so a row decodes the same whether it is sampled alone or in a
batch of any size (``seed`` + its index in the batch is its row seed). Categorical draws use
one uniform per position (inverse CDF) rather than one exponential per vocabulary entry. On a
CPU the model call is split into chunks of ``SampleConfig.chunk`` rows (32), which measured as
fast as or faster than 16 rows or the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from paperlab.paradiff.config import SampleConfig
from paperlab.paradiff.errors import ParadiffConfigError
from paperlab.paradiff.model import MASK, ConditionCache, ParaDiffModel
from paperlab.paradiff.schedule import Step, mask_share, plan, text_left
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


def _guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """cond + scale (cond - uncond); a logit that is -inf in both (a token the position may not
    hold) stays -inf."""
    return cond + scale * torch.nan_to_num(cond - uncond, nan=0.0)


def _logits(model: ParaDiffModel, x: torch.Tensor, image_scale: float, text_scale: float, need_image: bool,
            chunk: int = 0, cache: _DecodeCaches | None = None, need_text: bool = True,
            keep_image: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Text and image logits of one step, each guided by its scale when positive.

    A modality the step does not need is not computed (its logits have length 0), except the
    image with ``keep_image`` (a recorded trajectory's guess during text steps, unguided).
    """
    b = x.shape[0]
    g_img = image_scale if need_image else 0.0
    g_txt = text_scale if need_text else 0.0
    want_img = need_image or keep_image
    if g_img > 0 or g_txt > 0:
        xu = drop_condition(model.layout, x)
        if b >= _SPLIT_ROWS:
            # A call of its own for the unconditional rows lets them skip the positions whose
            # logits guidance does not read (the text, unless the text is guided too).
            text, img = _model_logits(model, x, chunk, None if cache is None else cache.cond, text=need_text,
                                      image=want_img)
            utext, uimg = _model_logits(model, xu, chunk, None if cache is None else cache.uncond, text=g_txt > 0,
                                        image=g_img > 0)
        else:
            both = None if cache is None else cache.both
            t2, i2 = _model_logits(model, torch.cat([x, xu]), chunk, both, text=need_text, image=want_img)
            text, utext, img, uimg = t2[:b], t2[b:], i2[:b], i2[b:]
        if g_txt > 0:
            text = _guide(text, utext, g_txt)
        if g_img > 0:
            img = _guide(img, uimg, g_img)
        return text, img
    return _model_logits(model, x, chunk, None if cache is None else cache.cond, text=need_text, image=want_img)


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


def _text_update(x_text: torch.Tensor, logits: torch.Tensor, left: int, temperature: float = 0.0,
                 u: torch.Tensor | None = None) -> torch.Tensor:
    """Fix the most confident masked words of each row until ``left`` stay masked.

    Greedy (the release's default) at temperature 0; otherwise each word is drawn at that
    temperature (with the uniforms ``u``, one per position). Either way its confidence is the
    untempered probability of the word chosen, as in the release.
    """
    probs = logits.softmax(-1)
    if temperature > 0:
        if u is None:
            raise ValueError("sampling words needs uniforms")
        pred = _categorical(probs if temperature == 1 else (logits / temperature).softmax(-1), u)
        conf = torch.gather(probs, -1, pred[..., None])[..., 0]
    else:
        conf, pred = probs.max(-1)  # (B, T)
    masked = x_text == MASK
    conf = conf.masked_fill(~masked, float("-inf"))
    k = (masked.sum(-1) - left).clamp(min=0)  # (B,)
    order = conf.argsort(-1, descending=True).argsort(-1)  # rank of each position
    pick = (order < k[:, None]) & masked
    return torch.where(pick, pred, x_text)


def _image_update(x_img: torch.Tensor, logits: torch.Tensor, step: Step, cfg: SampleConfig,
                  u: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """One MaskGIT update of codes (B, N), -1 for masked; returns the new codes.

    ``u``: three (B, N) uniforms, for the code draws, the confidence noise and (after the last
    update) the release's random fill. Keeps max(1, min(masked - 1, floor(N schedule(progress))))
    masked, the least confident (paperlab.paradiff.schedule); after the last update the codes
    still masked take ``cfg.last_code``.
    """
    u_draw, u_noise, u_fill = u
    masked = x_img < 0
    if cfg.temperature > 0:
        probs = (logits / cfg.temperature).softmax(-1)
        sampled = _categorical(probs, u_draw)
    else:
        probs = logits.softmax(-1)
        sampled = probs.argmax(-1)
    conf = torch.gather(probs, -1, sampled[..., None])[..., 0].clamp_min(1e-20).log()
    if cfg.noise > 0:
        conf = conf + cfg.noise * (1 - step.progress) * -torch.log(-torch.log(u_noise))
    conf = conf.masked_fill(~masked, float("inf"))
    n = x_img.shape[1]
    n_masked = masked.sum(-1)  # (B,)
    target = math.floor(n * mask_share(cfg.schedule, step.progress))
    keep = torch.minimum((n_masked - 1).clamp(max=target).clamp(min=1), n_masked)
    order = conf.argsort(-1).argsort(-1)  # 0 = least confident
    stay = order < keep[:, None]
    new = torch.where(masked & ~stay, sampled, x_img)
    if step.last_image:
        fill = sampled if cfg.last_code == "draw" else (u_fill * logits.shape[-1]).long().clamp(max=logits.shape[-1] - 1)
        new = torch.where(new < 0, fill, new)
    return new


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
            sequence every step, as the released code does (for comparison).

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

    steps = plan(sampler, cfg)
    total = len(steps)
    guided = cfg.guidance > 0 or cfg.text_guidance > 0
    cache = _DecodeCaches(model, x, guided) if model.cacheable and reuse_condition else None
    text_total = lay.text.stop - lay.text.start
    for k, st in enumerate(steps):
        # A recorded trajectory keeps both modalities' guesses at every step.
        need_text = st.text or traj is not None
        tl, il = _logits(model, x, cfg.guidance, cfg.text_guidance if st.text else 0.0, st.image, cfg.chunk,
                         cache, need_text, keep_image=traj is not None)
        text = x[:, lay.text]
        if st.text:
            u = uniforms(row_seeds, k, 0, text.shape[1]) if cfg.text_temperature > 0 else None
            x[:, lay.text] = _text_update(text, tl, text_left(text_total, st.text_steps, st.text_step),
                                          cfg.text_temperature, u)
        if st.image:
            img = _image_update(img, il, st, cfg, (uniforms(row_seeds, k, 1, n), uniforms(row_seeds, k, 2, n),
                                                   uniforms(row_seeds, k, 3, n)))
            sync()
        if traj is not None:
            pt, pi = _pred(text, tl, img, il)
            traj.texts.append(x[:, lay.text].detach().clone().cpu())
            traj.images.append(img.detach().clone().cpu())
            traj.pred_texts.append(pt.cpu())
            traj.pred_images.append(pi.cpu())
        if on_step is not None:
            on_step(k + 1, total)
    return SampleResult(x[:, lay.text].clone().cpu(), img.clamp(min=0).cpu(), total, traj)
