"""Between examples and token sequences: conditions, clean targets, and decoding outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from paperlab.paradiff.model import EOS, MASK, NOIMG, PAD, WORD_ID, Layout
from paperlab.paradiff.scene import Scene, render_batch
from paperlab.paradiff.task import TEXT_LEN, WORDS, Example, scene_text

if TYPE_CHECKING:
    import numpy as np

    from paperlab.paradiff.vq import VQModel

__all__ = ["condition_tokens", "decode_images", "decode_text", "drop_condition", "image_codes", "target_tokens"]


def image_codes(vq: VQModel, scenes: list[Scene | None] | np.ndarray) -> torch.Tensor:
    """(B, N) VQ codes of rendered scenes, or of given (B, 32, 32, 3) uint8 images."""
    import numpy as np

    if isinstance(scenes, np.ndarray):
        imgs = scenes
    else:
        imgs = render_batch([s if s is not None else () for s in scenes])
    x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        return vq.encode(x)


def condition_tokens(layout: Layout, prompts: list[list[str]] | list[tuple[str, ...]],
                     input_codes: list[torch.Tensor | None]) -> torch.Tensor:
    """(B, L) sequences holding prompt and input image, outputs all ``<mask>``."""
    x = layout.skeleton(len(prompts))
    for i, (words, codes) in enumerate(zip(prompts, input_codes, strict=True)):
        ids = [WORD_ID[w] for w in words]
        x[i, : len(ids)] = torch.tensor(ids)
        if codes is not None:
            x[i, layout.in_image] = codes + layout.n_words
    return x


def target_tokens(layout: Layout, vq: VQModel, examples: list[Example]) -> torch.Tensor:
    """(B, L) clean sequences: condition plus the target image codes and reasoning text."""
    have_input = [i for i, e in enumerate(examples) if e.input_scene is not None]
    codes_in: list[torch.Tensor | None] = [None] * len(examples)
    if have_input:
        enc = image_codes(vq, [examples[i].input_scene for i in have_input])
        for j, i in enumerate(have_input):
            codes_in[i] = enc[j]
    x = condition_tokens(layout, [e.prompt for e in examples], codes_in)
    x[:, layout.out_image] = image_codes(vq, [e.target for e in examples]) + layout.n_words
    for i, e in enumerate(examples):
        ids = [WORD_ID[w] for w in scene_text(e.target)] + [EOS]
        x[i, layout.text] = torch.tensor(ids + [PAD] * (TEXT_LEN - len(ids)))
    return x


def drop_condition(layout: Layout, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """A copy of ``x`` with the prompt blanked and the input image removed (all rows, or ``rows``)."""
    y = x.clone()
    sel = rows if rows is not None else torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    y[sel, layout.prompt] = PAD
    y[sel, layout.in_image] = NOIMG
    return y


def decode_text(ids: torch.Tensor) -> list[list[str]]:
    """(B, T) word ids -> words, ``<mask>`` shown as ``_``."""
    return [["_" if t == MASK else WORDS[t] for t in row.tolist()] for row in ids]


def decode_images(vq: VQModel, codes: torch.Tensor, masked: torch.Tensor | None = None) -> np.ndarray:
    """(B, N) codes -> (B, 32, 32, 3) uint8; masked patches are drawn mid grey."""
    with torch.no_grad():
        img = vq.decode(codes.clamp(min=0).cpu())  # (B, 3, H, W)
        if masked is not None and bool(masked.any()):
            p, g = vq.cfg.patch, vq.grid
            m = masked.cpu().view(-1, 1, g, g).float()
            m = m.repeat_interleave(p, 2).repeat_interleave(p, 3)
            img = img * (1 - m) + 0.5 * m
    return (img.permute(0, 2, 3, 1).numpy() * 255).round().astype("uint8")
