"""The ParaRL comparison: no RL, final-step reward, trajectory reward, on held-out prompts, over RL seeds.

Each RL seed trains both arms from the same start (its own training prompts, rollouts and loss
steps); every arm is decoded on the same held-out benchmark prompts with the same sampler seeds,
so arms differ only by what RL changed. Pooled figures average a prompt's score over the seeds;
their 95% intervals come from a two-level bootstrap (seeds, then prompts, resampled), paired
across arms for the differences.
"""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from paperlab.io import atomic_write_bytes, atomic_write_text
from paperlab.paradiff.bench import AXES, conditions, score_sampler, summarise
from paperlab.paradiff.rl import RLConfig, check_device, prompt_reward, rl_train, train_prompts
from paperlab.paradiff.scorer import ensure_scorer
from paperlab.paradiff.stats import nanmean, two_level_ci
from paperlab.paradiff.train import Trained, bench_examples
from paperlab.train import DistContext, single_process

__all__ = ["ARMS", "pooled", "plot_rl", "run_rl"]

ARMS = ("none", "final", "trajectory")
TRAIN_ROLLOUTS = 16  # seeded rollouts per training prompt when measuring the reward RL optimised
CURVE_AXES = ("output_alignment", "text_alignment", "image_alignment")  # held-out, over RL updates
PAIRS = (("trajectory", "final"), ("final", "none"), ("trajectory", "none"))


def pooled(raw: dict[str, dict[str, np.ndarray]], n_boot: int, rng_seed: int) -> dict[str, Any]:
    """Means over seeds and prompts of each arm's (S, P) per-prompt scores, their two-level
    bootstrap intervals, and the paired differences of :data:`PAIRS` (same resamples)."""
    arms = list(raw)
    s, p = raw[arms[0]][AXES[0]].shape
    rng = np.random.default_rng(rng_seed)
    seed_idx = rng.integers(0, s, size=(n_boot, s))
    prompt_idx = rng.integers(0, p, size=(n_boot, p))
    out: dict[str, Any] = {"means": {}, "ci95": {}, "paired": {}}
    for arm in arms:
        out["means"][arm] = {a: nanmean(raw[arm][a]) for a in AXES}
        out["ci95"][arm] = {a: two_level_ci(raw[arm][a], seed_idx, prompt_idx) for a in AXES
                            if not np.isnan(raw[arm][a]).all()}
    for hi, lo in PAIRS:
        if hi in raw and lo in raw:
            out["paired"][f"{hi}_minus_{lo}"] = {
                a: {"mean": nanmean(raw[hi][a] - raw[lo][a]), "ci95": two_level_ci(raw[hi][a] - raw[lo][a], seed_idx,
                                                                                 prompt_idx)}
                for a in AXES if not np.isnan(raw[hi][a]).all()}
    return out


def run_rl(trained: Trained, out: Path, cfg: RLConfig, *, seeds: Sequence[int] = (0, 1, 2), eval_prompts: int = 300,
           seed: int = 0, eval_every: int = 0, on_update: Callable[[str, dict[str, float]], None] | None = None,
           ctx: DistContext | None = None) -> dict[str, Any]:
    """Train the two RL arms for every RL seed (resuming from ``out/seed-<s>/<arm>``) and score all three.

    ``cfg.seed`` is replaced by each of ``seeds``. Every arm is scored on the same held-out
    benchmark prompts with the same sampler seeds (``seed``), at the end and every
    ``eval_every`` updates on the way (0 = at the end only). Under torchrun (``ctx``) every rank
    trains its share of each update's rollouts; rank 0 alone fits the scorer, scores and writes.
    """
    dev = check_device(cfg)
    ctx = ctx or single_process(str(dev))
    out.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        scorer, srep = ensure_scorer(cfg.scorer, trained.vq, device=str(dev))
    ctx.barrier()
    if not ctx.is_main:
        scorer, srep = ensure_scorer(cfg.scorer, trained.vq, device=str(dev))  # cached by rank 0
    held = {e.key for e in bench_examples(trained.cfg)}
    eval_ex = bench_examples(trained.cfg)[:eval_prompts]
    eval_cond = conditions(trained, eval_ex)
    rng = np.random.default_rng(trained.cfg.bench.seed)
    idx = rng.integers(0, len(eval_ex), size=(trained.cfg.bench.bootstrap, len(eval_ex)))
    main = ctx.is_main

    def scored(model: Any) -> dict[str, np.ndarray]:
        return score_sampler(trained, model, eval_ex, eval_cond, "parallel", seed=seed)

    result: dict[str, Any] = {"n_prompts": len(eval_ex), "seeds": list(seeds),
                              "rl_config": cfg.model_dump(mode="json", exclude={"seed"}),
                              "scorer": {"retrieval_top1": srep.retrieval,
                                         "retrieval_top1_half_masked": srep.retrieval_half_masked},
                              "per_seed": {}, "seconds": {}}
    t0 = time.perf_counter()
    none_raw = scored(trained.model) if main else {}
    result["seconds"]["none"] = round(time.perf_counter() - t0, 1)
    raws: dict[str, list[dict[str, np.ndarray]]] = {"final": [], "trajectory": []}
    for s in seeds:
        seed_cfg = cfg.model_copy(update={"seed": s})
        train_cond = conditions(trained, train_prompts(seed_cfg, held))
        rec: dict[str, Any] = {"history": {}, "held_out_curve": {}, "ci95": {},
                               "train_reward": {"rollouts_per_prompt": TRAIN_ROLLOUTS}}
        start_reward = prompt_reward(trained.model, scorer, train_cond, trained.cfg.sample, rollouts=TRAIN_ROLLOUTS,
                                     rollout=cfg.rollout) if main else 0.0
        for arm in ARMS[1:]:
            t0 = time.perf_counter()
            arm_cfg = seed_cfg.model_copy(update={"mode": arm})

            def report(r: dict[str, float], arm: str = arm) -> None:
                if on_update is not None:
                    on_update(arm, r)

            curve = [{"update": 0, **{a: summarise(none_raw, idx)[0][a] for a in CURVE_AXES}}] if main else []
            while True:  # rl_train resumes from its state dir: segments of eval_every updates
                model, state = rl_train(copy.deepcopy(trained.model), scorer, train_cond, trained.cfg.sample,
                                        arm_cfg, reference=trained.model, state_dir=out / f"seed-{s}" / arm,
                                        on_update=report, stop_after=eval_every or None, ctx=ctx)
                if state.update >= arm_cfg.updates:
                    break
                if main:
                    curve.append({"update": state.update, **{a: summarise(scored(model), idx)[0][a]
                                                             for a in CURVE_AXES}})
            if not main:
                continue
            raw = scored(model)
            raws[arm].append(raw)
            means, ci = summarise(raw, idx)
            rec[arm] = means
            rec["ci95"][arm] = ci
            rec["history"][arm] = state.history
            rec["held_out_curve"][arm] = [*curve, {"update": arm_cfg.updates, **{a: means[a] for a in CURVE_AXES}}]
            after = prompt_reward(model, scorer, train_cond, trained.cfg.sample, rollouts=TRAIN_ROLLOUTS,
                                  rollout=cfg.rollout)
            rec["train_reward"][arm] = {"before": round(start_reward, 4), "after": round(after, 4),
                                        "rise": round(after - start_reward, 4)}
            result["seconds"][f"seed {s} {arm}"] = round(time.perf_counter() - t0, 1)
        if main:
            rec["none"] = summarise(none_raw, idx)[0]
            result["per_seed"][str(s)] = rec
    if main:
        stacked = {"none": {a: np.stack([none_raw[a]] * len(seeds)) for a in AXES},
                   **{arm: {a: np.stack([r[a] for r in raws[arm]]) for a in AXES} for arm in ARMS[1:]}}
        pool = pooled(stacked, trained.cfg.bench.bootstrap, trained.cfg.bench.seed)
        for arm in ARMS:
            result[arm] = pool["means"][arm]
        result["ci95"], result["paired"] = pool["ci95"], pool["paired"]
        atomic_write_text(out / "rl.json", json.dumps(result, indent=2))
        plot_rl(result, out / "rl.png")
    ctx.barrier()
    return result


def plot_rl(result: dict[str, Any], path: Path) -> Path:
    """Held-out output alignment per seed and arm, the scorer reward over updates, and the pooled axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cx, ax, bx) = plt.subplots(1, 3, figsize=(17, 4))
    colors = {"none": "C0", "final": "C1", "trajectory": "C2"}
    for s, rec in result["per_seed"].items():
        for arm in ARMS[1:]:
            curve = rec["held_out_curve"].get(arm, [])
            cx.plot([c["update"] for c in curve], [c["output_alignment"] for c in curve], "o-", color=colors[arm],
                    alpha=0.7, ms=3, label=f"{arm}" if s == str(result["seeds"][0]) else None)
            hist = rec["history"].get(arm, [])
            ax.plot([h["update"] for h in hist], [h["final_reward"] for h in hist], color=colors[arm], alpha=0.7,
                    label=f"{arm}: scorer reward (last step)" if s == str(result["seeds"][0]) else None)
    cx.set_xlabel("RL update")
    cx.set_ylabel("held-out output alignment")
    cx.set_title(f"{result['n_prompts']} held-out prompts, RL seeds {', '.join(map(str, result['seeds']))}")
    cx.legend(fontsize=7)
    ax.set_xlabel("RL update (that update's own rollouts)")
    ax.set_ylabel("scorer reward")
    ax.legend(fontsize=7)
    width = 0.27
    for j, arm in enumerate(ARMS):
        xs: list[float] = []
        ys: list[float] = []
        err: list[list[float]] = [[], []]
        for i, a in enumerate(AXES):
            v = result[arm].get(a)
            if v is None:
                continue
            lo, hi = result["ci95"][arm][a]
            xs.append(i + (j - 1) * width)
            ys.append(v)
            err[0].append(max(0.0, v - lo))
            err[1].append(max(0.0, hi - v))
        bx.bar(xs, ys, width, yerr=err, capsize=2, label=arm, color=colors[arm])
    bx.set_xticks(range(len(AXES)), [a.replace("_", "\n") for a in AXES], fontsize=7)
    bx.set_ylim(0, 1.05)
    bx.set_title("pooled over seeds (95% CI, seeds and prompts resampled)")
    bx.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
