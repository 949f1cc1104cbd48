"""Does each modality follow the other? Decode one modality with the other given as the gold answer.

On the held-out benchmark prompts (same seeds as the bench), with the preset's sample config:

- the image drawn (image-only schedule, guidance as configured) with the text slots masked, and
  with the *target* reasoning text written into them;
- the text written (sequential text schedule, greedy) with the output image masked, and with
  the *target* image's codes in it.

If the image follows the text, gold text should lift image alignment (and vice versa).

    PYTHONPATH=src nice python bench/paradiff/conditioning.py --preset tiny --json bench/paradiff/conditioning-tiny.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from preset_model import preset_model

from paperlab.io import atomic_write_text
from paperlab.paradiff.bench import conditions, score
from paperlab.paradiff.model import MASK
from paperlab.paradiff.sampler import _image_update, _logits, _text_update, uniforms
from paperlab.paradiff.scene import detect
from paperlab.paradiff.schedule import plan, text_left
from paperlab.paradiff.tokens import decode_images, decode_text, target_tokens
from paperlab.paradiff.train import bench_examples


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--attention", choices=("full", "prefix"), default=None, help="override model.attention")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cfg, tr = preset_model(args.preset, args.attention)
    lay, sc = tr.layout, cfg.sample
    ex = bench_examples(cfg)
    cond = conditions(tr, ex)
    gold = target_tokens(lay, tr.vq, ex)
    kinds = np.array([e.kind for e in ex])
    seeds = torch.arange(len(ex))
    out: dict[str, dict[str, float]] = {}

    def axes(s: dict[str, np.ndarray], axis: str) -> dict[str, float]:
        return {"all": round(float(np.nanmean(s[axis])), 4),
                "edit": round(float(np.nanmean(s[axis][kinds == "edit"])), 4),
                "generate": round(float(np.nanmean(s[axis][kinds == "generate"])), 4)}

    with torch.no_grad():
        for given in (False, True):
            x = cond.clone()
            x[:, lay.out_image] = MASK
            x[:, lay.text] = gold[:, lay.text] if given else MASK
            img = torch.full((len(ex), lay.n_image), -1, dtype=torch.long)
            for s, step in enumerate(plan("image-only", sc)):
                _, il = _logits(tr.model, x, sc.guidance, 0.0, True, sc.chunk)
                img = _image_update(img, il, step, sc, tuple(uniforms(seeds, s, k, lay.n_image) for k in (1, 2, 3)))
                x[:, lay.out_image] = torch.where(img < 0, MASK, img + lay.n_words)
            s_img = score(ex, decode_text(gold[:, lay.text]), detect(decode_images(tr.vq, img)))
            out["image_alignment, gold text given" if given else "image_alignment, text masked"] = axes(s_img, "image_alignment")
        for given in (False, True):
            x = cond.clone()
            x[:, lay.text] = MASK
            x[:, lay.out_image] = gold[:, lay.out_image] if given else MASK
            for s in range(sc.text_steps):
                tl, _ = _logits(tr.model, x, sc.guidance, sc.text_guidance, False, sc.chunk)
                x[:, lay.text] = _text_update(x[:, lay.text], tl, text_left(lay.text.stop - lay.text.start,
                                                                            sc.text_steps, s))
            s_txt = score(ex, decode_text(x[:, lay.text]), detect(decode_images(tr.vq, gold[:, lay.out_image] - lay.n_words)))
            out["text_alignment, gold image given" if given else "text_alignment, image masked"] = axes(s_txt, "text_alignment")
    for k, v in out.items():
        print(f"{k:36s} all {v['all']:.3f}  edits {v['edit']:.3f}  generations {v['generate']:.3f}")
    if args.json:
        atomic_write_text(args.json, json.dumps({"preset": args.preset, "n_prompts": len(ex), **out}, indent=2))


if __name__ == "__main__":
    main()
