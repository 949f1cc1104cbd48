"""ParaRL: GRPO on the parallel sampler with a consistency reward along the trajectory.

For each training prompt the parallel sampler (words and codes sampled, no guidance, so the
sampling distribution is the policy's own) draws G trajectories. A trajectory's reward is the
learned scorer's similarity of its partial text and partial image, mean over a few intermediate
steps (``trajectory`` mode, ParaRL) or at the last step only (``final`` mode). Advantages are
normalised within each group; the objective is PPO's clipped ratio over the tokens committed at
each denoising step, minus a KL penalty (the k3 estimator) to the frozen starting model.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from paperlab.paradiff.config import SampleConfig, _Strict
from paperlab.paradiff.errors import ParadiffConfigError
from paperlab.paradiff.model import MASK, ParaDiffModel
from paperlab.paradiff.sample import Trajectory, sample
from paperlab.paradiff.scorer import Scorer, ScorerConfig
from paperlab.paradiff.task import Example, make_examples

__all__ = ["RLConfig", "RLState", "clipped_objective", "group_advantages", "RL_PRESETS", "check_device", "kl_k3",
           "prompt_reward", "rl_preset", "rl_train"]


class RLConfig(_Strict):
    mode: str = Field("trajectory", pattern="^(trajectory|final)$")
    group: int = Field(4, ge=2, description="G: trajectories per prompt")
    prompts: int = Field(4, ge=1, description="prompts per update")
    updates: int = Field(30, ge=1)
    epochs: int = Field(2, ge=1, description="gradient steps per batch of rollouts")
    scored: tuple[float, ...] = Field((0.25, 0.5, 0.75, 1.0), description="steps scored, as shares of the trajectory")
    loss_steps: int = Field(4, ge=1, description="denoising steps per trajectory in the objective")
    beta: float = Field(0.02, ge=0, description="KL penalty weight")
    clip: float = Field(0.2, gt=0, lt=1)
    lr: float = Field(3e-4, gt=0)
    train_prompts: int = Field(64, ge=1)
    seed: int = 0
    device: str = Field("cpu", description="where rollouts and updates run (the policy is moved there)")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="bfloat16: autocast on CUDA")
    scorer: ScorerConfig = ScorerConfig()


RL_PRESETS: dict[str, RLConfig] = {
    # CPU, minutes: a fixed set of 4 training prompts, all of them in every update (GRPO over a
    # prompt set), so the reward on them can be measured before and after (tests, docs).
    "tiny": RLConfig(train_prompts=4, prompts=4, group=4, updates=16),
    "small": RLConfig(),
    # For a CUDA machine (bf16 autocast); sized for one large GPU, never run in this repository's
    # CPU-only sessions: wider groups and batches, more scored steps and a longer run.
    "gpu": RLConfig(device="cuda", dtype="bfloat16", group=16, prompts=32, updates=400, epochs=2,
                    scored=(0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0), loss_steps=8, beta=0.02,
                    lr=1e-4, train_prompts=1024,
                    scorer=ScorerConfig(d_model=256, n_layers=2, n_heads=8, dim=128, steps=4000, batch=256)),
}


def rl_preset(name: str) -> RLConfig:
    """The RL config of a preset (tiny, small, gpu); one-line error for an unknown one."""
    if name not in RL_PRESETS:
        raise ParadiffConfigError(f"unknown RL preset {name!r}; choose one of: {', '.join(RL_PRESETS)}")
    return RL_PRESETS[name]


def check_device(cfg: RLConfig) -> torch.device:
    """The config's device, or a one-line error naming the fix when it is not on this machine."""
    try:
        dev = torch.device(cfg.device)
    except RuntimeError:
        raise ParadiffConfigError(f"unknown RL device {cfg.device!r}; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParadiffConfigError(f"RL device {cfg.device!r} needs CUDA, which this machine lacks; "
                                  "use --preset tiny or small")
    if cfg.dtype == "bfloat16" and dev.type != "cuda":
        raise ParadiffConfigError("RL dtype bfloat16 is for CUDA; use float32 on the CPU")
    return dev


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(P, G) rewards -> advantages normalised within each group of G: (r - mean) / (std + eps)."""
    mean = rewards.mean(-1, keepdim=True)
    std = rewards.std(-1, unbiased=False, keepdim=True)
    return (rewards - mean) / (std + eps)


def clipped_objective(logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """Per-token PPO objective (to maximise): min(rho A, clip(rho, 1-e, 1+e) A), rho = exp(logp - logp_old)."""
    ratio = (logp - logp_old).exp()
    return torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || ref) estimate exp(ref - p) - (ref - p) - 1 (>= 0, zero when equal)."""
    d = logp_ref - logp
    return d.exp() - d - 1


@dataclass
class Rollouts:
    cond: torch.Tensor  # (R, L) one row per trajectory
    traj: Trajectory
    rewards: torch.Tensor  # (R,)


def _state(model: ParaDiffModel, cond: torch.Tensor, traj: Trajectory, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sequence before step k, and the text/image positions committed at step k."""
    lay = model.layout
    x = cond.clone()
    if k == 0:
        prev_t = torch.full_like(traj.texts[0], MASK)
        prev_i = torch.full_like(traj.images[0], -1)
    else:
        prev_t, prev_i = traj.texts[k - 1], traj.images[k - 1]
    x[:, lay.text] = prev_t
    x[:, lay.out_image] = torch.where(prev_i < 0, MASK, prev_i + lay.n_words)
    new_t = (prev_t == MASK) & (traj.texts[k] != MASK)
    new_i = (prev_i < 0) & (traj.images[k] >= 0)
    return x, new_t, new_i


def _token_logp(model: ParaDiffModel, x: torch.Tensor, traj: Trajectory, k: int, new_t: torch.Tensor,
                new_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the tokens committed at step k (flat), and which trajectory each belongs to."""
    tl, il = model.output_logits(x)
    tl, il = tl.float(), il.float()  # ratios of bf16 log-probs would be too coarse
    lt = tl.log_softmax(-1).gather(-1, traj.texts[k].clamp(min=0)[..., None])[..., 0]
    li = il.log_softmax(-1).gather(-1, traj.images[k].clamp(min=0)[..., None])[..., 0]
    rows = torch.arange(x.shape[0], device=x.device)
    lp = torch.cat([lt[new_t], li[new_i]])
    who = torch.cat([rows[:, None].expand_as(new_t)[new_t], rows[:, None].expand_as(new_i)[new_i]])
    return lp, who


def _reward(scorer: Scorer, traj: Trajectory, cfg: RLConfig) -> torch.Tensor:
    n = len(traj)
    shares = cfg.scored if cfg.mode == "trajectory" else (1.0,)
    steps = sorted({max(0, min(n - 1, round(s * n) - 1)) for s in shares})
    return torch.stack([scorer.reward(traj.texts[k], traj.images[k]) for k in steps]).mean(0)


@dataclass
class RLState:
    """What resuming needs: the policy, the optimiser, the update count and the history."""

    update: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def rollout_config(sample_cfg: SampleConfig) -> SampleConfig:
    """The sampler as a policy: words and codes sampled at temperature 1, no guidance, no extra noise."""
    return sample_cfg.model_copy(update={"text_temperature": 1.0, "temperature": 1.0, "guidance": 0.0, "noise": 0.0})


def rl_train(policy: ParaDiffModel, scorer: Scorer, conds: torch.Tensor, sample_cfg: SampleConfig, cfg: RLConfig,
             *, state_dir: Path | None = None, on_update: Callable[[dict[str, float]], None] | None = None,
             stop_after: int | None = None) -> tuple[ParaDiffModel, RLState]:
    """Run GRPO updates on ``policy`` (a copy is the frozen reference), resuming from ``state_dir``.

    Args:
        policy: the starting model (trained in place; pass a copy to keep the original).
        scorer: the frozen reward model.
        conds: (P, L) condition sequences of the training prompts.
        sample_cfg: the sampler's schedule (made stochastic by :func:`rollout_config`).
        cfg: the RL config.
        state_dir: where to save progress after each update (and resume from).
        on_update: called with each update's record (reward, kl, ...).
        stop_after: stop after this many updates in this call (to test resuming).
    """
    dev = check_device(cfg)
    policy.to(dev)
    scorer.to(dev)
    conds = conds.to(dev)
    # bf16 autocast on CUDA only (check_device refuses it elsewhere); log-probs are taken in float32
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
    ref = copy.deepcopy(policy).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    state = RLState()
    if state_dir is not None and (state_dir / "rl-state.pt").is_file():
        saved = torch.load(state_dir / "rl-state.pt", map_location=dev, weights_only=False)
        policy.load_state_dict(saved["policy"])
        ref.load_state_dict(saved["ref"])
        opt.load_state_dict(saved["opt"])
        state = RLState(saved["update"], saved["history"])
    roll_cfg = rollout_config(sample_cfg)
    done_here = 0
    while state.update < cfg.updates and (stop_after is None or done_here < stop_after):
        # GRPO iterates over a fixed prompt set: update u takes the next ``prompts`` of them in turn
        idx = [(state.update * cfg.prompts + j) % len(conds) for j in range(cfg.prompts)]
        cond = conds[idx].repeat_interleave(cfg.group, 0)  # (P*G, L)
        policy.eval()
        # rows take seeds base + row: bases far apart keep every update's rows on their own streams
        with autocast:
            res = sample(policy, cond, "parallel", roll_cfg, seed=(cfg.seed * 100003 + state.update) << 16,
                         record=True)
        traj = res.trajectory
        assert traj is not None
        rewards = _reward(scorer, traj, cfg)  # (P*G,)
        final = scorer.reward(traj.texts[-1], traj.images[-1])
        adv = group_advantages(rewards.view(cfg.prompts, cfg.group)).view(-1)
        # seeded per update, so a run resumed (or trained in segments) picks the same steps as
        # one that never stopped
        rng = random.Random(cfg.seed * 1_000_003 + state.update)
        steps = sorted(rng.sample(range(len(traj)), min(cfg.loss_steps, len(traj))))
        prepared = []
        with torch.no_grad(), autocast:
            for k in steps:
                x, new_t, new_i = _state(policy, cond, traj, k)
                lp_old, who = _token_logp(policy, x, traj, k, new_t, new_i)
                lp_ref, _ = _token_logp(ref, x, traj, k, new_t, new_i)
                prepared.append((k, x, new_t, new_i, lp_old, lp_ref, who))
        policy.train()
        kl_val = 0.0
        for _ in range(cfg.epochs):
            objs, kls = [], []
            for k, x, new_t, new_i, lp_old, lp_ref, who in prepared:
                with autocast:
                    lp, _ = _token_logp(policy, x, traj, k, new_t, new_i)
                objs.append(clipped_objective(lp, lp_old, adv[who], cfg.clip))
                kls.append(kl_k3(lp, lp_ref))
            obj, kl = torch.cat(objs).mean(), torch.cat(kls).mean()
            loss = -obj + cfg.beta * kl
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            kl_val = kl.item()
        policy.eval()
        state.update += 1
        done_here += 1
        rec = {"update": state.update, "reward": round(rewards.mean().item(), 4),
               "final_reward": round(final.mean().item(), 4), "kl": round(kl_val, 5)}
        state.history.append(rec)
        if on_update is not None:
            on_update(rec)
        if state_dir is not None:
            _save_state(state_dir, policy, ref, opt, state)
    return policy, state


@torch.no_grad()
def prompt_reward(policy: ParaDiffModel, scorer: Scorer, conds: torch.Tensor, sample_cfg: SampleConfig, *,
                  rollouts: int = 4, seed: int = 1 << 40) -> float:
    """Mean scorer reward of the last step over ``rollouts`` seeded rollouts of each prompt.

    The seeds are fixed (and far from the training rollouts' streams), so calling this before and
    after RL on the training prompts measures what RL changed, not which samples were drawn.
    """
    policy.eval()
    dev = next(policy.parameters()).device
    scorer.to(dev)
    cond = conds.to(dev).repeat_interleave(rollouts, 0)
    res = sample(policy, cond, "parallel", rollout_config(sample_cfg), seed=seed)
    return float(scorer.reward(res.text, res.image).mean())


def _save_state(state_dir: Path, policy: ParaDiffModel, ref: ParaDiffModel, opt: torch.optim.Optimizer,
                state: RLState) -> None:
    import io

    from paperlab.io import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({"policy": policy.state_dict(), "ref": ref.state_dict(), "opt": opt.state_dict(),
                "update": state.update, "history": state.history}, buf)
    atomic_write_bytes(state_dir / "rl-state.pt", buf.getvalue())
    (state_dir / "history.json").write_text(json.dumps(state.history))


def train_prompts(cfg: RLConfig, held_out: set[Any]) -> list[Example]:
    """The RL training prompts: fresh examples, never the benchmark's."""
    return make_examples(cfg.train_prompts, 777 + cfg.seed, exclude=held_out)
