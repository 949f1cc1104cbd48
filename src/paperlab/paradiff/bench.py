"""The ParaBench-style benchmark, judged by the exact scene checker instead of an LLM judge.

Each held-out prompt is decoded by the three samplers (same model, same seeds) and scored on:

- text_quality: the reasoning text parses in the scene grammar;
- text_alignment: the text's scene is the target scene;
- image_alignment: the detected image scene is the target scene;
- image_consistency (edits only): every shape the instruction leaves alone is still there, unchanged;
- image_quality: every cell of the image is read confidently and the image shows a scene;
- output_alignment: the text's scene and the image's scene are the same (the paper's headline axis).

Means come with 95% percentile-bootstrap intervals over prompts; the samplers share resamples,
so the parallel - sequential difference has its own paired interval. Per-step curves score the
model's full guess after every step (what it would output if stopped there). Whether the
parallel - sequential difference of output alignment holds is checked over several sampling
seeds: per seed and pooled, with paired bootstrap intervals and McNemar's exact test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paperlab.paradiff.sampler import SAMPLERS, SampleResult, Trajectory, sample
from paperlab.paradiff.scene import Detection, Scene, detect
from paperlab.paradiff.stats import bootstrap_ci, mcnemar_exact, nanmean, two_level_ci
from paperlab.paradiff.task import Example, GrammarError, parse_text
from paperlab.paradiff.tokens import condition_tokens, decode_images, decode_text, image_codes
from paperlab.paradiff.train import Trained, bench_examples

__all__ = ["AXES", "plot_bench", "run_bench", "score", "write_bench"]

AXES = ("output_alignment", "text_alignment", "image_alignment", "image_consistency", "text_quality", "image_quality")
TEXT_AXES = {"output_alignment", "text_alignment", "text_quality"}


def conditions(trained: Trained, examples: list[Example]) -> torch.Tensor:
    """(B, L) condition sequences for examples (input images through the VQ)."""
    have = [i for i, e in enumerate(examples) if e.input_scene is not None]
    codes: list[torch.Tensor | None] = [None] * len(examples)
    if have:
        enc = image_codes(trained.vq, [examples[i].input_scene for i in have])
        for j, i in enumerate(have):
            codes[i] = enc[j]
    return condition_tokens(trained.layout, [e.prompt for e in examples], codes)


def text_scene(words: list[str]) -> Scene | None:
    try:
        return parse_text(words)
    except GrammarError:
        return None


def score(examples: list[Example], texts: list[list[str]] | None, dets: list[Detection]) -> dict[str, np.ndarray]:
    """Per-prompt 0/1 scores (NaN where an axis does not apply) for each axis."""
    n = len(examples)
    out = {a: np.full(n, np.nan) for a in AXES}
    for i, (ex, det) in enumerate(zip(examples, dets, strict=True)):
        out["image_alignment"][i] = det.scene == ex.target
        out["image_quality"][i] = det.valid
        if ex.kind == "edit":
            out["image_consistency"][i] = set(ex.untouched) <= set(det.scene)
        if texts is not None:
            ts = text_scene(texts[i])
            out["text_quality"][i] = ts is not None
            out["text_alignment"][i] = ts == ex.target
            out["output_alignment"][i] = ts is not None and ts == det.scene
    return out


def _curves(trained: Trained, examples: list[Example], traj: Trajectory) -> dict[str, list[float]]:
    """Alignment of the model's full guess, and the share of committed tokens, after every step."""
    curves: dict[str, list[float]] = {k: [] for k in ("text_alignment", "image_alignment", "output_alignment",
                                                      "text_committed", "image_committed")}
    for text, img, pt, pi in zip(traj.texts, traj.images, traj.pred_texts, traj.pred_images, strict=True):
        dets = detect(decode_images(trained.vq, pi))
        s = score(examples, decode_text(pt), dets)
        for k in ("text_alignment", "image_alignment", "output_alignment"):
            curves[k].append(round(float(np.nanmean(s[k])), 4))
        curves["text_committed"].append(round(float((text != 1).float().mean()), 4))
        curves["image_committed"].append(round(float((img >= 0).float().mean()), 4))
    return curves


SEED_STRIDE = 1 << 20  # sampling seed k decodes prompt i with row seed seed + k * SEED_STRIDE + i


def score_sampler(trained: Trained, model: Any, examples: list[Example], cond: torch.Tensor, sampler: str, *,
                  seed: int = 0, batch: int = 64) -> dict[str, np.ndarray]:
    """Decode ``cond`` with ``model`` (e.g. an RL-tuned copy) and score against ``examples``."""
    results = [sample(model, cond[s:s + batch], sampler, trained.cfg.sample, seed=seed + s)
               for s in range(0, len(examples), batch)]
    text_ids = torch.cat([r.text for r in results])
    codes = torch.cat([r.image for r in results])
    texts = None if sampler == "image-only" else decode_text(text_ids)
    return score(examples, texts, detect(decode_images(trained.vq, codes)))


def summarise(raw: dict[str, np.ndarray], idx: np.ndarray) -> tuple[dict[str, float | None], dict[str, list[float]]]:
    """Means and 95% bootstrap intervals of per-prompt scores (``idx``: resampled prompt indices)."""
    return ({a: nanmean(raw[a]) for a in AXES},
            {a: bootstrap_ci(raw[a], idx) for a in AXES if not np.isnan(raw[a]).all()})


def sampler_seeds(trained: Trained, examples: list[Example], cond: torch.Tensor, seeds: int, *, seed: int = 0,
                  batch: int = 64, first: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """Parallel vs think-then-draw output alignment over ``seeds`` sampling seeds, per seed and pooled.

    Seed k decodes with row seeds ``seed + k * SEED_STRIDE + i`` (k = 0 is the main run, whose
    scores ``first`` may pass in). Per seed: both means, the paired difference with its
    bootstrap interval over prompts, and McNemar's exact test on the prompts where exactly one
    sampler is right. Pooled: the difference's interval resamples seeds and prompts together;
    McNemar counts every (seed, prompt) pair, as if independent.
    """
    n = len(examples)
    rng = np.random.default_rng(trained.cfg.bench.seed)
    boot = trained.cfg.bench.bootstrap
    idx = rng.integers(0, n, size=(boot, n))
    axis = "output_alignment"
    par, seq = np.zeros((seeds, n)), np.zeros((seeds, n))
    per_seed = {}
    for k in range(seeds):
        base = seed + k * SEED_STRIDE
        for name, arr in (("parallel", par), ("sequential", seq)):
            raw = first[name] if k == 0 and first is not None else score_sampler(
                trained, trained.model, examples, cond, name, seed=base, batch=batch)
            arr[k] = raw[axis]
        test = mcnemar_exact(par[k], seq[k])
        per_seed[str(k)] = {"seed": base, "parallel": nanmean(par[k]), "sequential": nanmean(seq[k]),
                            "difference": {"mean": nanmean(par[k] - seq[k]), "ci95": bootstrap_ci(par[k] - seq[k], idx)},
                            "mcnemar": {"parallel_only": test["a_only"], "sequential_only": test["b_only"],
                                        "p": test["p"]}}
    seed_idx = rng.integers(0, seeds, size=(boot, seeds))
    test = mcnemar_exact(par.ravel(), seq.ravel())
    pooled = {"parallel": nanmean(par), "sequential": nanmean(seq),
              "difference": {"mean": nanmean(par - seq), "ci95": two_level_ci(par - seq, seed_idx, idx)},
              "mcnemar": {"parallel_only": test["a_only"], "sequential_only": test["b_only"], "p": test["p"]}}
    return {"axis": axis, "seeds": seeds, "per_seed": per_seed, "pooled": pooled}


def run_bench(trained: Trained, n_prompts: int | None = None, *, seed: int = 0, batch: int | None = None,
              curves: bool = True, seeds: int = 4,
              on_progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Decode the held-out prompts with every sampler and score them.

    Args:
        trained: the model and tokenizer.
        n_prompts: how many benchmark prompts (default: the config's, 300); 2/3 are edits.
        seed: sampling seed, the same for every sampler.
        batch: prompts per model call (default: the config's).
        curves: also record per-step curves for the parallel and sequential samplers.
        seeds: sampling seeds for the parallel vs think-then-draw check (:func:`sampler_seeds`;
            1: the main run only).
        on_progress: called as (sampler, prompts done, total).

    Returns:
        The bench.json payload (see docs/paradiff.md).
    """
    cfg = trained.cfg
    examples = bench_examples(cfg, n_prompts)
    n = len(examples)
    bs = batch or cfg.bench.batch
    cond = conditions(trained, examples)
    rng = np.random.default_rng(cfg.bench.seed)
    idx = rng.integers(0, n, size=(cfg.bench.bootstrap, n))
    samplers: dict[str, Any] = {}
    ci: dict[str, Any] = {}
    per_step: dict[str, Any] = {}
    raw: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    for name in SAMPLERS:
        record = curves and name != "image-only"
        results: list[SampleResult] = []
        t0 = time.perf_counter()
        for start in range(0, n, bs):
            results.append(sample(trained.model, cond[start:start + bs], name, cfg.sample, seed=seed + start,
                                  record=record))
            if on_progress is not None:
                on_progress(name, min(n, start + bs), n)
        seconds[name] = round(time.perf_counter() - t0, 2)
        text_ids = torch.cat([r.text for r in results])
        codes = torch.cat([r.image for r in results])
        texts = None if name == "image-only" else decode_text(text_ids)
        s = score(examples, texts, detect(decode_images(trained.vq, codes)))
        raw[name] = s
        samplers[name] = {a: nanmean(s[a]) for a in AXES} | {"model_calls_per_sample": results[0].steps}
        ci[name] = {a: bootstrap_ci(s[a], idx) for a in AXES if not np.isnan(s[a]).all()}
        if record:
            traj = Trajectory()
            for k in range(len(results[0].trajectory or [])):
                traj.texts.append(torch.cat([r.trajectory.texts[k] for r in results if r.trajectory]))
                traj.images.append(torch.cat([r.trajectory.images[k] for r in results if r.trajectory]))
                traj.pred_texts.append(torch.cat([r.trajectory.pred_texts[k] for r in results if r.trajectory]))
                traj.pred_images.append(torch.cat([r.trajectory.pred_images[k] for r in results if r.trajectory]))
            per_step[name] = _curves(trained, examples, traj)
    kinds = np.array([e.kind for e in examples])
    by_kind = {name: {kind: {a: nanmean(raw[name][a][kinds == kind]) for a in AXES} for kind in ("edit", "generate")}
               for name in SAMPLERS}
    diff = raw["parallel"]["output_alignment"] - raw["sequential"]["output_alignment"]
    holds = sampler_seeds(trained, examples, cond, seeds, seed=seed, batch=bs, first=raw)
    if on_progress is not None:
        on_progress("seeds", seeds, seeds)
    return {
        "n_prompts": n,
        "n_edit": int((kinds == "edit").sum()),
        "n_generate": int((kinds == "generate").sum()),
        "preset": cfg.name,
        "samplers": samplers,
        "ci95": ci,
        "paired": {"parallel_minus_sequential_output_alignment": {"mean": nanmean(diff), "ci95": bootstrap_ci(diff, idx)}},
        "over_seeds": holds,
        "by_kind": by_kind,
        "per_step": per_step,
        "seconds": seconds,
        "sample_config": cfg.sample.model_dump(),
        "seed": seed,
    }


def plot_bench(result: dict[str, Any], path: Path) -> Path:
    """Axes x samplers with bootstrap intervals, and the per-step curves, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from paperlab.io import atomic_write_bytes

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.27
    for j, name in enumerate(SAMPLERS):
        xs, ys, lo, hi = [], [], [], []
        for i, a in enumerate(AXES):
            v = result["samplers"][name].get(a)
            if v is None:
                continue
            c = result["ci95"][name][a]
            xs.append(i + (j - 1) * width)
            ys.append(v)
            lo.append(v - c[0])
            hi.append(c[1] - v)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=name)
    ax.set_xticks(range(len(AXES)), [a.replace("_", "\n") for a in AXES], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{result['preset']}: {result['n_prompts']} held-out prompts (95% bootstrap CI)")
    ax.legend(fontsize=8)
    styles = {"output_alignment": "-", "text_alignment": "--", "image_alignment": ":"}
    for name, color in (("parallel", "C0"), ("sequential", "C1")):
        curves = result["per_step"].get(name)
        if not curves:
            continue
        for k, ls in styles.items():
            bx.plot(range(1, len(curves[k]) + 1), curves[k], ls, color=color, label=f"{name} {k.split('_')[0]}")
    bx.set_xlabel("model call")
    bx.set_ylabel("alignment of the full guess")
    bx.set_ylim(0, 1.05)
    bx.set_title("per step: output (solid), text (dashed), image (dotted)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_bench(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``out_dir/bench.json`` and ``out_dir/bench.png`` (each atomically)."""
    import json

    from paperlab.io import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    js = atomic_write_text(out_dir / "bench.json", json.dumps(result, indent=2))
    return js, plot_bench(result, out_dir / "bench.png")
