"""When the samplers commit words and codes: the released MMaDA-Parallel schedules.

- Text (LLaDA's low-confidence remasking): with ``total`` words masked at the start and ``T``
  steps, step ``s`` leaves ``floor(total (T - s - 1) / T)`` of them masked; the release computes
  these counts once, before the first step (``get_num_transfer_tokens``).
- Image, parallel sampler: ``K`` image updates on the steps ``round(linspace(T // 4, T - 1, K))``
  (``image_start`` = 1/4). At step ``s`` the image's progress is ``(s + 1) / T``, counted from the
  first *text* step, so the first update already commits about a sixth of the codes.
- Image, sequential and image-only samplers (MaskGIT's ``t2i_generate``): one update a step,
  progress ``(j + 1) / K``.
- Every image update keeps ``max(1, min(masked - 1, floor(N * schedule(progress))))`` codes
  masked, the least confident: at least one is committed and at least one stays masked, also
  after the last update. What that last code becomes is ``SampleConfig.last_code``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from paperlab.paradiff.config import SampleConfig

__all__ = ["Step", "mask_share", "plan", "text_left"]


def mask_share(name: str, t: float) -> float:
    """Share of the image codes still masked at progress ``t`` in [0, 1] (the release's mask
    schedules: cosine cos(pi t / 2); linear 1 - t; pow2 1 - t^2; the last two floored at 1e-6)."""
    if name == "cosine":
        return math.cos(math.pi / 2 * t)
    if name == "linear":
        return max(1e-6, 1.0 - t)
    if name == "pow2":
        return max(1e-6, 1.0 - t * t)
    from paperlab.paradiff.errors import ParadiffConfigError

    raise ParadiffConfigError(f"unknown schedule {name!r}; choose one of: cosine, linear, pow2")


def text_left(total: int, steps: int, s: int) -> int:
    """Words still masked after text step ``s`` of ``steps``, ``total`` masked at the start."""
    return total * (steps - s - 1) // steps


def parallel_image_steps(steps: int, image_steps: int, image_start: float) -> list[int]:
    """The parallel sampler's steps that also update the image (distinct, in order)."""
    first = int(steps * image_start)
    at = torch.linspace(first, steps - 1, image_steps).round().int().tolist()
    return sorted(set(at))


@dataclass(frozen=True)
class Step:
    """One model call: which modalities it updates, and where each stands."""

    text: bool
    image: bool
    text_step: int = 0  # index among the text updates
    text_steps: int = 1
    progress: float = 0.0  # the image's progress after this update, in (0, 1]
    last_image: bool = False


def plan(sampler: str, cfg: SampleConfig) -> list[Step]:
    """The model calls of one decode with ``sampler``."""
    if sampler == "parallel":
        t = cfg.steps
        at = parallel_image_steps(t, cfg.image_steps, cfg.image_start)
        where = {s: j for j, s in enumerate(at)}
        out = []
        for s in range(t):
            j = where.get(s)
            progress = 0.0 if j is None else ((s + 1) / t if cfg.schedule_origin == "text" else (j + 1) / len(at))
            out.append(Step(True, j is not None, s, t, progress, j == len(at) - 1))
        return out
    k = cfg.image_steps
    image = [Step(False, True, progress=(j + 1) / k, last_image=j == k - 1) for j in range(k)]
    if sampler == "sequential":
        return [Step(True, False, s, cfg.text_steps) for s in range(cfg.text_steps)] + image
    return image
