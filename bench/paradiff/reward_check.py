"""Does ParaRL's reward rank rollouts the way the exact checker does?

GRPO learns only from how the reward orders the G rollouts of one prompt. For ``--groups``
held-out prompts, ``--group`` rollouts each are decoded as RL decodes them (the preset's sampler,
``--rollout eval``; or ``explore``), and every rollout gets the learned scorer's final-step and
trajectory rewards (as ``paperlab.paradiff.rl`` computes them) and the exact checker's output
alignment. Reported: the AUC of each reward for telling aligned rollouts from the others, over
all rollouts and within groups (pairs of one aligned and one unaligned rollout of the same
prompt: the comparisons GRPO's advantages are made of), and how many groups hold both kinds.
Trajectory rewards are also computed over later steps only (``--scored`` sets, shares of the
trajectory), from the same rollouts.

    PYTHONPATH=src nice python bench/paradiff/reward_check.py --preset tiny --json docs/paradiff/reward-check-tiny.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from preset_model import preset_model

from paperlab.io import atomic_write_text
from paperlab.paradiff.bench import conditions, score
from paperlab.paradiff.rl import _reward, rl_preset, rollout_config
from paperlab.paradiff.sampler import sample
from paperlab.paradiff.scene import detect
from paperlab.paradiff.scorer import ensure_scorer
from paperlab.paradiff.tokens import decode_images, decode_text
from paperlab.paradiff.train import bench_examples


def auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """P(a positive scores above a negative), ties counting half."""
    if len(pos) == 0 or len(neg) == 0:
        return None
    d = pos[:, None] - neg[None, :]
    return round(float((d > 0).mean() + 0.5 * (d == 0).mean()), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--groups", type=int, default=100, help="held-out prompts")
    ap.add_argument("--group", type=int, default=8, help="rollouts per prompt")
    ap.add_argument("--rollout", choices=("eval", "explore"), default="eval")
    ap.add_argument("--scored", nargs="*", default=["0.5,0.75,1.0", "0.75,1.0"],
                    help="other trajectory scorings to compare, as comma-separated shares")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cfg, trained = preset_model(args.preset)
    rl = rl_preset(args.preset)
    scorer, _ = ensure_scorer(rl.scorer, trained.vq)
    ex = bench_examples(cfg)[: args.groups]
    cond = conditions(trained, ex).repeat_interleave(args.group, 0)
    reps = [e for e in ex for _ in range(args.group)]
    roll = rollout_config(cfg.sample, args.rollout)
    modes = {"final": rl.model_copy(update={"mode": "final"}), "trajectory": rl}
    for spec in args.scored:
        shares = tuple(float(x) for x in spec.split(","))
        modes[f"trajectory {spec}"] = rl.model_copy(update={"scored": shares})
    rewards: dict[str, list[torch.Tensor]] = {m: [] for m in modes}
    aligned = []
    with torch.no_grad():
        for s in range(0, len(reps), 64):
            res = sample(trained.model, cond[s:s + 64], "parallel", roll, seed=(1 << 30) + s, record=True)
            assert res.trajectory is not None
            for mode, mode_cfg in modes.items():
                rewards[mode].append(_reward(scorer, res.trajectory, mode_cfg))
            sc = score(reps[s:s + 64], decode_text(res.text), detect(decode_images(trained.vq, res.image)))
            aligned.append(sc["output_alignment"])
    ok = np.concatenate(aligned).astype(bool)
    groups = ok.reshape(args.groups, args.group)
    mixed = (groups.any(1) & ~groups.all(1))
    out: dict[str, Any] = {"preset": args.preset, "rollout": args.rollout, "groups": args.groups,
                           "group": args.group, "aligned_share": round(float(ok.mean()), 4),
                           "groups_with_both": int(mixed.sum()), "scored": list(rl.scored)}
    for mode, parts in rewards.items():
        r = torch.cat(parts).numpy().reshape(args.groups, args.group)
        within = [(r[g][groups[g]], r[g][~groups[g]]) for g in np.flatnonzero(mixed)]
        pairs = [(p[:, None] - n[None, :]).ravel() for p, n in within]
        diffs = np.concatenate(pairs) if pairs else np.zeros(0)
        out[mode] = {"auc_all": auc(r.ravel()[ok], r.ravel()[~ok]),
                     "auc_within_groups": None if not len(diffs) else
                     round(float((diffs > 0).mean() + 0.5 * (diffs == 0).mean()), 4),
                     "pairs_within_groups": int(len(diffs)),
                     "mean_reward_aligned": round(float(r.ravel()[ok].mean()), 4) if ok.any() else None,
                     "mean_reward_unaligned": round(float(r.ravel()[~ok].mean()), 4)}
    print(json.dumps(out, indent=2))
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
