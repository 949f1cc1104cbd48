"""The ParaRL comparison: no RL, final-step reward, trajectory reward, on the benchmark prompts."""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from paperlab.io import atomic_write_bytes, atomic_write_text
from paperlab.paradiff.bench import AXES, conditions, score_sampler, summarise
from paperlab.paradiff.rl import RLConfig, check_device, prompt_reward, rl_train, train_prompts
from paperlab.paradiff.scorer import ensure_scorer
from paperlab.paradiff.train import Trained, bench_examples
from paperlab.train import DistContext, single_process

__all__ = ["ARMS", "plot_rl", "run_rl"]

ARMS = ("none", "final", "trajectory")
TRAIN_ROLLOUTS = 16  # seeded rollouts per training prompt when measuring the reward RL optimised
CURVE_AXES = ("output_alignment", "text_alignment", "image_alignment")  # held-out, over RL updates


def run_rl(trained: Trained, out: Path, cfg: RLConfig, *, eval_prompts: int = 96, seed: int = 0,
           eval_every: int = 4, on_update: Callable[[str, dict[str, float]], None] | None = None,
           ctx: DistContext | None = None) -> dict[str, Any]:
    """Train the two RL arms from the same start (resuming from ``out/<arm>``) and score all three.

    Every arm is scored on the same held-out benchmark prompts with the same sampler seeds, at
    the end and every ``eval_every`` updates on the way (the held-out curves of the plot; 0 =
    at the end only). Under torchrun (``ctx``) every rank trains its share of each update's
    rollouts; rank 0 alone fits the scorer, scores and writes, the others waiting.
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
    train_ex = train_prompts(cfg, held)
    train_cond = conditions(trained, train_ex)
    eval_ex = bench_examples(trained.cfg)[:eval_prompts]
    eval_cond = conditions(trained, eval_ex)
    rng = np.random.default_rng(trained.cfg.bench.seed)
    idx = rng.integers(0, len(eval_ex), size=(trained.cfg.bench.bootstrap, len(eval_ex)))
    result: dict[str, Any] = {"n_prompts": len(eval_ex), "rl_config": cfg.model_dump(mode="json"),
                              "scorer": {"retrieval_top1": srep.retrieval,
                                         "retrieval_top1_half_masked": srep.retrieval_half_masked},
                              "ci95": {}, "history": {}, "seconds": {},
                              # scorer reward (last step) on the RL training prompts, same seeded
                              # rollouts before and after: what RL optimised, on what it trained on
                              "train_reward": {"rollouts_per_prompt": TRAIN_ROLLOUTS}}
    def held_out(model: Any) -> dict[str, float | None]:
        """The curve's axes on the held-out prompts, same sampler seeds as the final scoring."""
        means, _ = summarise(score_sampler(trained, model, eval_ex, eval_cond, "parallel", seed=seed), idx)
        return {a: means[a] for a in CURVE_AXES}

    main = ctx.is_main
    start_reward = prompt_reward(trained.model, scorer, train_cond, trained.cfg.sample,
                                 rollouts=TRAIN_ROLLOUTS) if main else 0.0
    for arm in ARMS:
        t0 = time.perf_counter()
        model = trained.model
        if arm != "none":
            arm_cfg = cfg.model_copy(update={"mode": arm})

            def report(rec: dict[str, float], arm: str = arm) -> None:
                if on_update is not None:
                    on_update(arm, rec)

            # update 0 is the starting model, already scored as the "none" arm (ARMS[0])
            curve = [{"update": 0, **{a: result["none"][a] for a in CURVE_AXES}}] if main else []
            while True:  # rl_train resumes from out/<arm>: segments of eval_every updates
                model, state = rl_train(copy.deepcopy(trained.model), scorer, train_cond, trained.cfg.sample,
                                        arm_cfg, reference=trained.model, state_dir=out / arm, on_update=report,
                                        stop_after=eval_every or None, ctx=ctx)
                if state.update >= arm_cfg.updates:
                    break
                if main:
                    curve.append({"update": state.update, **held_out(model)})
            if not main:
                continue
            result["history"][arm] = state.history
            result.setdefault("held_out_curve", {})[arm] = curve
            after = prompt_reward(model, scorer, train_cond, trained.cfg.sample, rollouts=TRAIN_ROLLOUTS)
            result["train_reward"][arm] = {"before": round(start_reward, 4), "after": round(after, 4),
                                           "rise": round(after - start_reward, 4)}
        if not main:
            continue
        raw = score_sampler(trained, model, eval_ex, eval_cond, "parallel", seed=seed)
        means, ci = summarise(raw, idx)
        result[arm] = means
        if arm != "none":
            result["held_out_curve"][arm].append(
                {"update": arm_cfg.updates, **{a: means[a] for a in CURVE_AXES}})
        result["ci95"][arm] = ci
        result["seconds"][arm] = round(time.perf_counter() - t0, 1)
    if main:
        atomic_write_text(out / "rl.json", json.dumps(result, indent=2))
        plot_rl(result, out / "rl.png")
    ctx.barrier()
    return result


def plot_rl(result: dict[str, Any], path: Path) -> Path:
    """Reward and KL over RL updates for both arms, and the benchmark axes of all three arms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, cx, bx) = plt.subplots(1, 3, figsize=(17, 4))
    for arm, color in (("final", "C1"), ("trajectory", "C2")):
        curve = result.get("held_out_curve", {}).get(arm, [])
        if curve:
            cx.plot([c["update"] for c in curve], [c["output_alignment"] for c in curve], "o-", color=color,
                    label=f"{arm}: output alignment")
            cx.plot([c["update"] for c in curve], [c["text_alignment"] for c in curve], "s:", color=color,
                    ms=3, label=f"{arm}: text alignment")
    cx.set_xlabel("RL update")
    cx.set_ylabel("held-out score (parallel sampler)")
    cx.set_title(f"{result['n_prompts']} held-out prompts over RL")
    cx.legend(fontsize=7)
    for arm, color in (("final", "C1"), ("trajectory", "C2")):
        hist = result["history"].get(arm, [])
        if hist:
            ups = [h["update"] for h in hist]
            ax.plot(ups, [h["final_reward"] for h in hist], color=color, label=f"{arm}: scorer reward (last step)")
            ax.plot(ups, [h["reward"] for h in hist], ":", color=color, label=f"{arm}: reward optimised")
            tr = result.get("train_reward", {}).get(arm)
            if tr is not None:  # the same seeded rollouts before and after: what RL changed
                ax.plot([0, ups[-1]], [tr["before"], tr["after"]], "o--", color=color, lw=0.8,
                        label=f"{arm}: seeded rollouts, before -> after")
    ax.set_xlabel("RL update (per-update values: that update's own rollouts)")
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
            err[0].append(v - lo)
            err[1].append(hi - v)
        bx.bar(xs, ys, width, yerr=err, capsize=2, label=arm)
    bx.set_xticks(range(len(AXES)), [a.replace("_", "\n") for a in AXES], fontsize=7)
    bx.set_ylim(0, 1.05)
    bx.set_title(f"{result['n_prompts']} held-out prompts (95% bootstrap CI)")
    bx.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
