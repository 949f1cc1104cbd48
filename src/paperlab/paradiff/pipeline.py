"""One prompt end to end: check the inputs, decode with a sampler, read the result, draw the trajectory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from paperlab.paradiff.bench import text_scene
from paperlab.paradiff.images import save_gif, save_strip
from paperlab.paradiff.sampler import SampleResult, sample
from paperlab.paradiff.scene import Detection, Scene, detect
from paperlab.paradiff.task import check_prompt
from paperlab.paradiff.tokens import condition_tokens, decode_images, decode_text, image_codes

if TYPE_CHECKING:
    from paperlab.paradiff.train import Trained

__all__ = ["Output", "decode_prompt", "write_trajectory"]


@dataclass
class Output:
    words: list[str]  # the reasoning text, up to <eos> (empty for image-only)
    text_scene: Scene | None  # None when the text does not parse (or there is none)
    image: np.ndarray  # (32, 32, 3) uint8
    detection: Detection
    result: SampleResult

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def aligned(self) -> bool:
        return self.text_scene is not None and self.text_scene == self.detection.scene


def _cut(words: list[str]) -> list[str]:
    out = []
    for w in words:
        if w in ("<eos>", "<pad>"):
            break
        out.append(w)
    return out


def decode_prompt(trained: Trained, prompt: str, image: np.ndarray | None = None, *, sampler: str = "parallel",
                  seed: int = 0, record: bool = False) -> Output:
    """Decode one prompt (and optional input image, (32, 32, 3) uint8) with ``sampler``.

    Raises:
        PromptError: unknown words or too long.
    """
    words = check_prompt(prompt)
    codes: list[torch.Tensor | None] = [None if image is None else image_codes(trained.vq, image[None])[0]]
    cond = condition_tokens(trained.layout, [words], codes)
    res = sample(trained.model, cond, sampler, trained.cfg.sample, seed=seed, record=record)
    img = decode_images(trained.vq, res.image)[0]
    text = [] if sampler == "image-only" else _cut(decode_text(res.text)[0])
    return Output(text, text_scene(text) if text else None, img, detect(img)[0], res)


def trajectory_frames(trained: Trained, out: Output, every: int = 1) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Images, partial texts and labels of every ``every``-th step (and the last)."""
    traj = out.result.trajectory
    if traj is None:
        raise ValueError("decode with record=True to keep a trajectory")
    keep = sorted({*range(0, len(traj), every), len(traj) - 1})
    imgs, texts, labels = [], [], []
    for k in keep:
        codes = traj.images[k]
        imgs.append(decode_images(trained.vq, codes, masked=codes < 0)[0])
        texts.append(" ".join(decode_text(traj.texts[k])[0]).replace(" <pad>", "").replace("<eos>", "."))
        labels.append(f"step {k + 1}/{len(traj)}")
    return imgs, texts, labels


def write_trajectory(trained: Trained, out: Output, path: Path, every: int = 1) -> Path:
    """Write the trajectory as an animated GIF (``.gif``) or a strip PNG (``.png``)."""
    imgs, texts, labels = trajectory_frames(trained, out, every)
    if path.suffix.lower() == ".gif":
        return save_gif(imgs, texts, labels, path)
    return save_strip(imgs, texts, labels, path)
