"""Does ParaRL raise the reward it trains on? The RL test's measurement over RL seeds.

For each RL seed, the tiny RL preset (with ``--lr`` if given) trains on its own 4 training
prompts; the reward it trains on (``mode``: trajectory or final) and the last-step reward are
measured on those prompts with 16 seeded rollouts each, the same seeds before and after.
``--flip`` negates the advantages (the check that the measurement can fall). One torch thread,
as the test runs.

    PYTHONPATH=src nice python bench/paradiff/rl_rise.py --seeds 0,1,2,3,4,5 --json docs/paradiff/rl-rise-tiny.json
    PYTHONPATH=src nice python bench/paradiff/rl_rise.py --seeds 0,1,2 --flip --json docs/paradiff/rl-rise-tiny-flipped.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

import paperlab.paradiff.rl as rl
from paperlab.io import atomic_write_text
from paperlab.paradiff.bench import conditions
from paperlab.paradiff.config import SampleConfig, get_preset
from paperlab.paradiff.model import ParaDiffModel
from paperlab.paradiff.scorer import Scorer, ensure_scorer
from paperlab.paradiff.train import bench_examples, ensure_model
from paperlab.threads import set_threads


def _measure(model: ParaDiffModel, scorer: Scorer, cond: torch.Tensor, sample_cfg: SampleConfig,
             cfg: rl.RLConfig) -> tuple[float, float]:
    """The reward ``cfg`` trains on and the last-step reward, 16 seeded rollouts per prompt."""
    own = rl.prompt_reward(model, scorer, cond, sample_cfg, rollouts=16, scoring=cfg)
    return own, rl.prompt_reward(model, scorer, cond, sample_cfg, rollouts=16)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4,5")
    ap.add_argument("--lr", type=float, default=None, help="override the preset's learning rate")
    ap.add_argument("--flip", action="store_true", help="negate the advantages")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    set_threads(1)
    if args.flip:
        plain = rl.group_advantages

        def flipped(r: torch.Tensor, eps: float = 1e-6, kind: str = "std") -> torch.Tensor:
            return -plain(r, eps, kind)

        rl.group_advantages = flipped  # RLTask looks it up in the module at every update
    trained = ensure_model(get_preset("tiny"))
    held = {e.key for e in bench_examples(trained.cfg)}
    over = {} if args.lr is None else {"lr": args.lr}
    rows = []
    for s in (int(x) for x in args.seeds.split(",")):
        cfg = rl.rl_preset("tiny").model_copy(update={"seed": s, **over})
        scorer, _ = ensure_scorer(cfg.scorer, trained.vq)
        cond = conditions(trained, rl.train_prompts(cfg, held))
        t0 = time.perf_counter()

        before = _measure(trained.model, scorer, cond, trained.cfg.sample, cfg)
        policy, state = rl.rl_train(copy.deepcopy(trained.model), scorer, cond, trained.cfg.sample, cfg)
        after = _measure(policy, scorer, cond, trained.cfg.sample, cfg)
        rows.append({"seed": s, "mode": cfg.mode, "before": round(before[0], 4), "after": round(after[0], 4),
                     "rise": round(after[0] - before[0], 4), "last_step_rise": round(after[1] - before[1], 4),
                     "kl": state.history[-1]["kl"], "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        cfg = rl.rl_preset("tiny").model_copy(update=over)
        payload = {"preset": "tiny", "flipped_advantages": args.flip, "rl_config": cfg.model_dump(mode="json",
                   exclude={"seed"}), "rollouts_per_prompt": 16, "seeds": rows,
                   "mean_rise": round(sum(r["rise"] for r in rows) / len(rows), 4)}
        atomic_write_text(args.json, json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
