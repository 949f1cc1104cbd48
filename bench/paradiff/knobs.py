"""The sampler's settings one at a time: the release's defaults against each alternative.

Same model, same 300 held-out prompts and sampling seed; the parallel and the think-then-draw
(sequential) samplers with the preset's sample config changed in one field (or, last, the
sampler paperlab used before it followed the release: image progress counted over its own
updates and guidance 2). Means of every axis, and the paired parallel - sequential
difference of output alignment with its bootstrap interval.

    PYTHONPATH=src nice python bench/paradiff/knobs.py --preset tiny --json docs/paradiff/knobs-tiny.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from preset_model import preset_model
from rich.console import Console
from rich.table import Table

from paperlab.io import atomic_write_text
from paperlab.paradiff.bench import AXES, conditions, score_sampler
from paperlab.paradiff.stats import bootstrap_ci, nanmean
from paperlab.paradiff.train import Trained, bench_examples

VARIANTS: dict[str, dict[str, Any]] = {
    "release defaults (guidance 4, text term off)": {},
    "guidance 0": {"guidance": 0.0},
    "guidance 1": {"guidance": 1.0},
    "guidance 2": {"guidance": 2.0},
    "guidance 8": {"guidance": 8.0},
    "text guidance 1": {"text_guidance": 1.0},
    "text guidance 2": {"text_guidance": 2.0},
    "last code random (MMaDA-Parallel-A)": {"last_code": "random"},
    "image progress over its own updates": {"schedule_origin": "image"},
    "linear schedule": {"schedule": "linear"},
    "pow2 schedule": {"schedule": "pow2"},
    "text temperature 0.7 (release A's script default)": {"text_temperature": 0.7},
    "before: own-update progress, guidance 2": {"schedule_origin": "image", "guidance": 2.0},
}


def run(trained: Trained, n_prompts: int, seed: int) -> dict[str, Any]:
    cfg = trained.cfg
    ex = bench_examples(cfg, n_prompts)
    cond = conditions(trained, ex)
    idx = np.random.default_rng(cfg.bench.seed).integers(0, len(ex), size=(cfg.bench.bootstrap, len(ex)))
    rows: dict[str, Any] = {}
    for name, change in VARIANTS.items():
        tr = Trained(cfg.with_overrides(**{f"sample.{k}": v for k, v in change.items()}), trained.vq,
                     trained.model, trained.path)
        raw = {s: score_sampler(tr, tr.model, ex, cond, s, seed=seed) for s in ("parallel", "sequential")}
        diff = raw["parallel"]["output_alignment"] - raw["sequential"]["output_alignment"]
        rows[name] = {"change": change, **{s: {a: nanmean(raw[s][a]) for a in AXES} for s in raw},
                      "parallel_minus_sequential_output_alignment": {"mean": nanmean(diff),
                                                                     "ci95": bootstrap_ci(diff, idx)}}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--attention", choices=("full", "prefix"), default=None, help="override model.attention")
    ap.add_argument("--n-prompts", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cfg, trained = preset_model(args.preset, args.attention)
    rows = run(trained, args.n_prompts, args.seed)
    t = Table(title=f"{cfg.name} ({cfg.model.attention} attention): {args.n_prompts} held-out prompts, "
                    "parallel / think-then-draw")
    for col in ("setting", "output align.", "text align.", "image align.", "image consistency", "image quality",
                "parallel - sequential (output)"):
        t.add_column(col)
    for name, r in rows.items():
        p, s, d = r["parallel"], r["sequential"], r["parallel_minus_sequential_output_alignment"]
        t.add_row(name, *[f"{p[a]:.3f} / {s[a]:.3f}" for a in ("output_alignment", "text_alignment",
                                                              "image_alignment", "image_consistency",
                                                              "image_quality")],
                  f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
    Console(width=200).print(t)
    if args.json:
        atomic_write_text(args.json, json.dumps({"preset": cfg.name, "attention": cfg.model.attention,
                                                 "n_prompts": args.n_prompts, "seed": args.seed,
                                                 "variants": rows}, indent=2))


if __name__ == "__main__":
    main()
